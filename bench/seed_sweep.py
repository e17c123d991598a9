"""retune alone over many seeds: how often, and for how many dollars, it reaches given scores.

``vs_peers.py`` pairs each retune run with one run of each peer, so a few seeds decide
its ratios. This runs retune's search only (its LLM tiers on a fresh stand-in server per
run, a USD budget, the benchmark problems of ``vs_peers.py``) over more seeds, and
reports per problem and score threshold the seeds that reached it and the USD they
spent to get there, summed -- the measure used to judge a change to the engine: run it
on a checkout without the change and on one with it, with the same arguments.

The default thresholds of a problem are the best scores OpenEvolve reached in the last
``vs_peers.py`` run (``bench/results/vs_peers.json``; an older ``vs_openevolve.json``
has the same shape).

    .venv/bin/python bench/seed_sweep.py [--seeds 6] [--budget-usd 0.015] [--problems ...]

Prints one line per run and a table; the last line is
``mean_best=<a>,<b>,<c> reached=<n>/<m>`` (mean best score per problem; runs that
reached each of their problem's thresholds, out of all run-threshold pairs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peer_runs import BENCH, PROBLEMS, usd_to_reach
from retune_search import load_setup, run_search, usd_when_written
from server_process import MutationServerProcess

MAX_EVALUATIONS = 200  # a wall-time guard: the USD budget is meant to bind


@dataclass
class Sweep:
    """One problem's runs: best score and the USD to each threshold (None: not reached)."""

    problem: str
    thresholds: list[float]
    bests: list[float] = field(default_factory=list)
    reached: list[list[float | None]] = field(default_factory=list)  # per run, per threshold


def openevolve_bests(path: Path) -> dict[str, list[float]]:
    """OpenEvolve's best score per problem and seed in a ``vs_peers.py`` result."""
    if not path.exists():
        return {}
    document = json.loads(path.read_text())
    bests: dict[str, list[float]] = {}
    for run in document.get("runs", []):
        if run["framework"] == "openevolve":
            bests.setdefault(run["problem"], []).append(float(run["best_score"]))
    return {problem: sorted(set(scores)) for problem, scores in bests.items()}


def sweep(problem: str, thresholds: list[float], seeds: int, budget_usd: float) -> Sweep:
    setup = load_setup(PROBLEMS[problem])
    result = Sweep(problem, thresholds)
    for seed in range(seeds):
        with (
            MutationServerProcess(seed=0, fresh_repeats=True) as server,
            tempfile.TemporaryDirectory(prefix="retune-sweep-") as output,
        ):
            run = run_search(
                setup,
                Path(output),
                seed=seed,
                max_evaluations=MAX_EVALUATIONS,
                max_usd=budget_usd,
                llm_base_url=server.base_url,
            )
        points = usd_when_written(run)
        reached = [usd_to_reach(points, t) for t in thresholds]
        result.bests.append(run.best_score)
        result.reached.append(reached)
        shown = ", ".join("-" if usd is None else f"${usd:.4f}" for usd in reached)
        print(
            f"{problem} seed {seed}: best {run.best_score:.4f}, ${run.usd:.4f}, "
            f"{run.evaluations} evaluations; USD to {thresholds}: {shown}",
            flush=True,
        )
    return result


def table(sweeps: list[Sweep], seeds: int, budget_usd: float) -> str:
    lines = [
        f"{seeds} seeds, ${budget_usd} a run",
        "",
        "| problem | mean best | threshold | seeds reaching it | USD to it, summed over those |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in sweeps:
        for i, threshold in enumerate(s.thresholds):
            hits = [r[i] for r in s.reached if r[i] is not None]
            lines.append(
                f"| {s.problem} | {statistics.mean(s.bests):.4f} | {threshold:.6f} | "
                f"{len(hits)}/{len(s.reached)} | {sum(hits):.4f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=6, help="seeds 0..N-1 (default 6)")
    parser.add_argument("--budget-usd", type=float, default=0.015)
    parser.add_argument("--problems", nargs="+", choices=sorted(PROBLEMS), default=None)
    parser.add_argument(
        "--thresholds-from",
        type=Path,
        default=BENCH / "results" / "vs_peers.json",
        help="a vs_peers.py (or vs_openevolve.py) result whose OpenEvolve bests are the thresholds",
    )
    args = parser.parse_args(argv)
    bests = openevolve_bests(args.thresholds_from)
    sweeps = []
    for problem in args.problems or sorted(PROBLEMS):
        if problem not in bests:
            parser.error(f"{args.thresholds_from} has no OpenEvolve runs of {problem}")
        sweeps.append(sweep(problem, bests[problem], args.seeds, args.budget_usd))
    print(table(sweeps, args.seeds, args.budget_usd))
    pairs = [r for s in sweeps for run in s.reached for r in run]
    reached = sum(r is not None for r in pairs)
    means = ",".join(f"{statistics.mean(s.bests):.4f}" for s in sweeps)
    print(f"mean_best={means} reached={reached}/{len(pairs)}")


if __name__ == "__main__":
    main()
