"""The built-in search alone (no LLM): how far it gets on a problem in N evaluations.

Runs ``retune run`` on a target for each seed with the built-in mutator and an
evaluation budget, and reports per seed the best score, the wall time, and what the
evaluations went to: full evaluations, cascade stops, no-ops (children whose quick
subscores equal their parent's, never evaluated in full) and failures; and which mutation
kinds wrote the improvements of the best score ("unknown" for one no longer in the archive,
whose description is not kept).

    .venv/bin/python bench/builtin_search.py [--problem 01-cache-eviction | --target FILE]
        [--evaluations 300] [--seeds 0 1 2] [--work-dir DIR]

``--problem`` names one of the benchmark's problems (``PROBLEMS``: examples 01 and 02,
``bench/problems/03-autoscaling`` and ``04-spot-scheduling``); ``--target`` any target.

The last line printed is ``mean_best=<x> seeds=<n>``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_runs import PROBLEMS

from retune.search.archive import Archive, Elite
from retune.search.state import EngineState, decode_state

KINDS = ("tune constants", "crossover", "conditional bonus")
EXIT_VALIDATION_REFUSED = 3  # `retune run`: finished, held-out validation refused the winner


def run_seed(target: Path, evaluations: int, seed: int, output: Path) -> dict[str, object]:
    """One ``retune run`` of ``target``; what it reached and spent its evaluations on."""
    command = [
        str(Path(sys.executable).parent / "retune"),
        "run",
        str(target),
        "--max-evaluations",
        str(evaluations),
        "--max-seconds",
        "3600",
        "--seed",
        str(seed),
        "--output",
        str(output),
        "--quiet",
    ]
    finished = subprocess.run(command, check=False, stdout=subprocess.DEVNULL)
    if finished.returncode not in (0, EXIT_VALIDATION_REFUSED):
        raise subprocess.CalledProcessError(finished.returncode, command)
    result = json.loads((output / "result.json").read_text())
    validation = result["validation"] or {}
    state = decode_state((output / "checkpoint.retune").read_bytes())
    failures = Counter((h.failure or "scored").split(":")[0] for h in state.history)
    # The description of the candidate that set each new best: the edits that paid off.
    improvements: Counter[str] = Counter()
    best = None
    for point in state.history:
        if point.score is not None and (best is None or point.score > best):
            best = point.score
            if point.index == 0:  # the seed
                continue
            elite = next((e for e in _elites(state) if e.index == point.index), None)
            text = elite.description if elite else ""
            kind = next((k for k in KINDS if text.startswith(k)), "edit" if elite else "unknown")
            improvements[kind] += 1
    return {
        "seed": seed,
        "best": result["best_score"],
        "seed_score": result["seed_score"],
        "wall_seconds": result["wall_seconds"],
        "evaluations": result["evaluations"],
        "full": failures["scored"],
        "cascade": failures["cascade"],
        "no_op": failures["no-op"],
        "duplicates": failures["duplicate"],
        "failed": result["failed_evaluations"],
        "improved_by": dict(improvements),
        # Held-out validation of the best against the seed: passed, refused or none (no
        # candidate beat the seed), with both mean held-out scores.
        "validation": (
            "none" if not validation else "passed" if validation["passed"] else "refused"
        ),
        "holdout_best": validation.get("candidate_score"),
        "holdout_seed": validation.get("stable_score"),
    }


def _elites(state: EngineState) -> list[Elite]:
    elites = Archive(state.archive).elites()
    return elites + ([state.best] if state.best else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--problem", choices=sorted(PROBLEMS), help="one of the benchmark's")
    which.add_argument("--target", type=Path, help="a target.yaml (default: 01-cache-eviction)")
    parser.add_argument("--evaluations", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--work-dir", type=Path, help="keep each seed's run (result.json, best policy) here"
    )
    args = parser.parse_args()
    target = args.target or PROBLEMS[args.problem or "01-cache-eviction"]
    bests = []
    with tempfile.TemporaryDirectory(prefix="retune-builtin-") as scratch:
        work = args.work_dir or Path(scratch)
        for seed in args.seeds:
            row = run_seed(target, args.evaluations, seed, work / f"seed-{seed}")
            print(json.dumps(row), flush=True)
            bests.append(float(row["best"]))  # type: ignore[arg-type]
    print(f"mean_best={statistics.mean(bests):.4f} seeds={len(bests)}")


if __name__ == "__main__":
    main()
