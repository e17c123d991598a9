"""retune against OpenEvolve: the same problems, models, evaluator and USD budget.

For every problem and seed, each framework searches from the problem's seed policy with
its own fresh stand-in model server (``mutation_server.py``: models ``small`` and
``large`` at the same prices for both), scoring candidates with the same evaluator in
retune's sandbox. retune runs with the problem's target settings and its LLM tiers
(``small`` mutates, ``large`` makes paradigm shifts); OpenEvolve runs in a venv of its own
with its documented default configuration, except for the endpoint, the models (``small``
and ``large`` in place of its two default models, at its default weights 0.8/0.2), the
problem description in its system message and the budget. OpenEvolve has no USD budget:
its run is stopped once the server has served the budget (``openevolve_runner.py``).

Reported per problem: each framework's best score, USD and tokens spent (from the
server's ``/stats``), and the USD each needed to reach OpenEvolve's final best score --
the spend up to the call that wrote the first program scoring at least that much. The
cost ratio is OpenEvolve's USD to reach its best over retune's, summed over seeds; if
retune never reached it in some seed, the ratio is reported as 0 and the miss is named.

    .venv/bin/python bench/vs_openevolve.py [--quick] [--seeds 0 1 2] [--budget-usd 0.1]

Writes ``bench/results/vs_openevolve.{md,json}``; the last line printed is
``min_cost_ratio=<x> min_score_delta=<y>``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from retune_search import Setup, load_setup, run_search, usd_when_written
from server_process import MutationServerProcess, call_usd, program_digest, usd_of_stats

from tests.cluster.processes import install_signal_handlers

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OPENEVOLVE_VENV = BENCH / ".venv-openevolve"
OPENEVOLVE_VERSION = "0.4.0"
RESULTS = BENCH / "results"
PROBLEMS = {
    "01-cache-eviction": REPO / "examples" / "01-cache-eviction" / "target.yaml",
    "02-request-routing": REPO / "examples" / "02-request-routing" / "target.yaml",
    "03-autoscaling": BENCH / "problems" / "03-autoscaling" / "target.yaml",
}
SCORE_TOLERANCE = 1e-9  # evaluators round scores to 6 digits
# retune as configured by each target, and prototypes of changes to its defaults, as
# patches of spec.search.tiering. The first one run is the headline.
RETUNE_VARIANTS: dict[str, dict[str, int]] = {
    "retune": {},
    # No strong-tier calls for the initial population: it is diversified by the cheap tier.
    "retune-no-initial-strong": {"initial_seeds": 0},
}
OPENEVOLVE_DEFAULT_SYSTEM_MESSAGE = (
    "You are an expert coder helping to improve programs through evolution."
)


@dataclass(frozen=True)
class Plan:
    """How much each run may do."""

    seeds: list[int]
    budget_usd: float  # OpenEvolve stops once it has spent this; retune may then spend
    # what OpenEvolve did (a little more than this: answers in flight when it stops count)
    retune_max_evaluations: int  # a wall-time guard; USD is meant to be the binding limit
    openevolve_max_iterations: int  # likewise a guard: the USD watcher stops it first


QUICK = Plan(
    seeds=[0, 1, 2], budget_usd=0.015, retune_max_evaluations=100, openevolve_max_iterations=200
)
FULL = Plan(
    seeds=[0, 1, 2], budget_usd=0.05, retune_max_evaluations=600, openevolve_max_iterations=2000
)


@dataclass
class Run:
    """One framework's search on one problem with one seed."""

    framework: str
    problem: str
    seed: int
    seed_score: float
    best_score: float
    usd: float  # what the server served, at its prices
    tokens: dict[str, dict[str, int]]
    calls: int
    wasted_calls: int  # answers with no program, or a program an earlier answer wrote
    wasted_usd: float
    evaluations: int
    wall_seconds: float
    stop: str
    # (USD spent when the program was written, the same without wasted calls, its score),
    # one per scored program
    points: list[tuple[float, float, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return sum(u["prompt_tokens"] + u["completion_tokens"] for u in self.tokens.values())

    def usd_to_reach(self, score: float, net: bool = False) -> float | None:
        return usd_to_reach(self.points, score, net)


def usd_to_reach(
    points: list[tuple[float, float, float]], score: float, net: bool = False
) -> float | None:
    """The spend when the first program scoring at least ``score`` was written, from a
    run's (USD, USD without wasted calls, score) points; with ``net``, not counting wasted
    calls. None if no program scored that much."""
    reached = [
        net_usd if net else usd for usd, net_usd, s in points if s >= score - SCORE_TOLERANCE
    ]
    return min(reached) if reached else None


# -- OpenEvolve ------------------------------------------------------------------------------
def openevolve_python(venv: Path = OPENEVOLVE_VENV, version: str = OPENEVOLVE_VERSION) -> Path:
    """The OpenEvolve venv's interpreter, creating the venv and installing it if needed."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import openevolve; print(openevolve.__version__)"]
    if python.exists():
        found = subprocess.run(probe, capture_output=True, text=True, check=False)
        if found.returncode == 0 and found.stdout.strip() == version:
            return python
    print(f"bootstrapping OpenEvolve {version} in {venv} ...", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", f"openevolve=={version}"]
    subprocess.run(pip, check=True)
    return python


def openevolve_config(setup: Setup, seed: int, base_url: str, max_iterations: int) -> dict:
    """OpenEvolve's documented default configuration (its ``configs/default_config.yaml``)
    with the endpoint, the models, the problem description, the seed and the cap set."""
    policy = setup.target.spec.policy
    system_message = (
        f"{OPENEVOLVE_DEFAULT_SYSTEM_MESSAGE}\n\n{policy.description.strip()}\n"
        f"The program must define `{policy.entrypoint}` with exactly this signature: "
        f"`{policy.signature}`."
    )
    models = [{"name": "small", "weight": 0.8}, {"name": "large", "weight": 0.2}]
    return {
        "max_iterations": max_iterations,
        "checkpoint_interval": 10,
        "log_level": "INFO",
        "random_seed": seed,
        "diff_based_evolution": True,
        "max_code_length": 10000,
        "llm": {
            "models": models,
            "evaluator_models": models,
            "api_base": base_url,
            "api_key": "no-key",
            "temperature": 0.7,
            "top_p": 0.95,
            "max_tokens": 4096,
            "timeout": 60,
            "retries": 3,
            "retry_delay": 5,
        },
        "prompt": {
            "system_message": system_message,
            "evaluator_system_message": "You are an expert code reviewer.",
            "num_top_programs": 3,
            "num_diverse_programs": 2,
            "use_template_stochasticity": True,
            "include_artifacts": True,
            "max_artifact_bytes": 20480,
        },
        "database": {
            "in_memory": True,
            "population_size": 1000,
            "archive_size": 100,
            "num_islands": 5,
            "migration_interval": 50,
            "migration_rate": 0.1,
            "elite_selection_ratio": 0.1,
            "exploration_ratio": 0.2,
            "exploitation_ratio": 0.7,
            "feature_dimensions": ["complexity", "diversity"],
            "feature_bins": 10,
            "diversity_reference_size": 20,
        },
        "evaluator": {
            "timeout": 300,
            "max_retries": 3,
            "cascade_evaluation": True,
            "cascade_thresholds": [0.5, 0.75, 0.9],
            "parallel_evaluations": 4,
            "use_llm_feedback": False,
        },
    }


def run_openevolve(
    python: Path, problem: str, setup: Setup, seed: int, plan: Plan, work: Path
) -> Run:
    run_dir = work / problem / f"openevolve-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / "initial_program.py").write_text(setup.seed_code)
    problem_card = {
        "retune_evaluate": str(Path(sys.executable).with_name("retune-evaluate")),
        "evaluator": str(setup.evaluator_path),
        "entrypoint": setup.entrypoint,
        "limits": setup.limits.model_dump(),
        "context": setup.context.model_dump(mode="json"),
        "log": str(run_dir / "evaluations.jsonl"),
    }
    (run_dir / "problem.json").write_text(json.dumps(problem_card, indent=2))
    with MutationServerProcess(seed=0, fresh_repeats=True) as server:
        config = openevolve_config(setup, seed, server.base_url, plan.openevolve_max_iterations)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        command = [
            str(python),
            str(BENCH / "openevolve_runner.py"),
            str(run_dir),
            "--server-root",
            server.root,
            "--max-usd",
            str(plan.budget_usd),
        ]
        started = time.monotonic()
        with (run_dir / "openevolve.log").open("w") as log:
            subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)
        wall = time.monotonic() - started
        stats, calls = server.stats(), server.calls()
    result = json.loads((run_dir / "result.json").read_text())
    evaluations = [
        json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()
    ]
    seed_digest = program_digest(setup.seed_code)
    points, unmatched = openevolve_points(evaluations, calls, seed_digest)
    notes = [f"{unmatched} evaluated programs not traced to a call"] if unmatched else []
    return Run(
        framework="openevolve",
        problem=problem,
        seed=seed,
        seed_score=next(e["score"] for e in evaluations if e["sha256"] == seed_digest),
        best_score=float(result["best_score"]),
        usd=usd_of_stats(stats),
        tokens=stats,
        calls=len(calls),
        **wasted(calls),
        evaluations=len(evaluations),
        wall_seconds=round(wall, 1),
        stop=f"{result['iterations']} iterations"
        + (", USD budget reached" if result["stopped_by_budget"] else ""),
        points=points,
        notes=notes,
    )


def openevolve_points(
    evaluations: list[dict[str, Any]], calls: list[dict[str, Any]], seed_digest: str
) -> tuple[list[tuple[float, float, float]], int]:
    """(USD spent when written, the same without wasted calls, score) per program
    OpenEvolve evaluated.

    A program is traced to the first call whose answer wrote exactly its text; the spend
    is every call up to and including that one. The seed program cost nothing. A program
    no call wrote (a diff that applied only in part) is left out and counted.
    """
    written: dict[str, tuple[float, float]] = {seed_digest: (0.0, 0.0)}
    total = net = 0.0
    for call in calls:
        usd = call_usd(call["model"], call["prompt_tokens"], call["completion_tokens"])
        digest = call["program_sha256"]
        total += usd
        if digest and digest not in written:
            net += usd
            written[digest] = (total, net)
    points, unmatched = [], 0
    for evaluation in evaluations:
        spent = written.get(evaluation["sha256"])
        if spent is None:
            unmatched += 1
        else:
            points.append((*spent, float(evaluation["score"])))
    return points, unmatched


# -- retune ----------------------------------------------------------------------------------
def with_tiering(setup: Setup, patch: dict[str, int]) -> Setup:
    """``setup`` with ``spec.search.tiering`` patched (a variant of retune's defaults)."""
    if not patch:
        return setup
    spec = setup.target.spec
    tiering = spec.search.tiering.model_copy(update=patch)
    search = spec.search.model_copy(update={"tiering": tiering})
    target = setup.target.model_copy(update={"spec": spec.model_copy(update={"search": search})})
    return replace(setup, target=target)


def run_retune(
    variant: str, problem: str, setup: Setup, seed: int, plan: Plan, max_usd: float, work: Path
) -> Run:
    output = work / problem / f"{variant}-seed{seed}"
    shutil.rmtree(output, ignore_errors=True)
    setup = with_tiering(setup, RETUNE_VARIANTS[variant])
    with MutationServerProcess(seed=0, fresh_repeats=True) as server:
        started = time.monotonic()
        result = run_search(
            setup,
            output,
            seed=seed,
            max_evaluations=plan.retune_max_evaluations,
            max_usd=max_usd,
            llm_base_url=server.base_url,
        )
        wall = time.monotonic() - started
        stats, calls = server.stats(), server.calls()
    notes = []
    served = usd_of_stats(stats)
    if abs(served - result.usd) > 1e-9:
        notes.append(f"retune's ledger says ${result.usd:.6f}, the server ${served:.6f}")
    return Run(
        framework=variant,
        problem=problem,
        seed=seed,
        seed_score=result.seed_score,
        best_score=result.best_score,
        usd=served,
        tokens=stats,
        calls=len(calls),
        **wasted(calls),
        evaluations=result.evaluations,
        wall_seconds=round(wall, 1),
        stop=result.state.stop_reason or "",
        points=usd_when_written(result),
        notes=notes,
    )


def wasted(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Calls that bought nothing new: no program in the answer, or one already written."""
    seen: set[str] = set()
    count, usd = 0, 0.0
    for call in calls:
        digest = call["program_sha256"]
        if digest is None or digest in seen:
            count += 1
            usd += call_usd(call["model"], call["prompt_tokens"], call["completion_tokens"])
        elif digest:
            seen.add(digest)
    return {"wasted_calls": count, "wasted_usd": round(usd, 6)}


# -- summary ---------------------------------------------------------------------------------
@dataclass
class ProblemSummary:
    """OpenEvolve against one retune variant on one problem, over the seeds."""

    problem: str
    retune: str  # the variant
    seed_score: float
    openevolve_best: float
    retune_best: float
    score_delta: float  # retune best - OpenEvolve best, means over seeds
    openevolve_usd: float
    retune_usd: float
    openevolve_tokens: int
    retune_tokens: int
    openevolve_wasted_usd: float
    retune_wasted_usd: float
    openevolve_usd_to_target: float  # summed over seeds; target = OpenEvolve's final best
    retune_usd_to_target: float | None  # None: retune missed the target in some seed
    cost_ratio: float | None  # 0: retune missed; None: OpenEvolve never beat the seed
    cost_ratio_without_waste: float | None  # the same, neither side paying wasted calls
    retune_missed_seeds: list[int]


def cost_to_target(
    theirs: dict[int, Run], ours: dict[int, Run], net: bool = False
) -> tuple[float, float | None, float | None, list[int]]:
    """USD each side needed to reach OpenEvolve's final best, summed over seeds, the ratio
    (0 if retune missed it in a seed, None if OpenEvolve never beat the seed) and the
    seeds retune missed it in."""
    oe_reach, rt_reach, missed = 0.0, 0.0, []
    for seed in sorted(theirs):
        target = theirs[seed].best_score
        rt = ours[seed].usd_to_reach(target, net)
        oe_reach += theirs[seed].usd_to_reach(target, net) or 0.0
        if rt is None:
            missed.append(seed)
        else:
            rt_reach += rt
    if missed:
        return oe_reach, None, 0.0, missed
    if rt_reach > 0:
        return oe_reach, rt_reach, oe_reach / rt_reach, missed
    return oe_reach, rt_reach, None, missed  # both reached it for free


def summarize(problem: str, variant: str, runs: list[Run]) -> ProblemSummary:
    ours = {r.seed: r for r in runs if r.framework == variant}
    theirs = {r.seed: r for r in runs if r.framework == "openevolve"}
    seeds = sorted(theirs)
    oe_reach, rt_reach, ratio, missed = cost_to_target(theirs, ours)
    net_ratio = cost_to_target(theirs, ours, net=True)[2]

    def mean(runs: dict[int, Run], value: str) -> float:
        return statistics.fmean(float(getattr(runs[s], value)) for s in seeds)

    return ProblemSummary(
        problem=problem,
        retune=variant,
        seed_score=theirs[seeds[0]].seed_score,
        openevolve_best=round(mean(theirs, "best_score"), 6),
        retune_best=round(mean(ours, "best_score"), 6),
        score_delta=round(mean(ours, "best_score") - mean(theirs, "best_score"), 6),
        openevolve_usd=round(mean(theirs, "usd"), 6),
        retune_usd=round(mean(ours, "usd"), 6),
        openevolve_tokens=round(mean(theirs, "total_tokens")),
        retune_tokens=round(mean(ours, "total_tokens")),
        openevolve_wasted_usd=round(mean(theirs, "wasted_usd"), 6),
        retune_wasted_usd=round(mean(ours, "wasted_usd"), 6),
        openevolve_usd_to_target=round(oe_reach, 6),
        retune_usd_to_target=None if rt_reach is None else round(rt_reach, 6),
        cost_ratio=None if ratio is None else round(ratio, 3),
        cost_ratio_without_waste=None if net_ratio is None else round(net_ratio, 3),
        retune_missed_seeds=missed,
    )


def headline(summaries: list[ProblemSummary], variant: str) -> tuple[float, float]:
    """(smallest cost ratio, smallest score delta) across problems for ``variant``; a
    problem on which OpenEvolve never beat the seed has no ratio and is left out."""
    mine = [s for s in summaries if s.retune == variant]
    ratios = [s.cost_ratio for s in mine if s.cost_ratio is not None]
    return (min(ratios) if ratios else float("nan"), min(s.score_delta for s in mine))


def render_markdown(
    summaries: list[ProblemSummary], runs: list[Run], plan: Plan, meta: dict[str, Any]
) -> str:
    lines = [
        "# retune vs OpenEvolve",
        "",
        f"{meta['date']} on {meta['machine']}; OpenEvolve {meta['openevolve']}; "
        f"budget ${plan.budget_usd} per run; seeds {plan.seeds}; "
        f"{'--quick' if meta['quick'] else 'full'} run, {meta['wall_minutes']} min.",
        "Means over seeds, except the USD to reach OpenEvolve's best (sums over seeds; the "
        "target is each seed's OpenEvolve final best) and the cost ratio (their quotient). "
        "Wasted: calls whose answer held no program, or one an earlier call had written.",
        "",
        "| problem | retune | seed | OpenEvolve best | retune best | Δ best "
        "| OpenEvolve USD (wasted) | retune USD (wasted) | OpenEvolve tokens | retune tokens "
        "| OpenEvolve USD to its best | retune USD to that score | cost ratio "
        "| cost ratio, wasted calls free |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        reach = (
            f"{s.retune_usd_to_target:.4f}"
            if s.retune_usd_to_target is not None
            else f"not reached (seeds {s.retune_missed_seeds})"
        )
        ratio, net = (
            "n/a (OpenEvolve never improved)" if r is None else f"{r}x"
            for r in (s.cost_ratio, s.cost_ratio_without_waste)
        )
        lines.append(
            f"| {s.problem} | {s.retune} | {s.seed_score:.4f} | {s.openevolve_best:.4f} | "
            f"{s.retune_best:.4f} | {s.score_delta:+.4f} | "
            f"{s.openevolve_usd:.4f} ({s.openevolve_wasted_usd:.4f}) | "
            f"{s.retune_usd:.4f} ({s.retune_wasted_usd:.4f}) | {s.openevolve_tokens} | "
            f"{s.retune_tokens} | {s.openevolve_usd_to_target:.4f} | {reach} | {ratio} | {net} |"
        )
    lines += [
        "",
        "Per run:",
        "",
        "| problem | seed | framework | best | USD | calls | wasted calls (USD) | evaluations "
        "| USD to OpenEvolve's best | wall s | stopped by |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    targets = {(r.problem, r.seed): r.best_score for r in runs if r.framework == "openevolve"}
    for run in runs:
        spent = run.usd_to_reach(targets[run.problem, run.seed])
        lines.append(
            f"| {run.problem} | {run.seed} | {run.framework} | {run.best_score:.4f} | "
            f"{run.usd:.4f} | {run.calls} | {run.wasted_calls} ({run.wasted_usd:.4f}) | "
            f"{run.evaluations} | {'never' if spent is None else f'{spent:.4f}'} | "
            f"{run.wall_seconds} | {run.stop} |"
        )
    notes = [f"- {r.framework} {r.problem} seed {r.seed}: {n}" for r in runs for n in r.notes]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller budget (under 10 min)")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the plan's seeds")
    parser.add_argument("--budget-usd", type=float, help="override the plan's USD per run")
    parser.add_argument("--retune-max-evaluations", type=int, help="override the guard")
    parser.add_argument("--problems", nargs="+", choices=sorted(PROBLEMS), default=None)
    parser.add_argument(
        "--retune-variants",
        nargs="+",
        choices=sorted(RETUNE_VARIANTS),
        default=["retune"],
        help="retune configurations to run against the same OpenEvolve runs (first: headline)",
    )
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "vs_openevolve")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    # Stopped with SIGTERM or SIGHUP: unwind, so the model servers and workers it started
    # stop too.
    install_signal_handlers()
    plan = QUICK if args.quick else FULL
    plan = Plan(
        seeds=args.seeds or plan.seeds,
        budget_usd=args.budget_usd or plan.budget_usd,
        retune_max_evaluations=args.retune_max_evaluations or plan.retune_max_evaluations,
        openevolve_max_iterations=plan.openevolve_max_iterations,
    )
    started = time.monotonic()
    python = openevolve_python()
    runs: list[Run] = []
    summaries: list[ProblemSummary] = []
    for problem in args.problems or sorted(PROBLEMS):
        setup = load_setup(PROBLEMS[problem])
        problem_runs = []
        for seed in plan.seeds:
            theirs = run_openevolve(python, problem, setup, seed, plan, args.work_dir)
            problem_runs.append(theirs)
            for variant in args.retune_variants:
                # retune may spend what OpenEvolve actually spent, overshoot included.
                ours = run_retune(variant, problem, setup, seed, plan, theirs.usd, args.work_dir)
                problem_runs.append(ours)
            for run in problem_runs[-1 - len(args.retune_variants) :]:
                print(
                    f"{problem} seed {seed} {run.framework}: best {run.best_score:.4f} "
                    f"${run.usd:.4f} {run.calls} calls {run.evaluations} evaluations "
                    f"{run.wall_seconds}s ({run.stop})",
                    flush=True,
                )
        runs += problem_runs
        summaries += [summarize(problem, v, problem_runs) for v in args.retune_variants]
    min_ratio, min_delta = headline(summaries, args.retune_variants[0])
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, "
        f"Python {platform.python_version()}",
        "openevolve": OPENEVOLVE_VERSION,
        "quick": args.quick,
        "retune_variants": {v: RETUNE_VARIANTS[v] for v in args.retune_variants},
        "wall_minutes": round((time.monotonic() - started) / 60, 1),
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "meta": meta,
        "plan": asdict(plan),
        "min_cost_ratio": min_ratio,
        "min_score_delta": min_delta,
        "problems": [asdict(s) for s in summaries],
        "runs": [asdict(r) for r in runs],
    }
    (args.results_dir / "vs_openevolve.json").write_text(json.dumps(document, indent=2) + "\n")
    markdown = render_markdown(summaries, runs, plan, meta)
    (args.results_dir / "vs_openevolve.md").write_text(markdown)
    print(markdown)
    print(f"min_cost_ratio={min_ratio:.3f} min_score_delta={min_delta:.4f}")


if __name__ == "__main__":
    main()
