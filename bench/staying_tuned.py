"""The value of staying tuned: a season of change for examples/01, in simulation.

Phases (days), each changing the traffic or the nodes under the cache:

1. the recorded profile on ``m6i.xlarge``;
2. a scan-heavy shift (``scan_fraction`` 0.15 -> 0.4);
3. faster hot-set turnover (4x), scans back to normal;
4. the nodes replaced by ``m6i.large`` (half the memory);
5. back to the original traffic on ``m6i.xlarge`` (a context seen before);
6. a key space four times larger on ``r6i.2xlarge``.

Policies compared over the season (each phase's score from the example's own evaluator on
held-out trace seeds, weighted by the phase's length): every static baseline of the
example's README (S3-FIFO's built-in reference included), the policy tuned once on phase
1, continuous tuning, and continuous tuning with the context library.

Continuous tuning is the operator's own controller (:func:`retune.controller.decide`) run
against a simulated clock: the adapters' part (signals, trigger readings, workers, canary
ticks) is played here from the phases' profiles and hardware, and every search and
validation it asks for runs for real (the engine with the local executor, and
:func:`retune.search.validation.validate`). A canary's analysis passes when the canary's
held-out score on the phase is at least ``CANARY_FLOOR`` of the stable's. Without the
library, the controller's library is emptied after each decision.

    .venv/bin/python bench/staying_tuned.py [--quick] [--evaluations N] [--mutator builtin|llm]

Writes ``bench/results/staying_tuned{,_llm}.{json,md,html}`` (the plot is the HTML page); the last line printed is
``continuous_vs_best_static=<ratio> usd_per_retune=<mean>``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from retune_search import SearchResult, Setup, load_setup, run_search
from server_process import MutationServerProcess

from retune.controller import (
    Facts,
    HardwareReading,
    PublishRevision,
    SearchOutcome,
    SearchProgress,
    Signals,
    StartSearch,
    StartValidation,
    ValidationOutcome,
    WatchReading,
    WorkKind,
    WorkReport,
    WorkState,
    decide,
    spec_digests,
)
from retune.evaluate.loader import load_evaluator
from retune.evaluate.local import LocalExecutor
from retune.handlers.jobs import warm_limit
from retune.rollout import CanaryObservation, analysis_needed
from retune.search.builder import validate_best
from retune.search.config import engine_config
from retune.search.ledger import Budget
from retune.signals.analysis import AnalysisReport, AnalysisResult
from retune.signals.metrics import Value
from retune.spec import LibraryStatus, Phase, TargetStatus

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
EXAMPLE = REPO / "examples" / "01-cache-eviction"
TARGET = EXAMPLE / "target.yaml"
XLARGE = {"node.kubernetes.io/instance-type": "m6i.xlarge", "kubernetes.io/arch": "amd64"}
LARGE = {"node.kubernetes.io/instance-type": "m6i.large", "kubernetes.io/arch": "amd64"}
R6I = {"node.kubernetes.io/instance-type": "r6i.2xlarge", "kubernetes.io/arch": "amd64"}
CANARY_FLOOR = 0.98
"""A canary passes its analysis when it scores at least this share of the stable."""
STATIC = (
    ("LRU (seed)", "lru.py", None),
    ("LFU", "lfu.py", None),
    ("LRU + 300 s per access", "lru_frequency.py", None),
    ("scan-resistant hybrid", "scan_resistant.py", None),
    ("S3-FIFO (built-in reference)", "lru.py", "s3fifo"),
)


@dataclass(frozen=True)
class SeasonPhase:
    name: str
    days: float
    workload: dict[str, float]  # replaces these entries of the recorded profile
    hardware: dict[str, str]


PHASES = (
    SeasonPhase("recorded, m6i.xlarge", 7, {}, XLARGE),
    SeasonPhase("scan-heavy", 5, {"scan_fraction": 0.4}, XLARGE),
    SeasonPhase("fast hot-set turnover", 5, {"hot_set_turnover": 2.4}, XLARGE),
    SeasonPhase("m6i.large nodes", 7, {"hot_set_turnover": 2.4}, LARGE),
    SeasonPhase("recorded again (recurring)", 7, {}, XLARGE),
    SeasonPhase("4x key space, r6i.2xlarge", 5, {"key_space": 8_000_000}, R6I),
)


@dataclass(frozen=True)
class Plan:
    evaluations: int  # per search
    holdout_seeds: int  # trace seeds each phase's score averages
    sim_keys: int | None  # the evaluator's scaled key space (None: the target's)
    requests: int | None  # requests per phase of a full evaluation (None: the target's)


QUICK = Plan(evaluations=40, holdout_seeds=1, sim_keys=10_000, requests=40_000)
FULL = Plan(evaluations=150, holdout_seeds=2, sim_keys=None, requests=None)


# -- scoring ---------------------------------------------------------------------------------
class Scorer:
    """Held-out scores of programs per phase, each computed once."""

    def __init__(self, setups: list[Setup], seeds: int) -> None:
        self.setups, self.seeds = setups, seeds
        self.evaluator = load_evaluator(setups[0].evaluator_path)
        self.cache: dict[tuple[str, int, str | None], float] = {}
        self.evaluations = 0
        self.folder = Path(tempfile.mkdtemp(prefix="staying-tuned-"))

    def score(self, code: str, phase: int, reference: str | None = None) -> float:
        key = (hashlib.sha256(code.encode()).hexdigest(), phase, reference)
        if key not in self.cache:
            path = self.folder / f"{key[0][:16]}.py"
            path.write_text(code)
            context = self.setups[phase].context
            params = dict(context.params) | ({"reference": reference} if reference else {})
            scores = [
                self.evaluator.evaluate(
                    str(path),
                    {
                        "workload": dict(context.workload),
                        "hardware": dict(context.hardware),
                        "params": params,
                        "seed": seed,
                    },
                    "holdout",
                )["score"]
                for seed in range(1, self.seeds + 1)
            ]
            self.evaluations += len(scores)
            self.cache[key] = sum(scores) / len(scores)
        return self.cache[key]


# -- the operator's controller on a simulated clock --------------------------------------------
@dataclass
class Retune:
    phase: int
    kind: str  # "search" or "recall"
    trigger: str
    evaluations: int
    usd: float
    wall_seconds: float


@dataclass
class Run:
    """One policy's season: which program ran when, and what retuning cost."""

    name: str
    segments: list[tuple[float, str]] = field(default_factory=list)  # (start hours, code)
    retunes: list[Retune] = field(default_factory=list)
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (hours, reason, msg)


