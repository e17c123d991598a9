"""The operator's metrics (Prometheus exposition format) and its health endpoints.

One HTTP server serves ``/metrics``, ``/healthz`` (the event loop answers) and ``/readyz``
(the operator has started and its last contact with the API server worked).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from retune.controller import RETUNE_TRIGGERS
from retune.evaluate.contract import EvaluationOutcome, EvaluationTask
from retune.search.ledger import LedgerState
from retune.spec import Phase

_TARGET = ("namespace", "target")


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
        self._ledgers: dict[tuple[str, str], LedgerState] = {}
        self._lock = threading.Lock()

    # -- evaluations and spending ------------------------------------------------------
    def evaluation(
        self, namespace: str, target: str, task: EvaluationTask, outcome: EvaluationOutcome
    ) -> None:
        """Count one finished evaluation."""
        result = "ok" if outcome.ok else "failed"
        self.evaluations.labels(namespace, target, task.stage, result).inc()
        if outcome.failure is not None:
            self.failures.labels(namespace, target, str(outcome.failure)).inc()

    def ledger_baseline(self, namespace: str, target: str, ledger: LedgerState) -> None:
        """What a (resumed) search had spent before this process: not counted again."""
        with self._lock:
            self._ledgers[namespace, target] = ledger.model_copy(deep=True)

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
            if prompt > 0:
                self.tokens.labels(namespace, target, model, "prompt").inc(prompt)
            if completion > 0:
                self.tokens.labels(namespace, target, model, "completion").inc(completion)
            if usd > 0:
                self.usd.labels(namespace, target, model).inc(usd)

    # -- targets -----------------------------------------------------------------------
    def target_state(self, namespace: str, target: str, phase: Phase, best: float | None) -> None:
        """The phase (one-hot) and best score of a target."""
        for each in Phase:
            self.phase.labels(namespace, target, each.value).set(1 if each is phase else 0)
        if best is None:
            self._remove(self.best_score, (namespace, target))
        else:
            self.best_score.labels(namespace, target).set(best)

    def outcomes(
        self, namespace: str, target: str, ended: Iterable[str], retune_trigger: str | None
    ) -> None:
        """Count the rollouts a decision ended, and the retune it started (if any)."""
        for outcome in ended:
            self.rollouts.labels(namespace, target, outcome).inc()
        if retune_trigger is not None:
            self.retunes.labels(namespace, target, retune_trigger).inc()

    def forget_target(self, namespace: str, target: str) -> None:
        """A deleted target's series go."""
        for each in Phase:
            self._remove(self.phase, (namespace, target, each.value))
        for outcome in ("Promoted", "RolledBack", "Aborted"):
            self._remove(self.rollouts, (namespace, target, outcome))
        for trigger in RETUNE_TRIGGERS:
            self._remove(self.retunes, (namespace, target, trigger))
        self._remove(self.best_score, (namespace, target))
        with self._lock:
            self._ledgers.pop((namespace, target), None)

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
