"""Undo: roll an earlier promoted revision out again (``retune.dev/undo=<revision>``).

The revision goes out as any validated revision does, as a canary through the target's
steps and analysis, because a revision that was once promoted can still fail on today's
workload (``kubectl argo rollouts undo`` does the same). Only a Stable target takes it: set
during a search or a canary, the annotation waits. It is one-shot; one naming no revision
this target promoted, or the stable one, is removed with the Warning ``UndoIgnored``.
Asking for an undo is a person's decision, so under ``spec.rollout.approval: manual`` it
is the approval too.
"""

from __future__ import annotations

from retune.controller.draft import Draft
from retune.rollout.controls import UNDO_ANNOTATION
from retune.spec import ApprovalMode, ApprovalStatus, Phase, TargetStatus
from retune.spec.events import EventReason


def undo(draft: Draft) -> bool:
    """Stable: take ``retune.dev/undo``; True when its revision now goes out (the target
    is Ready with it as the revision to roll out)."""
    revision = draft.facts.undo
    if revision is None:
        return False
    draft.consume(UNDO_ANNOTATION)
    status = draft.status
    if revision == status.stable_revision:
        why = "it is the stable revision already"
    elif revision not in _promoted(status):
        why = "this target never promoted it (see status.history)"
    else:
        why = ""
    if why:
        draft.event(EventReason.UNDO_IGNORED, f"{UNDO_ANNOTATION}={revision}: {why}; removed")
        return False
    status.validated_revision = revision
    if draft.facts.approval is ApprovalMode.MANUAL:
        status.approval = ApprovalStatus(
            mode="manual",
            state="Approved",
            revision=revision,
            stable_revision=status.stable_revision,
            candidate_score=promoted_score(status, revision),
            since=draft.now,
            approved_at=draft.now,
        )
    kept = status.stable_revision or "the seed policy"
    draft.event(EventReason.UNDO_REQUESTED, f"rolling {revision} out again in place of {kept}")
    status.phase = Phase.READY
    return True


def promoted_score(status: TargetStatus, revision: str) -> float | None:
    """The score ``revision`` had when it was last promoted, if it ever was."""
    found = [r.score for r in status.history if r.revision == revision and r.outcome == "Promoted"]
    return found[-1] if found else None


def rollout_score(status: TargetStatus) -> float | None:
    """The validated score of the revision in flight: the last validation's, or, for a
    revision rolled out again, its score when it was promoted before."""
    if status.rollout is not None and status.rollout.revision in _promoted(status):
        return promoted_score(status, status.rollout.revision)
    return status.validation.candidate_score if status.validation is not None else None


def _promoted(status: TargetStatus) -> set[str]:
    return {r.revision for r in status.history if r.outcome == "Promoted"}
