"""Undo (``retune.dev/undo=<revision>``): an earlier promoted revision goes out again as a
canary, driven with plain facts."""

from __future__ import annotations

from retune.controller import ClearAnnotations, decide, rollout_score
from retune.rollout import UNDO_ANNOTATION, begin
from retune.spec import (
    ApprovalMode,
    Phase,
    RolloutRecord,
    TargetStatus,
    ValidationStatus,
)
from tests.test_controller import T0, facts, reasons

FIRST, SECOND = "cache-eviction-policy-aaaa", "cache-eviction-policy-bbbb"


def stable() -> TargetStatus:
    """A target that promoted two revisions, the second now stable."""
    return TargetStatus(
        phase=Phase.STABLE,
        stable_revision=SECOND,
        stable_score=0.53,
        validation=ValidationStatus(candidate="c7", passed=True, candidate_score=0.53),
        history=[
            RolloutRecord(revision=FIRST, outcome="Promoted", score=0.5),
            RolloutRecord(revision="cache-eviction-policy-cccc", outcome="RolledBack", score=0.6),
            RolloutRecord(revision=SECOND, outcome="Promoted", score=0.53),
        ],
    )


def test_an_undo_rolls_the_earlier_revision_out_as_a_canary() -> None:
    decision = decide(stable(), facts(undo=FIRST), T0)
    status = decision.status
    assert status.phase is Phase.CANARY and decision.needs_canary
    assert status.rollout == begin(FIRST) and status.canary_revision == FIRST
    assert status.stable_revision == SECOND  # until the canary is promoted
    assert reasons(decision) == ["UndoRequested", "RolloutStarted"]
    assert ClearAnnotations((UNDO_ANNOTATION,)) in decision.actions
    # Its record will carry the score it was promoted with, not the last validation's
    assert rollout_score(status) == 0.5


def test_under_manual_approval_the_undo_is_the_approval() -> None:
    decision = decide(stable(), facts(undo=FIRST, approval=ApprovalMode.MANUAL), T0)
    status = decision.status
    assert status.phase is Phase.CANARY and status.rollout == begin(FIRST)
    assert status.approval is not None and status.approval.state == "Approved"
    assert status.approval.revision == FIRST and status.approval.candidate_score == 0.5


def test_an_undo_naming_no_earlier_promoted_revision_is_removed_with_a_warning() -> None:
    for revision, why in (
        (SECOND, "it is the stable revision already"),
        ("cache-eviction-policy-cccc", "this target never promoted it"),
    ):
        decision = decide(stable(), facts(undo=revision), T0)
        assert decision.status.phase is Phase.STABLE and decision.status.rollout is None
        [event] = [e for e in decision.events if e.reason == "UndoIgnored"]
        assert event.type == "Warning" and why in event.message
        assert ClearAnnotations((UNDO_ANNOTATION,)) in decision.actions


def test_a_fresh_revision_is_scored_by_its_validation() -> None:
    status = stable()
    status.rollout = begin("cache-eviction-policy-dddd")
    assert rollout_score(status) == 0.53
