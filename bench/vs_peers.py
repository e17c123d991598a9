"""retune against its peers, OpenEvolve, LEVI and GEPA: the same problems, models,
evaluator and USD budget.

For every problem and seed, each framework searches from the problem's seed policy with
its own fresh stand-in model server (``mutation_server.py``: models ``small`` and
``large`` at the same prices for all), scoring candidates with the same evaluator in
retune's sandbox, with the same USD budget (``peer_runs.py`` and ``peer_frameworks.py``
run them). retune runs with
the problem's target settings and its LLM tiers (``small`` mutates, ``large`` makes
initial-population rewrites and paradigm shifts); each peer runs in a venv of its own
at its documented defaults except the endpoint, the models (its cheap role on ``small``,
its strong role on ``large``) and the budget.

Reported per problem and framework: mean best score over seeds, USD spent, the USD it
needed to reach each peer's mean best (on its cost-vs-score curve: the best score written
by each spend, mean over seeds), wall time, evaluations, failed evaluations and calls
that gave the search no evaluable program. The cost ratio for a peer is the USD the peer
needed to reach its own mean best over the USD retune needed to reach the same score
(0 when retune's curve never reaches it). The curves are in
``bench/results/vs_peers.html``.

    .venv/bin/python bench/vs_peers.py [--quick] [--seeds 0 1 2] [--budget-usd 0.1]

Writes ``bench/results/vs_peers.{md,json,html}``; the last line printed is
``min_cost_ratio_openevolve=<x> min_cost_ratio_levi=<y> min_score_delta=<z>`` (the
smallest delta over every peer run), the line before it ``min_cost_ratio_gepa=<w>``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peer_frameworks import PEERS, peer_python, run_gepa, run_levi, run_openevolve
from peer_runs import PROBLEMS, SCORE_TOLERANCE, Plan, Run, run_retune, usd_to_reach
from retune_search import Setup, load_setup

from tests.cluster.processes import install_signal_handlers

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
PEER_RUNNERS: dict[str, Callable[[str, Setup, int, Plan, Path], Run]] = {
    "openevolve": run_openevolve,
    "levi": run_levi,
    "gepa": run_gepa,
}
PEER_TITLES = {"openevolve": "OpenEvolve", "levi": "LEVI", "gepa": "GEPA"}
DEFAULT_PEERS = list(PEER_RUNNERS)
HEADLINE_PEERS = ["openevolve", "levi"]  # the last line's ratios; any other peer's print above it
# retune as configured by each target, and prototypes of changes to its defaults, as
# patches of spec.search (peer_runs.with_search). The first one run is the headline.
RETUNE_VARIANTS: dict[str, dict[str, Any]] = {
    "retune": {},
    # No strong-tier calls for the initial population: it is diversified by the cheap tier.
    "retune-no-initial-strong": {"tiering": {"initial_seeds": 0}},
    # Without the free start (spec.search.freeStart: a search of the built-in edits, at
    # most 200 evaluations on top of the guard, before the models' and apart from it).
    "retune-no-free-start": {"free_start": 0},
}

QUICK = Plan(
    seeds=[0, 1, 2],
    budget_usd=0.10,
    retune_max_evaluations=600,
    openevolve_max_iterations=2000,
    peer_max_evaluations=2000,
)
FULL = Plan(
    seeds=[0, 1, 2, 3, 4],
    budget_usd=0.50,
    retune_max_evaluations=3000,
    openevolve_max_iterations=10000,
    peer_max_evaluations=10000,
)

__all__ = ["PROBLEMS", "RESULTS", "usd_to_reach"]  # what the other benchmarks import


# -- cost-vs-score curves --------------------------------------------------------------------
Curve = list[tuple[float, float]]  # (USD, mean over seeds of the best score written by then)


def mean_curve(runs: list[Run]) -> Curve:
    """The framework's cost-vs-score curve: at each spend at which some run wrote a
    program, the mean over runs of the best score each had written by then (a run that
    ended earlier keeps its final best)."""
    spends = sorted({0.0, *(usd for run in runs for usd, _, _ in run.points)})
    curve = []
    for spend in spends:
        bests = [
            max((s for usd, _, s in run.points if usd <= spend), default=run.seed_score)
            for run in runs
        ]
        curve.append((spend, statistics.fmean(bests)))
    return curve


def usd_on_curve(curve: Curve, score: float) -> float | None:
    """The first spend at which the curve reaches ``score``; None if it never does."""
    return next((usd for usd, s in curve if s >= score - SCORE_TOLERANCE), None)


# -- summary ---------------------------------------------------------------------------------
@dataclass
class FrameworkSummary:
    """One framework on one problem, means over seeds."""

    problem: str
    framework: str
    mean_best: float
    usd: float
    usd_to_peer_best: dict[str, float | None]  # peer -> USD on this curve to its mean best
    wall_seconds: float
    evaluations: float
    failed_evaluations: float
    calls: float
    no_program_calls: float
    tokens: float


@dataclass
class PeerComparison:
    """retune (a variant) against one peer on one problem."""

    problem: str
    peer: str
    retune: str
    peer_best: float
    retune_best: float
    score_delta: float  # retune mean best - peer mean best
    peer_usd_to_its_best: float  # on the peer's mean curve
    retune_usd_to_it: float | None  # on retune's mean curve; None: never reached
    # 0: retune never reached it; inf: retune reached it without a paid call, the peer
    # paid; None: both got it for free
    cost_ratio: float | None
    seeds_reached: int  # seeds in which retune reached the peer's best of that seed
    seeds: int


def framework_rank(name: str) -> int:
    """Where ``name`` comes in the report's tables: the peers first, retune's variants after."""
    order = [*PEERS, *RETUNE_VARIANTS]
    return order.index(name) if name in order else len(order)


def summarize(
    problem: str, runs: list[Run], peers: list[str], variants: list[str]
) -> tuple[list[FrameworkSummary], list[PeerComparison]]:
    by_framework: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: framework_rank(r.framework)):
        by_framework.setdefault(run.framework, []).append(run)
    curves = {name: mean_curve(group) for name, group in by_framework.items()}
    peer_bests = {p: statistics.fmean(r.best_score for r in by_framework[p]) for p in peers}

    def mean(group: list[Run], value: Callable[[Run], float]) -> float:
        return round(statistics.fmean(value(run) for run in group), 6)

    frameworks = [
        FrameworkSummary(
            problem=problem,
            framework=name,
            mean_best=mean(group, lambda r: r.best_score),
            usd=mean(group, lambda r: r.usd),
            usd_to_peer_best={p: usd_on_curve(curves[name], peer_bests[p]) for p in peers},
            wall_seconds=mean(group, lambda r: r.wall_seconds),
            evaluations=mean(group, lambda r: r.evaluations),
            failed_evaluations=mean(group, lambda r: r.failed_evaluations),
            calls=mean(group, lambda r: r.calls),
            no_program_calls=mean(group, lambda r: r.no_program_calls),
            tokens=mean(group, lambda r: r.total_tokens),
        )
        for name, group in by_framework.items()
    ]
    comparisons = []
    for variant in variants:
        ours = {r.seed: r for r in by_framework[variant]}
        retune_best = statistics.fmean(r.best_score for r in ours.values())
        for peer in peers:
            theirs = {r.seed: r for r in by_framework[peer]}
            target = peer_bests[peer]
            peer_usd = usd_on_curve(curves[peer], target) or 0.0
            retune_usd = usd_on_curve(curves[variant], target)
            if retune_usd is None:
                ratio: float | None = 0.0
            elif retune_usd > 0:
                ratio = round(peer_usd / retune_usd, 3)
            elif peer_usd > 0:
                ratio = math.inf  # retune's free edits reached what the peer paid for
            else:
                ratio = None  # the seed policy already scores it: both free
            reached = sum(
                ours[seed].usd_to_reach(run.best_score) is not None for seed, run in theirs.items()
            )
            comparisons.append(
                PeerComparison(
                    problem=problem,
                    peer=peer,
                    retune=variant,
                    peer_best=round(target, 6),
                    retune_best=round(retune_best, 6),
                    score_delta=round(retune_best - target, 6),
                    peer_usd_to_its_best=round(peer_usd, 6),
                    retune_usd_to_it=None if retune_usd is None else round(retune_usd, 6),
                    cost_ratio=ratio,
                    seeds_reached=reached,
                    seeds=len(theirs),
                )
            )
    return frameworks, comparisons


def headline(
    comparisons: list[PeerComparison], peers: list[str], variant: str
) -> tuple[dict[str, float], float]:
    """(smallest cost ratio per peer, smallest score delta) across problems; a problem on
    which a peer never beat the seed has no ratio and is left out."""
    mine = [c for c in comparisons if c.retune == variant]
    ratios = {}
    for peer in peers:
        found = [c.cost_ratio for c in mine if c.peer == peer and c.cost_ratio is not None]
        ratios[peer] = min(found) if found else float("nan")
    return ratios, min(c.score_delta for c in mine)


def frameworks_by_problem(runs: list[Run]) -> dict[str, set[str]]:
    """The frameworks (peers and retune variants) with a run on each problem, problems
    in sorted order."""
    there: dict[str, set[str]] = {}
    for run in runs:
        there.setdefault(run.problem, set()).add(run.framework)
    return {problem: there[problem] for problem in sorted(there)}


def absent_peers(runs: list[Run], peers: list[str]) -> list[str]:
    """The report's line naming the peers with no run on a problem ([] if none)."""
    absent = [
        f"{PEER_TITLES[peer]} on {problem}"
        for problem, there in frameworks_by_problem(runs).items()
        for peer in peers
        if peer not in there
    ]
    if not absent:
        return []
    return [f"Not run, so not compared (nor in the last line's minimum): {'; '.join(absent)}."]


