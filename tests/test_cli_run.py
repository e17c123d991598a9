"""`retune run` end to end on examples/01: reproducible, resumable, clear errors.

The runs use the example's own evaluator, seed and profile with a smaller simulated trace
(fewer keys and requests per phase) and a 48-evaluation budget: enough to fill the initial
population, freeze the archive, screen children with the cascade, keep several candidates
in flight and beat the seed, in seconds a run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from retune.cli import EXIT_VALIDATION_REFUSED
from retune.search.state import decode_state

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "01-cache-eviction"
RETUNE = [sys.executable, "-m", "retune.cli"]
FINISHED = (0, EXIT_VALIDATION_REFUSED)  # a run that ends; validation may refuse its winner
EVALUATIONS = 48
# Past search.explore, so the resume is tested across the search's switch to refining.
ARGS = ["--seed", "3", "--max-evaluations", str(EVALUATIONS), "--quiet"]
# The example's files, named absolutely from a copy of its target; a trace a tenth as long.
SMALL_TRACE = {
    "seed: {file: seed_policy.py}": f"seed: {{file: {EXAMPLE / 'seed_policy.py'}}}",
    "module: evaluator.py": f"module: {EXAMPLE / 'evaluator.py'}",
    "recorded: profile.json": f"recorded: {EXAMPLE / 'profile.json'}",
    "sim_keys: 20000": "sim_keys: 2000",
    "requests_full: 80000": "requests_full: 4000",
    "requests_quick: 24000": "requests_quick: 1500",
}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = (EXAMPLE / "target.yaml").read_text()
    for example, small in SMALL_TRACE.items():
        assert example in text, f"examples/01's target no longer says {example!r}"
        text = text.replace(example, small)
    path = tmp_path_factory.mktemp("target") / "target.yaml"
    path.write_text(text)
    return path


def run(target: Path, output: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RETUNE, "run", str(target), *ARGS, "--output", str(output), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def result_without_wall_time(output: Path) -> dict[str, object]:
    result = json.loads((output / "result.json").read_text())
    result.pop("wall_seconds")
    return result


@pytest.fixture(scope="module")
def reference(target: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("reference")
    completed = run(target, output)
    assert completed.returncode in FINISHED, completed.stderr
    return output


def test_a_run_improves_on_the_seed_and_writes_its_outputs(reference: Path) -> None:
    result = json.loads((reference / "result.json").read_text())
    assert result["evaluations"] == EVALUATIONS
    assert result["best_score"] > result["seed_score"]
    assert result["cascade_stopped"] > 0, "the quick stage screened children out"
    assert (
        (reference / result["best_policy_path"])
        .read_text()
        .startswith(("def", "import", "from", '"""'))
    )
    report = (reference / "report.html").read_text()
    assert 'class="plotly-graph-div"' in report and "best_policy.py" in report
    # The confinement the candidates got, as the workers measured it (root: every layer).
    assert "isolation_missing" in report
    if os.geteuid() == 0:
        assert result["isolation"]["user"] == "nobody", result["isolation"]
        assert result["isolation_missing"] == []


def test_the_same_seed_gives_the_same_result(target: Path, reference: Path, tmp_path: Path) -> None:
    completed = run(target, tmp_path / "again")
    assert completed.returncode in FINISHED, completed.stderr
    assert result_without_wall_time(tmp_path / "again") == result_without_wall_time(reference)


def evaluations_checkpointed(checkpoint: Path) -> int:
    """How far the checkpoint says the run has got (0 before the first one)."""
    try:
        return decode_state(checkpoint.read_bytes()).ledger.evaluations
    except (OSError, ValueError, zlib.error):  # not written yet
        return 0


def test_killed_at_a_random_point_and_resumed_reaches_the_same_best(
    target: Path, reference: Path, tmp_path: Path
) -> None:
    output = tmp_path / "killed"
    # Anywhere from the initial population to past half the budget, by evaluations done
    # rather than seconds slept, so the kill lands mid-search however fast the machine.
    kill_after = random.Random(os.getpid()).randint(2, EVALUATIONS * 2 // 3)
    process = subprocess.Popen(
        [*RETUNE, "run", str(target), *ARGS, "--output", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    checkpoint = output / "checkpoint.retune"
    deadline = time.monotonic() + 120
    while evaluations_checkpointed(checkpoint) < kill_after and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (output / "result.json").exists(), "the run was meant to be killed mid-search"
    completed = run(target, output, "--resume")
    assert completed.returncode in FINISHED, completed.stderr
    resumed = json.loads((output / "result.json").read_text())
    expected = json.loads((reference / "result.json").read_text())
    assert resumed["best_score"] == expected["best_score"]
    assert resumed["evaluations"] == expected["evaluations"]


def test_an_existing_run_is_not_overwritten_without_resume(target: Path, reference: Path) -> None:
    completed = run(target, reference)
    assert completed.returncode == 2
    assert "--resume" in completed.stderr


def test_a_broken_target_gives_field_paths_not_a_traceback(tmp_path: Path) -> None:
    broken = tmp_path / "target.yaml"
    text = (EXAMPLE / "target.yaml").read_text().replace("maxEvaluations:", "maxEvals:")
    broken.write_text(text)
    completed = subprocess.run(
        [*RETUNE, "check", str(broken)], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 2
    assert "spec.search.budget" in completed.stderr
    assert "Traceback" not in completed.stderr