class Searches:
    """Searches by their inputs: the same inputs give the same search (one seed drives
    every random choice), so the runs with and without the library share them."""

    def __init__(self, plan: Plan, work: Path, llm_url: str | None) -> None:
        self.plan, self.work, self.llm_url = plan, work, llm_url
        self.done: dict[str, SearchResult] = {}

    def run(self, setup: Setup, seed: int, warm: list[str]) -> SearchResult:
        """The search (an identical one is not run again)."""
        text = json.dumps([setup.seed_code, warm, setup.context.workload, setup.context.hardware])
        key = hashlib.sha256(f"{text}{seed}".encode()).hexdigest()[:16]
        if key in self.done:
            return self.done[key]
        output = self.work / f"search-{key}"
        result = run_search(
            setup,
            output,
            seed=seed,
            max_evaluations=self.plan.evaluations,
            llm_base_url=self.llm_url,
            warm_programs=warm or None,
        )
        self.done[key] = result
        return result


class Operator:
    """The adapters' side of the operator for one target, played against the phases."""

    def __init__(
        self,
        name: str,
        setups: list[Setup],
        searches: Searches,
        scorer: Scorer,
        *,
        library: bool,
    ) -> None:
        self.run = Run(name)
        self.setups, self.searches, self.scorer, self.library = setups, searches, scorer, library
        self.spec = setups[0].target.spec
        self.seed_code = setups[0].seed_code
        self.revisions: dict[str, str] = {}
        self.status = TargetStatus()
        self.work: WorkReport | None = None
        self.last: SearchResult | None = None  # the checkpoint: the latest search
        self.phase = 0
        self.start = datetime(2026, 1, 1, tzinfo=UTC)

    def hours(self, now: datetime) -> float:
        return (now - self.start).total_seconds() / 3600

    def stable_code(self) -> str:
        revision = self.status.stable_revision
        return self.revisions[revision] if revision else self.seed_code

    def signals(self) -> Signals:
        context = self.setups[self.phase].context
        hardware = dict(context.hardware)
        return Signals(
            profile=dict(context.workload),
            hardware=hardware,
            fingerprint=hardware["retune.dev/fingerprint"],
            summary=hardware["retune.dev/hardware"],
        )

    def season(self) -> Run:
        now = self.start
        ends: list[datetime] = []
        for phase in PHASES:
            ends.append((ends[-1] if ends else now) + timedelta(days=phase.days))
        for index, end in enumerate(ends):
            self.phase = index
            while now < end:
                now = self.reconcile(now, end)
        return self.run

    def reconcile(self, now: datetime, end: datetime) -> datetime:
        """One reconcile at ``now``; the time of the next."""
        signals = self.signals()
        facts = Facts(
            target="cache-eviction",
            generation=1,
            paused=False,
            digests=spec_digests(self.spec),
            work=self.work,
            retune=self.spec.retune,
            profile_interval=float(self.spec.profile.interval_seconds),
            rollout=self.spec.rollout,
        )
        decision = decide(self.status, facts, now)
        for _ in range(4):
            if decision.needs_signals:
                facts = replace(facts, signals=signals)
            elif decision.needs_watch:
                hardware = HardwareReading(signals.fingerprint, signals.summary)
                facts = replace(
                    facts, watch=WatchReading(profile=signals.profile, hardware=hardware)
                )
            elif decision.needs_canary and decision.status.rollout is not None:
                facts = replace(facts, canary=self.observe(decision.status, now))
            else:
                break
            decision = decide(self.status, facts, now)
        before = self.stable_code()
        self.status = decision.status
        for event in decision.events:
            self.run.events.append((self.hours(now), event.reason, event.message))
        elapsed = 0.0
        for action in decision.actions:
            elapsed += self.act(action, now)
        if not self.library:
            self.status.library = LibraryStatus()
        if self.stable_code() != before or not self.run.segments:
            self.run.segments.append((self.hours(now), self.stable_code()))
        later = now + timedelta(seconds=max(1.0, decision.requeue_after, elapsed))
        settled = (
            self.status.phase is Phase.STABLE
            and self.status.profile == signals.profile
            and self.status.hardware_fingerprint == signals.fingerprint
        )
        # Nothing changes between phase boundaries but the controller's own clocks.
        return end if settled and later < end and not decision.actions else min(later, end)

    def act(self, action: object, now: datetime) -> float:
        """Carry out an action; the seconds it took (a worker's run)."""
        self.work = None
        if isinstance(action, PublishRevision):
            self.revisions[action.name] = action.code
        elif isinstance(action, StartSearch):
            return self.search(action, now)
        elif isinstance(action, StartValidation):
            return self.validation(action, now)
        return 0.0

    def search(self, action: StartSearch, now: datetime) -> float:
        setup = self.setups[self.phase]
        if action.seed_revision is not None:
            setup = replace(setup, seed_code=self.revisions[action.seed_revision])
        warm: list[str] = []
        if action.warm_start and self.last is not None:
            config = engine_config(
                setup.target.spec,
                setup.context,
                seed_code=setup.seed_code,
                evaluator_source="",
                budget=Budget(max_evaluations=self.searches.plan.evaluations),
            )
            warm = self.last.elites()[: warm_limit(config)]
        seed = self.spec.search.seed + action.seed_offset
        result = self.searches.run(setup, seed, warm)
        self.last = result
        progress = SearchProgress.of(result.state)
        self.run.retunes.append(
            Retune(
                self.phase,
                "search",
                self.status.last_retune_trigger or "Created",
                progress.evaluations,
                result.usd,
                result.wall_seconds,
            )
        )
        ended = now + timedelta(seconds=result.wall_seconds)
        outcome = SearchOutcome("evaluation budget reached", progress)
        self.work = WorkReport(
            kind=WorkKind.SEARCH,
            state=WorkState.FINISHED,
            progress=progress,
            search=outcome,
            ended_at=ended,
            warm_programs=len(warm) if action.warm_start else None,
        )
        return result.wall_seconds

    def validation(self, action: StartValidation, now: datetime) -> float:
        setup = self.setups[self.phase]
        if action.revision is not None:
            candidate, code = None, self.revisions[action.revision]
            stable = (
                self.revisions[action.stable_revision] if action.stable_revision else self.seed_code
            )
        else:
            assert self.last is not None and self.last.state.best is not None
            assert self.last.state.seed_elite is not None
            candidate, code = self.last.state.best_name, self.last.state.best.code
            stable = self.last.state.seed_elite.code
        evaluator = self.spec.evaluator
        if action.revision is not None:
            # As the operator's validation job: a recalled winner need only be no worse.
            evaluator = evaluator.model_copy(update={"min_improvement": 0.0})
        started = time.monotonic()
        with LocalExecutor(setup.evaluator_path, setup.entrypoint, setup.limits) as executor:
            report = validate_best(
                executor, evaluator, setup.context, candidate_code=code, stable_code=stable
            )
        took = time.monotonic() - started
        if action.revision is not None:
            self.run.retunes.append(
                Retune(
                    self.phase,
                    "recall",
                    self.status.last_retune_trigger or "",
                    2 * evaluator.holdout_seeds,
                    0.0,
                    took,
                )
            )
        self.work = WorkReport(
            kind=WorkKind.VALIDATION,
            state=WorkState.FINISHED,
            validation=ValidationOutcome(candidate=candidate, candidate_code=code, report=report),
            ended_at=now + timedelta(seconds=took),
        )
        return took

    def observe(self, status: TargetStatus, now: datetime) -> CanaryObservation:
        """The canary as a simulation shows it: its Deployments as the controller asked, and,
        when its step is judged, an analysis of the two programs' held-out scores on the
        phase."""
        rollout = status.rollout
        assert rollout is not None
        report = None
        if analysis_needed(self.spec.rollout, rollout, now):
            canary = self.scorer.score(self.revisions[rollout.revision], self.phase)
            stable = self.scorer.score(self.stable_code(), self.phase)
            outcome: Literal["pass", "fail"] = "pass" if canary >= CANARY_FLOOR * stable else "fail"
            result = AnalysisResult(
                name="byte-hit-ratio",
                outcome=outcome,
                canary=Value(canary),
                stable=Value(stable),
                message=f"byte hit ratio: canary {canary:.4f}, stable {stable:.4f}",
            )
            report = AnalysisReport(outcome=outcome, results=(result,))
        return CanaryObservation(
            revision=rollout.revision,
            stable_revision=status.stable_revision,
            stable_replicas=1,
            canary_replicas=1,
            canary_current=True,
            analysis=report,
        )