def titles(names: list[str]) -> str:
    """``A``, ``A and B``, ``A, B and C``."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def money(value: float | None) -> str:
    return "never" if value is None else f"{value:.4f}"


def render_markdown(
    frameworks: list[FrameworkSummary],
    comparisons: list[PeerComparison],
    runs: list[Run],
    plan: Plan,
    meta: dict[str, Any],
) -> str:
    peers = meta["peers"]
    lines = [
        "# retune vs " + titles([PEER_TITLES[p] for p in peers]),
        "",
        f"{meta['date']} on {meta['machine']}; "
        + ", ".join(f"{PEER_TITLES[p]} {PEERS[p].version}" for p in peers)
        + f"; budget ${plan.budget_usd} per run; seeds {plan.seeds}; "
        f"{'--quick' if meta['quick'] else 'full'} run, "
        + (
            "re-rendered from runs.json."
            if meta["wall_minutes"] is None
            else f"{meta['wall_minutes']} min."
        ),
        "Means over seeds. USD to a peer's mean best: the first spend at which this "
        "framework's cost-vs-score curve (best score written by then, mean over seeds) "
        "reaches it. No-program calls: answers that gave the search nothing new to "
        "evaluate (no program, a repeat, a diff that did not apply).",
        *absent_peers(runs, peers),
        "",
        "| problem | framework | mean best | USD | "
        + " | ".join(f"USD to {PEER_TITLES[p]}'s mean best" for p in peers)
        + " | wall s | evaluations | failed evaluations | calls | no-program calls | tokens |",
        "|---|---|---:|---:|" + "---:|" * len(peers) + "---:|---:|---:|---:|---:|---:|",
    ]
    for f in frameworks:
        reach = " | ".join(
            money(f.usd_to_peer_best[p]) if p in f.usd_to_peer_best else "not run" for p in peers
        )
        lines.append(
            f"| {f.problem} | {f.framework} | {f.mean_best:.4f} | {f.usd:.4f} | {reach} | "
            f"{f.wall_seconds:.0f} | {f.evaluations:.1f} | {f.failed_evaluations:.1f} | "
            f"{f.calls:.1f} | {f.no_program_calls:.1f} | {f.tokens:,.0f} |"
        )
    lines += [
        "",
        "Cost ratio: the peer's USD to its mean best over retune's USD to the same score "
        "(0: retune's curve never reaches it; free: retune reaches it before any paid call).",
        "",
        "| problem | peer | retune | peer mean best | retune mean best | Δ best | peer USD to "
        "its best | retune USD to it | cost ratio | seeds where retune reached the peer's best |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in comparisons:
        if c.cost_ratio is None:
            ratio = "n/a (free for both)"
        elif math.isinf(c.cost_ratio):
            ratio = "free for retune"
        else:
            ratio = f"{c.cost_ratio}x"
        lines.append(
            f"| {c.problem} | {PEER_TITLES[c.peer]} | {c.retune} | {c.peer_best:.4f} | "
            f"{c.retune_best:.4f} | {c.score_delta:+.4f} | {c.peer_usd_to_its_best:.4f} | "
            f"{money(c.retune_usd_to_it)} | {ratio} | {c.seeds_reached}/{c.seeds} |"
        )
    lines += [
        "",
        "Per run:",
        "",
        "| problem | seed | framework | best | USD (own count) | calls | no-program calls (USD) "
        "| evaluations | failed | wall s | stopped by |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        own = "" if run.own_usd is None else f" ({run.own_usd:.4f})"
        lines.append(
            f"| {run.problem} | {run.seed} | {run.framework} | {run.best_score:.4f} | "
            f"{run.usd:.4f}{own} | {run.calls} | {run.no_program_calls} "
            f"({run.no_program_usd:.4f}) | {run.evaluations} | {run.failed_evaluations} | "
            f"{run.wall_seconds} | {run.stop} |"
        )
    notes = [f"- {r.framework} {r.problem} seed {r.seed}: {n}" for r in runs for n in r.notes]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def plot_curves(runs: list[Run], by_problem: dict[str, set[str]], path: Path) -> None:
    """Each framework's cost-vs-score curve per problem (an HTML page; plotly.js from its
    CDN, to keep the file small)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    problems = list(by_problem)
    figure = make_subplots(rows=1, cols=len(problems), subplot_titles=problems)
    colours = {"retune": "#1f77b4", "openevolve": "#d62728", "levi": "#2ca02c", "gepa": "#9467bd"}
    for column, problem in enumerate(problems, start=1):
        for framework in sorted(by_problem[problem]):
            curve = mean_curve(
                [r for r in runs if r.problem == problem and r.framework == framework]
            )
            last = max(r.usd for r in runs if r.problem == problem and r.framework == framework)
            xs = [usd for usd, _ in curve] + [last]
            ys = [score for _, score in curve] + [curve[-1][1]]
            figure.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    name=framework,
                    legendgroup=framework,
                    showlegend=column == 1,
                    mode="lines",
                    line={"shape": "hv", "color": colours.get(framework)},
                ),
                row=1,
                col=column,
            )
        figure.update_xaxes(title_text="USD spent", row=1, col=column)
    figure.update_yaxes(title_text="best score written (mean over seeds)", row=1, col=1)
    figure.update_layout(title="Cost vs score: retune and its peers on the stand-in models")
    figure.write_html(path, include_plotlyjs="cdn")


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="$0.10 a run (CI-sized)")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the plan's seeds")
    parser.add_argument("--budget-usd", type=float, help="override the plan's USD per run")
    parser.add_argument("--retune-max-evaluations", type=int, help="override the guard")
    parser.add_argument("--problems", nargs="+", choices=sorted(PROBLEMS), default=None)
    parser.add_argument(
        "--peers",
        nargs="*",
        choices=list(PEERS),
        default=DEFAULT_PEERS,
        help="the peers to run (none: retune alone, whose runs.json can join recorded "
        "peer runs for --from-runs)",
    )
    parser.add_argument(
        "--retune-variants",
        nargs="*",
        choices=sorted(RETUNE_VARIANTS),
        default=["retune"],
        help="retune configurations to run beside the same peer runs (first: headline; "
        "none: the peers alone, for --from-runs)",
    )
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "vs_peers")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--from-runs",
        type=Path,
        nargs="+",
        metavar="RUNS",
        help="report recorded runs instead of running: --work-dirs' runs.json files or "
        "reports' vs_peers.json (their runs), joined; a run recorded twice is refused",
    )
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
        peer_max_evaluations=plan.peer_max_evaluations,
    )
    if args.from_runs:
        runs = recorded_runs(args.from_runs)
        if args.problems:
            runs = [r for r in runs if r.problem in args.problems]
        missing = missing_sides(runs)
        if missing:
            parser.error(
                f"{' '.join(map(str, args.from_runs))} cannot be compared: "
                f"{'; '.join(missing)} (run the other side into a --work-dir of its own and "
                "name both runs.json files)"
            )
        peers = [p for p in PEERS if any(r.framework == p for r in runs)]
        variants = [v for v in RETUNE_VARIANTS if any(r.framework == v for r in runs)]
        report(runs, plan, peers, variants, args, wall_minutes=None)
        return
    peers = [p for p in PEERS if p in args.peers]  # the order of the last line
    started = time.monotonic()
    for peer in peers:
        peer_python(PEERS[peer])  # install before any clock starts
    runs = []
    for problem in args.problems or sorted(PROBLEMS):
        setup = load_setup(PROBLEMS[problem])
        for seed in plan.seeds:
            seed_runs = [PEER_RUNNERS[p](problem, setup, seed, plan, args.work_dir) for p in peers]
            seed_runs += [
                run_retune(v, RETUNE_VARIANTS[v], problem, setup, seed, plan, args.work_dir)
                for v in args.retune_variants
            ]
            for run in seed_runs:
                print(
                    f"{problem} seed {seed} {run.framework}: best {run.best_score:.4f} "
                    f"${run.usd:.4f} {run.calls} calls {run.evaluations} evaluations "
                    f"{run.wall_seconds}s ({run.stop})",
                    flush=True,
                )
            runs += seed_runs
            # Kept as it goes, so a long run that stops early still has what it measured
            # (``--from-runs`` reports it).
            records = [asdict(r) for r in runs]
            (args.work_dir / "runs.json").write_text(json.dumps(records, indent=2) + "\n")
    if not peers or not args.retune_variants:
        print(
            f"runs in {args.work_dir / 'runs.json'}: with the other side's recorded runs, "
            "report them with --from-runs",
            flush=True,
        )
        return
    wall_minutes = round((time.monotonic() - started) / 60, 1)
    report(runs, plan, peers, args.retune_variants, args, wall_minutes)


