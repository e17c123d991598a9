"""A clock for "this condition has held continuously for ``for_seconds``".

Shared by the threshold SLOs and the drift detector, so both treat time and missing data
the same way. Time is passed in (seconds, any epoch): nothing here reads a clock.

Rules:

- an observation where the condition holds starts the stretch (if none is running);
- an observation where it does not hold ends the stretch;
- a missing observation (no data, invalid, backend down) neither ends nor proves the
  stretch: it *holds* the clock. The stretch only counts as sustained on a real
  observation, never on a missing one. If data was missing and the next real observation
  comes more than ``max_gap_seconds`` after the last one where the condition held, the
  stretch restarts at that observation: a long blind spot is not evidence of continuity;
- time never runs backwards: an earlier timestamp is treated as the latest one seen.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_GAP_SECONDS = 300.0
"""Longest blind spot a stretch survives; Prometheus' own staleness window is 5 minutes."""


@dataclass
class SustainClock:
    """The state of one condition's clock; plain fields, so it can be persisted."""

    for_seconds: float
    max_gap_seconds: float = DEFAULT_MAX_GAP_SECONDS
    since: float | None = None
    """Start of the current stretch in which the condition held."""
    last_held_at: float | None = None
    """Last real observation where the condition held."""
    missing: bool = False
    """Whether data has been missing since ``last_held_at``."""
    latest: float | None = None
    """Latest timestamp seen."""

    def observe(self, at: float, holds: bool | None) -> float:
        """Record an observation (``None``: missing) and return its effective timestamp."""
        if self.latest is not None:
            at = max(at, self.latest)
        self.latest = at
        if holds is None:
            if self.since is not None:
                self.missing = True
            return at
        if not holds:
            self.since = self.last_held_at = None
            self.missing = False
            return at
        gap_too_long = (
            self.missing
            and self.last_held_at is not None
            and at - self.last_held_at > self.max_gap_seconds
        )
        if self.since is None or gap_too_long:
            self.since = at
        self.last_held_at = at
        self.missing = False
        return at

    def held_seconds(self, at: float) -> float:
        """How long the current stretch has lasted at ``at`` (0 when none is running)."""
        return 0.0 if self.since is None else max(0.0, at - self.since)

    def sustained(self, at: float) -> bool:
        """Whether the condition, last observed for real, has held for ``for_seconds``."""
        return (
            self.since is not None
            and not self.missing
            and self.held_seconds(at) >= self.for_seconds
        )
