"""SLO evaluation: the sustain clock, threshold trackers and multi-window burn rates."""

from __future__ import annotations

import pytest

from retune.signals import (
    BadQuery,
    Invalid,
    NoData,
    RecordedProvider,
    SLOTracker,
    Unavailable,
    Value,
    evaluate_burn_rate,
)
from retune.signals.metrics import Sample
from retune.signals.slo import error_ratio
from retune.signals.sustain import SustainClock
from retune.spec import SLO

# -- the clock --------------------------------------------------------------------------------


def test_clock_sustains_after_for_seconds_of_continuous_holding() -> None:
    clock = SustainClock(for_seconds=60)
    clock.observe(0, True)
    assert not clock.sustained(0)
    clock.observe(30, True)
    assert clock.held_seconds(30) == 30 and not clock.sustained(30)
    clock.observe(60, True)
    assert clock.sustained(60)
    clock.observe(61, False)
    assert clock.since is None and not clock.sustained(61)


def test_clock_holds_through_a_short_gap_but_never_sustains_on_one() -> None:
    clock = SustainClock(for_seconds=60, max_gap_seconds=120)
    clock.observe(0, True)
    clock.observe(30, None)
    clock.observe(70, None)
    assert clock.since == 0 and not clock.sustained(70)  # missing data proves nothing
    clock.observe(90, True)
    assert clock.since == 0 and clock.sustained(90)  # the gap was short: still continuous


def test_clock_restarts_after_a_long_gap() -> None:
    clock = SustainClock(for_seconds=60, max_gap_seconds=120)
    clock.observe(0, True)
    clock.observe(10, None)
    clock.observe(500, True)
    assert clock.since == 500 and not clock.sustained(500)


def test_sparse_observations_without_missing_data_stay_continuous() -> None:
    clock = SustainClock(for_seconds=300, max_gap_seconds=60)
    clock.observe(0, True)
    clock.observe(600, True)
    assert clock.sustained(600)


def test_clock_time_never_runs_backwards() -> None:
    clock = SustainClock(for_seconds=10)
    clock.observe(100, True)
    assert clock.observe(50, True) == 100
    assert clock.held_seconds(100) == 0


def test_missing_data_before_any_holding_changes_nothing() -> None:
    clock = SustainClock(for_seconds=0)
    clock.observe(0, None)
    assert clock.since is None and not clock.missing
    clock.observe(1, True)
    assert clock.sustained(1)  # for 0: one observation is enough


# -- threshold SLOs ---------------------------------------------------------------------------

LATENCY = SLO(name="p99-latency", query="p99", threshold=0.25, comparison="below", for_seconds=300)


def test_a_breach_is_pending_until_it_lasts_for_the_duration() -> None:
    tracker = SLOTracker(LATENCY)
    assert tracker.observe(0, Value(0.1)).status == "ok"
    first = tracker.observe(60, Value(0.4))
    assert first.status == "pending" and first.breached_since == 60
    assert "not at most 0.25" in first.message
    assert tracker.observe(300, Value(0.5)).status == "pending"
    violated = tracker.observe(360, Value(0.3))
    assert violated.status == "violated" and violated.violated
    assert violated.held_seconds == 300 and violated.value == 0.3
    assert tracker.observe(420, Value(0.2)).status == "ok"


def test_the_bound_itself_is_ok() -> None:
    assert SLOTracker(LATENCY).observe(0, Value(0.25)).status == "ok"


def test_an_above_slo() -> None:
    availability = SLO(
        name="hit-ratio", query="q", threshold=0.9, comparison="above", for_seconds=0
    )
    tracker = SLOTracker(availability)
    assert tracker.observe(0, Value(0.95)).status == "ok"
    verdict = tracker.observe(1, Value(0.5))
    assert verdict.status == "violated"
    assert "not at least 0.9" in verdict.message


@pytest.mark.parametrize(
    "problem", [NoData(), Invalid("NaN"), Unavailable("connection refused"), BadQuery("parse")]
)
def test_no_data_is_neither_ok_nor_violated(problem: Sample) -> None:
    tracker = SLOTracker(LATENCY, max_gap_seconds=600)
    tracker.observe(0, Value(1.0))
    verdict = tracker.observe(400, problem)
    assert verdict.status == "nodata" and not verdict.violated
    assert verdict.problem == problem and verdict.value is None
    assert verdict.breached_since == 0  # held, not reset
    assert problem.describe() in verdict.message
    assert tracker.observe(450, Value(1.0)).status == "violated"


def test_a_long_blind_spot_restarts_the_breach() -> None:
    tracker = SLOTracker(LATENCY, max_gap_seconds=120)
    tracker.observe(0, Value(1.0))
    tracker.observe(60, NoData())
    verdict = tracker.observe(900, Value(1.0))
    assert verdict.status == "pending" and verdict.breached_since == 900


def test_tracker_evaluates_through_a_provider() -> None:
    tracker = SLOTracker(LATENCY)
    assert tracker.evaluate(RecordedProvider({"p99": 0.1}), at=0).status == "ok"
    assert tracker.evaluate(RecordedProvider({}), at=1).status == "nodata"


def test_tracker_refuses_a_burn_rate_slo() -> None:
    with pytest.raises(ValueError, match="not a threshold SLO"):
        SLOTracker(AVAILABILITY)


# -- burn rates -------------------------------------------------------------------------------

AVAILABILITY = SLO(
    name="availability",
    error_query='sum(rate(http_requests_total{code=~"5.."}[{{window}}]))',
    total_query="sum(rate(http_requests_total[{{window}}]))",
    objective=0.999,
)


