"""The search ledger: what a run has spent, and the budget it may never exceed.

Money is reserved *before* it is spent (an LLM call reserves its worst case: prompt
tokens plus max output tokens at the model's price) and settled with the actual cost
afterwards, so concurrent callers can never overshoot the USD budget together.

With a journal (:class:`~retune.search.journal.SpendJournal`, a file; in the cluster a
ConfigMap) the money is written ahead: a
reservation is on disk before the call is made and its settlement after, so a killed run
neither loses nor re-pays a call (``docs/llm.md``, "What a call costs"). A call is
charged what the endpoint reported it used, never more than its reservation; a call whose
cost is unknown (no answer in time, a body cut off, no usage reported) is charged its
reservation; a report above the reservation is recorded apart (``over_reported_usd``),
and once the reported truth reaches the budget no further call is paid for.

The strong model tiers (paradigm shifts, initial diversification) may be held to a share
of the USD budget: their calls reserve against that cap too, and what they spent is kept
apart (``strong_usd``) for the status and the report.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from retune.search.journal import ANSWER, BASE, RELEASE, RESERVE, SETTLE, Journal

# Float noise in summed prices is not an over-report.
_TOLERANCE_USD = 1e-12


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
    charged_at_reservation: int = 0  # calls whose cost was unknown, charged their worst case
    over_reported_usd: float = 0.0  # reported above what the request could have cost


class RestTally(BaseModel):
    """A model tier's standing towards a rest (``search/llm/rest.py``)."""

    failures: int = 0  # failed tries in a row
    left: int = 0  # mutations still to skip
    next_rest: int = 0  # the length of the next rest
    rests: int = 0  # rests since its last usable answer


class LedgerState(BaseModel):
    """The ledger as checkpointed."""

    evaluations: int = 0  # the search's own, which ``Budget.max_evaluations`` bounds
    free_evaluations: int = 0  # its free start's (``spec.search.freeStart``)
    quick_evaluations: int = 0
    full_evaluations: int = 0
    failed_evaluations: int = 0
    duplicates_skipped: int = 0
    failed_mutations: int = 0
    wall_seconds: float = 0.0
    usd_spent: float = 0.0
    strong_usd: float = 0.0  # spent by the strong tiers, included in usd_spent
    # Usage endpoints reported beyond the calls' reservations: recorded, not charged, and
    # counted when deciding whether the budget is reached.
    over_reported_usd: float = 0.0
    models: dict[str, ModelUsage] = Field(default_factory=dict)
    # Rests each model tier began (search/llm/rest.py); not money, so not in the journal.
    rests: dict[str, int] = Field(default_factory=dict)
    # Where each tier stands towards its next rest, or in it: checkpointed, so a resumed
    # search does not pay a resting tier's failing tries all over again.
    rest_tallies: dict[str, RestTally] = Field(default_factory=dict)


@dataclass(frozen=True)
class Reservation:
    usd: float
    strong: bool = False  # held against the strong tiers' cap too
    id: str = ""  # names the call in the journal, the audit log and the request's header
    model: str = ""


@dataclass(frozen=True)
class Settlement:
    """What a settled call was charged, and why."""

    charged_usd: float
    over_reported_usd: float = 0.0
    at_reservation: bool = False  # its cost was unknown: charged the worst case


