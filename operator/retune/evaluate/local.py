"""LocalExecutor: a pool of zygote workers on this machine, the embedded default.

Each worker (:mod:`retune.evaluate.zygote`) is a fresh Python interpreter started once,
with a minimal environment so no operator secret is ever in its memory; it imports the
evaluator and forks one confined child per candidate. The executor feeds each worker
from a shared queue through a thread of its own, over the worker's stdin/stdout, one
JSON line per task. When every worker is busy and enough work is queued for all of them,
a worker is given its next task ahead of time (at most one), so it starts the moment the
current one finishes. A worker that dies is respawned and its tasks retried once; a second loss fails
a task as INFRASTRUCTURE.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import retune
from retune.evaluate.contract import (
    EvaluationOutcome,
    EvaluationTask,
    FailureReason,
    SandboxLimits,
)
from retune.evaluate.loader import EvaluatorLoadError

_WINDOW = 2  # tasks a worker may hold: the running one and the next
_STARTUP_SECONDS = 60.0  # to start the interpreter; importing the evaluator has its own
_EXIT_SECONDS = 5.0
_REPLY_SLACK_SECONDS = 30.0  # beyond the wall limit, before a silent worker counts as lost
_WORKER_COMMAND = "from retune.evaluate.zygote import serve_worker; serve_worker()"


@dataclass
class _Job:
    task: EvaluationTask
    future: Future[EvaluationOutcome]
    attempts: int = 0


@dataclass
class _Shared:
    """What the executor and its worker threads share (never the executor itself)."""

    jobs: queue.SimpleQueue[_Job | None] = field(default_factory=queue.SimpleQueue)
    stopping: threading.Event = field(default_factory=threading.Event)
    workers: list[_Worker] = field(default_factory=list)


class LocalExecutor:
    """Runs evaluation tasks in local zygote workers; implements the Executor protocol.

    ``evaluator_path`` is the evaluator module's file (it may import modules beside it).
    ``workers`` defaults to the number of CPUs. ``enforce_allowlist=False`` exists for
    the escape tests only. Raises :class:`EvaluatorLoadError` if the evaluator cannot be
    imported.
    """

    def __init__(
        self,
        evaluator_path: Path,
        entrypoint: str,
        limits: SandboxLimits,
        workers: int | None = None,
        *,
        enforce_allowlist: bool = True,
    ) -> None:
        self._shared = _Shared()
        self._root, self._root_lock = _claim_policy_root(Path(tempfile.gettempdir()))
        config = {
            "evaluator": str(Path(evaluator_path).resolve()),
            "entrypoint": entrypoint,
            "limits": limits.model_dump(),
            "enforce_allowlist": enforce_allowlist,
        }
        count = max(1, workers or os.cpu_count() or 1)
        self._shared.workers.extend(
            _Worker(i, config, self._root, limits, self._shared) for i in range(count)
        )
        self._finalizer = weakref.finalize(
            self, _shutdown, self._shared, self._root, self._root_lock
        )
        for worker in self._shared.workers:
            worker.thread.start()
        for worker in self._shared.workers:
            worker.started.wait()
        failed = next((w.startup_error for w in self._shared.workers if w.startup_error), None)
        if failed is not None:
            self.close()
            raise EvaluatorLoadError(failed)

    @property
    def capacity(self) -> int:
        """How many candidates run at once (one per worker)."""
        return len(self._shared.workers)

    @property
    def isolation(self) -> dict[str, Any]:
        """Which confinement layers took in the candidates (see ``docs/sandbox.md``)."""
        return dict(self._shared.workers[0].isolation)

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for operations and tests)."""
        return [w.process.pid for w in self._shared.workers if w.process is not None]

    def submit(self, task: EvaluationTask) -> Future[EvaluationOutcome]:
        """Queue a candidate; the future resolves to its outcome, never to an exception."""
        future: Future[EvaluationOutcome] = Future()
        if self._shared.stopping.is_set():
            future.set_result(_cancelled())
        else:
            self._shared.jobs.put(_Job(task, future))
        return future

    def close(self) -> None:
        """Cancel queued work, kill every worker (their candidates die with them), clean up."""
        if self._shared.stopping.is_set():
            return
        self._finalizer()
        for worker in self._shared.workers:
            if worker.thread is not threading.current_thread():
                worker.thread.join(timeout=10.0)

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Worker:
    """One zygote process and the thread that feeds it."""

    def __init__(
        self, index: int, config: dict[str, Any], root: Path, limits: SandboxLimits, shared: _Shared
    ) -> None:
        self.shared = shared
        self.config = {**config, "policy_dir": str(root / f"worker-{index}")}
        self.reply_seconds = limits.wall_seconds + _REPLY_SLACK_SECONDS
        self.import_seconds = limits.wall_seconds
        self.process: subprocess.Popen[bytes] | None = None
        self.buffer = b""
        self.isolation: dict[str, Any] = {}
        self.startup_error: str | None = None
        self.started = threading.Event()
        self.idle = False
        self.in_flight: dict[int, _Job] = {}
        self.sequence = itertools.count()
        self.thread = threading.Thread(target=self._serve, name=f"retune-worker-{index}")
        self.thread.daemon = True

    def _serve(self) -> None:
        # Workers are started from this thread: their parent-death signal follows it.
        try:
            self._spawn()
        except Exception as exc:
            self.startup_error = str(exc)
            return
        finally:
            self.started.set()
        draining = False
        while True:
            if not self.in_flight:
                if draining:
                    return
                self.idle = True
                job = self.shared.jobs.get()
                self.idle = False
                if job is None:
                    return
                self._send(job)
            while len(self.in_flight) < _WINDOW and not draining and self._may_take_ahead():
                try:
                    job = self.shared.jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    draining = True
                else:
                    self._send(job)
            if self.in_flight:
                self._receive()

    def _may_take_ahead(self) -> bool:
        """Take a next task early only if no other worker would go hungry for it: none
        is idle, and the queue holds enough for each of them (a worker about to finish
        must not watch this one hold the last task)."""
        workers = self.shared.workers
        if any(w.idle for w in workers if w is not self):
            return False
        return self.shared.jobs.qsize() >= len(workers)

    def _send(self, job: _Job) -> None:
        if job.attempts == 0 and not job.future.set_running_or_notify_cancel():
            return  # cancelled while queued
        if self.process is None:  # an earlier restart failed: try again now
            try:
                self._spawn()
            except Exception as exc:
                job.future.set_result(_failed(f"cannot start the evaluation worker: {exc}"))
                return
        seq = next(self.sequence)
        self.in_flight[seq] = job
        line = json.dumps({"seq": seq, "task": job.task.model_dump(mode="json")})
        with contextlib.suppress(OSError):  # a lost worker shows when reading the reply
            assert self.process is not None and self.process.stdin is not None
            self.process.stdin.write(line.encode() + b"\n")
            self.process.stdin.flush()

    def _receive(self) -> None:
        try:
            message = self._read_message(self.reply_seconds)
            job = self.in_flight.pop(int(message["seq"]))
            outcome = EvaluationOutcome.model_validate(message["outcome"])
        except (OSError, EOFError, ValueError, KeyError, TypeError, AssertionError):
            self._recover()
            return
        job.future.set_result(outcome)

    def _recover(self) -> None:
        """The worker is gone or broken: replace it and retry its tasks once."""
        lost = sorted(self.in_flight.items())
        self.in_flight.clear()
        self._stop()
        if self.shared.stopping.is_set():
            for _, job in lost:
                job.future.set_result(_cancelled())
            return
        try:
            self._spawn()
        except Exception as exc:
            detail = f"cannot restart the evaluation worker: {exc}"
            for _, job in lost:
                job.future.set_result(_failed(detail))
            return
        for _, job in lost:
            job.attempts += 1
            if job.attempts >= 2:
                job.future.set_result(_failed("the evaluation worker died twice on this task"))
            else:
                self._send(job)

    def _spawn(self) -> None:
        package_root = str(Path(retune.__file__).resolve().parent.parent)
        paths = [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(":"))]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.pathsep.join(paths),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONNOUSERSITE": "1",
            **dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1"),
        }
        self.buffer = b""
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_COMMAND],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C reaches the operator, not the pool
        )
        try:
            if self.shared.stopping.is_set():  # closed while this worker was starting
                raise EvaluatorLoadError("the executor was closed")
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps(self.config).encode() + b"\n")
            self.process.stdin.flush()
            message = self._read_message(_STARTUP_SECONDS)
            if "importing" in message:
                message = self._import_evaluator()
            if "error" in message:
                raise EvaluatorLoadError(str(message["error"]))
        except EvaluatorLoadError:
            self._stop()
            raise
        except (OSError, EOFError, ValueError) as exc:
            self._stop()
            raise EvaluatorLoadError(f"the evaluation worker did not start: {exc}") from exc
        self.isolation = message.get("isolation") or {}

    def _import_evaluator(self) -> dict[str, Any]:
        """Wait for the worker to import the evaluator, at most one evaluation's wall time:
        an import that hangs (or loads more than an evaluation may take) is an error the
        user can fix, not a wait."""
        try:
            return self._read_message(self.import_seconds)
        except TimeoutError:
            raise EvaluatorLoadError(
                f"importing the evaluator took longer than {self.import_seconds:g} s, the "
                "evaluation timeout: it hangs at import, or does at import what belongs in "
                "evaluate()"
            ) from None
        except EOFError:
            assert self.process is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(_EXIT_SECONDS)
            raise EvaluatorLoadError(
                "the evaluator ended its process while it was imported (exit status "
                f"{self.process.returncode})"
            ) from None

    def _read_message(self, seconds: float) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + seconds
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("the evaluation worker stopped answering")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise EOFError("the evaluation worker exited")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError("the evaluation worker sent something that is not a message")
        return message

    def _stop(self) -> None:
        """Kill the worker and close its pipes (only from this worker's own thread)."""
        process, self.process = self.process, None
        if process is not None:
            _kill(process)
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(process.pid, signal.SIGKILL)  # candidates die with it (parent-death signal)
    with contextlib.suppress(OSError):
        process.kill()
    process.wait()


