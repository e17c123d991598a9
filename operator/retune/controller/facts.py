"""What the controller is told about a target at one reconcile: the observations.

The operator's adapters gather these (API reads, Prometheus queries, the search workers'
reports); :func:`retune.controller.machine.decide` turns them into a decision. Nothing here
does I/O, so the controller is tested with plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from retune.rollout.observation import CanaryObservation
from retune.search.ledger import LedgerState
from retune.search.state import EngineState
from retune.search.validation import ValidationReport
from retune.signals.metrics import Sample
from retune.signals.slo import BurnRateVerdict
from retune.spec import SLO, ApprovalMode, Problem, RetuneSpec, RolloutSpec, SpendLimitSpec
from retune.spec.events import EventReason


@dataclass(frozen=True)
class Signals:
    """A complete reading of the workload profile and of the hardware under the workload."""

    profile: dict[str, float]
    """Profile name -> value, every query answered."""
    hardware: dict[str, str]
    """The hardware context handed to evaluators (``hardware_context``)."""
    fingerprint: str
    """The hardware fingerprint, ``hw-...``."""
    summary: str
    """The hardware summary, e.g. ``m6i.xlarge/amd64``."""


@dataclass(frozen=True)
class SignalsWaiting:
    """Why the signals cannot be read yet: nothing in the spec to fix, so the target waits
    (Prometheus down, a query without data, no node for the workload)."""

    reason: EventReason
    """Also the ``SignalsReady`` condition's reason, e.g. ``PrometheusUnavailable``."""
    message: str
    """Which query or what, and the error."""


SignalsReading = Signals | SignalsWaiting


@dataclass(frozen=True)
class HardwareReading:
    """The hardware class of the nodes under the workload, now."""

    fingerprint: str
    summary: str


@dataclass(frozen=True)
class WatchReading:
    """What a Stable target's retune triggers observed at one reconcile."""

    slo_samples: dict[str, Sample] = field(default_factory=dict)
    """Threshold SLO name -> its query's sample (the controller keeps the ``for`` clock)."""
    burn_rates: dict[str, BurnRateVerdict] = field(default_factory=dict)
    """Error-budget SLO name -> its windows' verdict (stateless)."""
    profile: dict[str, float] | SignalsWaiting | None = None
    """The profile re-read now; None when it was not due (``spec.profile.interval``)."""
    hardware: HardwareReading | SignalsWaiting | None = None
    """The hardware under the workload now."""


@dataclass(frozen=True)
class CanaryFailure:
    """A rollout's Deployments could not be read, or written as decided."""

    message: str
    permanent: bool
    """Whether only a change of the spec or the workload can fix it (a ``RolloutError``);
    otherwise a passing failure (the API server, Prometheus) that the next tick retries."""


CanaryReading = CanaryObservation | CanaryFailure


@dataclass(frozen=True)
class SpecDigests:
    """Digests of the spec sections a search depends on (see :mod:`retune.controller.digests`)."""

    signals: str
    search: str
    budget: str


class WorkKind(StrEnum):
    """What a worker runs for a target."""

    SEARCH = "search"
    VALIDATION = "validation"


class WorkState(StrEnum):
    """Where a worker is."""

    QUEUED = "queued"  # waiting for an operator-wide search slot
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


@dataclass(frozen=True)
class SearchProgress:
    """The engine's progress after its latest applied candidate."""

    evaluations: int
    best_score: float | None
    seed_score: float | None
    best_candidate: str | None  # its name: ``c12``, or ``f12`` from the free start
    ledger: LedgerState
    max_evaluations: int | None = None

    @classmethod
    def of(cls, state: EngineState, max_evaluations: int | None = None) -> SearchProgress:
        """The progress an engine ``state`` shows (its ledger copied, not shared)."""
        return cls(
            evaluations=state.ledger.evaluations,
            best_score=state.best.score if state.best else None,
            seed_score=state.seed_elite.score if state.seed_elite else None,
            best_candidate=state.best_name,
            ledger=state.ledger.model_copy(deep=True),
            max_evaluations=max_evaluations,
        )


