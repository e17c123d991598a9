"""SLO evaluation: threshold objectives held for a duration, and error-budget burn rates.

Threshold SLOs (``query``, ``threshold``, ``comparison``, ``for``) are fed timestamped
samples through an :class:`SLOTracker`; the SLO is *violated* only once the bound has been
broken continuously for ``for`` (see :mod:`retune.signals.sustain` for how missing data
holds the clock). A missing sample is reported as ``nodata``, never as ``ok`` or
``violated``.

Error-budget SLOs (``errorQuery``, ``totalQuery`` with a ``{{window}}`` placeholder where
the range goes, ``objective``) use multi-window, multi-burn-rate alerts: for each window
the error ratio is ``error / total`` and the burn rate is ``ratio / (1 - objective)``. A
pair (long, short, factor) *fires* when both windows burn faster than ``factor``; the SLO
is violated when any pair fires. The windows already give the duration, so there is no
``for`` and no state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from retune.signals.metrics import MetricsProvider, NoData, Problem, Sample, Value, safe_query
from retune.signals.sustain import DEFAULT_MAX_GAP_SECONDS, SustainClock
from retune.spec.signals import SLO, Comparison
from retune.spec.units import format_duration

ThresholdStatus = Literal["ok", "pending", "violated", "nodata"]
BurnRateStatus = Literal["ok", "violated", "nodata"]


@dataclass(frozen=True)
class ThresholdVerdict:
    """The state of a threshold SLO after one observation."""

    name: str
    status: ThresholdStatus
    """``pending``: the bound is broken, but not yet for ``for_seconds``."""
    value: float | None
    threshold: float
    comparison: Comparison
    for_seconds: float
    breached_since: float | None
    held_seconds: float
    problem: Problem | None = None
    message: str = ""

    @property
    def violated(self) -> bool:
        """Whether the SLO counts as violated."""
        return self.status == "violated"


class SLOTracker:
    """Tracks one threshold SLO over time; feed it with :meth:`observe`."""

    def __init__(self, slo: SLO, max_gap_seconds: float = DEFAULT_MAX_GAP_SECONDS) -> None:
        if slo.kind != "threshold" or slo.threshold is None or slo.query is None:
            raise ValueError(f"SLO {slo.name!r} is not a threshold SLO")
        self.slo = slo
        self.clock = SustainClock(for_seconds=slo.for_seconds, max_gap_seconds=max_gap_seconds)

    def observe(self, at: float, sample: Sample) -> ThresholdVerdict:
        """Record the SLO query's ``sample`` taken at ``at`` (seconds) and judge it."""
        slo, threshold = self.slo, self.slo.threshold
        assert threshold is not None  # checked in __init__
        value = sample.value if isinstance(sample, Value) else None
        breached = None if value is None else not slo.holds(value)
        at = self.clock.observe(at, breached)
        held = self.clock.held_seconds(at)
        status: ThresholdStatus
        if value is None:
            status = "nodata"
        elif not breached:
            status = "ok"
        else:
            status = "violated" if self.clock.sustained(at) else "pending"
        problem = None if isinstance(sample, Value) else sample
        return ThresholdVerdict(
            name=slo.name,
            status=status,
            value=value,
            threshold=threshold,
            comparison=slo.comparison,
            for_seconds=slo.for_seconds,
            breached_since=self.clock.since,
            held_seconds=held,
            problem=problem,
            message=self._message(status, value, held, problem),
        )

    def evaluate(self, provider: MetricsProvider, at: float) -> ThresholdVerdict:
        """Query the SLO now (``at``) and observe the result."""
        assert self.slo.query is not None  # checked in __init__
        return self.observe(at, safe_query(provider, self.slo.query))

    def _message(
        self, status: ThresholdStatus, value: float | None, held: float, problem: Problem | None
    ) -> str:
        slo = self.slo
        if problem is not None:
            return f"{slo.name}: {problem.describe()}"
        bound = f"{'at most' if slo.comparison == 'below' else 'at least'} {slo.threshold:g}"
        if status == "ok":
            return f"{slo.name}: {value:g} is {bound}"
        return (
            f"{slo.name}: {value:g} is not {bound}, for {format_duration(round(held))} "
            f"(violation after {format_duration(slo.for_seconds)})"
        )


