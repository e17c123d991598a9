"""retune's evaluator contract as a peer framework's evaluator, sandbox included.

The peers (OpenEvolve, LEVI) call their evaluator in worker processes of their own, which
run with no sandbox at all. So this wrapper never imports or runs the candidate: it hands
the program text to ``retune-evaluate`` (retune's evaluation-pod entrypoint) in a fresh
subprocess, which checks it against the allowlist and runs it in a confined child with
CPU, memory and time limits -- the same harness retune's own runs use -- and reads the
score back. Each peer gets it in the shape it documents:

- OpenEvolve imports this file and calls ``evaluate(program_path)``; the metrics are
  ``combined_score`` (the evaluator's ``full`` score, the one retune reports) and one
  entry per subscore. A candidate that fails (rejected, raises, times out) scores 0.0,
  as OpenEvolve's documentation asks.
- LEVI calls ``score_fn(fn)`` with the candidate's function, after running the
  candidate's module itself (``exec``, in its own process: LEVI's design, not ours); the
  source it ran is in the function's globals as ``__source_code__``. ``levi_score`` hands
  that source to the sandbox and returns ``{"score": ..., <subscores>}``, or
  ``{"error": ...}`` for a candidate that fails, which LEVI counts as an error and keeps
  out of its archive.

The problem is described by the JSON file named in ``$BENCH_PEER_PROBLEM`` (written by
``vs_peers.py``): the ``retune-evaluate`` executable, the evaluator file, the policy
entrypoint, the sandbox limits, the evaluation context and a log file. Every evaluation
is appended to the log (the program's digest, its score and whether it failed), since
neither peer keeps every program it evaluated. Standard library only: it runs in the
peers' venvs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_server import program_digest

PROBLEM_ENV = "BENCH_PEER_PROBLEM"
FAILED_SCORE = 0.0


def runner_arguments(description: str, settings_file: str) -> tuple[argparse.Namespace, Any]:
    """A peer runner's command line (``RUN_DIR --api-base URL --budget-usd X [--seed N]
    [--max-evaluations N]``), with ``$BENCH_PEER_PROBLEM`` pointed at the run's
    ``problem.json`` for the evaluator (the workers inherit it): the arguments and the
    peer's settings, read from ``settings_file`` in the run directory."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--api-base", required=True, help="the stand-in's base URL, with /v1")
    parser.add_argument("--budget-usd", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-evaluations", type=int, help="a guard; USD is meant to bind")
    args = parser.parse_args()
    args.run_dir = args.run_dir.resolve()
    os.environ[PROBLEM_ENV] = str(args.run_dir / "problem.json")
    return args, json.loads((args.run_dir / settings_file).read_text())


def _problem() -> dict[str, Any]:
    path = os.environ.get(PROBLEM_ENV)
    if not path:
        raise RuntimeError(f"${PROBLEM_ENV} must name the problem file vs_peers.py wrote")
    problem: dict[str, Any] = json.loads(Path(path).read_text())
    return problem


def sandboxed_score(code: str) -> tuple[float, dict[str, float]] | str:
    """(full score, subscores) of ``code`` in retune's sandbox, or why it failed; the
    evaluation is logged either way."""
    problem = _problem()
    batch = {
        "evaluator": problem["evaluator"],
        "entrypoint": problem["entrypoint"],
        "limits": problem["limits"],
        "tasks": [
            {"task_id": "c", "policy_code": code, "context": problem["context"], "subset": "full"}
        ],
    }
    with tempfile.TemporaryDirectory(prefix="peer-eval-") as scratch:
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
    digest = program_digest(code)
    if "s" not in outcome:
        _log(problem["log"], {"sha256": digest, "score": FAILED_SCORE, "failed": True})
        reason = outcome.get("f", "failed")
        return f"retune's sandbox: {reason}" + (f" ({outcome['d']})" if outcome.get("d") else "")
    score = float(outcome["s"])
    _log(problem["log"], {"sha256": digest, "score": score, "failed": False})
    return score, {name: float(value) for name, value in outcome.get("ss", {}).items()}


def evaluate(program_path: str) -> dict[str, float]:
    """Score the program at ``program_path`` in retune's sandbox; OpenEvolve's entry point."""
    scored = sandboxed_score(Path(program_path).read_text())
    if isinstance(scored, str):
        return {"combined_score": FAILED_SCORE}
    score, subscores = scored
    return {"combined_score": score, **subscores}


def levi_score(fn: Any) -> dict[str, Any]:
    """Score the source LEVI ran to define ``fn`` in retune's sandbox; LEVI's score_fn."""
    scored = sandboxed_score(fn.__globals__["__source_code__"])
    if isinstance(scored, str):
        return {"error": scored}
    score, subscores = scored
    return {**{f"subscore_{name}": value for name, value in subscores.items()}, "score": score}


def _log(path: str, entry: dict[str, Any]) -> None:
    """Append one line; O_APPEND keeps lines from concurrent workers whole."""
    line = (json.dumps(entry) + "\n").encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)