@dataclass(frozen=True)
class SearchOutcome:
    """A search that reached its budget."""

    stop_reason: str
    progress: SearchProgress

    @property
    def improved(self) -> bool:
        """Whether some candidate scored better than the seed."""
        best, seed = self.progress.best_score, self.progress.seed_score
        return best is not None and seed is not None and best > seed


@dataclass(frozen=True)
class ValidationOutcome:
    """The best candidate re-scored against the stable policy on held-out seeds."""

    candidate: str | None
    """The candidate's name (``c12``, ``f12``: :attr:`EngineState.best_name`); None for a
    recalled revision."""
    candidate_code: str
    report: ValidationReport


@dataclass(frozen=True)
class WorkReport:
    """What a target's worker reports: its state, progress, and result or error."""

    kind: WorkKind
    state: WorkState
    progress: SearchProgress | None = None
    search: SearchOutcome | None = None
    validation: ValidationOutcome | None = None
    resumed_from: int | None = None
    """Evaluations already in the checkpoint when a search resumed; None if it started fresh."""
    discarded: str | None = None
    """Why an existing checkpoint was not resumed, when it was not."""
    carried_usd: float = 0.0
    """What the search had spent before it started afresh (another configuration): its
    money stays on its ledger."""
    error: str | None = None
    """What went wrong, for a failed worker."""
    error_path: str | None = None
    """The spec field to change, when the failure is the spec's (e.g. a seed that fails)."""
    permanent: bool = False
    """Whether retrying without a spec change would fail the same way."""
    ended_at: datetime | None = None
    """When the worker finished or failed."""
    queued_behind: int = 0
    """Searches running when this one is queued."""
    warm_programs: int | None = None
    """Elites of the previous archive the search re-scores first (a warm start)."""
    abandoned_usd: float = 0.0
    """What calls an earlier search sent and never settled may have cost (their worst
    case): found when this search replaced that one's spend journal, counted by no ledger."""

    @property
    def active(self) -> bool:
        """Whether the worker is queued or running."""
        return self.state in (WorkState.QUEUED, WorkState.RUNNING)


@dataclass(frozen=True)
class Facts:
    """Everything the controller is told at one reconcile of a target."""

    target: str
    """``metadata.name``."""
    generation: int
    """``metadata.generation``."""
    paused: bool
    """``spec.retune.paused``."""
    digests: SpecDigests
    problems: tuple[Problem, ...] = ()
    """What is wrong with the spec in this cluster (field path + message)."""
    signals: SignalsReading | None = None
    """The signals, when the controller asked for them."""
    work: WorkReport | None = None
    """The target's worker, if it has one."""
    max_concurrent_searches: int | None = None
    """The operator-wide search limit, for messages."""
    retune: RetuneSpec = field(default_factory=RetuneSpec)
    """``spec.retune``: what triggers a retune, the cooldown, warm start."""
    calls_models: bool = False
    """Whether the target's searches call models (``spec.search.mutator: llm``), so
    ``spec.retune.spendLimit`` applies to them."""
    max_usd: float | None = None
    """``spec.search.budget.maxUsd``: one search's own USD budget."""
    slos: tuple[SLO, ...] = ()
    """``spec.slos``."""
    profile_interval: float = 300.0
    """``spec.profile.interval``: how often a Stable target re-reads its profile."""
    controls: frozenset[str] = frozenset()
    """The manual-control annotations set on the target (``retune.dev/retune``, ...)."""
    approve: str | None = None
    """The revision ``retune.dev/approve`` names, when the annotation is set."""
    undo: str | None = None
    """The revision ``retune.dev/undo`` names, when the annotation is set."""
    watch: WatchReading | None = None
    """The retune triggers' readings, when the controller asked for them."""
    rollout: RolloutSpec = field(default_factory=RolloutSpec)
    """``spec.rollout``: the canary's steps, interval and limits."""
    canary: CanaryReading | None = None
    """The rollout as the cluster shows it now, when the controller asked."""

    @property
    def spend_limit(self) -> SpendLimitSpec | None:
        """``spec.retune.spendLimit``, for searches that call models (others spend
        nothing)."""
        return self.retune.spend_limit if self.calls_models else None

    @property
    def approval(self) -> ApprovalMode:
        """``spec.rollout.approval``: who lets a validated revision out as a canary."""
        return self.rollout.approval