@dataclass(frozen=True)
class WindowPair:
    """One (long, short, factor) alert of a burn-rate SLO, with the burn rates seen."""

    long_seconds: int
    short_seconds: int
    factor: float
    long_burn: float | None
    short_burn: float | None

    @property
    def firing(self) -> bool:
        """Whether both windows burn faster than ``factor``."""
        return (
            self.long_burn is not None
            and self.short_burn is not None
            and self.long_burn > self.factor
            and self.short_burn > self.factor
        )

    @property
    def complete(self) -> bool:
        """Whether both windows gave a burn rate."""
        return self.long_burn is not None and self.short_burn is not None


@dataclass(frozen=True)
class BurnRateVerdict:
    """The state of an error-budget SLO, with every burn rate behind it."""

    name: str
    status: BurnRateStatus
    objective: float
    pairs: tuple[WindowPair, ...]
    ratios: dict[str, float] = field(default_factory=dict)
    """Error ratio per window (``5m``, ``1h``...)."""
    problems: dict[str, Problem] = field(default_factory=dict)
    """Per window, why it has no ratio."""
    message: str = ""

    @property
    def violated(self) -> bool:
        """Whether the SLO counts as violated."""
        return self.status == "violated"


SLOVerdict: TypeAlias = ThresholdVerdict | BurnRateVerdict


def error_ratio(provider: MetricsProvider, slo: SLO, window_seconds: float) -> Sample:
    """``error / total`` of an error-budget SLO over one window.

    No events at all (total 0) is ``NoData``; an error query without series is ``NoData``
    too (append ``or vector(0)`` to it if the error series only exists once errors occur).
    """
    error_query, total_query = slo.render_error_queries(window_seconds)
    total = safe_query(provider, total_query)
    if not isinstance(total, Value):
        return total
    if total.value <= 0:
        return NoData(f"no events in the last {format_duration(window_seconds)} (total is 0)")
    error = safe_query(provider, error_query)
    if isinstance(error, NoData):
        return NoData(
            f"the error query returned no series ({error.reason}); if the error series is "
            "absent while there are no errors, append 'or vector(0)' to errorQuery"
        )
    if not isinstance(error, Value):
        return error
    return Value(max(0.0, error.value) / total.value)


def evaluate_burn_rate(slo: SLO, provider: MetricsProvider) -> BurnRateVerdict:
    """Query every window of an error-budget SLO once and judge its window pairs."""
    if slo.kind != "burn_rate" or slo.objective is None:
        raise ValueError(f"SLO {slo.name!r} is not an error-budget SLO")
    budget = 1.0 - slo.objective
    ratios: dict[str, float] = {}
    problems: dict[str, Problem] = {}
    for window in slo.burn_rate_windows:
        for seconds in (window.long_window_seconds, window.short_window_seconds):
            label = format_duration(seconds)
            if label not in ratios and label not in problems:
                sample = error_ratio(provider, slo, seconds)
                if isinstance(sample, Value):
                    ratios[label] = sample.value
                else:
                    problems[label] = sample

    def burn(seconds: int) -> float | None:
        ratio = ratios.get(format_duration(seconds))
        return None if ratio is None else ratio / budget

    pairs = tuple(
        WindowPair(
            long_seconds=w.long_window_seconds,
            short_seconds=w.short_window_seconds,
            factor=w.burn_rate,
            long_burn=burn(w.long_window_seconds),
            short_burn=burn(w.short_window_seconds),
        )
        for w in slo.burn_rate_windows
    )
    status: BurnRateStatus
    if any(pair.firing for pair in pairs):
        status = "violated"
    elif all(pair.complete for pair in pairs):
        status = "ok"
    else:
        status = "nodata"
    return BurnRateVerdict(
        name=slo.name,
        status=status,
        objective=slo.objective,
        pairs=pairs,
        ratios=ratios,
        problems=problems,
        message=_burn_message(slo.name, status, pairs, problems),
    )


def _burn_message(
    name: str, status: BurnRateStatus, pairs: Iterable[WindowPair], problems: dict[str, Problem]
) -> str:
    def rate(value: float | None) -> str:
        return "?" if value is None else f"{value:.3g}"

    shown = [
        f"{format_duration(p.long_seconds)}/{format_duration(p.short_seconds)} burn "
        f"{rate(p.long_burn)}/{rate(p.short_burn)} (page above {p.factor:g})"
        for p in pairs
        if status != "violated" or p.firing
    ]
    text = f"{name}: {'error budget burning too fast: ' if status == 'violated' else ''}"
    text += "; ".join(shown)
    if status == "nodata":
        text += "; " + "; ".join(f"{w}: {p.describe()}" for w, p in problems.items())
    return text