# -- the season -------------------------------------------------------------------------------
def phase_setups(plan: Plan) -> list[Setup]:
    base = load_setup(TARGET)
    setups = []
    for phase in PHASES:
        setup = load_setup(
            TARGET,
            workload={**base.context.workload, **phase.workload},
            hardware_labels=phase.hardware,
        )
        params = dict(setup.context.params)
        if plan.sim_keys is not None:
            params["sim_keys"] = plan.sim_keys
        if plan.requests is not None:
            params["requests_full"] = plan.requests
            params["requests_quick"] = plan.requests * 3 // 10
        setups.append(replace(setup, context=setup.context.model_copy(update={"params": params})))
    return setups


def scored(run: Run, scorer: Scorer) -> list[float]:
    """The run's score per phase: its programs' held-out scores weighted by how long each
    ran in the phase."""
    scores = []
    start = 0.0
    segments = [*run.segments, (float("inf"), "")]
    for index, phase in enumerate(PHASES):
        end = start + phase.days * 24
        total = 0.0
        for (at, code), (until, _) in itertools.pairwise(segments):
            overlap = min(until, end) - max(at, start)
            if overlap > 0:
                total += overlap * scorer.score(code, index)
        scores.append(total / (end - start))
        start = end
    return scores


def season_score(scores: list[float]) -> float:
    days = [phase.days for phase in PHASES]
    return sum(s * d for s, d in zip(scores, days, strict=True)) / sum(days)