def recorded_runs(paths: list[Path]) -> list[Run]:
    """The runs recorded in ``paths``, joined: each a ``--work-dir``'s runs.json (a list)
    or a report's vs_peers.json (its ``runs``). The same framework, problem and seed in
    two files is refused, as the report would count it twice."""
    runs: list[Run] = []
    where: dict[tuple[str, str, int], Path] = {}
    for path in paths:
        try:
            document = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"--from-runs {path}: cannot read recorded runs: {exc}") from exc
        records = document.get("runs") if isinstance(document, dict) else document
        if not isinstance(records, list):
            raise SystemExit(
                f"--from-runs {path}: neither a runs.json list nor a report with 'runs'"
            )
        for number, record in enumerate(records):
            try:
                run = Run(**record)
            except TypeError as exc:  # a field missing or unknown: not a run record
                raise SystemExit(
                    f"--from-runs {path}: record {number} is not a run record: {exc}"
                ) from exc
            run.points = [(usd, net, score) for usd, net, score in run.points]  # JSON lists
            key = (run.framework, run.problem, run.seed)
            if key in where:
                raise SystemExit(
                    f"--from-runs: {run.framework} on {run.problem} seed {run.seed} is "
                    f"recorded in both {where[key]} and {path}; name one of them"
                )
            where[key] = path
            runs.append(run)
    return runs


