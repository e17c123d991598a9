"""Profile drift: has the workload moved away from the profile its policy was tuned on?

Per profile metric, the relative change is ``(new - old) / max(|old|, eps)``. A metric
*drifts* while ``|change| > threshold``; the profile has *drifted* once some metric has
drifted continuously for ``for_seconds``. Each metric has its own clock
(:mod:`retune.signals.sustain`): a reading without that metric holds its clock, and never
counts as stable. Only the baseline's metrics are compared: a metric added to the profile
since the policy was tuned has nothing to drift from.

A metric tuned at 0 drifts at any value above ``threshold * eps``; profile metrics that are
often exactly 0 make poor drift signals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from retune.signals.profile import ProfileReading
from retune.signals.sustain import DEFAULT_MAX_GAP_SECONDS, SustainClock
from retune.spec.rollout import DriftSpec
from retune.spec.units import format_duration

DEFAULT_EPSILON = 1e-6
DriftStatus = Literal["stable", "drifting", "drifted", "nodata"]


@dataclass(frozen=True)
class MetricDrift:
    """How one profile metric compares with its baseline."""

    name: str
    baseline: float
    current: float | None
    change: float | None
    """Signed relative change; None when the metric is missing from the reading."""
    since: float | None
    """When the metric started drifting (its clock may be held by missing data)."""
    held_seconds: float
    sustained: bool

    def describe(self) -> str:
        """E.g. ``rps +45% (100 -> 145) for 12m``."""
        if self.change is None:
            return f"{self.name}: no data"
        return (
            f"{self.name} {self.change:+.0%} ({self.baseline:g} -> {self.current:g}) "
            f"for {format_duration(round(self.held_seconds))}"
        )


@dataclass(frozen=True)
class DriftVerdict:
    """The drift state after one reading.

    ``status``: ``drifted`` when some metric has drifted for ``for_seconds``; else
    ``drifting`` when some metric is beyond the threshold; else ``nodata`` when a metric is
    missing; else ``stable``.
    """

    status: DriftStatus
    metrics: dict[str, MetricDrift]
    message: str

    @property
    def drifted(self) -> bool:
        """Whether the drift trigger fires."""
        return self.status == "drifted"

    @property
    def drifted_metrics(self) -> dict[str, MetricDrift]:
        """The metrics whose drift has lasted ``for_seconds``."""
        return {name: m for name, m in self.metrics.items() if m.sustained}


class DriftDetector:
    """Compares timestamped profile readings with the ``baseline`` profile."""

    def __init__(
        self,
        baseline: Mapping[str, float],
        spec: DriftSpec,
        *,
        eps: float = DEFAULT_EPSILON,
        max_gap_seconds: float = DEFAULT_MAX_GAP_SECONDS,
    ) -> None:
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.baseline = dict(baseline)
        self.spec = spec
        self.eps = eps
        self.clocks = {
            name: SustainClock(for_seconds=spec.for_seconds, max_gap_seconds=max_gap_seconds)
            for name in self.baseline
        }

    def change(self, name: str, value: float) -> float:
        """The signed relative change of metric ``name`` at ``value``."""
        old = self.baseline[name]
        return (value - old) / max(abs(old), self.eps)

    def observe(self, at: float, reading: ProfileReading | Mapping[str, float]) -> DriftVerdict:
        """Compare the profile read at ``at`` (seconds) with the baseline."""
        values = reading.values if isinstance(reading, ProfileReading) else reading
        metrics: dict[str, MetricDrift] = {}
        for name, clock in self.clocks.items():
            current = values.get(name)
            change = None if current is None else self.change(name, current)
            drifting = None if change is None else abs(change) > self.spec.threshold
            effective = clock.observe(at, drifting)
            metrics[name] = MetricDrift(
                name=name,
                baseline=self.baseline[name],
                current=current,
                change=change,
                since=clock.since,
                held_seconds=clock.held_seconds(effective),
                sustained=clock.sustained(effective),
            )
        status: DriftStatus
        if any(m.sustained for m in metrics.values()):
            status = "drifted"
        elif any(m.since is not None and m.change is not None for m in metrics.values()):
            status = "drifting"
        elif any(m.change is None for m in metrics.values()):
            status = "nodata"
        else:
            status = "stable"
        return DriftVerdict(status=status, metrics=metrics, message=self._message(status, metrics))

    def _message(self, status: DriftStatus, metrics: dict[str, MetricDrift]) -> str:
        limit = f"{self.spec.threshold:.0%}"
        if status == "stable":
            return f"profile within {limit} of the tuned one"
        if status == "nodata":
            missing = [name for name, m in metrics.items() if m.change is None]
            return f"profile within {limit} where known; no data for {', '.join(missing)}"
        shown = [
            m.describe()
            for m in metrics.values()
            if (
                m.sustained if status == "drifted" else m.since is not None and m.change is not None
            )
        ]
        prefix = (
            "drifted"
            if status == "drifted"
            else f"drifting (retune after {format_duration(self.spec.for_seconds)})"
        )
        return f"{prefix} beyond {limit}: {'; '.join(shown)}"
