"""Ready and Canary: a validated revision goes out as a canary, one rollout at a time.

Ready starts the rollout of ``status.validatedRevision`` (recorded in ``status.rollout``,
so a restarted operator resumes it); Canary asks for one tick of the canary
(:class:`retune.rollout.CanaryRunner`, carried out by the adapters, which are the only
ones to touch Deployments and Prometheus) and takes its outcome into the status. A tick
that ends the rollout makes the target Stable: with the revision promoted
(``stableRevision``), or rolled back or aborted, the stable untouched. Either way the
revision is done with: ``validatedRevision`` is cleared, and the outcome goes to
``status.history``.

A rollout that ends without an outcome of its own (the target paused, its spec changed or
no longer usable) is dropped with :func:`drop_rollout`: its canary Deployment is deleted
and the history records it as ``Aborted``.
"""

from __future__ import annotations

from retune.controller.approval import may_roll_out
from retune.controller.decision import Decision, RemoveCanary
from retune.controller.draft import (
    CANARY_PROGRESSING,
    READY,
    Draft,
    backoff,
    replace_stale,
)
from retune.controller.facts import CanaryFailure
from retune.controller.library import rollout_ended
from retune.controller.undo import rollout_score
from retune.rollout.canary import Tick
from retune.rollout.steps import begin
from retune.signals.metrics import Value
from retune.spec import Phase, RolloutRecord

RETRY_AFTER_FAILURE = 10.0
"""Seconds before a tick that failed for a passing reason (API server, Prometheus) is
tried again."""
_MIN_REQUEUE = 0.5


def start_rollout(draft: Draft) -> Decision | None:
    """Ready: start the rollout of the validated revision; None to go on as Canary (or as
    Stable when there is nothing to roll out, or AwaitingApproval when a person decides:
    :mod:`~retune.controller.approval`)."""
    status = draft.status
    if draft.work is not None:
        replace_stale(draft, draft.work)
    revision = status.validated_revision
    if revision is None or revision == status.stable_revision:
        status.validated_revision = None
        status.phase = Phase.STABLE
        return None
    if not may_roll_out(draft, revision):
        return None
    status.rollout = begin(revision)
    status.canary_revision = revision
    status.phase = Phase.CANARY
    candidate = status.validation.candidate if status.validation else None
    message = f"rolling {revision} ({candidate or 'the validated policy'}) out as a canary"
    draft.event("RolloutStarted", message)
    draft.condition(CANARY_PROGRESSING, True, "Started", message)
    draft.condition(READY, False, "RollingOut", message)
    return None


def canary_step(draft: Draft) -> Decision | None:
    """Canary: ask for a tick, then take it into the status; None when the rollout ended
    (the target is then Stable)."""
    status = draft.status
    rollout = status.rollout
    if rollout is None:
        status.canary_revision = None
        status.phase = Phase.STABLE
        return None
    if draft.work is not None:
        replace_stale(draft, draft.work)
    reading = draft.facts.canary
    if reading is None:
        return draft.decision(0.0, needs_canary=True)
    if isinstance(reading, CanaryFailure):
        return _failed(draft, reading)
    if reading.decision.status.revision != rollout.revision:
        raise ValueError(
            f"a tick of {reading.decision.status.revision} for the rollout of {rollout.revision}"
        )
    return _take(draft, reading)


def drop_rollout(draft: Draft, reason: str, *, keep_revision: bool) -> None:
    """End the rollout in flight without an outcome of its own: delete the canary, record
    it as ``Aborted``. With ``keep_revision`` the validated revision stays, to be rolled
    out again from the first step when the target is Ready again."""
    status = draft.status
    rollout = status.rollout
    if rollout is None:
        return
    draft.act(RemoveCanary(reason))
    status.record_rollout(
        RolloutRecord(
            revision=rollout.revision,
            outcome="Aborted",
            reason=reason,
            score=_score(draft),
            started_at=rollout.started_at,
            finished_at=draft.now,
        )
    )
    status.rollout = None
    status.canary_revision = None
    if not keep_revision:
        status.validated_revision = None
    message = f"the canary of {rollout.revision} was removed: {reason}"
    draft.event("CanaryAborted", message, warning=True)
    draft.condition(CANARY_PROGRESSING, False, "Aborted", message)


def _take(draft: Draft, tick: Tick) -> Decision | None:
    status = draft.status
    message = tick.message
    draft.consume(*tick.consumed)
    if tick.record is None:
        assert tick.status is not None
        rollout = tick.status.model_copy(update={"message": message})
        if tick.report is not None:
            rollout.verdicts = {r.name: r.outcome for r in tick.report.results}
            rollout.stable_analysis = {
                r.name: r.stable.value if isinstance(r.stable, Value) else None
                for r in tick.report.results
                if r.stable is not None
            }
        status.rollout = rollout
        if tick.notable:
            draft.event(tick.reason, message, warning=tick.reason == "CanaryHeld")
        where = f"step {rollout.step + 1} at {rollout.share}%"
        draft.condition(CANARY_PROGRESSING, True, tick.reason, f"{where}: {message}")
        draft.condition(READY, False, "RollingOut", f"rolling {rollout.revision} out: {where}")
        requeue = tick.requeue_after(draft.now)
        return draft.decision(max(_MIN_REQUEUE, requeue if requeue is not None else 0.0))
    record = tick.record
    status.record_rollout(record)
    status.rollout = None
    status.canary_revision = None
    status.validated_revision = None
    status.watch = None
    status.phase = Phase.STABLE
    if record.outcome == "Promoted":
        status.stable_revision = record.revision
        if record.score is not None:
            status.stable_score = record.score
        draft.event(tick.reason, f"{record.revision} promoted: {message}")
        draft.condition(CANARY_PROGRESSING, False, "Promoted", message)
        draft.condition(READY, True, "Promoted", f"{record.revision} is the stable policy")
    else:
        kept = status.stable_revision or "its policy"
        draft.event(
            tick.reason, f"{record.revision}: {message}; the stable keeps {kept}", warning=True
        )
        draft.condition(CANARY_PROGRESSING, False, record.outcome, message)
        draft.condition(READY, True, record.outcome, f"the workload keeps {kept}: {message}")
    if rollout_ended(draft, record):
        return None  # a recalled winner failed its canary: the retune searches
    return draft.decision(1.0)


def _failed(draft: Draft, failure: CanaryFailure) -> Decision:
    rollout = draft.status.rollout
    assert rollout is not None
    message = f"the canary of {rollout.revision} could not be updated: {failure.message}"
    if failure.permanent:
        if draft.turn(CANARY_PROGRESSING, False, "RolloutError", message):
            draft.event("RolloutError", message, warning=True)
        draft.condition(READY, False, "RolloutError", message)
        return draft.decision(backoff(draft, CANARY_PROGRESSING))
    if draft.turn(CANARY_PROGRESSING, True, "Interrupted", message):
        draft.event("CanaryInterrupted", message, warning=True)
    return draft.decision(RETRY_AFTER_FAILURE)


def _score(draft: Draft) -> float | None:
    return rollout_score(draft.status)
