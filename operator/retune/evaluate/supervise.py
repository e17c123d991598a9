"""The zygote's side of a candidate process: watch it, reap it, judge how it ended.

A candidate reports through one pipe it alone can write to. The zygote reads the frame
until the pipe closes, enforces the wall-time limit (SIGKILL to the candidate's process
group), reaps the process, and only then judges: a clean exit (code 0) with one frame
carrying the task's nonce and a valid :class:`EvaluationResult` is the only way to a
score. Everything else maps to a :class:`FailureReason`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from retune.evaluate.contract import (
    EvaluationOutcome,
    EvaluationResult,
    FailureReason,
    SandboxLimits,
)

MAX_FRAME_BYTES = 1 << 20
EXIT_REPORTED = 3  # the candidate reported a failure through its pipe
_POLL_FALLBACK_SECONDS = 0.005  # without pidfds, how often to look for an exit


@dataclass
class Watch:
    """A launched candidate process and what has been read from it so far."""

    pid: int
    result_fd: int
    started: float
    wall_seconds: float
    pidfd: int = -1
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    complete: bool = False  # its pipe closed: the frame is whole
    exited: bool = False
    timed_out: bool = False

    @classmethod
    def start(cls, pid: int, result_fd: int, started: float, wall_seconds: float) -> Watch:
        watch = cls(pid, result_fd, started, wall_seconds)
        with contextlib.suppress(OSError):  # kernels before 5.3: poll for the exit
            watch.pidfd = os.pidfd_open(pid)
        return watch

    @property
    def deadline(self) -> float:
        return self.started + self.wall_seconds

    @property
    def oversize(self) -> bool:
        return self.size > MAX_FRAME_BYTES


@dataclass
class Ended:
    """How a reaped candidate process ended."""

    data: bytes
    status: int
    cpu_seconds: float
    elapsed: float
    timed_out: bool
    oversize: bool


def collect(
    watch: Watch, wake_fd: int | None = None, on_wake: Callable[[], bool] | None = None
) -> None:
    """Read the frame until it is complete, the process exits, or the deadline passes.

    While waiting, ``on_wake`` is called whenever ``wake_fd`` is readable (the worker
    uses it to take in its next task); it returns False once ``wake_fd`` is exhausted.
    """
    poller = select.poll()
    poller.register(watch.result_fd, select.POLLIN)
    if watch.pidfd >= 0:
        poller.register(watch.pidfd, select.POLLIN)
    if wake_fd is not None:
        poller.register(wake_fd, select.POLLIN)
    while not (watch.complete or watch.exited or watch.oversize):
        remaining = watch.deadline - time.monotonic()
        if remaining <= 0:
            watch.timed_out = True
            return
        if watch.pidfd < 0:
            remaining = min(remaining, _POLL_FALLBACK_SECONDS)
        for fd, _ in poller.poll(remaining * 1000):
            if fd == watch.result_fd:
                _read_chunk(watch)
            elif fd == watch.pidfd:
                watch.exited = True
            elif on_wake is not None and not on_wake():
                poller.unregister(fd)
        if watch.pidfd < 0 and not watch.exited:
            watch.exited = _has_exited(watch.pid)


def reap(watch: Watch) -> Ended:
    """Wait (until the deadline) for the process to be gone, kill its group, reap it."""
    try:
        if not (watch.exited or watch.timed_out or watch.oversize):
            watch.timed_out = not _wait_for_exit(watch)
        kill_group(watch.pid)  # before reaping, so the group id cannot have been reused
        if not (watch.timed_out or watch.oversize):
            _drain(watch)
    finally:
        _, status, usage = os.wait4(watch.pid, 0)
        os.close(watch.result_fd)
        if watch.pidfd >= 0:
            os.close(watch.pidfd)
    return Ended(
        data=b"".join(watch.chunks),
        status=status,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        elapsed=time.monotonic() - watch.started,
        timed_out=watch.timed_out,
        oversize=watch.oversize,
    )


def kill_group(pid: int) -> None:
    """SIGKILL a candidate and its process group (the candidate leads it)."""
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(OSError):
            kill(pid, signal.SIGKILL)


def _read_chunk(watch: Watch) -> bool:
    try:
        chunk = os.read(watch.result_fd, 1 << 16)
    except BlockingIOError:
        return False
    if not chunk:
        watch.complete = True
        return False
    watch.chunks.append(chunk)
    watch.size += len(chunk)
    return True


def _drain(watch: Watch) -> None:
    """Take what the exited process left in the pipe; never wait for a stray writer."""
    os.set_blocking(watch.result_fd, False)
    while not (watch.complete or watch.oversize) and _read_chunk(watch):
        pass


def _wait_for_exit(watch: Watch) -> bool:
    while True:
        remaining = watch.deadline - time.monotonic()
        if remaining <= 0:
            return False
        if watch.pidfd >= 0:
            if select.select([watch.pidfd], [], [], remaining)[0]:
                return True
        elif _has_exited(watch.pid):
            return True
        else:
            time.sleep(min(remaining, _POLL_FALLBACK_SECONDS))


def _has_exited(pid: int) -> bool:
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def parse_frame(data: bytes, nonce: str) -> dict[str, Any] | str | None:
    """The frame as a dict, None if there is none, or a string saying why it is invalid."""
    if not data:
        return None
    try:
        frame = json.loads(data)
    except (ValueError, RecursionError):
        return "the result channel carried something other than one harness frame"
    if not isinstance(frame, dict) or frame.get("nonce") != nonce:
        return "the result channel carried a frame the harness did not write"
    return frame


_REPORTED = {
    "exception": FailureReason.EXCEPTION,
    "rejected": FailureReason.REJECTED,
    "syntax": FailureReason.SYNTAX,
    "tampered": FailureReason.MALFORMED,
    "malformed": FailureReason.MALFORMED,
    "setup": FailureReason.INFRASTRUCTURE,
}


def judge(
    end: Ended, nonce: str, limits: SandboxLimits
) -> tuple[EvaluationOutcome, dict[str, Any]]:
    """Turn how the process ended into an outcome (and the isolation it reported)."""
    failed = EvaluationOutcome.failed
    if end.oversize:
        return failed(FailureReason.MALFORMED, "the result is larger than 1 MiB", end.elapsed), {}
    if end.timed_out:
        detail = f"exceeded the wall-time limit of {limits.wall_seconds:g} s"
        return failed(FailureReason.TIMEOUT, detail, end.elapsed), {}
    cpu_detail = f"exceeded the CPU-time limit of {limits.cpu_seconds:g} s"
    if os.WIFSIGNALED(end.status):
        signum = os.WTERMSIG(end.status)
        if signum == signal.SIGXCPU or (
            signum == signal.SIGKILL and end.cpu_seconds >= math.ceil(limits.cpu_seconds)
        ):
            return failed(FailureReason.CPU, cpu_detail, end.elapsed), {}
        name = signal.Signals(signum).name if signum in signal.valid_signals() else str(signum)
        hint = " (the out-of-memory killer?)" if signum == signal.SIGKILL else ""
        return failed(FailureReason.CRASH, f"killed by {name}{hint}", end.elapsed), {}
    code = os.WEXITSTATUS(end.status)
    frame = parse_frame(end.data, nonce)
    if frame is None:
        return failed(FailureReason.CRASH, f"exited with code {code} without a result"), {}
    if isinstance(frame, str):
        return failed(FailureReason.MALFORMED, frame), {}
    seconds = frame.get("seconds")
    seconds = float(seconds) if isinstance(seconds, int | float) else 0.0
    reported = frame.get("isolation")
    isolation: dict[str, Any] = reported if isinstance(reported, dict) else {}
    kind, detail = frame.get("kind"), str(frame.get("detail", ""))
    if end.cpu_seconds > limits.cpu_seconds:
        return failed(FailureReason.CPU, cpu_detail, seconds), isolation
    if kind == "memory" and code == EXIT_REPORTED:
        detail = f"exceeded the memory limit of {limits.memory_mb} MB"
        return failed(FailureReason.MEMORY, detail, seconds), isolation
    if kind in _REPORTED and code == EXIT_REPORTED:
        return failed(_REPORTED[kind], detail, seconds), isolation
    if kind != "result" or code != 0:
        return failed(FailureReason.CRASH, f"exited with code {code} after reporting"), {}
    try:
        result = EvaluationResult.model_validate(frame.get("value"), strict=True)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'result'}: {e['msg']}" for e in exc.errors()
        )
        return failed(FailureReason.MALFORMED, f"evaluate() returned {problems}", seconds), {}
    return EvaluationOutcome(result=result, evaluator_seconds=seconds), isolation
