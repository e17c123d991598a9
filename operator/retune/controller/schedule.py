"""When a cron schedule (``spec.retune.schedule``, 5 fields, UTC) fires next.

The expression has been checked by :func:`retune.spec.validate_cron`; this module only
computes times. As in Vixie cron, when both day-of-month and day-of-week are restricted a
day matches if either does, and day-of-week 7 is Sunday like 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NAMES = {
    **{month: number for number, month in enumerate(_MONTHS, 1)},
    **{day: number for number, day in enumerate(_WEEKDAYS)},
}
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_SEARCH_DAYS = 366 * 8 + 2  # long enough to reach any Feb 29 that a schedule can name


@dataclass(frozen=True)
class Cron:
    """A parsed schedule: the allowed values of each field."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    """0 is Sunday."""
    any_day: bool
    """Day-of-month is ``*``."""
    any_weekday: bool
    """Day-of-week is ``*``."""

    @classmethod
    def parse(cls, expression: str) -> Cron:
        """Parse a checked 5-field expression or macro."""
        text = " ".join(expression.split()).lower()
        fields = _MACROS.get(text, text).split(" ")
        if len(fields) != 5:
            raise ValueError(f"not a 5-field cron schedule: {expression!r}")
        sets = [_field(f, low, high) for f, (low, high) in zip(fields, _RANGES, strict=True)]
        weekdays = frozenset(day % 7 for day in sets[4])
        return cls(
            minutes=sets[0],
            hours=sets[1],
            days=sets[2],
            months=sets[3],
            weekdays=weekdays,
            any_day=fields[2].startswith("*"),
            any_weekday=fields[4].startswith("*"),
        )

    def day_matches(self, day: datetime) -> bool:
        """Whether the schedule fires on ``day`` (at some time)."""
        if day.month not in self.months:
            return False
        by_date = day.day in self.days
        by_weekday = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return by_date and by_weekday
        return by_date or by_weekday

    def next_after(self, after: datetime) -> datetime | None:
        """The first time strictly after ``after`` (UTC) when the schedule fires; None if
        it never does (e.g. February 30)."""
        start = (after.astimezone(UTC) + timedelta(minutes=1)).replace(second=0, microsecond=0)
        day = start.replace(hour=0, minute=0)
        for offset in range(_SEARCH_DAYS):
            current = day + timedelta(days=offset)
            if not self.day_matches(current):
                continue
            for hour in sorted(self.hours):
                for minute in sorted(self.minutes):
                    moment = current.replace(hour=hour, minute=minute)
                    if moment >= start:
                        return moment
        return None


def _field(text: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        base, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            first, last = low, high
        else:
            start, dash, end = base.partition("-")
            first = _value(start)
            # "5/15" runs from 5 to the top of the range, as in Vixie cron.
            last = _value(end) if dash else (high if step_text else first)
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _value(token: str) -> int:
    token = token.lower()
    return _NAMES[token] if token in _NAMES else int(token)


def next_fire(expression: str, after: datetime) -> datetime | None:
    """When ``expression`` fires first after ``after``."""
    return Cron.parse(expression).next_after(after)
