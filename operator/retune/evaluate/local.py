"""LocalExecutor: a pool of zygote workers on this machine, the embedded default.

Each worker is a fresh Python interpreter started once (with a minimal environment, so no
operator secret is ever in its memory) that imports the evaluator, leaves the network,
and then forks one confined child per candidate through :class:`SandboxHarness`. The
executor talks to each worker over its stdin/stdout, one JSON line per task; a thread per
worker feeds it from a shared queue. A worker that dies is respawned and its task retried
once; a second loss fails the task as INFRASTRUCTURE.
"""

from __future__ import annotations

import contextlib
import gc
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
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import retune
from retune.evaluate.confine import die_with_parent, isolate_process_network
from retune.evaluate.contract import (
    EvaluationContext,
    EvaluationOutcome,
    EvaluationTask,
    FailureReason,
    SandboxLimits,
)
from retune.evaluate.loader import EvaluatorLoadError, load_evaluator
from retune.evaluate.sandbox import SandboxHarness

_STARTUP_SECONDS = 60.0
_REPLY_SLACK_SECONDS = 30.0  # beyond the wall limit, before a silent worker counts as lost
_WORKER_COMMAND = "from retune.evaluate.local import serve_worker; serve_worker()"


@dataclass
class _Job:
    task: EvaluationTask
    future: Future[EvaluationOutcome]


class LocalExecutor:
    """Runs evaluation tasks in local zygote workers; implements the Executor protocol.

    ``evaluator_path`` is the evaluator module's file (it may import modules beside it).
    ``enforce_allowlist=False`` exists for the escape tests only.
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
        self._stopping = threading.Event()
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._root = Path(tempfile.mkdtemp(prefix="retune-local-"))
        self._root.chmod(0o711)
        config = {
            "evaluator": str(Path(evaluator_path).resolve()),
            "entrypoint": entrypoint,
            "limits": limits.model_dump(),
            "enforce_allowlist": enforce_allowlist,
        }
        count = max(1, workers or os.cpu_count() or 1)
        self._workers = [
            _Worker(i, config, self._root, limits, self._queue, self._stopping)
            for i in range(count)
        ]
        self._finalizer = weakref.finalize(
            self, _shutdown, list(self._workers), self._root, self._queue, self._stopping
        )
        for worker in self._workers:
            worker.thread.start()
        for worker in self._workers:
            worker.ready.wait()
        failed = next((w.startup_error for w in self._workers if w.startup_error), None)
        if failed is not None:
            self.close()
            raise EvaluatorLoadError(failed)

    @property
    def capacity(self) -> int:
        """How many candidates run at once (one per worker)."""
        return len(self._workers)

    @property
    def isolation(self) -> dict[str, Any]:
        """Which confinement layers took in the candidates (see ``docs/sandbox.md``)."""
        return dict(self._workers[0].isolation)

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for operations and tests)."""
        return [w.process.pid for w in self._workers if w.process is not None]

    def submit(self, task: EvaluationTask) -> Future[EvaluationOutcome]:
        """Queue a candidate; the future resolves to its outcome, never to an exception."""
        future: Future[EvaluationOutcome] = Future()
        if self._stopping.is_set():
            future.set_result(_cancelled())
        else:
            self._queue.put(_Job(task, future))
        return future

    def close(self) -> None:
        """Cancel queued work, kill every worker (their candidates die with them), clean up."""
        if self._stopping.is_set():
            return
        self._finalizer()
        for worker in self._workers:
            if worker.thread is not threading.current_thread():
                worker.thread.join(timeout=10.0)

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Worker:
    """One zygote process and the thread that feeds it."""

    def __init__(
        self,
        index: int,
        config: dict[str, Any],
        root: Path,
        limits: SandboxLimits,
        jobs: queue.SimpleQueue[_Job | None],
        stopping: threading.Event,
    ) -> None:
        self.jobs = jobs
        self.stopping = stopping
        self.config = {**config, "policy_dir": str(root / f"worker-{index}")}
        self.reply_seconds = limits.wall_seconds + _REPLY_SLACK_SECONDS
        self.process: subprocess.Popen[bytes] | None = None
        self.buffer = b""
        self.isolation: dict[str, Any] = {}
        self.startup_error: str | None = None
        self.ready = threading.Event()
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
            self.ready.set()
        while (job := self.jobs.get()) is not None:
            if job.future.set_running_or_notify_cancel():
                job.future.set_result(self._run(job.task))

    def _run(self, task: EvaluationTask) -> EvaluationOutcome:
        for attempt in (1, 2):
            reply = self._exchange(task) if self.process is not None else None
            if reply is not None:
                return reply
            if self.stopping.is_set():
                return _cancelled()
            self._stop()
            try:
                self._spawn()
            except Exception as exc:
                detail = f"cannot restart the evaluation worker: {exc}"
                return EvaluationOutcome.failed(FailureReason.INFRASTRUCTURE, detail)
            if attempt == 2:
                break
        detail = "the evaluation worker died twice on this candidate"
        return EvaluationOutcome.failed(FailureReason.INFRASTRUCTURE, detail)

    def _exchange(self, task: EvaluationTask) -> EvaluationOutcome | None:
        """Send one task and read its outcome; None if the worker is lost."""
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write(task.model_dump_json().encode() + b"\n")
            self.process.stdin.flush()
            message = self._read_message(self.reply_seconds)
            return EvaluationOutcome.model_validate(message["outcome"])
        except (OSError, EOFError, ValueError, KeyError, TypeError):
            return None

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
        if self.stopping.is_set():  # closed while this worker was being (re)started
            self._stop()
            raise EvaluatorLoadError("the executor was closed")
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(self.config).encode() + b"\n")
        self.process.stdin.flush()
        try:
            message = self._read_message(_STARTUP_SECONDS)
        except (OSError, EOFError, ValueError) as exc:
            self._stop()
            raise EvaluatorLoadError(f"the evaluation worker did not start: {exc}") from exc
        if "error" in message:
            self._stop()
            raise EvaluatorLoadError(str(message["error"]))
        self.isolation = message.get("isolation") or {}

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


