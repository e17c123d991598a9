"""Approval modes (``spec.rollout.approval``): who lets a validated revision out.

- ``auto``: every validated revision is rolled out as a canary (Ready -> Canary).
- ``manual``: the revision waits in ``AwaitingApproval``, its evidence in
  ``status.approval``, until the target is annotated ``retune.dev/approve=<revision>``. An
  annotation naming any other revision (a stale approval) is removed with a Warning Event.
  While it waits the retune triggers are watched as in Stable, and a newer validated
  revision replaces the waiting one.
- ``recommend``: the revision's evidence is published (``status.approval``, an Event; the
  ConfigMap exists already) and the target goes Stable; nothing is rolled out.

The gate stands where every rollout starts (:func:`retune.controller.canary.start_rollout`),
so no path (a restart, a spec change, a retune, an unpause) rolls out a revision that a
person has not approved.
"""

from __future__ import annotations

from typing import Final

from retune.controller.decision import Decision
from retune.controller.draft import READY, Draft, score
from retune.controller.triggers import watch
from retune.controller.undo import undo
from retune.rollout.controls import APPROVE_ANNOTATION
from retune.spec import ApprovalMode, ApprovalStatus, Phase
from retune.spec.events import EventReason

WAITING: Final = "Waiting"
APPROVED: Final = "Approved"
RECOMMENDED: Final = "Recommended"


def may_roll_out(draft: Draft, revision: str) -> bool:
    """Whether ``revision`` may go out as a canary now. When it may not, the target is
    moved to where it waits: ``AwaitingApproval`` (manual), or Stable with the revision
    recommended (recommend)."""
    mode, approval = draft.facts.approval, draft.status.approval
    if mode is ApprovalMode.AUTO:
        return True
    same = approval is not None and approval.revision == revision
    if mode is ApprovalMode.MANUAL:
        if same and approval is not None and approval.state == APPROVED:
            return True
        if not (same and approval is not None and approval.state == WAITING):
            _publish(draft, revision, ApprovalMode.MANUAL)
        draft.status.phase = Phase.AWAITING_APPROVAL
        return False
    if not (same and approval is not None and approval.state == RECOMMENDED):
        _publish(draft, revision, ApprovalMode.RECOMMEND)
    draft.status.validated_revision = None
    draft.status.phase = Phase.STABLE
    return False


def awaiting_approval(draft: Draft) -> Decision | None:
    """AwaitingApproval: roll the revision out once approved, else watch as Stable does;
    None when the target moves on (Ready once approved, Profiling on a retune)."""
    status, facts = draft.status, draft.facts
    revision, approval = status.validated_revision, status.approval
    if (
        facts.approval is not ApprovalMode.MANUAL
        or revision is None
        or approval is None
        or approval.revision != revision
    ):
        # The mode changed, or the revision is gone: Ready (or Stable) decides again.
        status.phase = Phase.READY if revision else Phase.STABLE
        return None
    if facts.approve is not None:
        draft.consume(APPROVE_ANNOTATION)
        if facts.approve == revision:
            approval.state = APPROVED
            approval.approved_at = draft.now
            draft.event(EventReason.APPROVED, f"{revision} approved with {APPROVE_ANNOTATION}")
            status.phase = Phase.READY
            return None
        draft.event(
            EventReason.APPROVAL_IGNORED,
            f"{APPROVE_ANNOTATION}={facts.approve} does not name the revision waiting for "
            f"approval, {revision}; removed",
        )
    draft.condition(READY, True, "AwaitingApproval", _waiting_message(draft, revision))
    return watch(draft)


def settled(draft: Draft) -> Decision | None:
    """Stable: an undo goes out (:mod:`~retune.controller.undo`); a revision still waiting
    for approval (a retune found nothing better) waits again; otherwise watch the retune
    triggers."""
    status, facts = draft.status, draft.facts
    if undo(draft):
        return None
    revision = status.validated_revision
    if facts.approval is ApprovalMode.MANUAL and revision not in (None, status.stable_revision):
        status.phase = Phase.READY
        return None
    if facts.approve is not None:
        draft.consume(APPROVE_ANNOTATION)
        draft.event(
            EventReason.APPROVAL_IGNORED,
            f"{APPROVE_ANNOTATION}={facts.approve} is set but no revision waits for approval "
            f"(spec.rollout.approval is {facts.approval.value}); removed",
        )
    return watch(draft)


def withdraw(draft: Draft) -> None:
    """A revision waiting for approval no longer applies (the spec changed what a search
    is): it waits no more."""
    approval = draft.status.approval
    if approval is not None and approval.state == WAITING:
        draft.status.approval = None
        draft.event(
            EventReason.APPROVAL_WITHDRAWN, f"{approval.revision} no longer waits for approval"
        )


def _publish(draft: Draft, revision: str, mode: ApprovalMode) -> None:
    status = draft.status
    previous = status.approval
    validation = status.validation
    status.approval = ApprovalStatus(
        mode="manual" if mode is ApprovalMode.MANUAL else "recommend",
        state=WAITING if mode is ApprovalMode.MANUAL else RECOMMENDED,
        revision=revision,
        stable_revision=status.stable_revision,
        candidate=validation.candidate if validation else None,
        candidate_score=validation.candidate_score if validation else None,
        stable_score=validation.stable_score if validation else None,
        improvement=validation.improvement if validation else None,
        subscores=dict(validation.subscores) if validation else {},
        since=draft.now,
    )
    if previous is not None and previous.state == WAITING and previous.revision != revision:
        draft.event(
            EventReason.APPROVAL_REPLACED,
            f"{revision} replaces {previous.revision}, which no longer waits for approval",
        )
    evidence = _evidence(draft)
    if mode is ApprovalMode.MANUAL:
        draft.event(EventReason.AWAITING_APPROVAL, f"{revision} ({evidence}) waits for approval")
        draft.condition(READY, True, "AwaitingApproval", _waiting_message(draft, revision))
        return
    message = (
        f"{revision} ({evidence}) is recommended and will not be rolled out "
        f"(spec.rollout.approval: recommend); `retune export {draft.facts.target}` writes it "
        "out for a GitOps repository"
    )
    draft.event(EventReason.REVISION_RECOMMENDED, message)
    draft.condition(READY, True, "Recommended", message)


def _evidence(draft: Draft) -> str:
    approval = draft.status.approval
    assert approval is not None
    against = approval.stable_revision or "the seed policy"
    text = (
        f"{approval.candidate or 'the candidate'} scores {score(approval.candidate_score)} "
        f"against {against}'s {score(approval.stable_score)} on held-out seeds"
    )
    if approval.improvement is not None:
        text += f", {approval.improvement:+.2%}"
    return text


def _waiting_message(draft: Draft, revision: str) -> str:
    return (
        f"{revision} waits for approval: kubectl annotate ot/{draft.facts.target} "
        f"{APPROVE_ANNOTATION}={revision}"
    )
