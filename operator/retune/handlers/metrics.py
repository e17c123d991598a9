"""The operator's metrics (Prometheus exposition format) and its health endpoints.

One HTTP server serves ``/metrics``, ``/healthz`` (the event loop answers) and ``/readyz``
(the operator has started and its last contact with the API server worked).
"""

from __future__ import annotations

import contextlib
import platform
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from typing import get_args

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from retune import __version__
from retune.controller import RetuneTrigger
from retune.controller.decision import Event
from retune.controller.spend import spent_within, usd_budget
from retune.evaluate.contract import (
    STAGE_FULL,
    STAGE_HOLDOUT,
    STAGE_QUICK,
    EvaluationOutcome,
    EvaluationTask,
)
from retune.search.ledger import LedgerState
from retune.spec import Phase, SpendLimitSpec
from retune.spec.events import WARNINGS, EventReason, event_type
from retune.spec.search import BudgetSpec
from retune.spec.status import RolloutOutcome, TargetStatus

# Not `namespace`: Prometheus's scrape adds its own `namespace` target label (the
# operator's), which would rename ours to `exported_namespace`.
_TARGET = ("target_namespace", "target")
_SLO_STATES = ("ok", "pending", "violated", "nodata")
ROLLOUT_OUTCOMES: tuple[str, ...] = get_args(RolloutOutcome)
EVALUATION_STAGES = (STAGE_QUICK, STAGE_FULL, STAGE_HOLDOUT)
TOKEN_KINDS = ("prompt", "completion")
ALERTED_EVENTS = (EventReason.NO_IMPROVEMENT, EventReason.VALIDATION_FAILED)
"""Normal Events whose first one an alert must see (the chart's
``RetuneSearchWithoutWinner``)."""
COUNTED_EVENTS: tuple[EventReason, ...] = (*ALERTED_EVENTS, *sorted(WARNINGS))
"""Events counted from 0 as soon as a target is seen, with the rollouts and retunes: those
alerts count, and every warning (the dashboard's "Warning events" panel, an
``increase()`` too)."""


