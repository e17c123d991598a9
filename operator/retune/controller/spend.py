"""What a target's searches spend together, and ``spec.retune.spendLimit``.

Each search has its own USD budget (``spec.search.budget.maxUsd``), but a target that
retunes on its own starts searches with no one watching: an SLO that keeps breaking, a
profile that keeps drifting, or a schedule would each start a search every cooldown and
each spend its whole budget. The spend limit caps them together: at most ``maxUsd`` on
model calls within any ``window``.

A search's spending counts from when it ends (or is replaced) until a window after, so it
is counted for as long as any of it could be within the window. The status keeps the
ended searches' spending (``status.spend.searches``, folded in when the next search
starts) and the current one's is its ledger (``status.ledger``). A search that calls
models gets what is left as its allowance, fixed at its start, so a resumed search keeps
it; the engine's ledger never spends beyond it. One that would start with nothing left
waits until enough earlier spending leaves the window -- and so does one that would
start with no more than the last search left when its allowance stopped it (less than
one of its calls), which would stop at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from retune.spec import SpendLimitSpec, SpentStatus, TargetStatus

KEPT_SECONDS = 30 * 86400
"""Ended searches' spending is kept at least this long (longer when the window is)."""
KEPT_RECORDS = 200
"""At most this many ended searches are kept (the status must stay small): beyond it the
oldest are merged, dated at the later of the two, so the window never counts less."""
ROOM_EPSILON = 1e-9
"""Less than this left counts as nothing left (sums of floats)."""
USD_STOP = "USD budget reached"
"""A search's ``stopReason`` when its USD budget stopped it."""


def _records(status: TargetStatus, now: datetime) -> list[SpentStatus]:
    """The ended searches' spending and the current (or last) search's, which counts as
    ending now while it runs."""
    records = list(status.spend.searches)
    if status.ledger.usd > 0:
        search = status.search
        ended = search.finished_at if search is not None and search.finished_at else now
        records.append(SpentStatus(at=ended, usd=status.ledger.usd))
    return records


def spent_within(status: TargetStatus, window_seconds: float, now: datetime) -> float:
    """USD spent by the searches whose spending is within the window ending ``now``."""
    since = now - timedelta(seconds=window_seconds)
    return sum(record.usd for record in _records(status, now) if record.at > since)


def unusable(status: TargetStatus, per_search: float | None) -> float:
    """What the last search left of its allowance when it stopped for it: less than one
    of its calls could use (it reserves its worst case first), so a search starting with
    no more would stop at once. 0 when the allowance did not stop it (its own budget,
    ``per_search``, is no larger) or it had none."""
    search = status.search
    if search is None or search.usd_allowance is None or search.stop_reason != USD_STOP:
        return 0.0
    if per_search is not None and per_search <= search.usd_allowance:
        return 0.0
    return max(0.0, search.usd_allowance - status.ledger.usd)


def room(
    status: TargetStatus, limit: SpendLimitSpec, now: datetime, per_search: float | None = None
) -> float:
    """USD a search may still spend under ``limit``; 0 when nothing is left, or no more
    than the last search could not use (:func:`unusable`; ``per_search`` is
    ``spec.search.budget.maxUsd``)."""
    left = limit.max_usd - spent_within(status, limit.window_seconds, now)
    return left if left > max(ROOM_EPSILON, unusable(status, per_search)) else 0.0


def room_from(
    status: TargetStatus, limit: SpendLimitSpec, now: datetime, per_search: float | None = None
) -> datetime | None:
    """When room opens again: the oldest spending within the window leaves it, and with
    it enough of the rest that more than nothing (:func:`room`) is left. None when none
    opens while the limit stays as it is: it is no more than the last search could not use
    (:func:`unusable`), so even with all spending out of the window no call would fit."""
    floor = max(ROOM_EPSILON, unusable(status, per_search))
    since = now - timedelta(seconds=limit.window_seconds)
    inside = sorted((r for r in _records(status, now) if r.at > since), key=lambda r: r.at)
    spent = sum(record.usd for record in inside)
    for record in inside:
        spent -= record.usd
        if limit.max_usd - spent > floor:
            return record.at + timedelta(seconds=limit.window_seconds)
    return None


@dataclass(frozen=True)
class Wait:
    """No room under the limit: what was spent, and when room opens."""

    spent: str
    """What was spent against the limit (:func:`describe`)."""
    opens: datetime | None
    """None: not while the limit stays as it is (:func:`room_from`)."""
    seconds: float
    """From now until ``opens``; infinite when it never opens."""

    def until(self, what: str) -> str:
        if self.opens is None:
            return (
                f"the {what} starts when spec.retune.spendLimit.maxUsd is raised: the limit "
                "is no more than the last search could not use of its allowance (less than "
                "one of its calls), even once all earlier spending has left the window"
            )
        return (
            f"the {what} starts when earlier spending leaves the window, at "
            f"{self.opens:%Y-%m-%d %H:%M:%S} UTC"
        )


def waiting(
    status: TargetStatus, limit: SpendLimitSpec, now: datetime, per_search: float | None
) -> Wait:
    """What was spent and until when a search waits, when :func:`room` has none."""
    opens = room_from(status, limit, now, per_search)
    seconds = math.inf if opens is None else (opens - now).total_seconds()
    return Wait(describe(status, limit, now), opens, seconds)


def usd_budget(max_usd: float | None, allowance: float | None) -> float | None:
    """A search's USD budget: its own (``maxUsd``), lowered to what the spend limit left
    it (``allowance``) when that is smaller."""
    if allowance is None:
        return max_usd
    return allowance if max_usd is None else min(max_usd, allowance)


def fold_search(status: TargetStatus, now: datetime, window_seconds: float | None) -> None:
    """Move the last search's spending into ``status.spend.searches`` (before a new search
    replaces its ledger), dropping what no window needs any more."""
    records = _records(status, now)
    keep = max(KEPT_SECONDS, window_seconds or 0.0)
    since = now - timedelta(seconds=keep)
    kept = [r for r in records if r.at > since]
    while len(kept) > KEPT_RECORDS:  # the oldest two as one, dated at the later: never less
        kept[:2] = [SpentStatus(at=kept[1].at, usd=kept[0].usd + kept[1].usd)]
    status.spend.searches = kept


def add_progress(status: TargetStatus, usd: float) -> None:
    """Count the current search's ledger moving from ``status.ledger.usd`` to ``usd``."""
    total = status.spend.total_usd + usd - status.ledger.usd
    status.spend.total_usd = round(max(0.0, total), 9)


def add_unsettled(status: TargetStatus, usd: float, now: datetime) -> None:
    """Count calls an earlier search sent and never settled: they may have been billed,
    and no ledger counts them any more."""
    status.spend.searches = [*status.spend.searches, SpentStatus(at=now, usd=usd)]
    status.spend.total_usd = round(status.spend.total_usd + usd, 9)


def describe(status: TargetStatus, limit: SpendLimitSpec, now: datetime) -> str:
    """What was spent against the limit, for messages."""
    spent = spent_within(status, limit.window_seconds, now)
    window = _window_text(limit.window_seconds)
    return f"${spent:.4f} of spec.retune.spendLimit's ${limit.max_usd:g} spent in the last {window}"


def _window_text(seconds: float) -> str:
    days = seconds / 86400
    if days >= 1 and days == int(days):
        return f"{int(days)}d"
    hours = seconds / 3600
    return f"{hours:g}h"