class Ledger:
    """Thread-safe accounting of evaluations, wall time, tokens and USD."""

    def __init__(
        self,
        budget: Budget,
        state: LedgerState | None = None,
        *,
        journal: Journal | None = None,
    ) -> None:
        self.budget = budget
        self._state = state.model_copy(deep=True) if state else LedgerState()
        self._reserved_usd = 0.0
        self._reserved_strong_usd = 0.0
        self._lock = threading.Lock()
        self.journal = journal
        self._answers: dict[str, list[dict[str, Any]]] = {}  # request key -> paid answers
        self._run = secrets.token_hex(4)  # call ids stay unique across resumes
        self._calls = 0
        if journal is not None:
            self._replay_journal()

    def restore(self, state: LedgerState) -> None:
        """Continue from a checkpointed ledger (on resume). With a journal, the money
        is the journal's: it is written ahead of every call, the checkpoint only now and
        then."""
        with self._lock:
            self._state = state.model_copy(deep=True)
        if self.journal is not None:
            self._replay_journal()

    def _replay_journal(self) -> None:
        """Rebuild the money from the journal; charge unsettled reservations in full."""
        assert self.journal is not None
        folded = fold_journal(self.journal.records())
        with self._lock:
            folded.money.apply_to(self._state)
            self._answers = folded.answers
        for held in folded.unsettled:  # sent, perhaps billed, never settled: its worst case
            self._charge_unsettled(held)

    # -- money -------------------------------------------------------------------------
    def reserve_usd(
        self,
        usd: float,
        *,
        strong_cap: float | None = None,
        model: str = "",
        key: str = "",
        candidate: int | None = None,
    ) -> Reservation | None:
        """Reserve ``usd`` against the budget; ``None`` if that would exceed it.

        With ``strong_cap`` the call is a strong tier's, and the strong tiers' spend plus
        their reservations may not pass ``strong_cap`` either. With a journal the
        reservation is on disk when this returns. ``key`` names what is asked, so that a
        resumed run can take the answer it already paid for (:meth:`paid_answer`), and
        ``candidate`` the candidate it is for (see :meth:`checkpointed`).
        """
        strong = strong_cap is not None
        with self._lock:
            limit = self.budget.max_usd
            if limit is not None and (
                self._state.usd_spent + self._reserved_usd + usd > limit
                or self._truth_reached(limit)
            ):
                return None
            if strong_cap is not None and (
                self._state.strong_usd + self._reserved_strong_usd + usd > strong_cap
            ):
                return None
            self._calls += 1
            reservation = Reservation(usd, strong, f"{self._run}-{self._calls}", model)
            if self.journal is not None:
                self.journal.append(
                    {
                        "op": RESERVE,
                        "id": reservation.id,
                        "model": model,
                        "usd": usd,
                        "strong": strong,
                        "key": key,
                        "candidate": candidate,
                    }
                )
            self._reserved_usd += usd
            if strong:
                self._reserved_strong_usd += usd
            return reservation

    def _truth_reached(self, limit: float) -> bool:
        """Whether what endpoints reported, over-reports included, has used the budget."""
        return self._state.over_reported_usd > 0 and (
            self._state.usd_spent + self._state.over_reported_usd >= limit
        )

    def affordable(self, usd: float, *, strong_cap: float | None = None) -> bool:
        """Whether ``usd`` fits what is left unspent (reservations aside): if not, waiting
        for calls in flight to settle cannot help."""
        left = self.headroom(strong_cap=strong_cap)
        return left is None or usd <= left

    def headroom(self, *, strong_cap: float | None = None) -> float | None:
        """What is left unspent (reservations aside), within ``strong_cap`` too when given:
        nothing once the endpoints' reports have used the budget; ``None`` without a limit."""
        with self._lock:
            room = []
            limit = self.budget.max_usd
            if limit is not None:
                truth = self._truth_reached(limit)
                room.append(0.0 if truth else limit - self._state.usd_spent)
            if strong_cap is not None:
                room.append(strong_cap - self._state.strong_usd)
            return max(0.0, min(room)) if room else None

    def checkpointed(self, asking: frozenset[int]) -> None:
        """A checkpoint was written; every planned candidate's program is in it but those
        of ``asking`` (see :meth:`Journal.checkpointed`)."""
        if self.journal is not None:
            self.journal.checkpointed(asking)

    def paid_answer(self, key: str) -> dict[str, Any] | None:
        """An answer to the request ``key`` that the journal shows was paid for before a
        resume, once per time it was paid; ``None`` if there is none left."""
        with self._lock:
            answers = self._answers.get(key)
            return answers.pop(0) if answers else None

    def settle(
        self,
        reservation: Reservation,
        *,
        model: str,
        usd: float,
        prompt_tokens: int,
        completion_tokens: int,
        failed: bool = False,
        cost_known: bool = True,
        answer: dict[str, Any] | None = None,
    ) -> Settlement:
        """Release a reservation and charge the call: what the endpoint reported (``usd``)
        up to the reservation, or, when ``cost_known`` is false (no answer in time, a body
        cut off, no usage reported), the reservation. A report above the reservation is
        recorded as ``over_reported_usd``. ``answer`` is kept in the journal for a resume.
        """
        if not cost_known:
            settlement = _unknown_cost(reservation)
        elif usd > reservation.usd + _TOLERANCE_USD:
            settlement = Settlement(reservation.usd, over_reported_usd=usd - reservation.usd)
        else:
            settlement = Settlement(usd)
        if self.journal is not None and reservation.id:
            self.journal.append(
                {
                    "op": SETTLE,
                    "id": reservation.id,
                    "usd": settlement.charged_usd,
                    "over_reported_usd": settlement.over_reported_usd,
                    "at_reservation": settlement.at_reservation,
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "failed": failed,
                    "answer": answer,
                }
            )
        with self._lock:
            self._unreserve(reservation)
            charge(
                self._state,
                model,
                reservation,
                settlement,
                prompt_tokens,
                completion_tokens,
                failed=failed,
            )
        return settlement

    def _charge_unsettled(self, reservation: Reservation) -> None:
        """Charge a reservation a resume found unsettled at its worst case, and close it
        in the journal."""
        settlement = _unknown_cost(reservation)
        if self.journal is not None:
            self.journal.append(
                {
                    "op": SETTLE,
                    "id": reservation.id,
                    "usd": settlement.charged_usd,
                    "at_reservation": True,
                    "failed": True,
                    "resumed": True,
                }
            )
        with self._lock:
            charge(self._state, reservation.model, reservation, settlement, 0, 0, failed=True)

    def _unreserve(self, reservation: Reservation) -> None:
        self._reserved_usd = max(0.0, self._reserved_usd - reservation.usd)
        if reservation.strong:
            self._reserved_strong_usd = max(0.0, self._reserved_strong_usd - reservation.usd)

    def release(self, reservation: Reservation) -> None:
        """Give back a reservation for a call that was never made."""
        if self.journal is not None and reservation.id:
            self.journal.append({"op": RELEASE, "id": reservation.id})
        with self._lock:
            self._unreserve(reservation)

    # -- evaluations -------------------------------------------------------------------
    def record_evaluation(self, *, quick_stage: bool, failed: bool, free: bool = False) -> None:
        """One candidate evaluated: screened out by the quick stage (``quick_stage``), or
        through to the full one; a quick plus a full evaluation counts once. ``free``:
        one of the free start's, which the evaluation budget does not count."""
        with self._lock:
            if free:
                self._state.free_evaluations += 1
            else:
                self._state.evaluations += 1
            if quick_stage:
                self._state.quick_evaluations += 1
            else:
                self._state.full_evaluations += 1
            self._state.failed_evaluations += int(failed)

    def record_duplicate(self) -> None:
        with self._lock:
            self._state.duplicates_skipped += 1

    def record_rest(self, model: str) -> None:
        """A model tier began a rest: its tries kept giving no usable program."""
        with self._lock:
            self._state.rests[model] = self._state.rests.get(model, 0) + 1

    @contextlib.contextmanager
    def rest_tallies(self) -> Iterator[dict[str, RestTally]]:
        """The tiers' rest tallies (``search/llm/rest.py``), held for a read or an update."""
        with self._lock:
            yield self._state.rest_tallies

    def record_failed_mutation(self) -> None:
        with self._lock:
            self._state.failed_mutations += 1

    def add_wall_seconds(self, seconds: float) -> None:
        with self._lock:
            self._state.wall_seconds += seconds

    # -- reading -----------------------------------------------------------------------
    def wall_seconds(self) -> float:
        with self._lock:
            return self._state.wall_seconds

    @property
    def usd_spent(self) -> float:
        with self._lock:
            return self._state.usd_spent

    def snapshot(self) -> LedgerState:
        with self._lock:
            return self._state.model_copy(deep=True)


