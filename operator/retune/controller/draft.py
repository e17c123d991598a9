"""A decision being made: the status as it will be, and the actions and events so far."""

from __future__ import annotations

from datetime import datetime

from retune.controller.decision import (
    Action,
    ClearAnnotations,
    Decision,
    Event,
    ForgetWork,
    StopWork,
)
from retune.controller.facts import Facts, SearchProgress, WorkReport
from retune.controller.spend import add_progress
from retune.search.ledger import LedgerState
from retune.search.validation import ValidationReport
from retune.spec import (
    ConditionStatus,
    ConditionType,
    LedgerStatus,
    ModelUsageStatus,
    ScorePair,
    TargetStatus,
    ValidationStatus,
)
from retune.spec.events import EventReason, event_type

READY = ConditionType.READY
SEARCHING = ConditionType.SEARCHING
DEGRADED = ConditionType.DEGRADED
SIGNALS_READY = ConditionType.SIGNALS_READY
CANARY_PROGRESSING = ConditionType.CANARY_PROGRESSING
DRIFTED = ConditionType.DRIFTED
SLO_VIOLATED = ConditionType.SLO_VIOLATED
HARDWARE_CHANGED = ConditionType.HARDWARE_CHANGED
RETUNE_PENDING = ConditionType.RETUNE_PENDING

BACKOFF = (5.0, 120.0)
"""Least and most seconds between two checks of a target that waits for its signals or
for a problem to be fixed: a quarter of the time it has waited, within these."""


class Draft:
    """The working copy of one decision; the input status is never modified."""

    def __init__(self, status: TargetStatus, facts: Facts, now: datetime) -> None:
        self.status = status.model_copy(deep=True)
        self.facts = facts
        self.now = now
        self.work: WorkReport | None = facts.work
        self.actions: list[Action] = []
        self.events: list[Event] = []
        self.consumed: set[str] = set()

    def condition(self, type_: str, value: bool | None, reason: str, message: str) -> bool:
        """Set a condition (None is ``Unknown``); whether its status, reason or message
        changed."""
        status: ConditionStatus = "Unknown" if value is None else ("True" if value else "False")
        before = self.status.condition(type_)
        previous = (before.status, before.reason, before.message) if before else None
        self.status.set_condition(
            type_, status, reason, message, now=self.now, generation=self.facts.generation
        )
        return previous != (status, reason, message)

    def turn(self, type_: str, value: bool | None, reason: str, message: str) -> bool:
        """Set a condition; whether its status or reason changed (a new message alone,
        e.g. a value that moved, is not a turn worth an Event)."""
        before = self.status.condition(type_)
        previous = (before.status, before.reason) if before else None
        self.condition(type_, value, reason, message)
        after = self.status.condition(type_)
        assert after is not None
        return previous != (after.status, after.reason)

    def is_true(self, type_: str) -> bool:
        """Whether the condition is currently ``True``."""
        condition = self.status.condition(type_)
        return condition is not None and condition.status == "True"

    def event(self, reason: EventReason, message: str) -> None:
        """Record a Kubernetes Event (a warning or not as its reason is, ``spec.events``)."""
        self.events.append(Event(event_type(reason), reason, message))

    def act(self, action: Action) -> None:
        """Record an action for the adapters to carry out, in order."""
        self.actions.append(action)

    def consume(self, *annotations: str) -> None:
        """Remove these one-shot control annotations once the decision is carried out."""
        self.consumed.update(annotations)

    def decision(
        self,
        requeue_after: float,
        *,
        needs_signals: bool = False,
        needs_watch: bool = False,
        needs_canary: bool = False,
    ) -> Decision:
        """The finished decision."""
        actions = list(self.actions)
        if self.consumed:
            actions.append(ClearAnnotations(tuple(sorted(self.consumed))))
        return Decision(
            status=self.status,
            actions=actions,
            events=self.events,
            requeue_after=requeue_after,
            needs_signals=needs_signals,
            needs_watch=needs_watch,
            needs_canary=needs_canary,
        )

    def apply_progress(self, progress: SearchProgress) -> None:
        """Take the engine's progress into the status: best and seed scores, the ledger."""
        self.status.best_score = progress.best_score
        self.status.seed_score = progress.seed_score
        self.status.best_candidate = progress.best_candidate
        ledger = ledger_status(progress.ledger)
        add_progress(self.status, ledger.usd)
        for name, usage in ledger.models.items():
            before = self.status.ledger.models.get(name)
            if usage.rests > (before.rests if before else 0):
                self.event(
                    EventReason.MODEL_TIER_RESTING,
                    f"model tier {name} kept giving no usable program ({usage.failed_calls} "
                    f"of {usage.calls} calls): the search goes on without it for a while "
                    "(docs/llm.md)",
                )
        self.status.ledger = ledger


def stop_active_work(draft: Draft, reason: str) -> None:
    """Stop the target's worker, if it runs."""
    if draft.work is not None and draft.work.active:
        draft.act(StopWork(reason))
    draft.work = None


def replace_stale(draft: Draft, work: WorkReport) -> None:
    """A worker that is not what the target's phase needs (left from before a restart of
    the phase) goes."""
    if work.active:
        draft.act(StopWork(f"a {work.kind.value} is not what the target needs now"))
    else:
        draft.act(ForgetWork())
    draft.work = None


def backoff(draft: Draft, condition_type: str) -> float:
    """Check again soon after a condition changed, then less and less often."""
    condition = draft.status.condition(condition_type)
    since = condition.last_transition_time if condition else None
    waited = (draft.now - since).total_seconds() if since else 0.0
    low, high = BACKOFF
    return min(high, max(low, waited / 4))


def ledger_status(ledger: LedgerState) -> LedgerStatus:
    """The engine's ledger as the status shows it."""
    return LedgerStatus(
        evaluations=ledger.evaluations,
        failed_evaluations=ledger.failed_evaluations,
        wall_seconds=round(ledger.wall_seconds, 1),
        usd=round(ledger.usd_spent, 6),
        strong_usd=round(ledger.strong_usd, 6),
        models={
            name: ModelUsageStatus(
                calls=usage.calls,
                failed_calls=usage.failed_calls,
                rests=ledger.rests.get(name, 0),
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                usd=round(usage.usd, 6),
            )
            for name, usage in sorted(ledger.models.items())
        },
    )


def validation_status(
    report: ValidationReport, candidate: str | None, now: datetime
) -> ValidationStatus:
    """A validation's report as the status shows it."""
    return ValidationStatus(
        candidate=candidate,
        passed=report.passed,
        candidate_score=report.candidate_score,
        stable_score=report.stable_score,
        improvement=report.improvement,
        subscores={
            name: ScorePair(candidate=ours, stable=theirs)
            for name, (ours, theirs) in report.subscores.items()
        },
        reasons=list(report.reasons),
        finished_at=now,
    )


def score(value: float | None) -> str:
    """A score for a message."""
    return "none" if value is None else f"{value:.4f}"
