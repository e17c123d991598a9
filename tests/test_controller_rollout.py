"""Ready and Canary: the controller's side of a rollout, driven with plain readings.

A reading is what the adapters observe of a rollout (its Deployments, and its analysis
when the step is judged); here it is built by hand, so no Deployment exists. The writes the
controller asks for come back as actions.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from retune.controller import (
    CanaryFailure,
    ClearAnnotations,
    Decision,
    Facts,
    ForgetWork,
    PromoteCanary,
    RemoveCanary,
    ScaleCanary,
    SpecDigests,
    decide,
    resume_point,
)
from retune.rollout import (
    ABORT_ANNOTATION,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    RETUNE_ANNOTATION,
    CanaryObservation,
    begin,
    canary_replicas,
)
from retune.signals.analysis import AnalysisReport, AnalysisResult
from retune.signals.metrics import NoData, Value
from retune.spec import Phase, RolloutSpec, RolloutStatus, TargetStatus
from tests.test_controller import (
    DIGESTS,
    T0,
    condition,
    finished_status,
    finished_validation,
    reasons,
)
from tests.test_controller import facts as target_facts

SPEC = RolloutSpec(steps=[10, 50], interval_seconds=2, failure_limit=1, no_data_limit=2)
STABLE_REPLICAS = 4


def facts(**changes: object) -> Facts:
    """A target's facts with this module's rollout settings."""
    return target_facts(**{"rollout": SPEC, **changes})


def report(outcome: str, value: float | None = 0.4) -> AnalysisReport:
    canary = Value(value) if value is not None else NoData()
    result = AnalysisResult(
        name="hit-ratio",
        outcome=outcome,  # type: ignore[arg-type]
        canary=canary,
        stable=Value(0.42),
        message=f"hit-ratio: canary {value}",
    )
    return AnalysisReport(outcome=outcome, results=(result,))  # type: ignore[arg-type]


def observed(
    rollout: RolloutStatus,
    analysis: AnalysisReport | None = None,
    *,
    canary: bool = True,
    stable_revision: str = "cache-eviction-seed",
) -> CanaryObservation:
    """The rollout's Deployments as they should be at its share (``canary=False``: the
    canary is missing), with ``analysis`` when it was read."""
    return CanaryObservation(
        revision=rollout.revision,
        stable_revision=stable_revision,
        stable_replicas=STABLE_REPLICAS,
        canary_replicas=canary_replicas(STABLE_REPLICAS, rollout.share) if canary else None,
        canary_current=canary,
        analysis=analysis,
    )


def at_step(status: TargetStatus, step: int) -> TargetStatus:
    """``status`` with its rollout at ``step`` (started at T0)."""
    assert status.rollout is not None
    rollout = status.rollout.model_copy(update={"step": step, "share": SPEC.steps[step]})
    return status.model_copy(update={"rollout": rollout})


def step(status: TargetStatus, at: datetime, analysis: AnalysisReport | None = None) -> Decision:
    """The decision on a reading of ``status``'s rollout at ``at``."""
    assert status.rollout is not None
    return decide(status, facts(canary=observed(status.rollout, analysis)), at)


def ready_status() -> TargetStatus:
    return decide(finished_status(), facts(work=finished_validation()), T0).status


def canary_status(at: datetime = T0) -> TargetStatus:
    """A rollout at its first step."""
    asked = decide(ready_status(), facts(), at)
    assert asked.status.rollout is not None
    first = observed(asked.status.rollout, canary=False)
    return decide(ready_status(), facts(canary=first), at).status


def test_the_first_tick_starts_the_canary_at_the_first_step() -> None:
    ready = ready_status()
    asked = decide(ready, facts(), T0)
    assert asked.needs_canary and asked.status.rollout == begin(ready.validated_revision or "")
    reading = observed(asked.status.rollout, canary=False)
    decision = decide(ready, facts(canary=reading), T0)
    status = decision.status
    assert status.phase is Phase.CANARY and not decision.needs_canary
    assert status.rollout is not None and (status.rollout.step, status.rollout.share) == (0, 10)
    assert decision.actions == [ScaleCanary(status.rollout.revision, 10)]
    assert reasons(decision) == ["RolloutStarted", "CanaryStep"]
    assert decision.events[-1].message.endswith("starts at 10% (1 canary pod beside 4 stable)")
    assert condition(status, "CanaryProgressing")[:2] == ("True", "CanaryStep")
    assert condition(status, "Ready")[:2] == ("False", "RollingOut")
    assert decision.requeue_after == 2.0  # the step's interval


