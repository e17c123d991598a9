"""`retune run` end to end on examples/01: reproducible, resumable, clear errors."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "examples" / "01-cache-eviction" / "target.yaml"
RETUNE = [sys.executable, "-m", "retune.cli"]
ARGS = ["--seed", "7", "--max-evaluations", "200", "--quiet"]

pytestmark = pytest.mark.slow


def run(output: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RETUNE, "run", str(TARGET), *ARGS, "--output", str(output), *extra],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def result_without_wall_time(output: Path) -> dict[str, object]:
    result = json.loads((output / "result.json").read_text())
    result.pop("wall_seconds")
    return result


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("reference")
    completed = run(output)
    assert completed.returncode == 0, completed.stderr
    return output


def test_a_run_improves_on_the_seed_and_writes_its_outputs(reference: Path) -> None:
    result = json.loads((reference / "result.json").read_text())
    assert result["evaluations"] == 200
    assert result["best_score"] > result["seed_score"]
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


def test_the_same_seed_gives_the_same_result(reference: Path, tmp_path: Path) -> None:
    completed = run(tmp_path / "again")
    assert completed.returncode == 0, completed.stderr
    assert result_without_wall_time(tmp_path / "again") == result_without_wall_time(reference)


def test_killed_at_a_random_point_and_resumed_reaches_the_same_best(
    reference: Path, tmp_path: Path
) -> None:
    output = tmp_path / "killed"
    process = subprocess.Popen(
        [*RETUNE, "run", str(TARGET), *ARGS, "--output", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    checkpoint = output / "checkpoint.retune"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(random.Random(os.getpid()).uniform(1.0, 8.0))
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (output / "result.json").exists(), "the run was meant to be killed mid-search"
    completed = run(output, "--resume")
    assert completed.returncode == 0, completed.stderr
    resumed = json.loads((output / "result.json").read_text())
    expected = json.loads((reference / "result.json").read_text())
    assert resumed["best_score"] == expected["best_score"]
    assert resumed["evaluations"] == expected["evaluations"]


def test_an_existing_run_is_not_overwritten_without_resume(reference: Path) -> None:
    completed = run(reference)
    assert completed.returncode == 2
    assert "--resume" in completed.stderr


def test_a_broken_target_gives_field_paths_not_a_traceback(tmp_path: Path) -> None:
    broken = tmp_path / "target.yaml"
    text = TARGET.read_text().replace("maxEvaluations:", "maxEvals:")
    broken.write_text(text)
    completed = subprocess.run(
        [*RETUNE, "check", str(broken)], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 2
    assert "spec.search.budget" in completed.stderr
    assert "Traceback" not in completed.stderr
