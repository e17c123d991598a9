"""The search ledger: what a run has spent, and the budget it may never exceed.

Money is reserved *before* it is spent (an LLM call reserves its worst case: prompt
tokens plus max output tokens at the model's price) and settled with the actual cost
afterwards, so concurrent callers can never overshoot the USD budget together.

The strong model tiers (paradigm shifts, initial diversification) may be held to a share
of the USD budget: their calls reserve against that cap too, and what they spent is kept
apart (``strong_usd``) for the status and the report.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from pydantic import BaseModel, Field


class Budget(BaseModel):
    """Limits on a run. ``None`` means unlimited for that dimension."""

    max_evaluations: int | None = Field(default=None, ge=1)
    max_usd: float | None = Field(default=None, ge=0)
    max_wall_seconds: float | None = Field(default=None, gt=0)


class ModelUsage(BaseModel):
    calls: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0


class LedgerState(BaseModel):
    """The ledger as checkpointed."""

    evaluations: int = 0
    quick_evaluations: int = 0
    full_evaluations: int = 0
    failed_evaluations: int = 0
    duplicates_skipped: int = 0
    failed_mutations: int = 0
    wall_seconds: float = 0.0
    usd_spent: float = 0.0
    strong_usd: float = 0.0  # spent by the strong tiers, included in usd_spent
    models: dict[str, ModelUsage] = Field(default_factory=dict)


@dataclass(frozen=True)
class Reservation:
    usd: float
    strong: bool = False  # held against the strong tiers' cap too


class Ledger:
    """Thread-safe accounting of evaluations, wall time, tokens and USD."""

    def __init__(self, budget: Budget, state: LedgerState | None = None) -> None:
        self.budget = budget
        self._state = state.model_copy(deep=True) if state else LedgerState()
        self._reserved_usd = 0.0
        self._reserved_strong_usd = 0.0
        self._lock = threading.Lock()

    def restore(self, state: LedgerState) -> None:
        """Continue from a checkpointed ledger (on resume)."""
        with self._lock:
            self._state = state.model_copy(deep=True)

    # -- money -------------------------------------------------------------------------
    def reserve_usd(self, usd: float, *, strong_cap: float | None = None) -> Reservation | None:
        """Reserve ``usd`` against the budget; ``None`` if that would exceed it.

        With ``strong_cap`` the call is a strong tier's, and the strong tiers' spend plus
        their reservations may not pass ``strong_cap`` either.
        """
        strong = strong_cap is not None
        with self._lock:
            limit = self.budget.max_usd
            if limit is not None and self._state.usd_spent + self._reserved_usd + usd > limit:
                return None
            if strong_cap is not None and (
                self._state.strong_usd + self._reserved_strong_usd + usd > strong_cap
            ):
                return None
            self._reserved_usd += usd
            if strong:
                self._reserved_strong_usd += usd
            return Reservation(usd, strong)

    def affordable(self, usd: float, *, strong_cap: float | None = None) -> bool:
        """Whether ``usd`` fits what is left unspent (reservations aside): if not, waiting
        for calls in flight to settle cannot help."""
        with self._lock:
            limit = self.budget.max_usd
            if limit is not None and self._state.usd_spent + usd > limit:
                return False
            return strong_cap is None or self._state.strong_usd + usd <= strong_cap

    def settle(
        self,
        reservation: Reservation,
        *,
        model: str,
        usd: float,
        prompt_tokens: int,
        completion_tokens: int,
        failed: bool = False,
    ) -> None:
        """Release a reservation and record what the call actually cost."""
        with self._lock:
            self._unreserve(reservation)
            usage = self._state.models.setdefault(model, ModelUsage())
            usage.calls += 1
            usage.failed_calls += int(failed)
            usage.prompt_tokens += prompt_tokens
            usage.completion_tokens += completion_tokens
            usage.usd += usd
            self._state.usd_spent += usd
            if reservation.strong:
                self._state.strong_usd += usd

    def _unreserve(self, reservation: Reservation) -> None:
        self._reserved_usd = max(0.0, self._reserved_usd - reservation.usd)
        if reservation.strong:
            self._reserved_strong_usd = max(0.0, self._reserved_strong_usd - reservation.usd)

    def release(self, reservation: Reservation) -> None:
        """Give back a reservation for a call that was never made."""
        with self._lock:
            self._unreserve(reservation)

    # -- evaluations -------------------------------------------------------------------
    def record_evaluation(self, *, quick_stage: bool, failed: bool) -> None:
        """One candidate evaluated: screened out by the quick stage (``quick_stage``), or
        through to the full one; a quick plus a full evaluation counts once."""
        with self._lock:
            self._state.evaluations += 1
            if quick_stage:
                self._state.quick_evaluations += 1
            else:
                self._state.full_evaluations += 1
            self._state.failed_evaluations += int(failed)

    def record_duplicate(self) -> None:
        with self._lock:
            self._state.duplicates_skipped += 1

    def record_failed_mutation(self) -> None:
        with self._lock:
            self._state.failed_mutations += 1

    def add_wall_seconds(self, seconds: float) -> None:
        with self._lock:
            self._state.wall_seconds += seconds

    # -- reading -----------------------------------------------------------------------
    def evaluations_left(self, in_flight: int = 0) -> int | None:
        if self.budget.max_evaluations is None:
            return None
        with self._lock:
            return self.budget.max_evaluations - self._state.evaluations - in_flight

    def wall_seconds_left(self, running_for: float = 0.0) -> float | None:
        if self.budget.max_wall_seconds is None:
            return None
        return self.budget.max_wall_seconds - self._state.wall_seconds - running_for

    @property
    def usd_spent(self) -> float:
        with self._lock:
            return self._state.usd_spent

    def snapshot(self) -> LedgerState:
        with self._lock:
            return self._state.model_copy(deep=True)
