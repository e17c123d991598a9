"""The side-by-side benchmarks, end to end, at toy size: they run and report their line.

``bench/vs_peers.py`` needs OpenEvolve, LEVI and GEPA in venvs of their own
(``bench/.venv-<peer>``); the script installs them from PyPI on first use, and this test
skips if that fails.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.llm_server import REPO

pytestmark = pytest.mark.slow
BENCH = REPO / "bench"


def run_script(script: str, tmp_path: Path, *args: str) -> tuple[list[str], dict[str, Any]]:
    """Run ``script`` with seed 0 and its files under ``tmp_path``; return the lines it
    printed and the JSON results it wrote."""
    results = tmp_path / "results"
    command = [sys.executable, str(BENCH / script), *args, "--seeds", "0"]
    command += ["--work-dir", str(tmp_path / "work"), "--results-dir", str(results)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-4000:]
    document = json.loads((results / script.replace(".py", ".json")).read_text())
    return finished.stdout.strip().splitlines(), document


def test_vs_peers_reports_cost_ratios_and_score_delta(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    from peer_frameworks import PEERS, peer_python

    try:
        for peer in PEERS.values():
            peer_python(peer)
    except subprocess.CalledProcessError as error:
        pytest.skip(f"cannot install a peer into its venv: {error}")
    lines, document = run_script(
        "vs_peers.py",
        tmp_path,
        *("--problems", "03-autoscaling", "--budget-usd", "0.004"),
        *("--retune-max-evaluations", "12"),
    )
    assert re.fullmatch(
        r"min_cost_ratio_openevolve=(\S+) min_cost_ratio_levi=(\S+) min_score_delta=(-?[0-9.]+)",
        lines[-1],
    )
    assert re.fullmatch(r"min_cost_ratio_gepa=(\S+)", lines[-2])
    runs = {run["framework"]: run for run in document["runs"]}
    assert set(runs) == {"gepa", "levi", "openevolve", "retune"}
    for run in runs.values():
        assert run["best_score"] >= run["seed_score"] > 0
        assert run["usd"] > 0 and run["calls"] > 0 and run["evaluations"] > 0
    assert runs["retune"]["usd"] <= 0.004 + 1e-9  # never above its budget
    assert (tmp_path / "results" / "vs_peers.md").read_text().startswith("# retune vs")
    assert (tmp_path / "results" / "vs_peers.html").exists()


def test_warm_start_reports_the_speedup(tmp_path: Path) -> None:
    lines, document = run_script(
        "warm_start.py", tmp_path, "--examples", "02-request-routing", "--evaluations", "8"
    )
    assert re.fullmatch(r"min_warm_speedup=[0-9.]+", lines[-1])
    assert {(r["example"], r["shift"]) for r in document["rows"]} == {
        ("02-request-routing", "workload"),
        ("02-request-routing", "hardware"),
    }
    assert all(run["warm_programs"] >= 1 for run in document["runs"])


def test_seed_sweep_counts_the_seed_as_free_and_an_unreachable_score_as_missed(
    tmp_path: Path,
) -> None:
    # The seed policy of 03 scores 0.490653: written for nothing, so reached at $0; no
    # policy scores 2.
    thresholds = tmp_path / "vs_peers.json"
    runs = [
        {"framework": "openevolve", "problem": "03-autoscaling", "best_score": s}
        for s in (0.490653, 2.0)
    ]
    thresholds.write_text(json.dumps({"runs": runs}))
    command = [sys.executable, str(BENCH / "seed_sweep.py"), "--seeds", "1"]
    command += ["--problems", "03-autoscaling", "--budget-usd", "0.002"]
    command += ["--thresholds-from", str(thresholds)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-4000:]
    lines = finished.stdout.strip().splitlines()
    match = re.fullmatch(r"mean_best=([0-9.]+) reached=(\d+)/(\d+)", lines[-1])
    assert match is not None, lines[-1]
    assert float(match.group(1)) >= 0.490653
    assert (match.group(2), match.group(3)) == ("1", "2")
    assert (
        "| 03-autoscaling |" in finished.stdout and "| 0.490653 | 1/1 | 0.0000 |" in finished.stdout
    )
