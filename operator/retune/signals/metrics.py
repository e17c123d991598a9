"""The metric-provider interface: one query in, exactly one outcome out.

A provider answers ``query(promql)`` with a :data:`Sample`, a small tagged union:

- :class:`Value` — exactly one finite number;
- :class:`NoData` — the query matched nothing (an empty result);
- :class:`Invalid` — there was an answer, but not one number: NaN or ±Inf, several series,
  a range vector, a string;
- :class:`Unavailable` — the backend could not answer: connection refused, timeout,
  HTTP 5xx, authentication failure;
- :class:`BadQuery` — the backend rejected the query itself (a syntax or execution error):
  retrying will not help, the query has to change.

"No data" is its own outcome and is never turned into 0 or NaN here; each caller decides
what it means (hold a canary, pause an SLO clock...). Providers never raise for a failed
query: every failure is one of the outcomes above, with a reason a user can act on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol, TypeAlias, runtime_checkable

SampleKind = Literal["value", "nodata", "invalid", "unavailable", "bad_query"]


@dataclass(frozen=True)
class Value:
    """Exactly one finite number."""

    value: float
    kind: ClassVar[SampleKind] = "value"

    def __post_init__(self) -> None:
        if isinstance(self.value, bool) or not math.isfinite(self.value):
            raise ValueError(f"Value needs a finite number, got {self.value!r}; use Invalid")

    def describe(self) -> str:
        """A short human-readable form, for logs and conditions."""
        return f"{self.value:g}"


@dataclass(frozen=True)
class NoData:
    """The query matched no series (an empty result)."""

    reason: str = "the query returned no series"
    kind: ClassVar[SampleKind] = "nodata"

    def describe(self) -> str:
        """A short human-readable form, for logs and conditions."""
        return f"no data: {self.reason}"


@dataclass(frozen=True)
class Invalid:
    """An answer that is not one finite number (NaN/Inf, several series, a range...)."""

    reason: str
    kind: ClassVar[SampleKind] = "invalid"

    def describe(self) -> str:
        """A short human-readable form, for logs and conditions."""
        return f"invalid: {self.reason}"


@dataclass(frozen=True)
class Unavailable:
    """The backend did not answer (connection, timeout, HTTP 5xx, authentication)."""

    reason: str
    kind: ClassVar[SampleKind] = "unavailable"

    def describe(self) -> str:
        """A short human-readable form, for logs and conditions."""
        return f"unavailable: {self.reason}"


@dataclass(frozen=True)
class BadQuery:
    """The backend rejected the query (HTTP 400/422): the query must be fixed."""

    reason: str
    kind: ClassVar[SampleKind] = "bad_query"

    def describe(self) -> str:
        """A short human-readable form, for logs and conditions."""
        return f"bad query: {self.reason}"


Problem: TypeAlias = NoData | Invalid | Unavailable | BadQuery
"""Every outcome that is not a number."""

Sample: TypeAlias = Value | Problem
"""The outcome of one query."""


@runtime_checkable
class MetricsProvider(Protocol):
    """A metrics backend: ``query`` returns one :data:`Sample` and never raises."""

    def query(self, promql: str) -> Sample:
        """Run ``promql`` as an instant query and reduce the answer to one outcome."""
        ...


def safe_query(provider: MetricsProvider, promql: str) -> Sample:
    """``provider.query(promql)``, with an exception from a misbehaving provider turned
    into :class:`Unavailable` so one broken backend cannot crash the operator."""
    try:
        return provider.query(promql)
    except Exception as error:  # the contract says providers do not raise; some do
        return Unavailable(f"metrics provider failed: {type(error).__name__}: {error}")


def number(raw: object, what: str = "value") -> Sample:
    """Turn a raw answer (a number, or Prometheus' string form such as ``"1.5"``,
    ``"NaN"``, ``"+Inf"``) into :class:`Value` or :class:`Invalid`; ``None`` is
    :class:`NoData`."""
    if raw is None:
        return NoData(f"{what} is null")
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return Invalid(f"{what} is not a number: {raw!r}")
    try:
        parsed = float(raw)
    except ValueError:
        return Invalid(f"{what} is not a number: {raw!r}")
    if math.isnan(parsed):
        return Invalid(f"{what} is NaN (often a division by zero, e.g. no traffic)")
    if math.isinf(parsed):
        return Invalid(f"{what} is {'+' if parsed > 0 else '-'}Inf (a division by zero?)")
    return Value(parsed)
