"""Value formats a target is written in: durations, Kubernetes quantities, cron schedules.

Each parser raises ``ValueError`` with a message a user can act on; the model layer turns
it into a field-level problem.
"""

from __future__ import annotations

import re

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
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return float(number) * 10.0 ** int(suffix[1:])
    return float(number) * _QUANTITY_SUFFIXES[suffix]


_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (name, lowest, highest, names accepted in place of numbers) of each cron field.
_CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, {name: number for number, name in enumerate(_MONTHS, start=1)}),
    ("day-of-week", 0, 7, {name: number for number, name in enumerate(_WEEKDAYS)}),
)
CRON_HINT = "a cron schedule with 5 fields (minute hour day-of-month month day-of-week)"


def validate_cron(expression: str) -> str:
    """Check a 5-field cron schedule (or an ``@daily``-style macro); return it normalised."""
    text = " ".join(expression.split())
    if text.lower() in _CRON_MACROS:
        return text.lower()
    fields = text.split(" ")
    if len(fields) != 5:
        raise ValueError(f"must be {CRON_HINT}, e.g. '0 3 * * *' (got {expression!r})")
    for field, (name, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for item in field.split(","):
            _check_cron_item(item, name, low, high, names)
    return text


def _check_cron_item(item: str, name: str, low: int, high: int, names: dict[str, int]) -> None:
    def value(token: str) -> int:
        token = token.lower()
        if token in names:
            return names[token]
        if not token.isdigit():
            raise ValueError(f"{name} field: {token!r} is not a number")
        number = int(token)
        if not low <= number <= high:
            raise ValueError(f"{name} field: {number} is outside {low}-{high}")
        return number

    base, _, step = item.partition("/")
    if step and (not step.isdigit() or int(step) < 1):
        raise ValueError(f"{name} field: step {step!r} must be a positive number")
    if base == "*":
        return
    start, dash, end = base.partition("-")
    first = value(start)
    if dash and value(end) < first:
        raise ValueError(f"{name} field: range {base!r} runs backwards")
