"""The canary's step decisions, pure: from a spec, a status, the analysis and the clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from retune.rollout import (
    ABORT_ANNOTATION,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    Controls,
    Hold,
    Promote,
    Rollback,
    SetShare,
    Step,
    Wait,
    analysis_due,
    analysis_needed,
    begin,
    next_step,
    record,
)
from retune.signals.analysis import AnalysisReport, AnalysisResult, Outcome
from retune.signals.metrics import NoData, Unavailable, Value
from retune.spec import AnalysisQuery, RolloutSpec, RolloutStatus

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
QUERY = AnalysisQuery(name="errors", query='errors{track="{{track}}"}', threshold=0.05)


def spec(**overrides: object) -> RolloutSpec:
    settings: dict[str, object] = {"steps": [10, 50], "interval": 60, "analysis": [QUERY]}
    settings.update(overrides)
    return RolloutSpec.model_validate(settings)


def report(outcome: Outcome, value: float | None = 0.01) -> AnalysisReport:
    canary = Value(value) if outcome != "nodata" and value is not None else NoData()
    result = AnalysisResult("errors", outcome, canary, Value(0.02), f"errors: {outcome}")
    return AnalysisReport(outcome, (result,))


def analysis(outcome: Outcome, value: float | None = 0.01) -> Callable[[], AnalysisReport]:
    return lambda: report(outcome, value)


def never() -> AnalysisReport:
    raise AssertionError("the analysis must not run")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def running(step: int = 0, share: int = 10, started: float = 0, **fields: object) -> RolloutStatus:
    return RolloutStatus.model_validate(
        {
            "revision": "cache-policy-abc",
            "step": step,
            "share": share,
            "startedAt": T0,
            "stepStartedAt": at(started),
            **fields,
        }
    )


def test_a_new_rollout_starts_at_the_first_step_without_analysis() -> None:
    decision = next_step(spec(), begin("cache-policy-abc"), T0, never)
    assert decision.action == SetShare(0, 10, "canary of cache-policy-abc starts at 10%")
    assert (decision.status.step, decision.status.share) == (0, 10)
    assert decision.status.started_at == T0 and decision.status.step_started_at == T0
    assert decision.next_check == at(60) and not decision.finished


def test_it_waits_until_the_interval_is_over() -> None:
    decision = next_step(spec(), running(), at(59), never)
    assert isinstance(decision.action, Wait)
    assert decision.action.until == at(60) == decision.next_check
    assert decision.status == running()
    assert not analysis_due(spec(), running(), at(59)) and analysis_due(spec(), running(), at(60))


def test_a_pass_moves_to_the_next_step_and_records_the_values() -> None:
    decision = next_step(spec(), running(), at(61), analysis("pass", 0.01))
    assert isinstance(decision.action, SetShare)
    assert (decision.action.step, decision.action.share) == (1, 50)
    status = decision.status
    assert (status.step, status.share, status.step_started_at) == (1, 50, at(61))
    assert status.analysis == {"errors": 0.01}
    assert decision.next_check == at(121)


def test_a_pass_at_the_last_step_promotes() -> None:
    decision = next_step(spec(), running(step=1, share=50), at(60), analysis("pass"))
    assert isinstance(decision.action, Promote) and decision.finished
    assert decision.next_check is None
    entry = record(decision, at(60), score=0.9)
    assert entry is not None
    assert (entry.outcome, entry.revision, entry.score) == ("Promoted", "cache-policy-abc", 0.9)
    assert (entry.started_at, entry.finished_at) == (T0, at(60))


def test_without_analysis_queries_the_steps_advance_on_time_alone() -> None:
    bare = spec(analysis=[])
    decision = next_step(bare, running(), at(60), analysis("pass"))
    assert isinstance(decision.action, SetShare)


def test_a_failure_rolls_back_at_the_failure_limit() -> None:
    decision = next_step(spec(), running(), at(60), analysis("fail", 0.3))
    assert isinstance(decision.action, Rollback) and decision.action.outcome == "RolledBack"
    assert decision.action.reason.startswith("analysis failed (1/1 failures)")
    assert decision.status.analysis == {"errors": 0.3} and decision.status.failures == 1
    entry = record(decision, at(60))
    assert entry is not None and entry.outcome == "RolledBack"


def test_failures_below_the_limit_hold_the_step_and_count_over_the_whole_rollout() -> None:
    lenient = spec(failureLimit=2)
    first = next_step(lenient, running(), at(60), analysis("fail", 0.3))
    assert isinstance(first.action, Hold) and "1/2 failures" in first.action.reason
    assert (first.status.step, first.status.failures, first.status.step_started_at) == (
        0,
        1,
        at(60),
    )
    assert isinstance(next_step(lenient, first.status, at(119), never).action, Wait)
    passed = next_step(lenient, first.status, at(120), analysis("pass"))
    assert isinstance(passed.action, SetShare) and passed.status.failures == 1
    second = next_step(lenient, passed.status, at(180), analysis("fail", 0.3))
    assert isinstance(second.action, Rollback) and second.status.failures == 2


def test_no_data_with_hold_holds_the_share_then_rolls_back_after_the_limit() -> None:
    held = spec(noData="hold", noDataLimit=3)
    status, now = running(), at(60)
    for count in (1, 2):
        decision = next_step(held, status, now, analysis("nodata"))
        assert isinstance(decision.action, Hold), decision.action
        assert f"no data {count}/3 in a row, holding at 10%" in decision.action.reason
        assert decision.status.share == 10 and decision.status.failures == 0
        assert decision.status.analysis == {"errors": None}
        status, now = decision.status, now + timedelta(seconds=60)
    last = next_step(held, status, now, analysis("nodata"))
    assert isinstance(last.action, Rollback) and last.status.no_data_intervals == 3


def test_data_coming_back_resets_the_no_data_count() -> None:
    held = spec(noData="hold", noDataLimit=2)
    first = next_step(held, running(), at(60), analysis("nodata"))
    back = next_step(held, first.status, at(120), analysis("pass"))
    assert isinstance(back.action, SetShare) and back.status.no_data_intervals == 0
    again = next_step(held, back.status, at(180), analysis("nodata"))
    assert isinstance(again.action, Hold)


def test_a_failure_also_breaks_a_run_of_no_data() -> None:
    held = spec(noData="hold", noDataLimit=2, failureLimit=3)
    first = next_step(held, running(), at(60), analysis("nodata"))
    failed = next_step(held, first.status, at(120), analysis("fail", 0.4))
    assert isinstance(failed.action, Hold) and failed.status.no_data_intervals == 0
    nodata = next_step(held, failed.status, at(180), analysis("nodata"))
    assert isinstance(nodata.action, Hold)


def test_no_data_with_rollback_counts_as_a_failure() -> None:
    strict = spec(noData="rollback", failureLimit=2, noDataLimit=10)
    first = next_step(strict, running(), at(60), analysis("nodata"))
    assert isinstance(first.action, Hold) and "no data (1/2 failures)" in first.action.reason
    second = next_step(strict, first.status, at(120), analysis("nodata"))
    assert isinstance(second.action, Rollback) and second.status.failures == 2


@pytest.mark.parametrize("no_data", ["hold", "rollback"])
def test_missing_data_never_promotes(no_data: str) -> None:
    settings = spec(steps=[100], noData=no_data, noDataLimit=100, failureLimit=100)
    status = running(share=100)
    for interval in range(1, 40):
        decision = next_step(settings, status, at(60 * interval), analysis("nodata"))
        assert not isinstance(decision.action, Promote)
        if decision.finished:
            break
        status = decision.status


def test_prometheus_down_is_no_data() -> None:
    down = AnalysisResult("errors", "nodata", Unavailable("connection refused"), None, "down")
    decision = next_step(spec(), running(), at(60), lambda: AnalysisReport("nodata", (down,)))
    assert isinstance(decision.action, Hold) and decision.status.analysis == {"errors": None}


def test_abort_rolls_back_at_once_as_aborted() -> None:
    decision = next_step(spec(), running(), at(5), never, Controls(abort=True, promote=True))
    assert decision.action == Rollback(f"aborted by {ABORT_ANNOTATION}", outcome="Aborted")
    assert decision.action.event == "CanaryAborted"
    entry = record(decision, at(5))
    assert entry is not None and entry.outcome == "Aborted"


def test_promote_now_skips_the_remaining_steps_and_their_analysis() -> None:
    decision = next_step(spec(), running(), at(5), never, Controls(promote=True, pause=True))
    assert decision.action == Promote(f"promoted at 10% by {PROMOTE_ANNOTATION}")


def test_abort_and_promote_apply_before_the_first_step() -> None:
    fresh = begin("cache-policy-abc")
    assert isinstance(next_step(spec(), fresh, T0, never, Controls(abort=True)).action, Rollback)
    assert isinstance(next_step(spec(), fresh, T0, never, Controls(promote=True)).action, Promote)


def test_pause_holds_without_analysis_and_the_interval_keeps_running() -> None:
    paused = next_step(spec(), running(), at(600), never, Controls(pause=True))
    assert paused.action == Hold(f"paused at 10% by {PAUSE_ANNOTATION}")
    assert paused.status == running() and paused.next_check == at(660)
    resumed = next_step(spec(), paused.status, at(601), analysis("pass"))
    assert isinstance(resumed.action, SetShare)


def test_controls_are_read_from_annotations() -> None:
    assert Controls.from_annotations(None) == Controls()
    assert Controls.from_annotations(
        {ABORT_ANNOTATION: "true", PROMOTE_ANNOTATION: "false", PAUSE_ANNOTATION: "yes"}
    ) == Controls(abort=True, pause=True)
    assert Controls.from_annotations({PAUSE_ANNOTATION: ""}) == Controls()
    assert Controls.from_annotations({"retune.dev/other": "true"}) == Controls()


def test_a_rollout_resumes_mid_step_from_its_status_alone() -> None:
    """A restarted operator reads the status back (as the API server returns it) and picks
    up the step, its timer and the counters where they were."""
    lenient = spec(steps=[10, 25, 50], failureLimit=3, noDataLimit=3)
    status = next_step(lenient, begin("cache-policy-abc"), T0, never).status
    status = next_step(lenient, status, at(60), analysis("fail", 0.2)).status
    status = next_step(lenient, status, at(120), analysis("nodata")).status
    status = next_step(lenient, status, at(180), analysis("pass")).status
    stored = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    restored = RolloutStatus.model_validate(stored)
    assert restored == status
    assert (restored.step, restored.share, restored.failures) == (1, 25, 1)
    assert restored.no_data_intervals == 0 and restored.step_started_at == at(180)
    assert isinstance(next_step(lenient, restored, at(239), never).action, Wait)
    decision = next_step(lenient, restored, at(240), analysis("pass"))
    assert decision.action == SetShare(2, 50, "analysis passed at 25%, step 3 at 50%")


def test_an_overdue_step_analyses_once_on_resume() -> None:
    """An operator down for longer than the interval runs the analysis once, not once per
    missed interval."""
    calls: list[int] = []

    def counted() -> AnalysisReport:
        calls.append(1)
        return report("pass")

    decision = next_step(spec(), running(), at(3600), counted)
    assert len(calls) == 1 and decision.status.step_started_at == at(3600)


def test_steps_edited_mid_rollout_are_followed() -> None:
    shorter = spec(steps=[20])
    decision = next_step(shorter, running(step=1, share=50), at(10), never)
    assert isinstance(decision.action, Wait)
    assert (decision.status.step, decision.status.share) == (0, 20)
    promoted = next_step(shorter, running(step=3, share=90), at(60), analysis("pass"))
    assert isinstance(promoted.action, Promote)


def test_a_due_analysis_needs_a_way_to_run_it() -> None:
    with pytest.raises(ValueError, match="analyse"):
        next_step(spec(), running(), at(60))


def test_a_running_rollout_has_no_record() -> None:
    decision: Step = next_step(spec(), running(), at(1), never)
    assert record(decision, at(1)) is None
    assert decision.action.event == "CanaryWaiting"


def test_the_analysis_is_needed_exactly_when_the_step_will_judge_it() -> None:
    calls: list[int] = []

    def counted() -> AnalysisReport:
        calls.append(1)
        return analysis("pass")()

    cases = [
        (begin("cache-policy-abc"), at(120), Controls()),  # not started: the first share
        (running(), at(59), Controls()),  # the interval runs
        (running(), at(60), Controls()),  # over: judged
        (running(), at(60), Controls(pause=True)),
        (running(), at(60), Controls(abort=True)),
        (running(), at(60), Controls(promote=True)),
    ]
    for status, now, controls in cases:
        calls.clear()
        needed = analysis_needed(spec(), status, now, controls)
        next_step(spec(), status, now, counted, controls)
        assert needed == bool(calls), (status, now, controls)
