"""``spec.retune.spendLimit``: what a target's searches spend together, the allowance a
search starts with, and the searches and retunes that wait for room. Plain statuses, no
cluster, no clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from retune.controller import StartSearch, decide
from retune.controller.phases import search_id
from retune.controller.spend import fold_search, room, room_from, spent_within
from retune.handlers.jobs import allowed_budget
from retune.spec import (
    BudgetSpec,
    LedgerStatus,
    Phase,
    SearchStatus,
    SpendLimitSpec,
    SpentStatus,
    TargetStatus,
)
from tests.test_controller import SIGNALS, T0, condition, facts, reasons
from tests.test_controller_triggers import END, RETUNE, reading, stable_status, watching

DAY = 86400.0
HOUR = timedelta(hours=1)
LIMIT = SpendLimitSpec(max_usd=1.0, window_seconds=7 * DAY)
LIMITED = RETUNE.model_copy(update={"spend_limit": LIMIT})


def spent(*records: tuple[float, float], current: float = 0.0) -> TargetStatus:
    """A status whose ended searches spent ``usd`` ended ``days`` after T0, and whose last
    search (ended at T0) spent ``current``."""
    status = TargetStatus(
        search=SearchStatus(started_at=T0, finished_at=T0),
        ledger=LedgerStatus(usd=current),
    )
    status.spend.searches = [
        SpentStatus(at=T0 + timedelta(days=days), usd=usd) for days, usd in records
    ]
    return status


def test_spending_counts_within_its_window_the_last_search_included() -> None:
    status = spent((-10, 0.5), (-3, 0.25), current=0.125)
    assert spent_within(status, 7 * DAY, T0) == pytest.approx(0.375)
    assert room(status, LIMIT, T0) == pytest.approx(0.625)
    assert spent_within(status, 30 * DAY, T0) == pytest.approx(0.875)
    # A running search counts as ending now.
    running = spent(current=0.25)
    running.search = SearchStatus(started_at=T0)
    assert spent_within(running, DAY, T0 + timedelta(days=3)) == pytest.approx(0.25)


def test_room_opens_when_enough_earlier_spending_leaves_the_window() -> None:
    status = spent((-6, 0.5), (-2, 0.5), current=0.25)
    assert room(status, LIMIT, T0) == 0.0
    # The search of six days ago leaves after one more day: 0.75 then, room 0.25.
    assert room_from(status, LIMIT, T0) == T0 + timedelta(days=1)
    exact = spent((-6, 0.5), (-2, 0.5))  # exactly the limit: nothing left
    assert room(exact, LIMIT, T0) == 0.0
    assert room_from(exact, LIMIT, T0) == T0 + timedelta(days=1)
    assert room(exact, LIMIT, T0 + timedelta(days=1, seconds=1)) == pytest.approx(0.5)


def test_folding_keeps_the_last_search_and_drops_what_no_window_needs() -> None:
    status = spent((-40, 0.5), (-3, 0.25), current=0.125)
    fold_search(status, T0, LIMIT.window_seconds)  # kept 30 days at least
    assert [(r.at, r.usd) for r in status.spend.searches] == [
        (T0 - timedelta(days=3), 0.25),
        (T0, 0.125),
    ]
    longer = spent((-40, 0.5), current=0.125)
    fold_search(longer, T0, 60 * DAY)
    assert len(longer.spend.searches) == 2


def test_a_search_that_calls_models_starts_with_what_the_limit_leaves() -> None:
    status = spent((-2, 0.75))
    decision = decide(status, facts(signals=SIGNALS, retune=LIMITED, calls_models=True), T0)
    (action,) = decision.actions
    assert isinstance(action, StartSearch) and action.usd_allowance == pytest.approx(0.25)
    assert decision.status.search is not None
    assert decision.status.search.usd_allowance == pytest.approx(0.25)
    # The built-in mutator spends nothing: no allowance, whatever the limit says.
    free = decide(spent((-2, 1.0)), facts(signals=SIGNALS, retune=LIMITED), T0)
    (action,) = free.actions
    assert isinstance(action, StartSearch) and action.usd_allowance is None


def test_a_new_search_folds_the_last_ones_spending_and_the_total_grows() -> None:
    status = decide(TargetStatus(), facts(signals=SIGNALS), T0).status
    status = status.model_copy(update={"ledger": LedgerStatus(usd=0.3), "phase": Phase.PROFILING})
    status.spend.total_usd = 0.3  # as the search's progress left it; a retune began
    status.search = (status.search or SearchStatus()).model_copy(update={"finished_at": T0})
    later = T0 + timedelta(hours=1)
    decision = decide(status, facts(signals=SIGNALS, retune=LIMITED, calls_models=True), later)
    after = decision.status
    assert [(r.at, r.usd) for r in after.spend.searches] == [(T0, 0.3)]
    assert after.ledger.usd == 0.0 and after.spend.total_usd == pytest.approx(0.3)
    assert after.search is not None and after.search.usd_allowance == pytest.approx(0.7)


def test_a_search_with_nothing_left_waits_without_reading_signals() -> None:
    status = spent((-1, 1.0))
    decision = decide(status, facts(retune=LIMITED, calls_models=True), T0)
    assert decision.actions == [] and not decision.needs_signals
    assert decision.status.phase is Phase.PROFILING
    state, reason, message = condition(decision.status, "Searching")
    assert (state, reason) == ("False", "SpendLimitReached")
    assert "$1.0000 of spec.retune.spendLimit's $1 spent in the last 7d" in message
    assert "2025-01-07 00:00:00" in message  # a week after that search ended
    assert reasons(decision) == ["SpendLimitReached"]
    assert decision.requeue_after == 3600.0
    again = decide(decision.status, facts(retune=LIMITED, calls_models=True), T0 + HOUR)
    assert again.events == []  # said once
    assert condition(again.status, "Searching") == condition(decision.status, "Searching")
    opened = T0 + timedelta(days=6, seconds=1)
    started = decide(
        again.status, facts(signals=SIGNALS, retune=LIMITED, calls_models=True), opened
    )
    assert started.status.phase is Phase.SEARCHING
    assert started.status.search is not None
    assert started.status.search.usd_allowance == pytest.approx(1.0)


def test_a_retune_waits_for_room_and_keeps_its_trigger() -> None:
    status = stable_status()
    status.ledger = LedgerStatus(usd=1.0)  # the first search spent the whole limit
    status.search = (status.search or SearchStatus()).model_copy(update={"finished_at": END})
    start = END + timedelta(minutes=5)  # past the cooldown
    models = {"retune": LIMITED, "calls_models": True}
    decision = None
    for offset in (0, 2, 4):
        decision = watching(status, start + timedelta(seconds=offset), reading(0.1), **models)
        status = decision.status
    assert decision is not None
    assert status.phase is Phase.STABLE and status.retunes == 0
    state, reason, message = condition(status, "RetunePending")
    assert (state, reason) == ("True", "SLOViolation")
    assert "spendLimit" in message and "2025-01-08 00:05:00" in message
    assert reasons(decision)[-1] == "RetuneDeferred"
    status_after = watching(status, END + timedelta(days=7, seconds=1), reading(0.1), **models)
    assert status_after.status.phase is Phase.PROFILING
    assert status_after.status.retunes == 1
    # The same violation retunes at once without models: they alone spend.
    free = watching(status, start + timedelta(seconds=6), reading(0.1), retune=LIMITED)
    assert free.status.phase is Phase.PROFILING


def test_the_allowance_lowers_the_spec_budget_and_never_raises_it() -> None:
    budget = BudgetSpec(max_evaluations=100, max_usd=0.5)
    assert allowed_budget(budget, None) is None
    lowered = allowed_budget(budget, 0.2)
    assert lowered is not None and (lowered.max_usd, lowered.max_evaluations) == (0.2, 100)
    kept = allowed_budget(budget, 0.9)
    assert kept is not None and kept.max_usd == 0.5
    uncapped = allowed_budget(BudgetSpec(max_evaluations=100), 0.3)
    assert uncapped is not None and uncapped.max_usd == 0.3


def test_the_total_follows_the_running_search_without_counting_twice() -> None:
    from tests.test_controller import running

    status = decide(TargetStatus(), facts(signals=SIGNALS), T0).status
    for _ in range(3):  # the same progress, reported at three reconciles
        status = decide(status, facts(work=running(5)), T0).status
    assert status.ledger.usd == pytest.approx(0.002)
    assert status.spend.total_usd == pytest.approx(0.002)


def test_calls_an_earlier_search_left_unsettled_count_once_and_lower_the_allowance() -> None:
    from tests.test_controller import running

    limited = {"retune": LIMITED, "calls_models": True}
    status = decide(TargetStatus(), facts(signals=SIGNALS, **limited), T0).status
    assert status.search is not None and status.search.usd_allowance == 1.0
    report = replace(running(5), abandoned_usd=0.03)
    first = decide(status, facts(work=report, **limited), T0)
    assert reasons(first) == ["UnsettledCallsCharged"]
    again = decide(first.status, facts(work=report, **limited), T0 + timedelta(seconds=3))
    assert again.events == []  # counted once, however often the worker reports it
    after = again.status
    assert after.search is not None and after.search.usd_allowance == pytest.approx(0.97)
    assert [r.usd for r in after.spend.searches] == [0.03]
    assert after.spend.total_usd == pytest.approx(0.03 + 0.002)  # and the search's own
    assert spent_within(after, LIMIT.window_seconds, T0) == pytest.approx(0.032)
    # The worker lowered its own budget alike (so a resume, given the lowered allowance,
    # spends the same).
    lowered = allowed_budget(BudgetSpec(max_usd=2.0), 1.0, unsettled=0.03)
    assert lowered is not None and lowered.max_usd == pytest.approx(0.97)
    gone = allowed_budget(BudgetSpec(max_usd=2.0), 0.02, unsettled=0.03)
    assert gone is not None and gone.max_usd == 0.0


def test_what_the_last_search_could_not_use_of_its_allowance_is_no_room() -> None:
    # The last search (ended at T0) started with 0.5 left and stopped for it with 0.0007
    # unspent: less than one of its calls, or it would have made it.
    status = spent((-2, 0.5), current=0.4993)
    assert status.search is not None
    status.search.usd_allowance = 0.5
    status.search.stop_reason = "USD budget reached"
    assert room(status, LIMIT, T0) == 0.0
    assert room_from(status, LIMIT, T0) == T0 + timedelta(days=5)
    assert room(status, LIMIT, T0 + timedelta(days=5, seconds=1)) == pytest.approx(0.5007)
    # Its own budget (no larger than the allowance) stopped it: the rest is room.
    assert room(status, LIMIT, T0, per_search=0.4) == pytest.approx(0.0007)
    # A search that stopped for its evaluations left room it could have used.
    status.search.stop_reason = "evaluation budget reached"
    assert room(status, LIMIT, T0) == pytest.approx(0.0007)


def test_the_next_search_is_told_what_the_status_counted_of_the_last() -> None:
    status = spent(current=0.3)
    status.phase = Phase.PROFILING
    decision = decide(status, facts(signals=SIGNALS, retune=LIMITED, calls_models=True), T0)
    (action,) = decision.actions
    assert isinstance(action, StartSearch) and action.counted_usd == pytest.approx(0.3)
    assert decision.status.search is not None
    assert decision.status.search.previous_usd == pytest.approx(0.3)
    # and a resume of it is told the same (its journal may still be the earlier one's)
    resumed = decide(decision.status, facts(**{"retune": LIMITED, "calls_models": True}), T0)
    (again,) = resumed.actions
    assert isinstance(again, StartSearch) and again.resume and again.counted_usd == 0.3

    # Each attempt of a search carries the search's id, so a resume under another
    # configuration knows the spend journal it finds for its own (the money stays), and
    # the next search's differs (that journal is the last search's, and is replaced).
    assert action.search_id and again.search_id == action.search_id
    later = decision.status.model_copy(deep=True)
    assert later.search is not None
    later.search.finished_at, later.phase = T0 + HOUR, Phase.PROFILING
    started = decide(later, facts(signals=SIGNALS, retune=LIMITED, calls_models=True), T0 + HOUR)
    (next_search,) = started.actions
    assert isinstance(next_search, StartSearch) and next_search.search_id != action.search_id
    # to the second: a store that keeps a status's times without their microseconds
    # still gives the resumed attempt the id the first one had
    precise = SearchStatus(started_at=T0 + timedelta(microseconds=123456), generation=4)
    kept = SearchStatus(started_at=T0, generation=4)
    assert search_id(precise) == search_id(kept) == "4/2025-01-01T00:00:00Z"


def test_a_search_started_afresh_says_that_what_it_spent_before_still_counts() -> None:
    from tests.test_controller import running

    status = decide(TargetStatus(), facts(signals=SIGNALS), T0).status
    report = running(
        5, discarded="its checkpoint was made under another configuration", carried_usd=0.0123
    )
    after = decide(status, facts(work=report), T0 + timedelta(seconds=5))
    _, _, message = condition(after.status, "Searching")
    assert "started afresh: its checkpoint was made under another configuration" in message
    assert "(the $0.0123 it had spent counts)" in message


def test_past_the_records_kept_the_oldest_merge_and_the_window_counts_no_less() -> None:
    records = [(-0.001 * (300 - i), 0.01) for i in range(300)]  # 300 searches in 0.3 days
    status = spent(*records, current=0.01)
    before = spent_within(status, LIMIT.window_seconds, T0)
    fold_search(status, T0, LIMIT.window_seconds)
    status.ledger = LedgerStatus()  # as the next search starts
    assert len(status.spend.searches) == 200
    assert spent_within(status, LIMIT.window_seconds, T0) == pytest.approx(before)
    assert status.spend.searches[0].usd == pytest.approx(0.01 * 102)


def test_what_the_replaced_search_spent_beyond_its_status_is_uncounted() -> None:
    from retune.handlers.jobs import uncounted_usd

    # its journal settled 0.05 where its status took 0.045; one call was in flight
    assert uncounted_usd({"large": 0.02}, 0.05, 0.045) == pytest.approx(0.025)
    assert uncounted_usd({}, 0.05, 0.05) == 0.0  # it finished: the status has it all
    assert uncounted_usd({}, 0.0, 0.3) == 0.0  # a built-in search's journal holds nothing


def test_a_limit_below_one_call_of_the_last_search_waits_until_it_is_raised() -> None:
    # The last search stopped for its allowance of 0.002 with 0.0014 of it unused (less
    # than one of its calls); the limit is then lowered to 0.0003, below that.
    low = SpendLimitSpec(max_usd=0.0003, window_seconds=7 * DAY)
    limited = {"retune": RETUNE.model_copy(update={"spend_limit": low}), "calls_models": True}
    status = spent(current=0.0006)
    assert status.search is not None
    status.search.usd_allowance = 0.002
    status.search.stop_reason = "USD budget reached"
    assert room_from(status, low, T0, per_search=0.05) is None  # not even a week later
    decision = decide(status, facts(**limited, max_usd=0.05), T0 + timedelta(seconds=1))
    state, reason, message = condition(decision.status, "Searching")
    assert (state, reason) == ("False", "SpendLimitReached")
    assert "when spec.retune.spendLimit.maxUsd is raised" in message
    assert decision.requeue_after == 3600.0
    for later in (timedelta(seconds=2), HOUR):  # said once
        again = decide(decision.status, facts(**limited, max_usd=0.05), T0 + later)
        assert again.events == [] and again.status.phase is Phase.PROFILING
        assert condition(again.status, "Searching")[2] == message
    # Once the spending has left the window, it still waits (and says what changed)
    again = decide(again.status, facts(**limited, max_usd=0.05), T0 + timedelta(days=8))
    assert again.status.phase is Phase.PROFILING
    assert "$0.0000 of spec.retune.spendLimit" in condition(again.status, "Searching")[2]
    raised = RETUNE.model_copy(update={"spend_limit": LIMIT})
    resumed = decide(
        again.status,
        facts(signals=SIGNALS, retune=raised, calls_models=True, max_usd=0.05),
        T0 + timedelta(days=8),
    )
    assert resumed.status.phase is Phase.SEARCHING
