"""The status the operator writes: where the target is, what it found, what it spent."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from retune.spec.base import StatusModel

HISTORY_LIMIT = 10
"""How many finished rollouts the status keeps."""


class Phase(StrEnum):
    """Where a target is in its loop."""

    IDLE = "Idle"
    PROFILING = "Profiling"
    SEARCHING = "Searching"
    VALIDATING = "Validating"
    READY = "Ready"
    AWAITING_APPROVAL = "AwaitingApproval"
    CANARY = "Canary"
    STABLE = "Stable"
    DEGRADED = "Degraded"
    PAUSED = "Paused"


class ConditionType(StrEnum):
    """Condition types the operator sets."""

    READY = "Ready"
    SEARCHING = "Searching"
    DEGRADED = "Degraded"
    DRIFTED = "Drifted"
    CANARY_PROGRESSING = "CanaryProgressing"
    SIGNALS_READY = "SignalsReady"
    SLO_VIOLATED = "SLOViolated"
    HARDWARE_CHANGED = "HardwareChanged"
    RETUNE_PENDING = "RetunePending"


ConditionStatus = Literal["True", "False", "Unknown"]
RolloutOutcome = Literal["Promoted", "RolledBack", "Aborted"]


class Condition(StatusModel):
    """A Kubernetes-style condition."""

    type: str
    """Condition type, e.g. ``Ready``."""
    status: ConditionStatus = "Unknown"
    """``True``, ``False`` or ``Unknown``."""
    reason: str = ""
    """One CamelCase word saying why."""
    message: str = ""
    """Human-readable detail."""
    last_transition_time: datetime | None = None
    """When the status last changed."""
    observed_generation: int | None = None
    """The spec generation the condition was computed from."""


class ModelUsageStatus(StatusModel):
    """What one model tier has been used for."""

    calls: int = 0
    """Calls made, failed ones included."""
    failed_calls: int = 0
    """Of ``calls``, those that gave no usable program: an endpoint failure, or an answer
    that could not be used (no code, an edit that does not apply, a known program...)."""
    rests: int = 0
    """Rests the tier began: after tries that kept giving no usable program, mutations went
    on without it for a while (docs/llm.md, "A tier that keeps failing rests")."""
    prompt_tokens: int = 0
    """Prompt tokens sent."""
    completion_tokens: int = 0
    """Completion tokens received."""
    usd: float = 0.0
    """US dollars spent."""


class LedgerStatus(StatusModel):
    """What the current (or last) search has spent."""

    evaluations: int = 0
    """Candidate evaluations run."""
    failed_evaluations: int = 0
    """Evaluations that produced no score (timeouts, crashes, refused programs...)."""
    wall_seconds: float = 0.0
    """Time the search has run, over all its resumes."""
    usd: float = 0.0
    """US dollars spent on model calls."""
    strong_usd: float = 0.0
    """Of ``usd``, what the strong tiers (paradigm shifts, initial diversification) spent;
    bounded by ``spec.search.tiering.strongShare`` of the USD budget."""
    models: dict[str, ModelUsageStatus] = {}
    """Usage per model tier name."""


class SpentStatus(StatusModel):
    """What one ended search spent on model calls, and when its spending ended."""

    at: datetime
    """When the search ended (or was replaced by the next one)."""
    usd: float
    """US dollars it spent."""


class SpendStatus(StatusModel):
    """What the target's searches have spent on model calls, over all of them."""

    total_usd: float = 0.0
    """Every search's spending since the target was created, the current one's so far
    included."""
    searches: list[SpentStatus] = []
    """The ended searches that spent money within the longest window kept
    (``spec.retune.spendLimit.window``, at least 30 days), oldest first; the current (or
    last) search is in ``ledger``."""


