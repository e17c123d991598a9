"""Value formats a target is written in: durations, Kubernetes quantities, cron schedules.

Each parser raises ``ValueError`` with a message a user can act on; the model layer turns
it into a field-level problem.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from cronsim import CronSim, CronSimError

# Go-style durations ("30s", "5m", "1h30m", "250ms"), or a plain number of seconds.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|ms|s|m|h))+)$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_HINT = "a duration such as 30s, 5m or 1h30m, or a number of seconds"

# Kubernetes resource quantities without a sign ("500m", "2", "1.5", "1Gi", "1e3").
QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][0-9]+|[KMGTPE]i|[numkMGTPE])?$"
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([eE][0-9]+|[KMGTPE]i|[numkMGTPE])?")
_QUANTITY_SUFFIXES = {
    "": 1.0,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}
QUANTITY_HINT = "a Kubernetes quantity such as 500m, 2 or 1Gi"


def parse_duration(value: object) -> float:
    """Seconds in ``value``: a non-negative number, or a Go-style duration string."""
    if isinstance(value, bool):
        raise ValueError(f"must be {DURATION_HINT}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"must not be negative (got {value})")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"must be {DURATION_HINT}")
    text = value.strip()
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"must be {DURATION_HINT} (got {value!r})")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def format_duration(seconds: float) -> str:
    """The shortest Go-style spelling of a whole number of seconds (``5400`` -> ``1h30m``)."""
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest = int(seconds)
    if rest == 0:
        return "0s"
    text = ""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            text += f"{count}{unit}"
    return text


def parse_quantity(value: str) -> float:
    """The numeric value of a Kubernetes quantity (``"500m"`` -> 0.5, ``"1Ki"`` -> 1024)."""
    match = _QUANTITY.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"must be {QUANTITY_HINT} (got {value!r})")
    number, suffix = match.group(1), match.group(2) or ""
    if suffix[:1] in ("e", "E") and suffix[1:].isdigit():  # an exponent, not "Ei"
        return float(number) * 10.0 ** int(suffix[1:])
    return float(number) * _QUANTITY_SUFFIXES[suffix]


# The macros Debian cron takes besides 5 fields (cronsim reads fields only).
CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
CRON_HINT = "a cron schedule with 5 fields (minute hour day-of-month month day-of-week)"
# Each field's name and range, for the message about a field cronsim refuses ("Bad hour").
_CRON_FIELDS = {
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31",
    "month": "1-12",
    "day-of-week": "0-7",
}
_CRON_NAMES = {"month": " or jan-dec", "day-of-week": " or sun-sat (0 and 7 are Sunday)"}
# Any moment will do: cronsim checks an expression when it is given a start.
_CRON_CHECK_START = datetime(2000, 1, 1, tzinfo=UTC)


def validate_cron(expression: str) -> str:
    """Check a 5-field cron schedule (or an ``@daily``-style macro) as Debian cron reads
    it, through cronsim; return it normalised."""
    text = " ".join(expression.split())
    if text.lower() in CRON_MACROS:
        return text.lower()
    fields = text.split(" ")
    if len(fields) != 5:
        raise ValueError(f"must be {CRON_HINT}, e.g. '0 3 * * *' (got {expression!r})")
    refusal = _cron_refusal(fields)
    if refusal is not None:
        raise ValueError(_cron_problem(fields, refusal))
    return text


def _cron_refusal(fields: list[str]) -> str | None:
    """cronsim's objection to the fields ("Bad minute"), or None."""
    try:
        CronSim(" ".join(fields), _CRON_CHECK_START)
    except CronSimError as error:
        return str(error)
    return None


def _cron_problem(fields: list[str], refusal: str) -> str:
    name = refusal.removeprefix("Bad ")
    if name not in _CRON_FIELDS:
        return f"must be {CRON_HINT} ({refusal})"
    if name == "day-of-month" and _cron_refusal([*fields[:3], "*", fields[4]]) is None:
        # The day is valid on its own: it is the months that never have it.
        return (
            f"day-of-month field: no month in {fields[3]!r} has day {fields[2]!r}, so the "
            "schedule would never fire"
        )
    index = list(_CRON_FIELDS).index(name)
    # The list item cronsim refuses on its own, so the message can point at it.
    items = fields[index].split(",")
    item = next(
        (i for i in items if _cron_refusal([*fields[:index], i, *fields[index + 1 :]])),
        fields[index],
    )
    span = _CRON_FIELDS[name]
    if item.isdigit():
        return f"{name} field: {int(item)} is outside {span}"
    return (
        f"{name} field: {item!r} is not a number in {span}{_CRON_NAMES.get(name, '')}, '*', "
        "a range a-b from low to high, or a step such as */15"
    )