def rates(
    errors: dict[str, float | None], total: float = 100.0, extra: dict[str, float] | None = None
) -> RecordedProvider:
    """A provider answering the availability SLO's queries per window (and ``extra``)."""
    values: dict[str, object] = dict(extra or {})
    for window in ("5m", "30m", "1h", "6h"):
        error_q, total_q = AVAILABILITY.render_error_queries(
            {"5m": 300, "30m": 1800, "1h": 3600, "6h": 21600}[window]
        )
        if window in errors:
            values[error_q] = errors[window]
        values[total_q] = total
    return RecordedProvider(values)


def test_windows_are_rendered_into_the_queries() -> None:
    error_q, total_q = AVAILABILITY.render_error_queries(3600)
    assert error_q == 'sum(rate(http_requests_total{code=~"5.."}[1h]))'
    assert total_q == "sum(rate(http_requests_total[1h]))"


def test_fast_burn_in_both_windows_pages() -> None:
    # budget 0.001: a 2 % error ratio burns 20x; 14.4x is the 1h/5m page threshold.
    verdict = evaluate_burn_rate(AVAILABILITY, rates({"5m": 2, "1h": 2, "30m": 0.1, "6h": 0.1}))
    assert verdict.status == "violated" and verdict.violated
    fast, slow = verdict.pairs
    assert (
        fast.firing and fast.long_burn == pytest.approx(20) and fast.short_burn == pytest.approx(20)
    )
    assert not slow.firing and slow.long_burn == pytest.approx(1)
    assert verdict.ratios["5m"] == pytest.approx(0.02)
    assert "1h/5m burn 20/20 (page above 14.4)" in verdict.message


def test_a_spike_only_in_the_short_window_does_not_page() -> None:
    verdict = evaluate_burn_rate(AVAILABILITY, rates({"5m": 5, "1h": 0.5, "30m": 0.5, "6h": 0.1}))
    assert verdict.status == "ok"
    assert not any(pair.firing for pair in verdict.pairs)


def test_a_slow_burn_pages_on_the_second_pair() -> None:
    verdict = evaluate_burn_rate(AVAILABILITY, rates({"5m": 0.8, "1h": 0.8, "30m": 0.8, "6h": 0.7}))
    fast, slow = verdict.pairs
    assert not fast.firing and slow.firing  # 8x and 7x exceed 6x but not 14.4x
    assert verdict.status == "violated"


def test_exactly_at_the_factor_does_not_page() -> None:
    ratio = 14.4 * 0.001 * 100  # errors per 100 events burning at exactly 14.4x
    verdict = evaluate_burn_rate(AVAILABILITY, rates({"5m": ratio, "1h": ratio, "30m": 0, "6h": 0}))
    assert verdict.pairs[0].long_burn == pytest.approx(14.4)
    assert not verdict.pairs[0].firing


def test_no_traffic_is_no_data_not_ok() -> None:
    verdict = evaluate_burn_rate(
        AVAILABILITY, rates({"5m": 0, "1h": 0, "30m": 0, "6h": 0}, total=0.0)
    )
    assert verdict.status == "nodata"
    assert "no events in the last 5m" in verdict.problems["5m"].reason


def test_a_missing_error_series_is_no_data_with_a_hint() -> None:
    verdict = evaluate_burn_rate(AVAILABILITY, rates({"1h": 0, "30m": 0, "6h": 0}))
    assert verdict.status == "nodata"
    assert "or vector(0)" in verdict.problems["5m"].reason
    assert "5m: no data" in verdict.message


def test_a_firing_pair_pages_even_when_another_window_has_no_data() -> None:
    verdict = evaluate_burn_rate(AVAILABILITY, rates({"5m": 3, "1h": 3}))
    assert verdict.status == "violated"
    assert set(verdict.problems) == {"30m", "6h"}


def test_error_ratio_passes_backend_problems_through() -> None:
    class Down:
        def query(self, promql: str) -> Sample:
            return Unavailable("connection refused")

    assert error_ratio(Down(), AVAILABILITY, 300) == Unavailable("connection refused")


def test_each_window_is_queried_once() -> None:
    asked: list[str] = []
    provider = rates({"5m": 0, "1h": 0, "30m": 0, "6h": 0})

    class Counting:
        def query(self, promql: str) -> Sample:
            asked.append(promql)
            return provider.query(promql)

    shared = SLO.model_validate(
        {
            "name": "shared",
            "errorQuery": AVAILABILITY.error_query,
            "totalQuery": AVAILABILITY.total_query,
            "objective": 0.99,
            "burnRateWindows": [
                {"longWindow": "1h", "shortWindow": "5m", "burnRate": 14.4},
                {"longWindow": "6h", "shortWindow": "1h", "burnRate": 6},
            ],
        }
    )
    assert evaluate_burn_rate(shared, Counting()).status == "ok"
    assert len(asked) == 6  # 5m, 1h, 6h: error + total each


def test_burn_rate_refuses_a_threshold_slo() -> None:
    with pytest.raises(ValueError, match="not an error-budget SLO"):
        evaluate_burn_rate(LATENCY, RecordedProvider({}))


# -- all SLOs of a target ---------------------------------------------------------------------


def test_each_slo_is_evaluated_by_its_kind() -> None:
    # What the retune triggers do with a target's SLOs: a tracker (with its sustain
    # clock) for a threshold SLO, the burn-rate windows for an error-budget one.
    latency = SLOTracker(LATENCY)
    provider = rates({"5m": 0, "1h": 0, "30m": 0, "6h": 0}, extra={"p99": 0.9})
    assert latency.evaluate(provider, at=0).status == "pending"
    assert evaluate_burn_rate(AVAILABILITY, provider).status == "ok"
    assert latency.evaluate(provider, at=300).violated
    assert not evaluate_burn_rate(AVAILABILITY, provider).violated
