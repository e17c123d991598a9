"""retune's evaluator contract as an OpenEvolve evaluator file, sandbox included.

OpenEvolve imports this file and calls ``evaluate(program_path)`` in its own worker
processes, which run with no sandbox at all. So this wrapper never imports or runs the
candidate: it hands the program text to ``retune-evaluate`` (retune's evaluation-pod
entrypoint) in a fresh subprocess, which checks it against the allowlist and runs it in a
confined child with CPU, memory and time limits -- the same harness retune's own runs
use -- and reads the score back.

The problem is described by the JSON file named in ``$BENCH_OPENEVOLVE_PROBLEM``
(written by ``vs_openevolve.py``): the ``retune-evaluate`` executable, the evaluator
file, the policy entrypoint, the sandbox limits, the evaluation context and a log file.
The metrics are ``combined_score`` (the evaluator's ``full`` score, the one retune
reports) and one entry per subscore. A candidate that fails (rejected, raises, times out)
scores 0.0, as OpenEvolve's documentation asks. Every evaluation is also appended to the
log (the program's digest and score), since OpenEvolve's database does not keep every
program it evaluated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_server import program_digest

PROBLEM_ENV = "BENCH_OPENEVOLVE_PROBLEM"
FAILED_SCORE = 0.0


def _problem() -> dict[str, Any]:
    path = os.environ.get(PROBLEM_ENV)
    if not path:
        raise RuntimeError(f"${PROBLEM_ENV} must name the problem file vs_openevolve.py wrote")
    problem: dict[str, Any] = json.loads(Path(path).read_text())
    return problem


def evaluate(program_path: str) -> dict[str, float]:
    """Score the program at ``program_path`` in retune's sandbox; OpenEvolve's entry point."""
    problem = _problem()
    code = Path(program_path).read_text()
    batch = {
        "evaluator": problem["evaluator"],
        "entrypoint": problem["entrypoint"],
        "limits": problem["limits"],
        "tasks": [
            {"task_id": "c", "policy_code": code, "context": problem["context"], "subset": "full"}
        ],
    }
    with tempfile.TemporaryDirectory(prefix="oe-eval-") as scratch:
        batch_path = Path(scratch) / "batch.json"
        output_path = Path(scratch) / "outcome.json"
        batch_path.write_text(json.dumps(batch))
        timeout = float(problem["limits"]["wall_seconds"]) + 30.0
        subprocess.run(
            [problem["retune_evaluate"], "--batch", str(batch_path), "--output", str(output_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
        document = json.loads(output_path.read_text())
    if "error" in document:  # the batch itself failed: the harness, not the candidate
        raise RuntimeError(f"retune-evaluate failed: {document['error']}")
    outcome = document["o"][0]
    if "s" not in outcome:
        metrics = {"combined_score": FAILED_SCORE}
    else:
        metrics = {"combined_score": float(outcome["s"])}
        metrics.update({name: float(value) for name, value in outcome.get("ss", {}).items()})
    _log(problem["log"], {"sha256": program_digest(code), "score": metrics["combined_score"]})
    return metrics


def _log(path: str, entry: dict[str, Any]) -> None:
    """Append one line; O_APPEND keeps lines from concurrent workers whole."""
    line = (json.dumps(entry) + "\n").encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)
