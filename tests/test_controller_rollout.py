"""Ready and Canary: the controller's side of a rollout, driven with plain ticks.

A tick is what :class:`retune.rollout.CanaryRunner` reports after acting on the
Deployments; here it is built from the pure step decisions, so no Deployment exists.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from retune.controller import (
    CanaryFailure,
    ClearAnnotations,
    ForgetWork,
    RemoveCanary,
    SpecDigests,
    decide,
    resume_point,
)
from retune.rollout import (
    ABORT_ANNOTATION,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    RETUNE_ANNOTATION,
    Controls,
    Tick,
    begin,
    record,
)
from retune.rollout import decide as step
from retune.signals.analysis import AnalysisReport, AnalysisResult
from retune.signals.metrics import NoData, Value
from retune.spec import Phase, RolloutSpec, RolloutStatus, TargetStatus
from tests.test_controller import (
    DIGESTS,
    T0,
    condition,
    facts,
    finished_status,
    finished_validation,
    reasons,
)

SPEC = RolloutSpec(steps=[10, 50], interval_seconds=2, failure_limit=1, no_data_limit=2)


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


def tick(
    rollout: RolloutStatus,
    now: datetime,
    analysis: AnalysisReport | None = None,
    controls: Controls | None = None,
    consumed: tuple[str, ...] = (),
) -> Tick:
    """The tick a CanaryRunner would report, without Deployments."""
    decision = step(SPEC, rollout, now, (lambda: analysis) if analysis else None, controls)
    return Tick(
        decision=decision,
        status=None if decision.finished else decision.status,
        record=record(decision, now, 0.53),
        report=analysis if analysis and decision.status.analysis else None,
        scale=None,
        consumed=consumed,
    )


def ready_status() -> TargetStatus:
    return decide(finished_status(), facts(work=finished_validation()), T0).status


def canary_status(at: datetime = T0) -> TargetStatus:
    """A rollout at its first step."""
    asked = decide(ready_status(), facts(), at)
    assert asked.status.rollout is not None
    first = tick(asked.status.rollout, at)
    return decide(ready_status(), facts(canary=first), at).status


def test_the_first_tick_starts_the_canary_at_the_first_step() -> None:
    ready = ready_status()
    asked = decide(ready, facts(), T0)
    assert asked.needs_canary and asked.status.rollout == begin(ready.validated_revision or "")
    decision = decide(ready, facts(canary=tick(asked.status.rollout, T0)), T0)
    status = decision.status
    assert status.phase is Phase.CANARY and not decision.needs_canary
    assert status.rollout is not None and (status.rollout.step, status.rollout.share) == (0, 10)
    assert reasons(decision) == ["RolloutStarted", "CanaryStep"]
    assert condition(status, "CanaryProgressing")[:2] == ("True", "CanaryStep")
    assert condition(status, "Ready")[:2] == ("False", "RollingOut")
    assert decision.requeue_after == 2.0  # the step's interval


def test_a_passed_analysis_moves_to_the_next_step_and_shows_its_values() -> None:
    status = canary_status()
    assert status.rollout is not None
    later = T0 + timedelta(seconds=2)
    decision = decide(status, facts(canary=tick(status.rollout, later, report("pass"))), later)
    rollout = decision.status.rollout
    assert rollout is not None and (rollout.step, rollout.share) == (1, 50)
    assert rollout.analysis == {"hit-ratio": 0.4}
    assert rollout.verdicts == {"hit-ratio": "pass"}
    assert rollout.stable_analysis == {"hit-ratio": 0.42}
    assert "analysis passed" in rollout.message
    assert "step 2 at 50%" in condition(decision.status, "CanaryProgressing")[2]


def test_a_quiet_wait_posts_no_event() -> None:
    status = canary_status()
    assert status.rollout is not None
    soon = T0 + timedelta(seconds=1)
    decision = decide(status, facts(canary=tick(status.rollout, soon)), soon)
    assert decision.events == [] and decision.status.phase is Phase.CANARY
    assert decision.requeue_after == 1.0


def test_the_last_passed_step_promotes_and_the_target_is_stable() -> None:
    status = canary_status()
    assert status.rollout is not None
    revision = status.rollout.revision
    last = status.rollout.model_copy(update={"step": 1, "share": 50})
    later = T0 + timedelta(seconds=2)
    decision = decide(status, facts(canary=tick(last, later, report("pass"))), later)
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
    decision = decide(status, facts(canary=tick(status.rollout, later, report("fail"))), later)
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
    held = decide(status, facts(canary=tick(status.rollout, later, report("nodata", None))), later)
    assert held.status.phase is Phase.CANARY and reasons(held) == ["CanaryHeld"]
    assert held.status.rollout is not None and held.status.rollout.verdicts == {
        "hit-ratio": "nodata"
    }
    assert held.events[0].type == "Warning"
    again = T0 + timedelta(seconds=4)
    reading = tick(held.status.rollout, again, report("nodata", None))
    done = decide(held.status, facts(canary=reading), again).status
    assert done.phase is Phase.STABLE and [r.outcome for r in done.history] == ["RolledBack"]
    assert done.stable_revision is None


def test_a_one_shot_control_is_removed_once_the_rollout_ended() -> None:
    status = canary_status()
    assert status.rollout is not None
    aborted = tick(status.rollout, T0, controls=Controls(abort=True), consumed=(ABORT_ANNOTATION,))
    decision = decide(status, facts(canary=aborted, controls=frozenset({ABORT_ANNOTATION})), T0)
    assert decision.status.history[-1].outcome == "Aborted"
    assert ClearAnnotations((ABORT_ANNOTATION,)) in decision.actions
    assert reasons(decision) == ["CanaryAborted"]


def test_a_retune_asked_during_a_canary_waits_for_its_end() -> None:
    status = canary_status()
    assert status.rollout is not None
    soon = T0 + timedelta(seconds=1)
    controls = frozenset({RETUNE_ANNOTATION, PAUSE_ANNOTATION})
    decision = decide(status, facts(canary=tick(status.rollout, soon), controls=controls), soon)
    assert decision.status.phase is Phase.CANARY
    assert not any(isinstance(a, ClearAnnotations) for a in decision.actions)


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
    last = status.rollout.model_copy(update={"step": 1, "share": 50})
    later = T0 + timedelta(seconds=2)
    stable = decide(status, facts(canary=tick(last, later, report("pass"))), later).status
    controls = frozenset({ABORT_ANNOTATION, PROMOTE_ANNOTATION})
    decision = decide(stable, facts(controls=controls), later)
    assert decision.needs_watch
    assert ClearAnnotations((ABORT_ANNOTATION, PROMOTE_ANNOTATION)) in decision.actions
    assert reasons(decision).count("ControlIgnored") == 2