def _unknown_cost(reservation: Reservation) -> Settlement:
    return Settlement(reservation.usd, at_reservation=True)


def charge(
    state: LedgerState,
    model: str,
    reservation: Reservation,
    settlement: Settlement,
    prompt_tokens: int,
    completion_tokens: int,
    *,
    failed: bool,
) -> None:
    """Add a settled call to ``state``'s money and its model's usage."""
    usage = state.models.setdefault(model, ModelUsage())
    usage.calls += 1
    usage.failed_calls += int(failed)
    usage.prompt_tokens += prompt_tokens
    usage.completion_tokens += completion_tokens
    usage.usd += settlement.charged_usd
    usage.charged_at_reservation += int(settlement.at_reservation)
    usage.over_reported_usd += settlement.over_reported_usd
    state.usd_spent += settlement.charged_usd
    state.over_reported_usd += settlement.over_reported_usd
    if reservation.strong:
        state.strong_usd += settlement.charged_usd


class Money(BaseModel):
    """The money part of a ledger: what a journal's records add up to."""

    usd_spent: float = 0.0
    strong_usd: float = 0.0
    over_reported_usd: float = 0.0
    models: dict[str, ModelUsage] = Field(default_factory=dict)

    @classmethod
    def of(cls, state: LedgerState) -> Money:
        return cls.model_validate(state.model_dump(include=set(cls.model_fields)))

    def apply_to(self, state: LedgerState) -> None:
        """Make ``state``'s money this (its other counts stay)."""
        for name in type(self).model_fields:
            setattr(state, name, getattr(self, name))