class SearchStatus(StatusModel):
    """The current (or last) search: what it was started on, so a restart resumes it."""

    started_at: datetime | None = None
    """When the search started."""
    generation: int | None = None
    """The spec generation it was started for."""
    signals_digest: str = ""
    """Digest of the spec sections the profile and hardware were read under (profile,
    hardware, workload, evaluation placement); a change means a new profile and search."""
    search_digest: str = ""
    """Digest of everything else the search depends on, its budget excepted; a change
    means a new search."""
    budget_digest: str = ""
    """Digest of the budget it runs under; a change resumes it under the new budget."""
    resumes: int = 0
    """How many times it was resumed from its checkpoint (operator restarts, pauses)."""
    finished_at: datetime | None = None
    """When it ended; unset while it runs."""
    stop_reason: str | None = None
    """Why it ended (e.g. ``evaluation budget reached``)."""
    trigger: str | None = None
    """What started it: ``Created``, ``SpecChanged``, or a retune trigger (``SLOViolation``,
    ``ProfileDrift``, ``HardwareChange``, ``Schedule``, ``Manual``)."""
    seed_revision: str | None = None
    """The policy revision it started from (the stable one, for a retune); unset when it
    started from ``spec.policy.seed``."""
    seed_offset: int = 0
    """Added to ``spec.search.seed``: each retune searches with a seed of its own."""
    warm_start: bool = False
    """Whether the previous archive's elites seed it."""
    warm_programs: int | None = None
    """How many elites of the previous archive it re-scores first."""
    previous_usd: float = 0.0
    """What the status counted of the search before this one when this one started; the
    earlier search's spend journal may hold more (calls settled after its last progress),
    which this one's worker counts as ``abandonedUsd``."""
    abandoned_usd: float = 0.0
    """Calls of the search before this one that its status never counted -- sent and never
    settled (charged at their worst case), or settled after its last progress -- found
    when this one started: counted in ``spend``, not in ``ledger``."""
    usd_allowance: float | None = None
    """What ``spec.retune.spendLimit`` left it to spend, fixed when it started (its USD
    budget is the smaller of this and ``spec.search.budget.maxUsd``), less any calls an
    earlier search left unsettled; unset without a limit or models."""


class ScorePair(StatusModel):
    """A score of the candidate beside the stable policy's, on the same held-out seeds."""

    candidate: float
    """The candidate's."""
    stable: float
    """The stable policy's."""


class ValidationStatus(StatusModel):
    """The last validation: the best candidate against the stable policy on held-out seeds."""

    candidate: str | None = None
    """The candidate that was validated."""
    passed: bool = False
    """Whether it beat the stable policy by the minimum improvement on every required
    subset."""
    candidate_score: float | None = None
    """Its mean held-out score."""
    stable_score: float | None = None
    """The stable policy's mean held-out score."""
    improvement: float | None = None
    """Relative improvement of the candidate over the stable policy (0.05 = 5 %)."""
    subscores: dict[str, ScorePair] = {}
    """Per subscore both programs reported, the candidate's and the stable's mean."""
    reasons: list[str] = []
    """Why it did not pass."""
    finished_at: datetime | None = None
    """When the validation ended."""


class ApprovalStatus(StatusModel):
    """The latest validated revision under ``spec.rollout.approval`` ``manual`` or
    ``recommend``, and the evidence a person decides on."""

    mode: Literal["manual", "recommend"]
    """The approval mode it was held under."""
    state: Literal["Waiting", "Approved", "Recommended"]
    """``Waiting`` for ``retune.dev/approve=<revision>``; ``Approved`` (then rolled out as
    a canary); ``Recommended``: published, never rolled out."""
    revision: str
    """The validated revision (an immutable ConfigMap)."""
    stable_revision: str | None = None
    """The revision it was validated against; unset for the seed policy."""
    candidate: str | None = None
    """The candidate the revision holds."""
    candidate_score: float | None = None
    """Its mean held-out score."""
    stable_score: float | None = None
    """The stable policy's mean held-out score."""
    improvement: float | None = None
    """Relative improvement over the stable policy (0.05 = 5 %)."""
    subscores: dict[str, ScorePair] = {}
    """Per subscore, the candidate's and the stable's held-out means."""
    since: datetime | None = None
    """When it was held (or published)."""
    approved_at: datetime | None = None
    """When ``retune.dev/approve`` named it."""


class RolloutStatus(StatusModel):
    """The rollout in flight; kept in the status so a restarted operator resumes it."""

    revision: str
    """The policy revision (ConfigMap) being rolled out."""
    step: int = 0
    """Index of the current canary step."""
    share: int = 0
    """Canary share of the replicas at this step, in percent."""
    analysis: dict[str, float | None] = {}
    """Last value of each analysis query; null when the query returned no data."""
    failures: int = 0
    """Failed analyses so far."""
    no_data_intervals: int = 0
    """Analyses in a row that returned no data."""
    started_at: datetime | None = None
    """When the rollout started."""
    step_started_at: datetime | None = None
    """When the current step started."""
    verdicts: dict[str, Literal["pass", "fail", "nodata"]] = {}
    """Verdict of each analysis query at the last analysis."""
    stable_analysis: dict[str, float | None] = {}
    """The stable's value of each per-track analysis query at the last analysis, for
    comparison."""
    message: str = ""
    """What the rollout did last, and why."""