def _claim_policy_root(parent: Path) -> tuple[Path, int]:
    """A fresh directory for the policy files, locked for as long as this process lives.

    A run killed with SIGKILL cannot remove its directory, so each new executor removes
    the ones whose lock nobody holds any more. Creating and locking happen under a shared
    lock on ``retune-local.lock``, and the sweep under an exclusive one, so a sweep never
    takes a directory that was created but not yet locked.
    """
    guard = _open_guard(parent / "retune-local.lock")
    try:
        if guard >= 0:
            fcntl.flock(guard, fcntl.LOCK_EX)
            _remove_abandoned(parent)
            fcntl.flock(guard, fcntl.LOCK_SH)  # others may create while this one does
        root = Path(tempfile.mkdtemp(prefix="retune-local-", dir=parent))
        root.chmod(0o711)
        lock = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(lock, fcntl.LOCK_EX)
    finally:
        if guard >= 0:
            os.close(guard)  # releases the guard
    return root, lock


def _open_guard(path: Path) -> int:
    """The guard's descriptor; -1 (no sweep) if another user's file is in the way."""
    for flags in (os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, os.O_RDONLY | os.O_CLOEXEC):
        with contextlib.suppress(OSError):  # e.g. fs.protected_regular refuses O_CREAT
            return os.open(path, flags, 0o644)
    return -1


def _remove_abandoned(parent: Path) -> None:
    for directory in parent.glob("retune-local-*"):
        try:
            lock = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue  # gone meanwhile, not a directory, or not ours to read
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live executor holds it
        finally:
            os.close(lock)
        shutil.rmtree(directory, ignore_errors=True)


def _shutdown(shared: _Shared, root: Path, root_lock: int) -> None:
    """Stop the pool: cancel queued work, kill the workers, remove the policy files.

    Runs from close(), or at garbage collection / interpreter exit if close() was missed.
    """
    shared.stopping.set()
    with contextlib.suppress(queue.Empty):
        while True:
            job = shared.jobs.get_nowait()
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_result(_cancelled())
    for worker in shared.workers:
        shared.jobs.put(None)
        process = worker.process
        if process is not None:
            _kill(process)  # the worker's thread sees the pipe close and closes its end
    shutil.rmtree(root, ignore_errors=True)
    os.close(root_lock)


def _failed(detail: str) -> EvaluationOutcome:
    return EvaluationOutcome.failed(FailureReason.INFRASTRUCTURE, detail)


def _cancelled() -> EvaluationOutcome:
    return EvaluationOutcome.failed(FailureReason.CANCELLED, "the executor was closed")
