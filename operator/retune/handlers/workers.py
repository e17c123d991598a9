"""Search workers: one thread per target that is searching or validating.

The engine and validation block, so each runs in its own thread; an operator-wide
semaphore bounds how many run at once (the others wait, queued). A worker never writes the
target's status: it keeps a report (state, progress, result or error) that the target's
reconcile loop reads, and that loop alone decides what happens next.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from retune.controller import (
    SearchOutcome,
    SearchProgress,
    ValidationOutcome,
    WorkKind,
    WorkReport,
    WorkState,
)

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""(namespace, name) of a target."""

_SLOT_POLL = 0.5


class WorkCancelled(Exception):
    """The worker was asked to stop; nothing is reported."""


class WorkFailed(Exception):
    """A failure with what to tell the user: the spec field to change, and whether a retry
    without a spec change could succeed."""

    def __init__(self, message: str, *, path: str | None = None, permanent: bool = False) -> None:
        super().__init__(message)
        self.path = path
        self.permanent = permanent


@dataclass
class WorkerHandle:
    """What a job sees of its worker: the stop flag, and where to report progress."""

    cancelled: threading.Event = field(default_factory=threading.Event)
    on_cancel: list[Callable[[], None]] = field(default_factory=list)
    _report: WorkReport | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def progress(self, progress: SearchProgress) -> None:
        """The engine's latest progress."""
        self._update(progress=progress)

    def note(self, **how: Any) -> None:
        """How the search started: ``resumed_from`` a checkpoint, or why not
        (``discarded``, and the ``carried_usd`` it had spent before); how many
        ``warm_programs`` it re-scores first."""
        self._update(**how)

    def check(self) -> None:
        """Raise :class:`WorkCancelled` if the worker was asked to stop."""
        if self.cancelled.is_set():
            raise WorkCancelled

    def _update(self, **changes: Any) -> None:
        with self._lock:
            assert self._report is not None
            self._report = replace(self._report, **changes)

    def _set(self, report: WorkReport) -> None:
        with self._lock:
            self._report = report

    def _get(self) -> WorkReport | None:
        with self._lock:
            return self._report


Job = Callable[[WorkerHandle], SearchOutcome | ValidationOutcome]


@dataclass
class _Worker:
    kind: WorkKind
    handle: WorkerHandle
    thread: threading.Thread