class RolloutRecord(StatusModel):
    """A finished rollout and how it ended."""

    revision: str
    """The policy revision that was rolled out."""
    outcome: RolloutOutcome
    """How it ended."""
    reason: str = ""
    """Why it ended so (e.g. the failing analysis)."""
    score: float | None = None
    """The revision's validated score."""
    started_at: datetime | None = None
    """When the rollout started."""
    finished_at: datetime | None = None
    """When it ended."""


class ClockStatus(StatusModel):
    """A persisted "held for a duration" clock (:class:`retune.signals.sustain.SustainClock`);
    times are Unix seconds."""

    since: float | None = None
    """Start of the current stretch in which the condition held."""
    last_held_at: float | None = None
    """Last real observation where the condition held."""
    missing: bool = False
    """Whether data has been missing since ``lastHeldAt``."""
    latest: float | None = None
    """Latest observation."""


class SLOStatus(StatusModel):
    """The latest reading of one SLO."""

    state: Literal["ok", "pending", "violated", "nodata"] = "nodata"
    """``pending``: a threshold is broken, not yet for its ``for``."""
    value: float | None = None
    """The threshold SLO's value, or the highest burn rate of an error-budget SLO."""
    message: str = ""
    """The reading, in words."""
    clock: ClockStatus | None = None
    """A threshold SLO's clock."""


class WatchStatus(StatusModel):
    """What the operator watches while the target is Stable: the state of each retune
    trigger, kept here so a restarted operator carries on where it was."""

    since: datetime | None = None
    """When watching started (the schedule counts from the later of this and the last
    search's end)."""
    checked_at: datetime | None = None
    """The latest check written: a check that saw nothing new is written only once this is
    5 minutes old."""
    slos: dict[str, SLOStatus] = {}
    """Each SLO's latest reading."""
    profile_read_at: datetime | None = None
    """When the profile was last re-read (every ``spec.profile.interval``)."""
    current_profile: dict[str, float] = {}
    """The profile as last re-read, to compare with the tuned ``profile``."""
    drift: dict[str, ClockStatus] = {}
    """Per profile value, how long it has been beyond the drift threshold."""
    hardware_fingerprint: str | None = None
    """A fingerprint under the workload other than the tuned ``hardwareFingerprint``."""
    hardware_summary: str | None = None
    """Its summary, e.g. ``m7i.xlarge/amd64``."""
    hardware_since: datetime | None = None
    """Since when it has been seen (it counts once it held ``hardwareSettleSeconds``)."""


class ContextStatus(StatusModel):
    """A workload context the library holds a validated winner for."""

    id: str
    """``<hardware fingerprint>/p-<digest of the quantised profile>``."""
    hardware_fingerprint: str
    """The hardware class the winner was tuned and validated on."""
    hardware_summary: str | None = None
    """E.g. ``m6i.xlarge/amd64``."""
    profile: dict[str, float] = {}
    """The workload profile the winner was tuned on (profiles within
    ``spec.retune.drift.threshold`` of it belong to this context)."""
    revision: str
    """The winner: an immutable policy revision (ConfigMap)."""
    candidate: str | None = None
    """The candidate the winner was, in the search that found it."""
    score: float | None = None
    """Its score on held-out seeds when it was last validated."""
    search_digest: str = ""
    """The digest of the search settings it was found under (only those are recalled)."""
    recorded_at: datetime | None = None
    """When it became this context's winner."""
    last_used_at: datetime | None = None
    """When it was last promoted here; the least recently used context goes first."""
    recalls: int = 0
    """How often it was rolled out again, without a search, on a return to the context."""


class RecallStatus(StatusModel):
    """The latest return to a known context: its winner re-validated, then a canary."""

    context: str
    """The context's id."""
    revision: str
    """The winner being recalled."""
    retune: int = 0
    """``status.retunes`` when the recall started (a failed recall is not tried again for
    the same retune: that retune searches)."""
    state: Literal["Validating", "Validated", "Promoted", "Failed"] = "Validating"
    started_at: datetime | None = None
    message: str = ""


