"""Approval modes (``spec.rollout.approval``): the controller's side, driven with plain facts.

``manual`` holds a validated revision in AwaitingApproval until ``retune.dev/approve`` names
it; ``recommend`` publishes it and never rolls out; ``auto`` rolls out as before.
"""

from __future__ import annotations

from datetime import timedelta

from retune.controller import (
    ClearAnnotations,
    PublishRevision,
    ValidationOutcome,
    WatchReading,
    WorkKind,
    WorkReport,
    WorkState,
    decide,
    resume_point,
)
from retune.rollout import APPROVE_ANNOTATION, RETUNE_ANNOTATION
from retune.search.validation import ValidationReport
from retune.spec import ApprovalMode, Phase, ScorePair, TargetStatus
from tests.test_controller import (
    DIGESTS,
    T0,
    condition,
    facts,
    finished_search,
    finished_status,
    reasons,
)

MANUAL = ApprovalMode.MANUAL
RECOMMEND = ApprovalMode.RECOMMEND
SOON = T0 + timedelta(seconds=1)
CODE = "def priority(key, hits, age):\n    return hits * 2 - age\n"
NEWER_CODE = "def priority(key, hits, age):\n    return hits * 3 - age\n"


def validated(code: str = CODE, candidate: str = "c7", score: float = 0.53) -> WorkReport:
    """A finished validation that passed, with subscores."""
    report = ValidationReport(
        passed=True,
        candidate_score=score,
        stable_score=0.47,
        improvement=(score - 0.47) / 0.47,
        subscores={"scan": (0.41, 0.30), "hot": (0.62, 0.60)},
    )
    outcome = ValidationOutcome(candidate=candidate, candidate_code=code, report=report)
    return WorkReport(kind=WorkKind.VALIDATION, state=WorkState.FINISHED, validation=outcome)


def held(mode: ApprovalMode) -> TargetStatus:
    """A revision validated, then held at the next reconcile under ``mode``."""
    ready = decide(finished_status(), facts(work=validated(), approval=mode), T0).status
    assert ready.phase is Phase.READY
    return decide(ready, facts(approval=mode, watch=WatchReading()), SOON).status


def test_manual_holds_a_validated_revision_with_its_evidence() -> None:
    ready = decide(finished_status(), facts(work=validated(), approval=MANUAL), T0).status
    decision = decide(ready, facts(approval=MANUAL), SOON)
    status = decision.status
    revision = ready.validated_revision
    assert status.phase is Phase.AWAITING_APPROVAL
    assert status.rollout is None and not decision.needs_canary
    assert status.validated_revision == revision
    approval = status.approval
    assert approval is not None and approval.revision == revision
    assert (approval.mode, approval.state) == ("manual", "Waiting")
    assert (approval.candidate, approval.candidate_score, approval.stable_score) == (
        "c7",
        0.53,
        0.47,
    )
    assert approval.subscores == {
        "scan": ScorePair(candidate=0.41, stable=0.30),
        "hot": ScorePair(candidate=0.62, stable=0.60),
    }
    assert reasons(decision)[0] == "AwaitingApproval"
    state, reason, message = condition(status, "Ready")
    assert (state, reason) == ("True", "AwaitingApproval")
    assert f"{APPROVE_ANNOTATION}={revision}" in message
    # While it waits, the retune triggers are watched as in Stable.
    assert decision.needs_watch


def test_a_restart_resumes_the_wait_and_never_the_rollout() -> None:
    status = held(MANUAL)
    restarted = status.model_copy(update={"phase": Phase.IDLE})
    assert resume_point(restarted, DIGESTS) is Phase.READY
    decision = decide(restarted, facts(approval=MANUAL, watch=WatchReading()), SOON)
    assert decision.status.phase is Phase.AWAITING_APPROVAL
    assert decision.status.rollout is None
    assert "AwaitingApproval" not in reasons(decision)  # the same revision: said once


def test_an_approval_naming_the_waiting_revision_starts_its_canary() -> None:
    status = held(MANUAL)
    revision = status.validated_revision
    decision = decide(status, facts(approval=MANUAL, approve=revision), SOON)
    new = decision.status
    assert new.phase is Phase.CANARY and decision.needs_canary
    assert new.rollout is not None and new.rollout.revision == revision
    assert new.approval is not None and new.approval.state == "Approved"
    assert new.approval.approved_at == SOON
    assert reasons(decision) == ["Approved", "RolloutStarted"]
    assert ClearAnnotations((APPROVE_ANNOTATION,)) in decision.actions