def test_a_passed_analysis_moves_to_the_next_step_and_shows_its_values() -> None:
    status = canary_status()
    assert status.rollout is not None
    later = T0 + timedelta(seconds=2)
    decision = step(status, later, report("pass"))
    rollout = decision.status.rollout
    assert rollout is not None and (rollout.step, rollout.share) == (1, 50)
    assert decision.actions == [ScaleCanary(rollout.revision, 50)]
    assert rollout.analysis == {"hit-ratio": 0.4}
    assert rollout.verdicts == {"hit-ratio": "pass"}
    assert rollout.stable_analysis == {"hit-ratio": 0.42}
    assert "analysis passed" in rollout.message
    assert "step 2 at 50%" in condition(decision.status, "CanaryProgressing")[2]


def test_a_quiet_wait_posts_no_event() -> None:
    status = canary_status()
    assert status.rollout is not None
    soon = T0 + timedelta(seconds=1)
    decision = step(status, soon)
    assert decision.events == [] and decision.status.phase is Phase.CANARY
    assert decision.actions == []  # the canary is as it should be: nothing to write
    assert decision.requeue_after == 1.0


def test_a_missing_canary_is_made_again_at_the_steps_share() -> None:
    status = canary_status()
    assert status.rollout is not None
    soon = T0 + timedelta(seconds=1)
    reading = observed(status.rollout, canary=False)  # deleted by someone
    decision = decide(status, facts(canary=reading), soon)
    assert decision.actions == [ScaleCanary(status.rollout.revision, 10)]
    assert reasons(decision) == ["CanaryWaiting"]  # a wait that wrote is worth an Event
    rollout = decision.status.rollout
    assert rollout is not None and (rollout.step, rollout.step_started_at) == (0, T0)


def test_the_analysis_is_asked_for_only_when_the_step_is_judged() -> None:
    status = canary_status()
    assert status.rollout is not None
    later = T0 + timedelta(seconds=2)
    with pytest.raises(ValueError, match=r"analysis of .* is due but was not read"):
        step(status, later)


def test_the_last_passed_step_promotes_and_the_target_is_stable() -> None:
    status = canary_status()
    assert status.rollout is not None
    revision = status.rollout.revision
    later = T0 + timedelta(seconds=2)
    decision = step(at_step(status, 1), later, report("pass"))
    assert decision.actions == [PromoteCanary(revision)]
    done = decision.status
    assert done.phase is Phase.STABLE and done.stable_revision == revision
    assert done.rollout is None and done.canary_revision is None
    assert done.validated_revision is None  # rolled out: nothing left to roll out
    assert [(r.revision, r.outcome, r.score) for r in done.history] == [
        (revision, "Promoted", 0.53)
    ]
    # The promoted winner becomes its context's in the library.
    assert reasons(decision) == ["CanaryPromoted", "ContextRemembered"]
    assert condition(done, "CanaryProgressing")[:2] == ("False", "Promoted")
    assert condition(done, "Ready")[:2] == ("True", "Promoted")
    assert resume_point(done, DIGESTS) is Phase.STABLE  # a restart does not roll it out again


def test_a_failed_analysis_rolls_back_and_the_stable_keeps_its_revision() -> None:
    status = canary_status().model_copy(update={"stable_revision": "cache-eviction-policy-old"})
    assert status.rollout is not None
    later = T0 + timedelta(seconds=2)
    decision = step(status, later, report("fail"))
    assert [type(a) for a in decision.actions] == [RemoveCanary]
    done = decision.status
    assert done.phase is Phase.STABLE and done.stable_revision == "cache-eviction-policy-old"
    assert done.validated_revision is None  # never rolled out again
    assert [r.outcome for r in done.history] == ["RolledBack"]
    assert "analysis failed" in done.history[0].reason
    assert reasons(decision) == ["CanaryRolledBack"]
    assert decision.events[0].type == "Warning"
    assert condition(done, "Ready")[:2] == ("True", "RolledBack")


def test_no_data_holds_then_rolls_back_and_never_promotes() -> None:
    status = canary_status()
    assert status.rollout is not None
    later = T0 + timedelta(seconds=2)
    held = step(status, later, report("nodata", None))
    assert held.status.phase is Phase.CANARY and reasons(held) == ["CanaryHeld"]
    assert held.status.rollout is not None and held.status.rollout.verdicts == {
        "hit-ratio": "nodata"
    }
    assert held.events[0].type == "Warning"
    again = T0 + timedelta(seconds=4)
    done = step(held.status, again, report("nodata", None)).status
    assert done.phase is Phase.STABLE and [r.outcome for r in done.history] == ["RolledBack"]
    assert done.stable_revision is None


def test_a_one_shot_control_is_removed_once_the_rollout_ended() -> None:
    status = canary_status()
    assert status.rollout is not None
    reading = observed(status.rollout)
    decision = decide(status, facts(canary=reading, controls=frozenset({ABORT_ANNOTATION})), T0)
    assert decision.actions[0] == RemoveCanary(f"aborted by {ABORT_ANNOTATION}")
    assert decision.status.history[-1].outcome == "Aborted"
    assert ClearAnnotations((ABORT_ANNOTATION,)) in decision.actions
    assert reasons(decision) == ["CanaryAborted"]


