"""An operator search's spend journal, in a ConfigMap ``<target>-spend``.

A local run writes its money ahead to a file beside its checkpoint
(``search/journal.py``). In the cluster a search runs in the operator's pod, which can be
killed, evicted or moved at any moment, and the checkpoint ConfigMap is written only now
and then: what was spent between the last checkpoint and the kill would be lost, and a
resumed search would spend it again. So every reservation is written to the API server
before its call is sent, and its settlement after, in a ConfigMap owned by the target;
the resumed search's ledger reads its money from there, charging a reservation that was
never settled at its worst case (it may have been billed).

The ConfigMap stays small whatever the length of the search: a settled call is folded
into one ``base`` record (what the settled calls add up to, per model), so it holds that,
the reservations still open, and the paid answers a resume could still need. A resumed
search takes those instead of asking again, as a local run takes its journal's; an answer
goes once a checkpoint holds the program of the candidate it was for (the engine says
which, :meth:`ConfigMapSpendJournal.checkpointed`), so what is kept is about one answer
per mutation in flight. Past :data:`MAX_ANSWER_BYTES` the oldest answers go first: a
resume asks those again and pays again, counted like any call.

Writes are conditional on the resourceVersion last read or written, as the checkpoint's
are: a second writer is refused (:class:`SpendConflict`), never overwritten. A write that
fails raises, and the call it was for is not made (a reservation) or stays charged at its
worst case (a settlement).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes.client.rest import ApiException

from retune.evaluate.kubeapi import describe_error, with_retries
from retune.search.journal import ANSWER, BASE, RELEASE, RESERVE, SETTLE
from retune.search.ledger import LedgerState, Money, fold_journal
from retune.store.kubernetes import CheckpointConflict, KubernetesStore

ROLE_SPEND = "spend"  # the ConfigMap's suffix and key, and its retune.dev/role label
FORMAT_VERSION = 1
# The answers kept, in JSON bytes (a ConfigMap holds 1 MiB in all, base64 included).
MAX_ANSWER_BYTES = 300_000


class SpendJournalError(RuntimeError):
    """The journal could not be read or written."""


class SpendJournalUnreadable(SpendJournalError):
    """The journal holds something other than a journal: what was spent is unknown."""


class SpendConflict(SpendJournalError):
    """The journal was written or deleted by someone else since this one last saw it."""


def base_record(money: Money) -> dict[str, Any]:
    return {"op": BASE, "id": BASE, "money": money.model_dump(mode="json")}


class ConfigMapSpendJournal:
    """A :class:`~retune.search.journal.Journal` in the ConfigMap ``store`` holds (a
    :class:`KubernetesStore` of role :data:`ROLE_SPEND`); call :meth:`start` first."""

    def __init__(self, store: KubernetesStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._base = Money()
        self._open: dict[str, dict[str, Any]] = {}
        self._answers: dict[str, dict[str, Any]] = {}  # call id -> its ``answer`` record
        self._asking: frozenset[int] | None = None  # from the last checkpoint, to prune by
        self._conflict: SpendConflict | None = None  # once refused, always refused
        self._search = ""  # the fingerprint of the search whose money this is
        self._owner = ""  # the controller's id of that search (its attempts share it)
        self.replaced_usd = 0.0  # what the settled calls of a journal start replaced add up to
        self.carried_usd = 0.0  # what a search restarted under another configuration keeps

    @property
    def where(self) -> str:
        return self._store.where

    def start(
        self,
        search: str,
        *,
        resume: bool,
        carried: LedgerState | None = None,
        owner: str = "",
    ) -> dict[str, float]:
        """Read the journal, for the search ``search`` (its configuration's fingerprint)
        that the controller calls ``owner`` (one id per search, whatever its attempts).

        A resumed search keeps what its journal holds, checkpointed or not (killed before
        its first checkpoint, it starts over with the money it spent); one checkpointed by
        an operator that kept no journal starts it from the checkpoint's money
        (``carried``). A resumed search whose configuration changed under it (an upgraded
        operator: its checkpoint is not resumed, the search starts afresh) keeps the money
        too, when the journal is its own (``owner``): its budget and the spend limit
        count what its earlier attempt spent (:attr:`carried_usd`). Any other search
        starts an empty journal in place of the earlier one, and gets back what that
        one's open reservations may have cost, by model: calls sent and never settled,
        which no ledger will count any more (the caller counts them);
        :attr:`replaced_usd` is then what that one's settled calls add up to."""
        try:
            found = self._read()
        except SpendJournalUnreadable:
            if resume:
                raise
            found = None  # replaced: a new search's money does not depend on it
        with self._lock:
            self._search, self._owner = search, owner
            if resume and found is not None and found.search == search:
                self._base, self._open, self._answers = found.base, found.open, found.answers
                return {}
            if resume and found is not None and owner and found.owner == owner:
                # The same search under another configuration: its money stays, open
                # reservations included (the ledger charges them at their worst case);
                # its paid answers were for requests this configuration does not make.
                self._base, self._open, self._answers = found.base, found.open, {}
                self.carried_usd = found.base.usd_spent + sum(
                    float(record.get("usd", 0.0)) for record in found.open.values()
                )
                self._write(self._base, self._open, self._answers)
                return {}
            self.replaced_usd = found.base.usd_spent if found is not None else 0.0
            abandoned: dict[str, float] = {}
            for record in (found.open if found is not None else {}).values():
                model = str(record.get("model", ""))
                abandoned[model] = abandoned.get(model, 0.0) + float(record.get("usd", 0.0))
            self._base = Money.of(carried) if resume and carried is not None else Money()
            self._open, self._answers = {}, {}
            self._write(self._base, self._open, self._answers)
            return abandoned

    # -- the Journal protocol ----------------------------------------------------------
    def append(self, record: dict[str, Any]) -> None:
        with self._lock:
            base, still_open = self._base, dict(self._open)
            answers = _needed(self._answers, self._asking)
            op, call_id = record.get("op"), str(record.get("id", ""))
            if op == RESERVE:
                still_open[call_id] = dict(record)
            elif op in (SETTLE, RELEASE):
                reserved = still_open.pop(call_id, None)
                if reserved is not None:
                    base = fold_journal([base_record(base), reserved, dict(record)]).money
                    if isinstance(record.get("answer"), dict) and reserved.get("key"):
                        answers[call_id] = {
                            "op": ANSWER,
                            "id": call_id,
                            "key": reserved["key"],
                            "candidate": reserved.get("candidate"),
                            "answer": record["answer"],
                        }
                        _bound(answers, MAX_ANSWER_BYTES)
            self._write(base, still_open, answers)
            self._base, self._open, self._answers = base, still_open, answers
            self._asking = None

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                base_record(self._base),
                *(dict(r) for r in self._answers.values()),
                *(dict(r) for r in self._open.values()),
            ]

    def checkpointed(self, asking: frozenset[int]) -> None:
        """Answers for candidates other than ``asking`` are no longer needed: they go with
        the next write (not one of their own)."""
        with self._lock:
            self._asking = asking

    # -- the ConfigMap -------------------------------------------------------------------
    def _read(self) -> _Document | None:
        try:
            document = self._store.load()
        except ApiException as error:
            raise SpendJournalError(f"{self.where}: {describe_error(error)}") from None
        if document is None:
            return None
        try:
            parsed = json.loads(document)
            if not isinstance(parsed, dict) or parsed.get("version") != FORMAT_VERSION:
                raise ValueError(f"not a spend journal of format {FORMAT_VERSION}")
            return _Document(
                search=str(parsed.get("search", "")),
                owner=str(parsed.get("owner", "")),
                base=Money.model_validate(parsed.get("base") or {}),
                open={str(r["id"]): dict(r) for r in parsed.get("open") or []},
                answers={str(r["id"]): dict(r) for r in parsed.get("answers") or []},
            )
        except (ValueError, TypeError, KeyError) as error:
            raise SpendJournalUnreadable(
                f"{self.where} cannot be read ({error}): what this search spent is unknown, "
                "so it does not resume; delete the ConfigMap to start a new search"
            ) from None

    def _write(
        self,
        base: Money,
        still_open: dict[str, dict[str, Any]],
        answers: dict[str, dict[str, Any]],
    ) -> None:
        if self._conflict is not None:
            raise self._conflict
        document = {
            "version": FORMAT_VERSION,
            "search": self._search,
            "owner": self._owner,
            "base": base.model_dump(mode="json"),
            "open": list(still_open.values()),
            "answers": list(answers.values()),
        }
        encoded = json.dumps(document, sort_keys=True).encode()
        try:
            # throttling, server errors and lost connections are tried again
            with_retries(lambda: self._store.save(encoded))
        except CheckpointConflict as conflict:
            # A write the API server applied but whose answer was lost is tried again with
            # the version it replaced, and refused; the document names this process's
            # calls, so no other writer's is equal to it.
            if conflict.found == encoded:
                return
            self._conflict = SpendConflict(
                f"the spend journal {self.where} was changed or deleted by someone else; no "
                "call is paid for until this search stops. Is a second operator serving "
                "this target? Run one operator replica."
            )
            raise self._conflict from None
        except (ApiException, OSError, urllib3.exceptions.HTTPError) as error:
            raise SpendJournalError(f"{self.where}: {describe_error(error)}") from None