def test_a_stale_approval_is_removed_with_a_warning_and_the_revision_keeps_waiting() -> None:
    status = held(MANUAL)
    decision = decide(
        status,
        facts(approval=MANUAL, approve="cache-eviction-policy-old", watch=WatchReading()),
        SOON,
    )
    assert decision.status.phase is Phase.AWAITING_APPROVAL
    assert decision.status.rollout is None
    ignored = [event for event in decision.events if event.reason == "ApprovalIgnored"]
    assert len(ignored) == 1 and ignored[0].type == "Warning"
    assert "cache-eviction-policy-old" in ignored[0].message
    assert ClearAnnotations((APPROVE_ANNOTATION,)) in decision.actions


def test_a_newer_validated_winner_replaces_the_waiting_one() -> None:
    status = held(MANUAL)
    old = status.validated_revision
    validating = status.model_copy(update={"phase": Phase.VALIDATING})
    newer = decide(
        validating, facts(work=validated(NEWER_CODE, "c9", 0.55), approval=MANUAL), SOON
    ).status
    decision = decide(newer, facts(approval=MANUAL, watch=WatchReading()), SOON)
    status = decision.status
    assert status.phase is Phase.AWAITING_APPROVAL
    assert status.validated_revision not in (None, old)
    assert status.approval is not None and status.approval.revision == status.validated_revision
    assert status.approval.candidate == "c9"
    assert reasons(decision)[:2] == ["ApprovalReplaced", "AwaitingApproval"]
    # An approval of the replaced revision is stale now.
    stale = decide(status, facts(approval=MANUAL, approve=old, watch=WatchReading()), SOON)
    assert stale.status.phase is Phase.AWAITING_APPROVAL
    assert "ApprovalIgnored" in reasons(stale)


def test_a_retune_that_finds_nothing_better_leaves_the_revision_waiting() -> None:
    status = held(MANUAL)
    controls = frozenset({RETUNE_ANNOTATION})
    retune = decide(status, facts(approval=MANUAL, controls=controls, watch=WatchReading()), SOON)
    assert retune.status.phase is Phase.PROFILING
    searching = retune.status.model_copy(update={"phase": Phase.SEARCHING})
    later = SOON + timedelta(minutes=5)
    done = decide(searching, facts(approval=MANUAL, work=finished_search(0.40)), later)
    again = decide(done.status, facts(approval=MANUAL, watch=WatchReading()), later)
    assert again.status.phase is Phase.AWAITING_APPROVAL
    assert again.status.validated_revision == status.validated_revision


def test_recommend_publishes_the_revision_and_never_rolls_it_out() -> None:
    first = decide(finished_status(), facts(work=validated(), approval=RECOMMEND), T0)
    revision = first.status.validated_revision
    assert any(isinstance(action, PublishRevision) for action in first.actions)
    decision = decide(first.status, facts(approval=RECOMMEND), SOON)
    status = decision.status
    assert status.phase is Phase.STABLE and status.rollout is None
    assert not decision.needs_canary and decision.needs_watch
    assert status.validated_revision is None  # nothing left to roll out, after a restart too
    assert resume_point(status, DIGESTS) is Phase.STABLE
    approval = status.approval
    assert approval is not None and approval.revision == revision
    assert (approval.mode, approval.state) == ("recommend", "Recommended")
    assert approval.subscores["scan"] == ScorePair(candidate=0.41, stable=0.30)
    event = next(event for event in decision.events if event.reason == "RevisionRecommended")
    assert revision is not None and revision in event.message
    assert "retune export cache-eviction" in event.message
    assert condition(status, "Ready")[:2] == ("True", "Recommended")
    watched = decide(status, facts(approval=RECOMMEND, watch=WatchReading()), SOON)
    assert watched.status.phase is Phase.STABLE and "RevisionRecommended" not in reasons(watched)


def test_an_approval_without_a_waiting_revision_is_removed_with_a_warning() -> None:
    status = held(RECOMMEND)
    decision = decide(status, facts(approval=RECOMMEND, approve="x", watch=WatchReading()), SOON)
    assert decision.status.phase is Phase.STABLE and decision.status.rollout is None
    assert "ApprovalIgnored" in reasons(decision)


def test_auto_rolls_the_validated_revision_out_as_before() -> None:
    ready = decide(finished_status(), facts(work=validated()), T0).status
    decision = decide(ready, facts(), SOON)
    assert decision.status.phase is Phase.CANARY and decision.needs_canary
    assert decision.status.approval is None


def test_switching_from_manual_to_auto_rolls_the_waiting_revision_out() -> None:
    status = held(MANUAL)
    decision = decide(status, facts(approval=ApprovalMode.AUTO, generation=2), SOON)
    assert decision.status.phase is Phase.CANARY and decision.needs_canary