@dataclass
class Folded:
    """A journal read back: the money of its settled calls, the reservations it never
    settled (in order), and the answers it paid for, by request key."""

    money: Money
    unsettled: list[Reservation]
    answers: dict[str, list[dict[str, Any]]]


def fold_journal(records: list[dict[str, Any]]) -> Folded:
    """What ``records`` add up to: a ``base`` record's money (a compacted journal's
    earlier calls) plus every settled reservation; a released one costs nothing."""
    state = LedgerState()
    answers: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("op") == BASE:
            money = Money.model_validate(record.get("money") or {})
            state = LedgerState.model_validate(money.model_dump())
        elif record.get("op") == ANSWER:
            _keep_answer(answers, record.get("key"), record.get("answer"))
    reserved = {r["id"]: r for r in records if r.get("op") == RESERVE}
    closed = {r["id"]: r for r in records if r.get("op") in (SETTLE, RELEASE)}
    unsettled: list[Reservation] = []
    for call_id, reservation in reserved.items():
        held = Reservation(
            float(reservation["usd"]),
            bool(reservation.get("strong")),
            call_id,
            str(reservation.get("model", "")),
        )
        end = closed.get(call_id)
        if end is None:
            unsettled.append(held)
            continue
        if end["op"] == RELEASE:
            continue
        settlement = Settlement(
            float(end["usd"]),
            float(end.get("over_reported_usd", 0.0)),
            bool(end.get("at_reservation")),
        )
        charge(
            state,
            held.model,
            held,
            settlement,
            int(end.get("prompt_tokens", 0)),
            int(end.get("completion_tokens", 0)),
            failed=bool(end.get("failed")),
        )
        _keep_answer(answers, reservation.get("key"), end.get("answer"))
    return Folded(Money.of(state), unsettled, answers)


def _keep_answer(answers: dict[str, list[dict[str, Any]]], key: object, answer: object) -> None:
    if isinstance(answer, dict) and isinstance(key, str) and key:
        answers.setdefault(key, []).append(answer)