@dataclass
class _Document:
    """A journal as read from its ConfigMap."""

    search: str  # the fingerprint of the search whose money it is
    owner: str  # the controller's id of that search ("" in journals from before it)
    base: Money
    open: dict[str, dict[str, Any]]  # call id -> its reservation
    answers: dict[str, dict[str, Any]]  # call id -> its ``answer`` record


def _needed(
    answers: dict[str, dict[str, Any]], asking: frozenset[int] | None
) -> dict[str, dict[str, Any]]:
    """``answers`` without those a checkpoint made unneeded (``asking``: see
    :meth:`ConfigMapSpendJournal.checkpointed`); an answer for no known candidate stays."""
    if asking is None:
        return dict(answers)
    return {
        call_id: record
        for call_id, record in answers.items()
        if not isinstance(record.get("candidate"), int) or record["candidate"] in asking
    }


def _bound(answers: dict[str, dict[str, Any]], limit: int) -> None:
    """Drop the oldest of ``answers`` until their JSON is at most ``limit`` bytes."""
    sizes = {call_id: len(json.dumps(r)) for call_id, r in answers.items()}
    total = sum(sizes.values())
    for call_id in list(answers):  # oldest first: insertion order
        if total <= limit:
            return
        total -= sizes[call_id]
        del answers[call_id]
