"""Stable: what calls for a retune (SLOs, drift, hardware, schedule, a user), the cooldown,
and how the retune starts: plain readings, no cluster, no Prometheus, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from retune.controller import (
    CHECK_REFRESH,
    ClearAnnotations,
    Decision,
    HardwareReading,
    SignalsWaiting,
    StartSearch,
    WatchReading,
    decide,
    next_fire,
    status_worth_writing,
)
from retune.rollout import RETUNE_ANNOTATION
from retune.signals.metrics import NoData, Unavailable, Value
from retune.signals.slo import BurnRateVerdict, WindowPair
from retune.spec import SLO, DriftSpec, Phase, RetuneSpec, TargetStatus
from retune.spec.events import EventReason
from tests.test_controller import SIGNALS, T0, condition, facts, finished_status, reasons

HIT_RATIO = SLO(
    name="hit-ratio", query="hit_ratio", threshold=0.25, comparison="above", for_seconds=4
)
ERRORS = SLO(
    name="errors", error_query="e[{{window}}]", total_query="t[{{window}}]", objective=0.99
)
RETUNE = RetuneSpec(
    cooldown_seconds=60,
    hardware_settle_seconds=10,
    drift=DriftSpec(threshold=0.2, for_seconds=4),
)
SAME_HARDWARE = HardwareReading(SIGNALS.fingerprint, SIGNALS.summary)
NEW_HARDWARE = HardwareReading("hw-new", "m7i.2xlarge/amd64")
END = T0 + timedelta(minutes=5)  # when the search ended, in stable_status()


def stable_status() -> TargetStatus:
    """Tuned on SIGNALS; nothing beat the seed, so Stable since END."""
    status = decide(finished_status(best=0.40), facts(), T0).status
    assert status.phase is Phase.STABLE
    return status.model_copy(update={"last_search_end_time": END, "stable_revision": "rev-1"})


def reading(hit_ratio: float | None = 0.4, **changes: object) -> WatchReading:
    values: dict[str, object] = {
        "slo_samples": {"hit-ratio": Value(hit_ratio) if hit_ratio is not None else NoData()},
        "hardware": SAME_HARDWARE,
    }
    values.update(changes)
    return WatchReading(**values)  # type: ignore[arg-type]


def watching(
    status: TargetStatus, at: datetime, watched: WatchReading, **changes: object
) -> Decision:
    values: dict[str, object] = {"retune": RETUNE, "slos": (HIT_RATIO,), "watch": watched}
    values.update(changes)
    return decide(status, facts(**values), at)


def run(
    status: TargetStatus,
    start: datetime,
    seconds: list[float],
    watched: WatchReading,
    **changes: object,
) -> Decision:
    """Reconcile at ``start + s`` for each s, carrying the status."""
    decision = None
    for offset in seconds:
        decision = watching(status, start + timedelta(seconds=offset), watched, **changes)
        status = decision.status
    assert decision is not None
    return decision


def test_a_stable_target_asks_for_its_readings_and_checks_often_enough() -> None:
    status = stable_status()
    asked = decide(status, facts(retune=RETUNE, slos=(HIT_RATIO,)), END)
    assert asked.needs_watch and asked.status.watch is not None
    decision = watching(status, END, reading())
    assert decision.status.phase is Phase.STABLE and decision.actions == []
    assert decision.requeue_after == 2.0  # half the SLO's 4s
    assert condition(decision.status, "SLOViolated")[:2] == ("False", "Met")
    assert condition(decision.status, "RetunePending")[:2] == ("False", "NoTrigger")
    assert (
        decision.status.watch is not None and decision.status.watch.slos["hit-ratio"].value == 0.4
    )


def test_a_check_that_saw_nothing_new_is_written_only_once_its_time_is_old() -> None:
    start = END + timedelta(minutes=5)
    written = watching(stable_status(), start, reading()).status
    same = run(written, start, [2, 4, 30], watched=reading())
    assert same.status.watch is not None and written.watch is not None
    assert same.status.watch.checked_at != written.watch.checked_at
    assert not status_worth_writing(written, same.status)  # only the check times moved
    # a restarted operator, reading the unwritten status, decides as the running one did
    at = start + timedelta(seconds=32)
    restarted = watching(written, at, reading())
    assert not status_worth_writing(restarted.status, watching(same.status, at, reading()).status)
    # a value that moved, a clock that started: written at once
    assert status_worth_writing(written, watching(same.status, at, reading(0.41)).status)
    assert status_worth_writing(written, watching(same.status, at, reading(0.1)).status)
    # and the check time itself once it is CHECK_REFRESH old
    refreshed = run(written, start, [CHECK_REFRESH], watched=reading())
    assert status_worth_writing(written, refreshed.status)


def test_a_broken_slo_is_pending_until_it_held_for_its_duration() -> None:
    start = END + timedelta(minutes=5)
    decision = run(stable_status(), start, [0, 2], watched=reading(0.1))
    assert decision.status.phase is Phase.STABLE
    assert condition(decision.status, "SLOViolated")[:2] == ("False", "Pending")
    recovered = run(decision.status, start, [3, 6], watched=reading(0.4))
    assert recovered.status.phase is Phase.STABLE  # the clock restarted


def test_a_sustained_slo_violation_starts_a_warm_retune_from_the_stable_revision() -> None:
    start = END + timedelta(minutes=5)
    violated = run(stable_status(), start, [0, 2, 4], watched=reading(0.1))
    status = violated.status
    assert status.phase is Phase.PROFILING and violated.needs_signals
    assert status.last_retune_trigger == "SLOViolation" and status.retunes == 1
    assert "hit-ratio: 0.1 is not at least 0.25" in (status.last_retune_reason or "")
    assert reasons(violated) == ["SLOViolated", "RetuneStarted"]
    assert violated.events[0].type == "Warning"
    assert status.watch is None
    at = start + timedelta(seconds=4)
    started = decide(status, facts(retune=RETUNE, signals=SIGNALS), at)
    assert started.actions == [
        StartSearch(
            SIGNALS.profile,
            SIGNALS.hardware,
            resume=False,
            seed_revision="rev-1",
            seed_offset=1,
            warm_start=True,
            counted_usd=0.002,  # the first search's ledger, as its status counted it
            search_id=f"1/{at:%Y-%m-%dT%H:%M:%SZ}",
        )
    ]
    search = started.status.search
    assert search is not None and search.trigger == "SLOViolation" and search.warm_start
    assert "warm-started from the archive (SLOViolation)" in started.events[-1].message


def test_a_retune_resumed_after_a_restart_keeps_its_start() -> None:
    start = END + timedelta(minutes=5)
    status = run(stable_status(), start, [0, 2, 4], watched=reading(0.1)).status
    status = decide(status, facts(retune=RETUNE, signals=SIGNALS), start).status
    restarted = decide(status.model_copy(update={"phase": Phase.IDLE}), facts(retune=RETUNE), start)
    (action,) = restarted.actions
    assert isinstance(action, StartSearch) and action.resume
    assert (action.seed_revision, action.seed_offset, action.warm_start) == ("rev-1", 1, True)


def test_without_warm_start_a_retune_starts_cold() -> None:
    start = END + timedelta(minutes=5)
    cold = RETUNE.model_copy(update={"warm_start": False})
    status = run(stable_status(), start, [0, 2, 4], watched=reading(0.1), retune=cold).status
    started = decide(status, facts(retune=cold, signals=SIGNALS), start)
    (action,) = started.actions
    assert isinstance(action, StartSearch) and not action.warm_start


def test_a_violation_within_the_cooldown_waits_for_its_end() -> None:
    start = END + timedelta(seconds=10)
    decision = run(stable_status(), start, [0, 2, 4], watched=reading(0.1))
    assert decision.status.phase is Phase.STABLE
    state, reason, message = condition(decision.status, "RetunePending")
    assert (state, reason) == ("True", "SLOViolation")
    assert "cooldown" in message and "00:06:00" in message
    assert reasons(decision) == ["SLOViolated", "RetuneDeferred"]
    quiet = watching(decision.status, start + timedelta(seconds=6), reading(0.1))
    assert quiet.events == []  # said once
    later = watching(quiet.status, END + timedelta(seconds=60), reading(0.1))
    assert later.status.phase is Phase.PROFILING


def test_slo_violations_are_reported_but_do_not_retune_when_switched_off() -> None:
    off = RETUNE.model_copy(update={"on_slo_violation": False})
    start = END + timedelta(minutes=5)
    decision = run(stable_status(), start, [0, 2, 4, 6], watched=reading(0.1), retune=off)
    assert decision.status.phase is Phase.STABLE
    assert condition(decision.status, "SLOViolated")[:2] == ("True", "Violated")


def test_missing_slo_data_neither_violates_nor_clears() -> None:
    start = END + timedelta(minutes=5)
    decision = run(stable_status(), start, [0, 2], watched=reading(0.1))
    blind = reading(slo_samples={"hit-ratio": Unavailable("connection refused")})
    decision = run(decision.status, start, [3, 5], watched=blind)
    assert decision.status.phase is Phase.STABLE
    assert condition(decision.status, "SLOViolated")[:2] == ("False", "NoData")
    back = watching(decision.status, start + timedelta(seconds=6), reading(0.1))
    assert back.status.phase is Phase.PROFILING  # the stretch held through the gap


def test_an_error_budget_burning_too_fast_is_a_violation() -> None:
    pairs = (WindowPair(3600, 300, 14.4, 20.0, 30.0), WindowPair(21600, 1800, 6.0, 2.0, 3.0))
    burning = BurnRateVerdict(
        name="errors", status="violated", objective=0.99, pairs=pairs, message="errors: burning"
    )
    watched = reading(burn_rates={"errors": burning})
    decision = watching(
        stable_status(), END + timedelta(hours=1), watched, slos=(HIT_RATIO, ERRORS)
    )
    assert decision.status.phase is Phase.PROFILING
    assert decision.status.last_retune_trigger == "SLOViolation"


def test_a_hardware_change_retunes_once_it_has_settled() -> None:
    start = END + timedelta(minutes=5)
    first = watching(stable_status(), start, reading(hardware=NEW_HARDWARE))
    assert first.status.phase is Phase.STABLE
    assert condition(first.status, "HardwareChanged")[:2] == ("True", "Settling")
    assert "changed from hw-abc to m7i.2xlarge/amd64 (hw-new)" in first.events[0].message
    assert first.requeue_after == 2.0
    settled = watching(first.status, start + timedelta(seconds=10), reading(hardware=NEW_HARDWARE))
    assert settled.status.phase is Phase.PROFILING
    assert settled.status.last_retune_trigger == "HardwareChange"
    assert reasons(settled) == ["HardwareSettled", "RetuneStarted"]


def test_a_hardware_change_that_reverts_while_settling_is_forgotten() -> None:
    start = END + timedelta(minutes=5)
    first = watching(stable_status(), start, reading(hardware=NEW_HARDWARE))
    back = watching(first.status, start + timedelta(seconds=5), reading())
    assert condition(back.status, "HardwareChanged")[:2] == ("False", "Unchanged")
    again = watching(back.status, start + timedelta(seconds=11), reading(hardware=NEW_HARDWARE))
    assert again.status.phase is Phase.STABLE  # its settle period starts again


def test_hardware_that_cannot_be_read_changes_nothing() -> None:
    waiting = SignalsWaiting(
        EventReason.NO_MATCHING_NODES, "no node matches the workload's placement"
    )
    decision = watching(stable_status(), END + timedelta(minutes=5), reading(hardware=waiting))
    assert decision.status.phase is Phase.STABLE
    assert condition(decision.status, "HardwareChanged")[:2] == ("Unknown", "NoMatchingNodes")


def test_a_sustained_profile_drift_retunes_on_the_new_profile() -> None:
    start = END + timedelta(minutes=5)
    drifted = {**SIGNALS.profile, "request_rate": 3000.0}  # +50%
    first = watching(stable_status(), start, reading(profile=drifted))
    assert condition(first.status, "Drifted")[:2] == ("False", "Drifting")
    assert first.status.watch is not None and first.status.watch.current_profile == drifted
    unread = watching(first.status, start + timedelta(seconds=2), reading())
    assert unread.status.phase is Phase.STABLE  # no new reading: nothing to judge
    decision = watching(unread.status, start + timedelta(seconds=4), reading(profile=drifted))
    assert decision.status.phase is Phase.PROFILING
    assert decision.status.last_retune_trigger == "ProfileDrift"
    assert "request_rate +50% (2000 -> 3000)" in (decision.status.last_retune_reason or "")
    assert reasons(decision) == ["ProfileDrifted", "RetuneStarted"]


def test_a_profile_within_the_threshold_does_not_drift() -> None:
    close = {**SIGNALS.profile, "request_rate": 2200.0}  # +10%
    start = END + timedelta(minutes=5)
    decision = run(stable_status(), start, [0, 4, 8], watched=reading(profile=close))
    assert decision.status.phase is Phase.STABLE
    assert condition(decision.status, "Drifted")[:2] == ("False", "ProfileStable")


def test_the_profile_is_read_again_after_its_interval() -> None:
    start = END + timedelta(minutes=5)
    first = watching(
        stable_status(), start, reading(profile=dict(SIGNALS.profile)), profile_interval=10.0
    )
    watch = first.status.watch
    assert watch is not None and watch.profile_read_at == start
    later = watching(first.status, start + timedelta(seconds=9), reading(), profile_interval=10.0)
    assert later.requeue_after == 1.0  # the profile is due in a second


def test_the_schedule_retunes_when_it_fires_after_the_last_search() -> None:
    every_hour = RETUNE.model_copy(update={"schedule": "0 * * * *"})
    before = watching(stable_status(), END + timedelta(minutes=20), reading(), retune=every_hour)
    assert before.status.phase is Phase.STABLE
    after = watching(before.status, T0 + timedelta(hours=1), reading(), retune=every_hour)
    assert after.status.phase is Phase.PROFILING
    assert after.status.last_retune_trigger == "Schedule"
    assert "'0 * * * *' fired at 2025-01-01 01:00" in (after.status.last_retune_reason or "")


def test_a_manual_retune_skips_the_cooldown_and_removes_its_annotation() -> None:
    controls = frozenset({RETUNE_ANNOTATION})
    decision = watching(stable_status(), END + timedelta(seconds=1), reading(), controls=controls)
    assert decision.status.phase is Phase.PROFILING
    assert decision.status.last_retune_trigger == "Manual"
    assert ClearAnnotations((RETUNE_ANNOTATION,)) in decision.actions


def test_a_manual_retune_while_searching_is_removed() -> None:
    searching = decide(TargetStatus(), facts(signals=SIGNALS), T0).status
    decision = decide(searching, facts(controls=frozenset({RETUNE_ANNOTATION})), T0)
    assert ClearAnnotations((RETUNE_ANNOTATION,)) in decision.actions
    assert "RetuneIgnored" in reasons(decision)


def test_a_paused_target_watches_nothing() -> None:
    decision = decide(stable_status(), facts(paused=True, retune=RETUNE), END)
    assert decision.status.phase is Phase.PAUSED and not decision.needs_watch


def test_the_most_urgent_trigger_names_the_retune() -> None:
    start = END + timedelta(minutes=5)
    status = run(stable_status(), start, [0, 2], watched=reading(0.1)).status
    status = watching(status, start, reading(0.1, hardware=NEW_HARDWARE)).status
    decision = watching(status, start + timedelta(seconds=10), reading(0.1, hardware=NEW_HARDWARE))
    assert decision.status.last_retune_trigger == "SLOViolation"


def test_cron_schedules_fire_at_the_next_matching_minute() -> None:
    t = datetime(2025, 1, 1, 12, 30, 15, tzinfo=UTC)  # a Wednesday
    assert next_fire("*/15 * * * *", t) == datetime(2025, 1, 1, 12, 45, tzinfo=UTC)
    assert next_fire("0 3 * * *", t) == datetime(2025, 1, 2, 3, 0, tzinfo=UTC)
    assert next_fire("0 3 * * sun", t) == datetime(2025, 1, 5, 3, 0, tzinfo=UTC)
    assert next_fire("0 0 1 * mon", t) == datetime(2025, 1, 6, 0, 0, tzinfo=UTC)  # either day
    assert next_fire("@monthly", t) == datetime(2025, 2, 1, tzinfo=UTC)
    assert next_fire("30 12 * * *", t) == datetime(2025, 1, 2, 12, 30, tzinfo=UTC)  # strictly after
    assert next_fire("0 0 29 2 *", t) == datetime(2028, 2, 29, tzinfo=UTC)
    assert next_fire("0 0 30 2 *", t) is None
    assert next_fire("5/20 8-9 * jan,jul 7", t) == datetime(2025, 1, 5, 8, 5, tzinfo=UTC)
