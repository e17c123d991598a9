"""Warm start against cold start after the workload or the hardware shifts.

For each example: tune on its recorded profile and hardware (A); then shift the workload
(profile B) and, separately, the hardware (another node class), and search the shifted
problem with the same budget and seed three ways:

- cold: from the seed policy, knowing nothing of A;
- warm: as the operator retunes -- from the stable revision (A's best, which the operator
  promoted after A's search), with A's archive elites (best first) re-scored as
  ``warm_programs``;
- restart: from A's best without the archive (the operator with ``warmStart: false``),
  to tell what the archive adds to starting from the deployed policy.

Reported: the evaluations (and, with ``--mutator llm``, the USD) each needed to reach 95%
of the cold start's final best score. The starting policy and the warm programs count as
evaluations; a warm program identical to the starting policy is skipped, as the engine
skips every duplicate.

    .venv/bin/python bench/warm_start.py [--quick] [--mutator builtin|llm] [--seeds 0 1 2]

Writes ``bench/results/warm_start.{md,json}`` (``warm_start_llm`` with ``--mutator llm``);
the last line printed is ``min_warm_speedup=<x>``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from retune_search import SearchResult, Setup, load_setup, run_search, usd_when_written
from server_process import MutationServerProcess

from tests.cluster.processes import install_signal_handlers

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
REACH_FRACTION = 0.95
SCORE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Example:
    target: Path
    workload_shift: dict[str, float]  # profile B: these entries replace the recorded ones
    hardware_b: dict[str, str]  # node labels of the other hardware class


EXAMPLES = {
    "01-cache-eviction": Example(
        target=REPO / "examples" / "01-cache-eviction" / "target.yaml",
        # More scans, a flatter popularity and a hot set that turns over twice as fast.
        workload_shift={"scan_fraction": 0.3, "zipf_alpha": 0.7, "hot_set_turnover": 1.2},
        # m6i.xlarge (16 GiB) -> m6i.large (8 GiB): the cache holds half the share.
        hardware_b={"node.kubernetes.io/instance-type": "m6i.large", "kubernetes.io/arch": "amd64"},
    ),
    "02-request-routing": Example(
        target=REPO / "examples" / "02-request-routing" / "target.yaml",
        # 20% more traffic, longer prompts sharing less of them, fewer distinct prefixes.
        workload_shift={
            "request_rate": 36.0,
            "prompt_tokens_mean": 1800.0,
            "shared_prefix_fraction": 0.5,
            "prefix_groups": 300.0,
        },
        # The L4 pool (g6.2xlarge) -> an A10G pool (g5.2xlarge).
        hardware_b={
            "node.kubernetes.io/instance-type": "g5.2xlarge",
            "kubernetes.io/arch": "amd64",
            "nvidia.com/gpu.product": "NVIDIA-A10G",
            "nvidia.com/gpu.memory": "23028",
        },
    ),
}


@dataclass(frozen=True)
class Plan:
    seeds: list[int]
    evaluations_a: int  # the tuning run on A
    evaluations_b: int  # each of the cold and warm runs on B


QUICK = Plan(seeds=[0], evaluations_a=40, evaluations_b=30)
FULL = Plan(seeds=[0, 1, 2], evaluations_a=100, evaluations_b=100)


@dataclass
class Comparison:
    """Cold and warm start on one shifted problem with one seed."""

    example: str
    shift: str  # "workload" or "hardware"
    seed: int
    seed_score: float  # the seed policy on B
    a_best: float  # the best of the tuning run on A, scored on A
    a_best_on_b: float  # the same program scored on B: where warm and restart start
    warm_programs: int
    cold_best: float
    warm_best: float
    restart_best: float
    target: float  # REACH_FRACTION x cold_best
    cold_evaluations: int | None  # to reach the target; None: never
    warm_evaluations: int | None
    restart_evaluations: int | None
    cold_usd: float | None
    warm_usd: float | None
    restart_usd: float | None

    @property
    def speedup(self) -> float:
        if self.warm_evaluations is None or self.cold_evaluations is None:
            return 0.0
        return self.cold_evaluations / self.warm_evaluations


def to_reach(result: SearchResult, target: float) -> tuple[int | None, float | None]:
    """Evaluations (counted as retune counts them) and USD spent when the search first
    held a program scoring at least ``target``."""
    evaluations = next(
        (
            point.evaluations
            for point in result.state.history
            if point.score is not None and point.score >= target - SCORE_TOLERANCE
        ),
        None,
    )
    spent = [usd for usd, _, score in usd_when_written(result) if score >= target - SCORE_TOLERANCE]
    return evaluations, (min(spent) if spent else None)


def search(
    setup: Setup,
    output: Path,
    seed: int,
    evaluations: int,
    llm: bool,
    warm_programs: list[str] | None = None,
) -> SearchResult:
    """One search, with a fresh stand-in model server if ``llm``."""
    shutil.rmtree(output, ignore_errors=True)
    with MutationServerProcess(seed=0, fresh_repeats=True) if llm else nullcontext() as server:
        return run_search(
            setup,
            output,
            seed=seed,
            max_evaluations=evaluations,
            llm_base_url=server.base_url if server else None,
            warm_programs=warm_programs,
        )


def compare(
    name: str, example: Example, seed: int, plan: Plan, llm: bool, work: Path
) -> list[Comparison]:
    base = load_setup(example.target)
    tuned = search(base, work / name / f"a-seed{seed}", seed, plan.evaluations_a, llm)
    elites = tuned.elites()
    deployed = elites[0]  # A's best: what the operator promoted and retunes from
    shifted = {
        "workload": load_setup(
            example.target, workload={**base.context.workload, **example.workload_shift}
        ),
        "hardware": load_setup(example.target, hardware_labels=example.hardware_b),
    }
    comparisons = []
    for shift, setup in shifted.items():
        where = work / name / f"{shift}-seed{seed}"
        cold = search(setup, where / "cold", seed, plan.evaluations_b, llm)
        from_a = replace(setup, seed_code=deployed)
        warm = search(from_a, where / "warm", seed, plan.evaluations_b, llm, elites)
        restart = search(from_a, where / "restart", seed, plan.evaluations_b, llm)
        target = REACH_FRACTION * cold.best_score
        cold_evaluations, cold_usd = to_reach(cold, target)
        warm_evaluations, warm_usd = to_reach(warm, target)
        restart_evaluations, restart_usd = to_reach(restart, target)
        comparison = Comparison(
            example=name,
            shift=shift,
            seed=seed,
            seed_score=cold.seed_score,
            a_best=tuned.best_score,
            a_best_on_b=warm.seed_score,
            warm_programs=len(elites),
            cold_best=cold.best_score,
            warm_best=warm.best_score,
            restart_best=restart.best_score,
            target=round(target, 6),
            cold_evaluations=cold_evaluations,
            warm_evaluations=warm_evaluations,
            restart_evaluations=restart_evaluations,
            cold_usd=cold_usd if llm else None,
            warm_usd=warm_usd if llm else None,
            restart_usd=restart_usd if llm else None,
        )
        print(
            f"{name} {shift:8s} seed {seed}: best cold {cold.best_score:.4f}, warm "
            f"{warm.best_score:.4f}, restart {restart.best_score:.4f}; to {target:.4f}: cold "
            f"{cold_evaluations}, warm {warm_evaluations}, restart {restart_evaluations} "
            f"evaluations (x{comparison.speedup:.2f})",
            flush=True,
        )
        comparisons.append(comparison)
    return comparisons


def summarize(comparisons: list[Comparison]) -> list[dict[str, object]]:
    """Per example and shift: evaluations to the target summed over seeds, and the ratio."""
    rows: list[dict[str, object]] = []
    for name in dict.fromkeys(c.example for c in comparisons):
        for shift in ("workload", "hardware"):
            group = [c for c in comparisons if c.example == name and c.shift == shift]
            missed = [c.seed for c in group if c.warm_evaluations is None]
            cold = sum(c.cold_evaluations or 0 for c in group)
            warm = sum(c.warm_evaluations or 0 for c in group)
            restart_missed = [c.seed for c in group if c.restart_evaluations is None]
            restart = sum(c.restart_evaluations or 0 for c in group)
            usd = [c for c in group if c.cold_usd is not None and c.warm_usd is not None]
            rows.append(
                {
                    "example": name,
                    "shift": shift,
                    "seeds": len(group),
                    "seed_score": round(sum(c.seed_score for c in group) / len(group), 4),
                    "a_best_on_b": round(sum(c.a_best_on_b for c in group) / len(group), 4),
                    "cold_best": round(sum(c.cold_best for c in group) / len(group), 4),
                    "warm_best": round(sum(c.warm_best for c in group) / len(group), 4),
                    "restart_best": round(sum(c.restart_best for c in group) / len(group), 4),
                    "cold_evaluations": cold,
                    "warm_evaluations": warm,
                    "restart_evaluations": None if restart_missed else restart,
                    "speedup": 0.0 if missed or not warm else round(cold / warm, 2),
                    "warm_missed_seeds": missed,
                    "cold_usd": round(sum(c.cold_usd or 0.0 for c in usd), 6) if usd else None,
                    "warm_usd": round(sum(c.warm_usd or 0.0 for c in usd), 6) if usd else None,
                }
            )
    return rows


def render_markdown(
    rows: list[dict[str, object]], comparisons: list[Comparison], meta: dict[str, object]
) -> str:
    lines = [
        "# Warm start vs cold start",
        "",
        f"{meta['date']} on {meta['machine']}; {meta['mutator']} mutator; seeds "
        f"{meta['seeds']}; {meta['evaluations_a']} evaluations on A, "
        f"{meta['evaluations_b']} per run on B; {'--quick' if meta['quick'] else 'full'} run, "
        f"{meta['wall_minutes']} min.",
        f"Target: {REACH_FRACTION:.0%} of the cold start's final best. Evaluations and USD "
        "to reach it are summed over seeds; scores are means. Cold: from the seed policy. "
        "Warm: from A's best with A's archive, as the operator retunes. Restart: from A's "
        "best alone. Speedup: cold over warm evaluations.",
        "",
        "| example | shift | seed policy on B | A's best on B | cold best | warm best "
        "| restart best | cold evaluations | warm evaluations | restart evaluations | speedup "
        "| cold USD | warm USD |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        missed = row["warm_missed_seeds"]
        speedup = f"{row['speedup']}x" + (f" (warm missed seeds {missed})" if missed else "")
        usd = f"{row['cold_usd']} | {row['warm_usd']}" if row["cold_usd"] is not None else "- | -"
        restart = row["restart_evaluations"]
        lines.append(
            f"| {row['example']} | {row['shift']} | {row['seed_score']} | {row['a_best_on_b']} "
            f"| {row['cold_best']} | {row['warm_best']} | {row['restart_best']} "
            f"| {row['cold_evaluations']} | {row['warm_evaluations']} "
            f"| {'not reached' if restart is None else restart} | {speedup} | {usd} |"
        )
    lines += [
        "",
        "Per seed:",
        "",
        "| example | shift | seed | best on A | warm programs | target | cold evaluations "
        "| warm evaluations | restart evaluations | speedup |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        lines.append(
            f"| {c.example} | {c.shift} | {c.seed} | {c.a_best:.4f} | {c.warm_programs} "
            f"| {c.target:.4f} | {c.cold_evaluations} | {c.warm_evaluations} "
            f"| {c.restart_evaluations} | {c.speedup:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, shorter runs")
    parser.add_argument("--mutator", choices=["builtin", "llm"], default="builtin")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the plan's seeds")
    parser.add_argument("--evaluations", type=int, help="override the evaluations per run")
    parser.add_argument("--examples", nargs="+", choices=sorted(EXAMPLES), default=None)
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "warm_start")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    # Stopped with SIGTERM or SIGHUP: unwind, so the model servers and workers it started
    # stop too.
    install_signal_handlers()
    plan = QUICK if args.quick else FULL
    plan = Plan(
        seeds=args.seeds or plan.seeds,
        evaluations_a=args.evaluations or plan.evaluations_a,
        evaluations_b=args.evaluations or plan.evaluations_b,
    )
    llm = args.mutator == "llm"
    started = time.monotonic()
    comparisons: list[Comparison] = []
    for name in args.examples or sorted(EXAMPLES):
        for seed in plan.seeds:
            comparisons += compare(name, EXAMPLES[name], seed, plan, llm, args.work_dir)
    rows = summarize(comparisons)
    speedup = min(float(row["speedup"]) for row in rows)  # type: ignore[arg-type]
    meta: dict[str, object] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, "
        f"Python {platform.python_version()}",
        "mutator": args.mutator,
        "quick": args.quick,
        **asdict(plan),
        "wall_minutes": round((time.monotonic() - started) / 60, 1),
    }
    stem = "warm_start_llm" if llm else "warm_start"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "meta": meta,
        "min_warm_speedup": speedup,
        "rows": rows,
        "runs": [{**asdict(c), "speedup": round(c.speedup, 3)} for c in comparisons],
    }
    (args.results_dir / f"{stem}.json").write_text(json.dumps(document, indent=2) + "\n")
    markdown = render_markdown(rows, comparisons, meta)
    (args.results_dir / f"{stem}.md").write_text(markdown)
    print(markdown)
    print(f"min_warm_speedup={speedup:.2f}")


if __name__ == "__main__":
    main()