class Workers:
    """The operator's search workers, at most ``limit`` running at once."""

    def __init__(self, limit: int, on_change: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._workers: dict[Key, _Worker] = {}
        self._stopping: dict[Key, threading.Thread] = {}
        self._running = 0
        self._on_change = on_change or (lambda: None)

    @property
    def running(self) -> int:
        """Workers holding a slot."""
        with self._lock:
            return self._running

    @property
    def queued(self) -> int:
        """Workers waiting for a slot."""
        with self._lock:
            reports = [w.handle._get() for w in self._workers.values()]
        return sum(1 for r in reports if r is not None and r.state is WorkState.QUEUED)

    def start(self, key: Key, kind: WorkKind, job: Job) -> None:
        """Start a worker for ``key``; any previous one must have been stopped or forgotten."""
        handle = WorkerHandle()
        handle._set(WorkReport(kind=kind, state=WorkState.QUEUED, queued_behind=self.running))
        thread = threading.Thread(
            target=self._run, args=(key, kind, job, handle), name=f"retune-{kind}-{key[1]}"
        )
        thread.daemon = True
        with self._lock:
            if key in self._workers:
                raise RuntimeError(f"{key[0]}/{key[1]} already has a worker")
            self._workers[key] = _Worker(kind, handle, thread)
        thread.start()

    def report(self, key: Key) -> WorkReport | None:
        """The worker's latest report, if ``key`` has a worker."""
        with self._lock:
            worker = self._workers.get(key)
        if worker is None:
            return None
        report = worker.handle._get()
        if report is not None and report.state is WorkState.QUEUED:
            report = replace(report, queued_behind=self.running)
        return report

    def forget(self, key: Key) -> None:
        """Drop a finished or failed worker's report."""
        with self._lock:
            worker = self._workers.get(key)
            if worker is not None and not worker.thread.is_alive():
                del self._workers[key]

    def stop(self, key: Key, timeout: float = 60.0, *, wait: bool = True) -> None:
        """Ask ``key``'s worker to stop; with ``wait``, until it has (at most ``timeout``).

        Without ``wait`` the stop goes on in the background (a kopf daemon must exit at
        once); a later ``stop`` with ``wait`` of the same key waits for it.
        """
        with self._lock:
            worker = self._workers.pop(key, None)
            stopping = self._stopping.get(key)
        if worker is None:
            if wait and stopping is not None:
                stopping.join(timeout)
            return
        if wait:
            self._halt(key, worker, timeout)
            return
        thread = threading.Thread(
            target=self._halt, args=(key, worker, timeout), name=f"retune-stop-{key[1]}"
        )
        with self._lock:
            self._stopping[key] = thread
        thread.start()

    def stop_all(self, timeout: float = 60.0) -> None:
        """Stop every worker (operator shutdown); checkpoints stay for the next start."""
        with self._lock:
            keys = list(self._workers)
        threads = [threading.Thread(target=self.stop, args=(key, timeout)) for key in keys]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with self._lock:
            stopping = list(self._stopping.values())
        for thread in stopping:
            thread.join(timeout)

    def _halt(self, key: Key, worker: _Worker, timeout: float) -> None:
        worker.handle.cancelled.set()
        try:
            for cancel in list(worker.handle.on_cancel):
                try:
                    cancel()
                except Exception as exc:  # stopping must go on whatever a job's hook does
                    log.warning("stopping the %s of %s/%s: %s", worker.kind, *key, exc)
            worker.thread.join(timeout)
            if worker.thread.is_alive():
                log.warning("the %s of %s/%s did not stop within %.0fs", worker.kind, *key, timeout)
        finally:
            with self._lock:
                if self._stopping.get(key) is threading.current_thread():
                    del self._stopping[key]

    # -- the thread --------------------------------------------------------------------
    def _run(self, key: Key, kind: WorkKind, job: Job, handle: WorkerHandle) -> None:
        while not handle.cancelled.is_set():
            if self._slots.acquire(timeout=_SLOT_POLL):
                break
        else:
            return
        with self._lock:
            self._running += 1
        handle._update(state=WorkState.RUNNING, queued_behind=0)
        self._on_change()
        try:
            result = job(handle)
        except Exception as exc:
            if handle.cancelled.is_set() or isinstance(exc, WorkCancelled):
                # Whatever a stopped job raised on its way out is not a verdict.
                log.info("the %s of %s/%s stopped", kind, *key)
            else:
                self._failed(handle, kind, key, exc)
        else:
            if isinstance(result, SearchOutcome):
                handle._update(state=WorkState.FINISHED, search=result, progress=result.progress)
            else:
                handle._update(state=WorkState.FINISHED, validation=result)
            handle._update(ended_at=datetime.now(UTC))
        finally:
            with self._lock:
                self._running -= 1
            self._slots.release()
            self._on_change()

    @staticmethod
    def _failed(handle: WorkerHandle, kind: WorkKind, key: Key, exc: Exception) -> None:
        if isinstance(exc, WorkFailed):
            log.warning("the %s of %s/%s failed: %s", kind, *key, exc)
            handle._update(
                state=WorkState.FAILED,
                error=str(exc),
                error_path=exc.path,
                permanent=exc.permanent,
                ended_at=datetime.now(UTC),
            )
            return
        log.error("the %s of %s/%s failed", kind, *key, exc_info=exc)
        handle._update(
            state=WorkState.FAILED,
            error=f"{type(exc).__name__}: {exc}",
            ended_at=datetime.now(UTC),
        )