class OperatorMetrics:
    """Every metric the operator exports, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.evaluations = Counter(
            "retune_evaluations",
            "Candidate evaluations finished, by evaluation stage and result.",
            [*_TARGET, "stage", "result"],
            registry=r,
        )
        self.failures = Counter(
            "retune_evaluation_failures",
            "Evaluations that produced no score, by reason.",
            [*_TARGET, "reason"],
            registry=r,
        )
        self.tokens = Counter(
            "retune_llm_tokens",
            "Tokens sent to (prompt) and received from (completion) each model tier.",
            [*_TARGET, "model", "kind"],
            registry=r,
        )
        self.usd = Counter(
            "retune_llm_cost_usd",
            "US dollars spent on each model tier.",
            [*_TARGET, "model"],
            registry=r,
        )
        self.best_score = Gauge(
            "retune_best_score",
            "Score of the best candidate of the current search.",
            _TARGET,
            registry=r,
        )
        self.phase = Gauge(
            "retune_target_phase",
            "1 for the phase each target is in.",
            [*_TARGET, "phase"],
            registry=r,
        )
        self.reconcile = Histogram(
            "retune_reconcile_duration_seconds",
            "Time of one reconcile of a target (gathering facts, deciding, acting).",
            ["result"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.searches = Gauge("retune_searches", "Search workers, by state.", ["state"], registry=r)
        self.rollouts = Counter(
            "retune_rollouts",
            "Rollouts ended, by outcome (Promoted, RolledBack, Aborted).",
            [*_TARGET, "outcome"],
            registry=r,
        )
        self.retunes = Counter(
            "retune_retunes",
            "Retunes started, by trigger (SLOViolation, ProfileDrift, HardwareChange, ...).",
            [*_TARGET, "trigger"],
            registry=r,
        )
        self.seed_score = Gauge(
            "retune_seed_score",
            "Score of the seed policy in the current search.",
            _TARGET,
            registry=r,
        )
        self.stable_score = Gauge(
            "retune_stable_score",
            "Score of the stable policy in the latest validation (absent before the first).",
            _TARGET,
            registry=r,
        )
        self.condition = Gauge(
            "retune_target_condition",
            "1 while a condition of a target is True, 0 while False or Unknown; by reason.",
            [*_TARGET, "type", "reason"],
            registry=r,
        )
        self.canary_weight = Gauge(
            "retune_canary_weight",
            "Percent of the workload's replicas that run the canary (0: no canary).",
            _TARGET,
            registry=r,
        )
        self.canary_step = Gauge(
            "retune_canary_step",
            "Index of the canary's current step (absent without a canary).",
            _TARGET,
            registry=r,
        )
        self.canary_analysis = Gauge(
            "retune_canary_analysis",
            "Latest value of each canary analysis query, on the canary's and the stable's pods.",
            [*_TARGET, "query", "track"],
            registry=r,
        )
        self.slo_state = Gauge(
            "retune_slo_state",
            "1 for the state each SLO is in (ok, pending, violated, nodata).",
            [*_TARGET, "slo", "state"],
            registry=r,
        )
        self.slo_value = Gauge(
            "retune_slo_value",
            "A threshold SLO's value, or the highest burn rate of an error-budget SLO.",
            [*_TARGET, "slo"],
            registry=r,
        )
        self.budget_remaining = Gauge(
            "retune_budget_remaining",
            "What the current search may still spend: evaluations, usd or wall_seconds.",
            [*_TARGET, "resource"],
            registry=r,
        )
        self.spend_total = Gauge(
            "retune_spend_total_usd",
            "What all of a target's searches have spent on model calls (status.spend).",
            _TARGET,
            registry=r,
        )
        self.spend_left = Gauge(
            "retune_spend_limit_remaining_usd",
            "What spec.retune.spendLimit leaves the target's searches within its window now.",
            _TARGET,
            registry=r,
        )
        self.events = Counter(
            "retune_events",
            "Kubernetes Events the operator posted about targets, by type and reason.",
            [*_TARGET, "type", "reason"],
            registry=r,
        )
        self.build_info = Gauge(
            "retune_build_info",
            "1, labelled with the operator's version and Python version.",
            ["version", "python_version"],
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self._ledgers: dict[tuple[str, str], LedgerState] = {}
        # The labelled series each target has, so a series that no longer applies goes.
        self._series: dict[tuple[str, str], set[tuple[Gauge, tuple[str, ...]]]] = {}
        self._counted: dict[tuple[str, str], set[tuple[Counter, tuple[str, ...]]]] = {}
        """The counters' series of each target."""
        self._started: set[tuple[str, str]] = set()
        """Targets whose outcome counters started (:meth:`_start_counters`)."""
        self._lock = threading.Lock()

    # -- evaluations and spending ------------------------------------------------------
    def evaluation(
        self, namespace: str, target: str, task: EvaluationTask, outcome: EvaluationOutcome
    ) -> None:
        """Count one finished evaluation."""
        result = "ok" if outcome.ok else "failed"
        self._count(self.evaluations, namespace, target, task.stage, result)
        if outcome.failure is not None:
            self._count(self.failures, namespace, target, str(outcome.failure))

    def ledger_baseline(self, namespace: str, target: str, ledger: LedgerState) -> None:
        """What a (resumed) search had spent before this process: not counted again."""
        with self._lock:
            self._ledgers[namespace, target] = ledger.model_copy(deep=True)

    def search_tiers(self, namespace: str, target: str, tiers: Iterable[str]) -> None:
        """A search's model tiers' spend and token counters from 0, before its first call:
        the dashboard's ``rate()`` counts a series' first increase only after a sample of
        it, and a retune's short search may make most of its calls before the next scrape."""
        for tier in tiers:
            self._count(self.usd, namespace, target, tier, amount=0)
            for kind in TOKEN_KINDS:
                self._count(self.tokens, namespace, target, tier, kind, amount=0)

    def abandoned_usd(self, namespace: str, target: str, model: str, usd: float) -> None:
        """Count calls an earlier search sent and never settled (it was stopped and not
        resumed): charged at their worst case, as a resumed search's ledger would."""
        if usd > 0:
            self._count(self.usd, namespace, target, model, amount=usd)

    def ledger(self, namespace: str, target: str, ledger: LedgerState) -> None:
        """Count what the search spent since the last call."""
        with self._lock:
            before = self._ledgers.get((namespace, target), LedgerState())
            self._ledgers[namespace, target] = ledger.model_copy(deep=True)
        for model, usage in ledger.models.items():
            old = before.models.get(model)
            prompt = usage.prompt_tokens - (old.prompt_tokens if old else 0)
            completion = usage.completion_tokens - (old.completion_tokens if old else 0)
            usd = usage.usd - (old.usd if old else 0.0)
            for kind, tokens in zip(TOKEN_KINDS, (prompt, completion), strict=True):
                if tokens > 0:
                    self._count(self.tokens, namespace, target, model, kind, amount=tokens)
            if usd > 0:
                self._count(self.usd, namespace, target, model, amount=usd)

    # -- targets -----------------------------------------------------------------------
    def target_state(
        self,
        namespace: str,
        target: str,
        status: TargetStatus,
        budget: BudgetSpec | None = None,
        spend_limit: SpendLimitSpec | None = None,
        now: datetime | None = None,
    ) -> None:
        """A target's status as gauges: phase (one-hot), scores, conditions, canary, SLOs,
        what all its searches spent and, given the search's ``budget``, what is left of it
        (and of ``spend_limit`` at ``now``)."""
        key = (namespace, target)
        with self._lock:
            first = key not in self._started
            self._started.add(key)
        if first:
            self._start_counters(namespace, target)
        for each in Phase:
            self.phase.labels(namespace, target, each.value).set(1 if each is status.phase else 0)
        series: dict[tuple[Gauge, tuple[str, ...]], float] = {}

        def put(gauge: Gauge, value: float | None, *labels: str) -> None:
            if value is not None:
                series[gauge, (namespace, target, *labels)] = value

        put(self.best_score, status.best_score)
        put(self.seed_score, status.seed_score)
        put(self.stable_score, status.validation.stable_score if status.validation else None)
        for condition in status.conditions:
            value = 1.0 if condition.status == "True" else 0.0
            put(self.condition, value, condition.type, condition.reason)
        rollout = status.rollout
        put(self.canary_weight, float(rollout.share) if rollout else 0.0)
        if rollout is not None:
            put(self.canary_step, float(rollout.step))
            for track, values in (
                ("canary", rollout.analysis),
                ("stable", rollout.stable_analysis),
            ):
                for query, reading in values.items():
                    put(self.canary_analysis, reading, query, track)
        for name, slo in (status.watch.slos if status.watch else {}).items():
            for state in _SLO_STATES:
                put(self.slo_state, 1.0 if slo.state == state else 0.0, name, state)
            put(self.slo_value, slo.value, name)
        put(self.spend_total, status.spend.total_usd)
        if spend_limit is not None and now is not None:
            spent = spent_within(status, spend_limit.window_seconds, now)
            put(self.spend_left, max(0.0, spend_limit.max_usd - spent))
        if budget is not None:
            ledger = status.ledger
            allowance = status.search.usd_allowance if status.search else None
            max_usd = usd_budget(budget.max_usd, allowance)
            if budget.max_evaluations is not None:
                left = budget.max_evaluations - ledger.evaluations
                put(self.budget_remaining, float(max(0, left)), "evaluations")
            if max_usd is not None:
                put(self.budget_remaining, max(0.0, max_usd - ledger.usd), "usd")
            if budget.max_wall_seconds is not None:
                left_seconds = budget.max_wall_seconds - ledger.wall_seconds
                put(self.budget_remaining, max(0.0, left_seconds), "wall_seconds")
        with self._lock:
            before = self._series.get(key, set())
            self._series[key] = set(series)
        for gauge, labels in before - set(series):
            self._remove(gauge, labels)
        for (gauge, labels), value in series.items():
            gauge.labels(*labels).set(value)

    def decision_events(self, namespace: str, target: str, events: Iterable[Event]) -> None:
        """Count the Events a decision posted."""
        for event in events:
            self._count(self.events, namespace, target, event.type, event.reason)

    def outcomes(
        self, namespace: str, target: str, ended: Iterable[str], retune_trigger: str | None
    ) -> None:
        """Count the rollouts a decision ended, and the retune it started (if any)."""
        for outcome in ended:
            self._count(self.rollouts, namespace, target, outcome)
        if retune_trigger is not None:
            self._count(self.retunes, namespace, target, retune_trigger)

    def forget_target(self, namespace: str, target: str) -> None:
        """A deleted target's series go, its counters' too."""
        for each in Phase:
            self._remove(self.phase, (namespace, target, each.value))
        with self._lock:
            self._ledgers.pop((namespace, target), None)
            series = self._series.pop((namespace, target), set())
            counted = self._counted.pop((namespace, target), set())
            self._started.discard((namespace, target))
        for gauge, labels in series:
            self._remove(gauge, labels)
        for counter, labels in counted:
            self._remove(counter, labels)

    def _count(
        self, counter: Counter, namespace: str, target: str, *labels: str, amount: float = 1
    ) -> None:
        """Add to a target's counter, remembering the series so it goes with the target."""
        values = (namespace, target, *labels)
        with self._lock:
            self._counted.setdefault((namespace, target), set()).add((counter, values))
        counter.labels(*values).inc(amount)

    def _start_counters(self, namespace: str, target: str) -> None:
        """A target's counters from 0, before anything happens: its outcomes, evaluations
        and the Events the chart counts. An alert's ``increase()`` or a panel's ``rate()``
        sees a series' first count only when a sample came before it."""
        for outcome in ROLLOUT_OUTCOMES:
            self._count(self.rollouts, namespace, target, outcome, amount=0)
        for trigger in RetuneTrigger:
            self._count(self.retunes, namespace, target, trigger.value, amount=0)
        for stage in EVALUATION_STAGES:
            for result in ("ok", "failed"):
                self._count(self.evaluations, namespace, target, stage, result, amount=0)
        for reason in COUNTED_EVENTS:
            self._count(self.events, namespace, target, event_type(reason), reason, amount=0)

    def workers(self, running: int, queued: int) -> None:
        """How many search workers run and wait."""
        self.searches.labels("running").set(running)
        self.searches.labels("queued").set(queued)

    @staticmethod
    def _remove(metric: Gauge | Counter, labels: Iterable[str]) -> None:
        with contextlib.suppress(KeyError):
            metric.remove(*labels)


class Health:
    """Readiness: set once the operator has started; lost while the API is unreachable."""

    def __init__(self) -> None:
        self.started = False
        self.api_failing_since: float | None = None

    def api_ok(self) -> None:
        self.api_failing_since = None

    def api_failed(self) -> None:
        if self.api_failing_since is None:
            self.api_failing_since = time.monotonic()

    def ready(self, grace: float = 60.0) -> tuple[bool, str]:
        if not self.started:
            return False, "starting"
        if self.api_failing_since is not None and time.monotonic() - self.api_failing_since > grace:
            return False, "the API server has not answered for a minute"
        return True, "ok"


async def serve(metrics: OperatorMetrics, health: Health, host: str, port: int) -> web.AppRunner:
    """Start the metrics and health server; stop it with ``await runner.cleanup()``."""

    async def metrics_page(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        ready, why = health.ready()
        return web.Response(text=why + "\n", status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