def missing_sides(runs: list[Run]) -> list[str]:
    """What recorded runs lack for a comparison: per problem, a side with no run at all
    (a peers-only ``--work-dir`` not yet joined with retune's, or the other way round)."""
    if not runs:
        return ["no runs"]
    missing = []
    for problem, there in frameworks_by_problem(runs).items():
        if not there & set(PEERS):
            missing.append(f"{problem} has no peer run")
        if not there & set(RETUNE_VARIANTS):
            missing.append(f"{problem} has no retune run")
    return missing


def report(
    runs: list[Run],
    plan: Plan,
    peers: list[str],
    variants: list[str],
    args: argparse.Namespace,
    wall_minutes: float | None,
) -> None:
    """Summarize ``runs``, write the results and print the tables and the last line."""
    # In a fixed order, whatever order the runs were recorded (or joined) in: by problem
    # and seed, the peers first, retune's variants after.
    runs = sorted(runs, key=lambda r: (r.problem, r.seed, framework_rank(r.framework)))
    by_problem = frameworks_by_problem(runs)
    frameworks: list[FrameworkSummary] = []
    comparisons: list[PeerComparison] = []
    for problem, there in by_problem.items():
        # A peer (or variant) not run on a problem is left out of its tables and of the
        # last line's minimum there, and named under the report's header.
        these = [r for r in runs if r.problem == problem]
        found = summarize(
            problem, these, [p for p in peers if p in there], [v for v in variants if v in there]
        )
        frameworks += found[0]
        comparisons += found[1]
    ratios, min_delta = headline(comparisons, peers, variants[0])
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, "
        f"Python {platform.python_version()}",
        "peers": peers,
        "versions": {p: PEERS[p].version for p in peers},
        "quick": args.quick,
        "retune_variants": {v: RETUNE_VARIANTS[v] for v in variants},
        "wall_minutes": wall_minutes,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "meta": meta,
        "plan": asdict(plan),
        **{f"min_cost_ratio_{p}": r for p, r in ratios.items()},
        "min_score_delta": min_delta,
        "frameworks": [asdict(f) for f in frameworks],
        "comparisons": [asdict(c) for c in comparisons],
        "runs": [asdict(r) for r in runs],
    }
    (args.results_dir / "vs_peers.json").write_text(json.dumps(document, indent=2) + "\n")
    markdown = render_markdown(frameworks, comparisons, runs, plan, meta)
    (args.results_dir / "vs_peers.md").write_text(markdown)
    plot_curves(runs, by_problem, args.results_dir / "vs_peers.html")
    print(markdown)
    others = [p for p in peers if p not in HEADLINE_PEERS]
    if others:
        print(" ".join(f"min_cost_ratio_{p}={ratios[p]:.3f}" for p in others))
    print(
        " ".join(f"min_cost_ratio_{p}={ratios[p]:.3f}" for p in peers if p in HEADLINE_PEERS)
        + f" min_score_delta={min_delta:.4f}"
    )


if __name__ == "__main__":
    main()
