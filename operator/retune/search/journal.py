"""The spend journal: the ledger's money, written ahead of every paid call.

One JSON line per event, appended and fsynced before the ledger acts on it:

* ``reserve`` -- before a request is sent: its id, the tier, its worst-case cost and the
  request's key (a digest of what was asked);
* ``settle`` -- after it: what it is charged, the tokens the endpoint reported, and for a
  usable answer the answer itself, so that a resumed run asks nothing twice;
* ``release`` -- a reservation for a request that was never sent;
* ``answer`` -- in a journal that compacts itself (the operator's), a paid answer kept
  after its call was folded into the ``base`` record: its call id, request key and the
  candidate it was for.

A ``kill -9`` can come between any two lines. On resume the journal, not the (older)
checkpoint, says what was spent: a reservation with no settlement may have been billed by
the provider, so it is charged in full (see ``docs/llm.md``). A line torn by the kill is
ignored: it was never acted on.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Protocol

RESERVE = "reserve"
SETTLE = "settle"
RELEASE = "release"
# What earlier, settled records add up to, in one record (a journal that compacts itself
# keeps this and the open reservations only): {"op": "base", "id": "base", "money": ...}
BASE = "base"
ANSWER = "answer"


class Journal(Protocol):
    """Where a ledger writes its money ahead: :class:`SpendJournal` (a file) for local runs,
    a ConfigMap for the operator's searches (``retune.handlers.spend``)."""

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` durably: it is stored when this returns (else it raises)."""

    def records(self) -> list[dict[str, Any]]:
        """Every record, in order."""

    def checkpointed(self, asking: frozenset[int]) -> None:
        """A checkpoint was written that holds the program of every candidate planned so
        far but those in ``asking`` (their mutations were still being asked): a resume can
        need the paid answers of those candidates only, and of the candidates planned
        after it."""


class SpendJournal:
    """An append-only, fsynced JSONL file of money events; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` durably: it is on disk when this returns."""
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        with self._lock:
            created = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:  # the file's name must survive a crash too
                directory = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)

    def records(self) -> list[dict[str, Any]]:
        """Every complete record, in order (a torn last line is skipped)."""
        try:
            text = self.path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return []
        records = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("id"), str):
                records.append(record)
        return records

    def checkpointed(self, asking: frozenset[int]) -> None:
        """Nothing: a file keeps every answer (a local disk, not an API object)."""

    def exists(self) -> bool:
        return self.path.exists()
