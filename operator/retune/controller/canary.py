"""Ready and Canary: a validated revision goes out as a canary, one rollout at a time.

Ready starts the rollout of ``status.validatedRevision`` (recorded in ``status.rollout``,
so a restarted operator resumes it). Canary is decided like every other phase: the
adapters read the rollout (:class:`~retune.rollout.CanaryObservation`: the Deployments,
and the analysis once the step's interval is over), the step is decided here with the
rollout's pure step logic (:func:`retune.rollout.next_step`), and the writes go out as
actions (:class:`ScaleCanary`, :class:`PromoteCanary`, :class:`RemoveCanary`) that the
adapters carry out before the status is written. Every reconcile of a running rollout
brings the canary to the status's share when it is not there (made again if it was
deleted), and a stable found on the revision already finishes that promotion instead of
analysing it again, so a crash at any point leaves one promotion per rollout.

A step that ends the rollout makes the target Stable: with the revision promoted
(``stableRevision``), or rolled back or aborted, the stable untouched. Either way the
revision is done with: ``validatedRevision`` is cleared, and the outcome goes to
``status.history``.

A rollout that ends without an outcome of its own (the target paused, its spec changed or
no longer usable) is dropped with :func:`drop_rollout`: its canary Deployment is deleted
and the history records it as ``Aborted``.
"""

from __future__ import annotations

from retune.controller.approval import may_roll_out
from retune.controller.decision import Decision, PromoteCanary, RemoveCanary, ScaleCanary
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
from retune.rollout import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    CanaryObservation,
    CanaryScale,
    Controls,
    Promote,
    Rollback,
    SetShare,
    Step,
    Wait,
    begin,
    next_step,
    record,
)
from retune.signals.analysis import AnalysisReport
from retune.signals.metrics import Value
from retune.spec import Phase, RolloutRecord
from retune.spec.events import EventReason

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
    draft.event(EventReason.ROLLOUT_STARTED, message)
    draft.condition(CANARY_PROGRESSING, True, "Started", message)
    draft.condition(READY, False, "RollingOut", message)
    return None


def canary_step(draft: Draft) -> Decision | None:
    """Canary: ask for a reading of the rollout, then decide its step; None when the
    rollout ended (the target is then Stable)."""
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
    if reading.revision != rollout.revision:
        raise ValueError(f"a reading of {reading.revision} for the rollout of {rollout.revision}")
    return _step(draft, reading)


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
    draft.event(EventReason.CANARY_ABORTED, message)
    draft.condition(CANARY_PROGRESSING, False, "Aborted", message)


def _step(draft: Draft, reading: CanaryObservation) -> Decision | None:
    """Decide the rollout's step on ``reading`` with the rollout's step logic, ask for its
    writes, and take it into the status."""
    facts, rollout = draft.facts, draft.status.rollout
    assert rollout is not None
    judged: list[AnalysisReport] = []

    def analysis() -> AnalysisReport:
        if reading.analysis is None:
            raise ValueError(f"the analysis of {rollout.revision} is due but was not read")
        judged.append(reading.analysis)
        return reading.analysis

    if reading.promoted:  # a crash between patching the stable and recording it
        done = Promote(f"the stable already runs {rollout.revision}; promotion finished")
        step = Step(done, rollout, None)
    else:
        step = next_step(
            facts.rollout, rollout, draft.now, analysis, Controls.from_keys(facts.controls)
        )
    scale = _act(draft, step, reading)
    message = step.action.reason
    if scale is not None and not isinstance(step.action, Wait):
        message += f" ({scale.describe()})"
    ended = record(step, draft.now, _score(draft))
    if ended is None:
        return _running(draft, step, message, judged[0] if judged else None, scale)
    one_shot = (ABORT_ANNOTATION, PROMOTE_ANNOTATION)
    draft.consume(*(key for key in one_shot if key in facts.controls))
    return _ended(draft, ended, step.action.event, message)


def _running(
    draft: Draft,
    step: Step,
    message: str,
    report: AnalysisReport | None,
    scale: CanaryScale | None,
) -> Decision:
    action = step.action
    rollout = step.status.model_copy(update={"message": message})
    if report is not None:
        rollout.verdicts = {r.name: r.outcome for r in report.results}
        rollout.stable_analysis = {
            r.name: r.stable.value if isinstance(r.stable, Value) else None
            for r in report.results
            if r.stable is not None
        }
    draft.status.rollout = rollout
    if not isinstance(action, Wait) or (scale is not None and scale.changed):
        draft.event(action.event, message)
    where = f"step {rollout.step + 1} at {rollout.share}%"
    draft.condition(CANARY_PROGRESSING, True, action.event, f"{where}: {message}")
    draft.condition(READY, False, "RollingOut", f"rolling {rollout.revision} out: {where}")
    assert step.next_check is not None
    requeue = (step.next_check - draft.now).total_seconds()
    return draft.decision(max(_MIN_REQUEUE, requeue))


def _ended(
    draft: Draft, ended: RolloutRecord, reason: EventReason, message: str
) -> Decision | None:
    status = draft.status
    status.record_rollout(ended)
    status.rollout = None
    status.canary_revision = None
    status.validated_revision = None
    status.watch = None
    status.phase = Phase.STABLE
    if ended.outcome == "Promoted":
        status.stable_revision = ended.revision
        if ended.score is not None:
            status.stable_score = ended.score
        draft.event(reason, f"{ended.revision} promoted: {message}")
        draft.condition(CANARY_PROGRESSING, False, "Promoted", message)
        draft.condition(READY, True, "Promoted", f"{ended.revision} is the stable policy")
    else:
        kept = status.stable_revision or "its policy"
        draft.event(reason, f"{ended.revision}: {message}; the stable keeps {kept}")
        draft.condition(CANARY_PROGRESSING, False, ended.outcome, message)
        draft.condition(READY, True, ended.outcome, f"the workload keeps {kept}: {message}")
    if rollout_ended(draft, ended):
        return None  # a recalled winner failed its canary: the retune searches
    return draft.decision(1.0)


def _act(draft: Draft, step: Step, reading: CanaryObservation) -> CanaryScale | None:
    """The writes ``step`` needs; the canary's size while the rollout runs."""
    action, revision = step.action, step.status.revision
    if isinstance(action, Promote):
        draft.act(PromoteCanary(revision))
        return None
    if isinstance(action, Rollback):
        draft.act(RemoveCanary(action.reason))
        return None
    share = action.share if isinstance(action, SetShare) else step.status.share
    scale = reading.scale(share)
    if scale.changed:  # level-triggered: a deleted or stale canary is made again
        draft.act(ScaleCanary(revision, share))
    return scale


def _failed(draft: Draft, failure: CanaryFailure) -> Decision:
    rollout = draft.status.rollout
    assert rollout is not None
    message = f"the canary of {rollout.revision} could not be updated: {failure.message}"
    if failure.permanent:
        if draft.turn(CANARY_PROGRESSING, False, "RolloutError", message):
            draft.event(EventReason.ROLLOUT_ERROR, message)
        draft.condition(READY, False, "RolloutError", message)
        return draft.decision(backoff(draft, CANARY_PROGRESSING))
    if draft.turn(CANARY_PROGRESSING, True, "Interrupted", message):
        draft.event(EventReason.CANARY_INTERRUPTED, message)
    return draft.decision(RETRY_AFTER_FAILURE)


def _score(draft: Draft) -> float | None:
    return rollout_score(draft.status)
