"""When a decided status is worth writing.

Every check of a Stable target stamps the time of the check (``watch.checkedAt``, and the
``latest`` observation of each clock in ``watch``) even when it saw nothing new. Writing
such a status costs a request to the API server, and a watch event every client of the
target (kopf in this operator among them) has to process, once per target per check; it
tells nobody anything but that the operator is alive. So a status that differs from the
one written only in those times is written only once the written check time is
:data:`CHECK_REFRESH` old.

Nothing decides on these times: a clock's ``latest`` only keeps its time from running
backwards, and a restarted operator's clocks go on from ``since`` and ``lastHeldAt``,
which are written whenever they change.
"""

from __future__ import annotations

from datetime import datetime

from retune.spec import ClockStatus, TargetStatus

CHECK_REFRESH = 300.0
"""Most seconds ``watch.checkedAt`` as written lags behind the latest check (a restarted
operator then sees a check at most this old; 5 minutes is also the longest blind spot a
clock survives)."""


def status_worth_writing(written: TargetStatus, new: TargetStatus) -> bool:
    """Whether ``new`` must replace ``written`` (the status as last written): something
    but the check times changed, or the written check is :data:`CHECK_REFRESH` old."""
    if _without_check_times(written) != _without_check_times(new):
        return True
    before = written.watch.checked_at if written.watch is not None else None
    after = new.watch.checked_at if new.watch is not None else None
    return _seconds_between(before, after) >= CHECK_REFRESH


def _seconds_between(before: datetime | None, after: datetime | None) -> float:
    if after is None:
        return 0.0  # nothing newer to say
    if before is None:
        return float("inf")
    return (after - before).total_seconds()


def _without_check_times(status: TargetStatus) -> TargetStatus:
    watch = status.watch
    if watch is None:
        return status
    quiet = watch.model_copy(
        update={
            "checked_at": None,
            "slos": {
                name: slo.model_copy(update={"clock": _without_latest(slo.clock)})
                for name, slo in watch.slos.items()
            },
            "drift": {name: _without_latest(clock) for name, clock in watch.drift.items()},
        }
    )
    return status.model_copy(update={"watch": quiet})


def _without_latest(clock: ClockStatus | None) -> ClockStatus | None:
    return clock.model_copy(update={"latest": None}) if clock is not None else None
