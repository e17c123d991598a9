"""docs/evaluator.md's worked example is real: its files, written out of the page, are a
target that `retune check` accepts and `retune run` improves, validates and reports with
the exit codes the README documents."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from retune.cli import EXIT_OK, EXIT_VALIDATION_REFUSED

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "evaluator.md"
FILE_BLOCK = re.compile(r"^```\w+ file=(?P<name>\S+)\n(?P<body>.*?)^```$", re.M | re.S)
EVALUATIONS = "24"


@pytest.fixture
def batching(tmp_path: Path) -> Path:
    """The example's files as the page gives them; the target's path."""
    blocks = {m["name"]: m["body"] for m in FILE_BLOCK.finditer(DOC.read_text())}
    assert set(blocks) == {"seed_policy.py", "profile.json", "evaluator.py", "target.yaml"}
    directory = tmp_path / "batching"
    directory.mkdir()
    for name, body in blocks.items():
        (directory / name).write_text(body)
    return directory / "target.yaml"


def retune(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retune.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def evaluate(target: Path, policy: str, stage: str, seed: int = 0) -> dict[str, Any]:
    """The page's evaluator called directly, as the harness would."""
    namespace: dict[str, Any] = {}
    exec(compile((target.parent / "evaluator.py").read_text(), "evaluator.py", "exec"), namespace)
    policy_path = target.parent / f"policy-{abs(hash(policy))}.py"
    policy_path.write_text(policy)
    params = {
        "requests_quick": 800,
        "requests_full": 4000,
        "setup_ms": 8.0,
        "per_request_ms": 1.0,
        "max_batch": 64,
        "slo_ms": 60,
    }
    context = {"workload": {"request_rate": 520.0}, "hardware": {}, "params": params, "seed": seed}
    result: dict[str, Any] = namespace["evaluate"](str(policy_path), context, stage)
    return result


def test_the_example_evaluator_follows_the_contract(batching: Path) -> None:
    seed = (batching.parent / "seed_policy.py").read_text()
    bigger = seed.replace("min(queued, 8)", "min(queued, 32)")
    full = evaluate(batching, seed, "full")
    assert full == evaluate(batching, seed, "full"), "deterministic"
    assert set(full) == {"score", "subscores", "metrics", "feedback"}
    assert set(full["subscores"]) == {"steady", "burst"}
    assert evaluate(batching, seed, "holdout", seed=1) != full, "holdout draws other traffic"
    assert evaluate(batching, bigger, "full")["score"] > full["score"] + 0.1
    assert full["feedback"].splitlines()[0].startswith("burst"), "worst phase first"
    with pytest.raises(ValueError, match="unknown stage"):
        evaluate(batching, seed, "medium")


def test_check_accepts_the_example_and_run_improves_and_validates_it(
    batching: Path, tmp_path: Path
) -> None:
    checked = retune("check", str(batching), "--output", str(tmp_path / "run"))
    assert checked.returncode == EXIT_OK, checked.stderr
    assert "ready to run" in checked.stdout

    ran = retune(
        "run", str(batching), "--max-evaluations", EVALUATIONS, "--workers", "2", "--quiet",
        "--output", str(tmp_path / "run"),
    )  # fmt: skip
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["best_score"] > result["seed_score"]
    assert result["validation"]["passed"], result["validation"]
    assert ran.returncode == EXIT_OK, ran.stderr
    assert "burst" in result["validation"]["subscores"]


def test_run_exits_3_when_validation_refuses_the_winner(batching: Path, tmp_path: Path) -> None:
    text = batching.read_text()
    assert "minImprovement: 0.02" in text
    batching.write_text(text.replace("minImprovement: 0.02", "minImprovement: 100"))

    ran = retune(
        "run", str(batching), "--max-evaluations", EVALUATIONS, "--workers", "2", "--quiet",
        "--output", str(tmp_path / "run"),
    )  # fmt: skip
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["validation"] is not None and not result["validation"]["passed"]
    assert ran.returncode == EXIT_VALIDATION_REFUSED, ran.stderr
    assert "refused the winner" in ran.stdout
