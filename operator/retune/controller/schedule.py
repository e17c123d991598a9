"""When a cron schedule (``spec.retune.schedule``, 5 fields, UTC) fires next.

The expression has been checked by :func:`retune.spec.validate_cron`; cronsim computes the
times as Debian cron would: when both day-of-month and day-of-week are restricted a day
matches if either does, and day-of-week 7 is Sunday like 0.
"""

from __future__ import annotations

from datetime import UTC, datetime

from cronsim import CronSim, CronSimError

from retune.spec.units import CRON_MACROS


def next_fire(expression: str, after: datetime) -> datetime | None:
    """The first time strictly after ``after`` when ``expression`` fires (UTC); None if it
    never does (February 30: a schedule stored before validation refused such days)."""
    text = " ".join(expression.split()).lower()
    try:
        schedule = CronSim(CRON_MACROS.get(text, text), after.astimezone(UTC))
    except CronSimError:
        return None
    return next(schedule, None)