def test_a_retune_asked_during_a_canary_waits_for_its_end() -> None:
    status = canary_status()
    assert status.rollout is not None
    soon = T0 + timedelta(seconds=1)
    controls = frozenset({RETUNE_ANNOTATION, PAUSE_ANNOTATION})
    reading = observed(status.rollout)
    decision = decide(status, facts(canary=reading, controls=controls), soon)
    assert reasons(decision) == ["CanaryHeld"]  # paused by the annotation
    assert decision.status.phase is Phase.CANARY
    assert not any(isinstance(a, ClearAnnotations) for a in decision.actions)


def test_a_stable_on_the_revision_already_finishes_the_promotion_without_analysis() -> None:
    status = canary_status()
    assert status.rollout is not None
    revision = status.rollout.revision
    later = T0 + timedelta(seconds=2)  # the analysis would be due
    reading = observed(status.rollout, stable_revision=revision)  # patched, then a crash
    decision = decide(status, facts(canary=reading), later)
    assert decision.actions == [PromoteCanary(revision)]
    assert decision.status.stable_revision == revision
    assert "promotion finished" in decision.status.history[-1].reason


def test_a_failing_tick_says_why_and_retries() -> None:
    status = canary_status()
    passing = CanaryFailure("500 Internal Server Error: etcd timeout", permanent=False)
    decision = decide(status, facts(canary=passing), T0)
    assert decision.status.phase is Phase.CANARY and decision.status.rollout == status.rollout
    assert reasons(decision) == ["CanaryInterrupted"] and decision.requeue_after == 10.0
    broken = CanaryFailure("spec.workloadRef.container: 'web' is not a container", permanent=True)
    decision = decide(status, facts(canary=broken), T0)
    assert condition(decision.status, "CanaryProgressing")[:2] == ("False", "RolloutError")
    assert "spec.workloadRef.container" in condition(decision.status, "Ready")[2]
    again = decide(decision.status, facts(canary=broken), T0 + timedelta(seconds=3))
    assert again.events == []  # said once


def test_a_restarted_operator_resumes_the_rollout_at_its_step() -> None:
    status = canary_status()
    assert resume_point(status, DIGESTS) is Phase.CANARY
    restarted = status.model_copy(update={"phase": Phase.IDLE})
    decision = decide(restarted, facts(), T0 + timedelta(seconds=1))
    assert decision.needs_canary and decision.status.rollout == status.rollout
    assert "RolloutStarted" not in reasons(decision)  # the same rollout, not a second one


def test_pausing_removes_the_canary_and_unpausing_rolls_the_revision_out_again() -> None:
    status = canary_status()
    assert status.rollout is not None
    revision = status.rollout.revision
    paused = decide(status, facts(paused=True), T0)
    assert paused.actions == [RemoveCanary("spec.retune.paused is true")]
    assert paused.status.phase is Phase.PAUSED and paused.status.rollout is None
    assert [(r.revision, r.outcome) for r in paused.status.history] == [(revision, "Aborted")]
    assert paused.status.validated_revision == revision
    resumed = decide(paused.status, facts(), T0 + timedelta(minutes=1))
    assert resumed.needs_canary and resumed.status.rollout == begin(revision)


def test_a_spec_change_of_the_search_drops_the_rollout() -> None:
    status = canary_status()
    other = SpecDigests(signals="sig", search="search-2", budget="budget")
    decision = decide(status, facts(generation=2, digests=other), T0)
    assert RemoveCanary("the spec changed (generation 1 -> 2)") in decision.actions
    assert decision.status.phase is Phase.PROFILING and decision.status.validated_revision is None
    assert decision.status.history[-1].outcome == "Aborted"


def test_a_change_of_the_rollout_settings_keeps_the_rollout() -> None:
    status = canary_status()
    decision = decide(status, facts(generation=2), T0 + timedelta(seconds=1))
    assert decision.needs_canary and decision.status.rollout == status.rollout
    assert not any(isinstance(a, RemoveCanary) for a in decision.actions)


def test_a_leftover_worker_report_is_dropped_during_a_canary() -> None:
    status = canary_status()
    decision = decide(status, facts(work=finished_validation()), T0)
    assert decision.actions == [ForgetWork()] and decision.needs_canary


def test_abort_and_promote_without_a_rollout_are_removed() -> None:
    status = canary_status()
    assert status.rollout is not None
    later = T0 + timedelta(seconds=2)
    stable = step(at_step(status, 1), later, report("pass")).status
    controls = frozenset({ABORT_ANNOTATION, PROMOTE_ANNOTATION})
    decision = decide(stable, facts(controls=controls), later)
    assert decision.needs_watch
    assert ClearAnnotations((ABORT_ANNOTATION, PROMOTE_ANNOTATION)) in decision.actions
    assert reasons(decision).count("ControlIgnored") == 2