def recovery_hours(run: Run) -> list[float | None]:
    """Hours from each phase's start until the workload's policy changed in it."""
    out: list[float | None] = []
    start = 0.0
    for phase in PHASES:
        end = start + phase.days * 24
        changes = [at - start for at, _ in run.segments if start < at < end]
        out.append(round(changes[0], 2) if changes else None)
        start = end
    return out


def plot(rows: dict[str, list[float]], path: Path) -> None:
    """Score over the season per policy, a step per phase (an HTML page; plotly.js from
    its CDN, to keep the file small)."""
    import plotly.graph_objects as go

    edges = [0.0]
    for phase in PHASES:
        edges.append(edges[-1] + phase.days)
    figure = go.Figure()
    for name, scores in rows.items():
        xs: list[float] = []
        ys: list[float] = []
        for index, score in enumerate(scores):
            xs += [edges[index], edges[index + 1]]
            ys += [score, score]
        tuned = name.startswith(("continuous", "tuned"))
        figure.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                name=name,
                mode="lines",
                line={"width": 3 if tuned else 1.5, "dash": "solid" if tuned else "dot"},
            )
        )
    for edge, phase in zip(edges, PHASES, strict=False):
        figure.add_vline(x=edge, line_width=0.5, line_color="grey")
        figure.add_annotation(
            x=edge + phase.days / 2,
            y=1.02,
            yref="paper",
            text=phase.name,
            showarrow=False,
            font={"size": 9},
        )
    figure.update_layout(
        title="examples/01 over a season of change: held-out byte hit ratio per phase",
        xaxis_title="day of the season",
        yaxis_title="byte hit ratio (held-out)",
    )
    figure.write_html(path, include_plotlyjs="cdn")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller searches and traces")
    parser.add_argument("--evaluations", type=int, help="evaluations per search")
    parser.add_argument("--mutator", choices=("builtin", "llm"), default="builtin")
    parser.add_argument(
        "--seed-policy",
        help="a file of the example's baselines/ the deployment starts from (default: its seed)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.evaluations:
        plan = replace(plan, evaluations=args.evaluations)
    started = time.monotonic()
    setups = phase_setups(plan)
    if args.seed_policy:
        seed_code = (EXAMPLE / "baselines" / args.seed_policy).read_text()
        setups = [replace(setup, seed_code=seed_code) for setup in setups]
    scorer = Scorer(setups, plan.holdout_seeds)
    rows: dict[str, list[float]] = {}
    for label, policy, reference in STATIC:
        code = (EXAMPLE / "baselines" / policy).read_text()
        rows[label] = [scorer.score(code, i, reference) for i in range(len(PHASES))]
        print(f"{label:30s} " + " ".join(f"{s:.4f}" for s in rows[label]), flush=True)
    llm = args.mutator == "llm"
    server_context = MutationServerProcess(seed=0, fresh_repeats=True) if llm else nullcontext()
    with server_context as server, _workdir() as work:
        searches = Searches(plan, work, server.base_url if server else None)
        runs = {}
        for name, library in (("continuous + library", True), ("continuous", False)):
            runs[name] = Operator(name, setups, searches, scorer, library=library).season()
            rows[name] = scored(runs[name], scorer)
            print(f"{name:30s} " + " ".join(f"{s:.4f}" for s in rows[name]), flush=True)
        # Tuned once: what the workload ran at the end of phase 1, kept all season.
        phase_1_end = PHASES[0].days * 24
        once = [code for at, code in runs["continuous"].segments if at < phase_1_end][-1]
        rows["tuned once (phase 1)"] = [scorer.score(once, i) for i in range(len(PHASES))]
    statics = {label: season_score(rows[label]) for label, _, _ in STATIC}
    best_static = max(statics, key=lambda k: statics[k])
    totals = {name: season_score(scores) for name, scores in rows.items()}
    library_run = runs["continuous + library"]
    retunes = [r for r in library_run.retunes if r.trigger != "Created"]
    usd = sum(r.usd for r in retunes) / len(retunes) if retunes else 0.0
    ratio = totals["continuous + library"] / statics[best_static]
    suffix = ("_llm" if llm else "") + (
        f"_{Path(args.seed_policy).stem}" if args.seed_policy else ""
    )
    RESULTS.mkdir(exist_ok=True)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "quick": args.quick,
        "mutator": args.mutator,
        "seed_policy": args.seed_policy or "the example's seed (LRU)",
        "plan": plan.__dict__,
        "phases": [phase.__dict__ for phase in PHASES],
        "scores": {name: [round(s, 4) for s in scores] for name, scores in rows.items()},
        "season": {name: round(total, 4) for name, total in totals.items()},
        "best_static": best_static,
        "retunes": {name: [r.__dict__ for r in run.retunes] for name, run in runs.items()},
        "recovery_hours": {name: recovery_hours(run) for name, run in runs.items()},
        "events": [
            (round(h, 3), reason) for h, reason, _ in library_run.events if reason not in _QUIET
        ],
        "holdout_evaluations": scorer.evaluations,
        "seconds": round(time.monotonic() - started, 1),
    }
    (RESULTS / f"staying_tuned{suffix}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"staying_tuned{suffix}.md").write_text(markdown(result))
    plot(rows, RESULTS / f"staying_tuned{suffix}.html")
    print(markdown(result))
    print(f"continuous_vs_best_static={ratio:.4f} usd_per_retune={usd:.6f}")
    return 0


_QUIET = ("SignalsRead", "ValidationStarted", "RevisionPublished", "CanaryStep", "SearchFinished")


def markdown(result: dict[str, Any]) -> str:
    names = [p["name"] for p in result["phases"]]
    lines = [
        f"# Staying tuned: examples/01 over a season ({'--quick' if result['quick'] else 'full'})",
        "",
        f"{result['date']} on {result['machine']}; {result['mutator']} mutator; "
        f"{result['plan']['evaluations']} evaluations per search; the deployment starts from "
        f"{result['seed_policy']}; {result['seconds']} s.",
        "",
        "| policy | " + " | ".join(names) + " | season |",
        "|---" * (len(names) + 2) + "|",
    ]
    for name, scores in result["scores"].items():
        cells = " | ".join(f"{s:.4f}" for s in scores)
        lines.append(f"| {name} | {cells} | {result['season'][name]:.4f} |")
    lines += [
        "",
        "| run | phase | kind | trigger | evaluations | USD | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, retunes in result["retunes"].items():
        for r in retunes:
            lines.append(
                f"| {name} | {r['phase'] + 1} | {r['kind']} | {r['trigger']} | "
                f"{r['evaluations']} | {r['usd']:.4f} | {r['wall_seconds']:.0f} |"
            )
    lines += ["", "Hours from each change until the workload ran a new policy:", ""]
    for name, hours in result["recovery_hours"].items():
        lines.append(
            f"- {name}: " + ", ".join("kept" if h is None else f"{h:.2f} h" for h in hours)
        )
    return "\n".join(lines) + "\n"


@contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="staying-tuned-") as folder:
        yield Path(folder)


if __name__ == "__main__":
    raise SystemExit(main())
