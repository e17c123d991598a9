"""The per-call audit log: one JSON line for every attempt at calling a model, and one
for every rest a tier begins.

A line records what was asked of which model and what it cost; it never holds the API key
(the endpoint redacts it from error details before they get here) nor the prompt itself.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

BUDGET = "budget"  # the budget could not cover the call: nothing was sent
RESTED = "rested"  # the tier's tries kept failing; it is left out for a while (rest.py)
NOT_CALLS = frozenset({BUDGET, RESTED})
"""Outcomes of lines that record no request to a model."""


class AuditEntry(BaseModel):
    """One attempt at one tier for one planned mutation."""

    time: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    model: str
    tier: str
    role: str
    kind: str
    candidate_index: int
    attempt: int
    repair: bool = False  # the follow-up that hands an unusable answer's problem back
    outcome: str  # ok, duplicate, budget, a call failure (timeout, ...) or a parse failure
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_reported: bool = False
    usd: float = 0.0  # what the call is charged (see docs/llm.md, "What a call costs")
    reported_usd: float = 0.0  # what the reported usage costs at the tier's prices
    over_reported_usd: float = 0.0  # reported above the reservation: flagged, not charged
    charged_at_reservation: bool = False  # its cost was unknown (late, cut off, no usage)
    replayed: bool = False  # an answer paid for before a resume, used again for free
    call_id: str = ""  # the ledger's id, sent to the endpoint as X-Retune-Call
    reserved_usd: float = 0.0
    latency_seconds: float = 0.0
    detail: str = ""


class AuditLog:
    """Appends :class:`AuditEntry` lines to a JSONL file; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, entry: AuditEntry) -> None:
        line = entry.model_dump_json() + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