class LibraryStatus(StatusModel):
    """The context library: validated winners kept per workload context."""

    active: str | None = None
    """The context the workload is in now, when the library knows it."""
    contexts: list[ContextStatus] = []
    """The known contexts, most recently recorded last."""
    recall: RecallStatus | None = None
    """The latest recall of a context's winner."""


class TargetStatus(StatusModel):
    """Status of an OptimizationTarget."""

    phase: Phase = Phase.IDLE
    """Where the target is in its loop."""
    conditions: list[Condition] = Field(
        default=[],
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Kubernetes-style conditions, one per type."""
    observed_generation: int | None = None
    """The spec generation the status reflects."""
    hardware_fingerprint: str | None = None
    """Fingerprint of the hardware class the stable policy was tuned for."""
    hardware: dict[str, str] = {}
    """The hardware labels behind the fingerprint."""
    profile: dict[str, float] = {}
    """The workload profile the stable policy (or the running search) was tuned on."""
    profile_time: datetime | None = None
    """When that profile was read."""
    best_score: float | None = None
    """Score of the best candidate found."""
    seed_score: float | None = None
    """Score of the seed policy, for comparison."""
    best_candidate: str | None = None
    """Identifier of the best candidate found: ``c12``, the search's candidate 12 (the
    seed is ``c0``), or ``f12``, its free start's (``spec.search.freeStart``)."""
    stable_score: float | None = None
    """Held-out score of the policy the workload runs: a promoted revision's validated
    score, else the stable policy's score in the last validation."""
    validated_revision: str | None = None
    """The latest validated policy revision (an immutable ConfigMap), ready to roll out."""
    stable_revision: str | None = None
    """The policy revision the workload runs."""
    canary_revision: str | None = None
    """The policy revision being rolled out, if any."""
    ledger: LedgerStatus = Field(default_factory=LedgerStatus)
    """What the current (or last) search has spent."""
    spend: SpendStatus = Field(default_factory=SpendStatus)
    """What all the target's searches have spent on model calls (``spec.retune.spendLimit``)."""
    search: SearchStatus | None = None
    """The current (or last) search."""
    validation: ValidationStatus | None = None
    """The last validation."""
    rollout: RolloutStatus | None = None
    """The rollout in flight, if any."""
    approval: ApprovalStatus | None = None
    """The latest revision held for approval or recommended (``spec.rollout.approval``)."""
    history: list[RolloutRecord] = []
    """The last finished rollouts, newest last."""
    last_retune_time: datetime | None = None
    """When the last search started (the cooldown counts from its end)."""
    last_retune_reason: str | None = None
    """What triggered the last search."""
    last_search_end_time: datetime | None = None
    """When the last search ended."""
    last_retune_trigger: str | None = None
    """What started the last search (see ``search.trigger``)."""
    retunes: int = 0
    """Searches started by a retune trigger since the target was created."""
    watch: WatchStatus | None = None
    """The retune triggers' state, while Stable."""
    library: LibraryStatus = Field(default_factory=LibraryStatus)
    """Validated winners per workload context, and which context is active."""

    def condition(self, type_: str) -> Condition | None:
        """The condition of ``type_``, if set."""
        return next((c for c in self.conditions if c.type == type_), None)

    def set_condition(
        self,
        type_: str,
        status: ConditionStatus,
        reason: str,
        message: str,
        *,
        now: datetime,
        generation: int | None = None,
    ) -> bool:
        """Set a condition; its transition time moves only when its status changes.

        Returns whether anything changed.
        """
        current = self.condition(type_)
        if current is None:
            self.conditions.append(
                Condition(
                    type=type_,
                    status=status,
                    reason=reason,
                    message=message,
                    last_transition_time=now,
                    observed_generation=generation,
                )
            )
            return True
        before = current.model_dump()
        if current.status != status:
            current.last_transition_time = now
        current.status = status
        current.reason = reason
        current.message = message
        current.observed_generation = generation
        return current.model_dump() != before

    def record_rollout(self, record: RolloutRecord, limit: int = HISTORY_LIMIT) -> None:
        """Append a finished rollout, keeping the last ``limit``."""
        self.history = [*self.history, record][-limit:]