def _shutdown(
    workers: list[_Worker],
    root: Path,
    jobs: queue.SimpleQueue[_Job | None],
    stopping: threading.Event,
) -> None:
    """Stop the pool: cancel queued work, kill the workers, remove the policy files.

    Runs from close(), or at garbage collection / interpreter exit if close() was missed.
    """
    stopping.set()
    with contextlib.suppress(queue.Empty):
        while True:
            job = jobs.get_nowait()
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_result(_cancelled())
    for worker in workers:
        jobs.put(None)
        process = worker.process
        if process is not None:
            _kill(process)  # the worker's thread sees the pipe close and closes its end
    shutil.rmtree(root, ignore_errors=True)


def _cancelled() -> EvaluationOutcome:
    return EvaluationOutcome.failed(FailureReason.CANCELLED, "the executor was closed")


def serve_worker() -> None:
    """A worker's main loop (runs in its own interpreter; see :class:`LocalExecutor`)."""
    die_with_parent()
    requests: IO[bytes] = os.fdopen(os.dup(0), "rb")
    replies: IO[bytes] = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # stray prints (the evaluator's) go to stderr, never into the protocol

    def send(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message).encode() + b"\n")
        replies.flush()

    try:
        config = json.loads(requests.readline())
        network_isolated = isolate_process_network()
        harness = SandboxHarness(
            load_evaluator(config["evaluator"]),
            config["entrypoint"],
            SandboxLimits.model_validate(config["limits"]),
            enforce_allowlist=bool(config["enforce_allowlist"]),
            network_isolated=network_isolated,
            policy_dir=_make_dir(Path(config["policy_dir"])),
        )
        isolation = harness.probe()
        EvaluationContext().model_dump()  # warm up lazily built serializers before forking
        gc.freeze()  # keep the collector from touching (and copying) the zygote's objects
    except BaseException as exc:
        send({"error": str(exc) or repr(exc)})
        raise SystemExit(1) from None
    send({"ready": True, "isolation": isolation})
    for line in requests:
        try:
            outcome = harness.run(EvaluationTask.model_validate_json(line))
        except Exception as exc:  # the harness itself failed (fork refused, disk full, ...)
            detail = f"the harness failed: {exc!r}"
            outcome = EvaluationOutcome.failed(FailureReason.INFRASTRUCTURE, detail)
        send({"outcome": outcome.model_dump(mode="json")})


def _make_dir(path: Path) -> Path:
    path.mkdir(mode=0o711, exist_ok=True)
    path.chmod(0o711)
    return path
