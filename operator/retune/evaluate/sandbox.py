"""The harness: runs one candidate in a fresh, confined process and judges the outcome.

The process that owns a :class:`SandboxHarness` is a trusted *zygote*: it has already
imported the evaluator and forks one child per candidate. To keep fork and confinement
off the critical path, the next candidate's process is forked and confined (see
:mod:`retune.evaluate.confine`) while the current one runs; it then waits, unable to do
anything but read, for its single task. A process never runs a second candidate.

The child calls the evaluator, which loads the policy through
:func:`retune.evaluate.loader.load_policy` (allowlist + restricted builtins), and writes
one JSON frame, carrying the task's random nonce, to a dedicated pipe; stdout and stderr
go to /dev/null. The zygote enforces the wall-time limit (SIGKILL to the child's process
group), waits for the child to be gone, and only then classifies: a clean exit with a
valid frame and a valid :class:`EvaluationResult` is the only way to a score.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import secrets
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from retune.evaluate import loader
from retune.evaluate.allowlist import check_policy
from retune.evaluate.confine import confine_candidate
from retune.evaluate.contract import (
    EvaluationOutcome,
    EvaluationResult,
    EvaluationTask,
    FailureReason,
    SandboxLimits,
)

MAX_FRAME_BYTES = 1 << 20
_BALLAST_BYTES = 4 << 20  # address space released on MemoryError, to report it
_EXIT_REPORTED = 3  # the child reported a failure through the pipe
_EXIT_HARNESS = 70  # the child's own harness code failed
_PROBE_SECONDS = 10.0


def precheck(code: str, entrypoint: str) -> EvaluationOutcome | None:
    """The static verdict: a REJECTED/SYNTAX outcome, or None if the policy may run."""
    rejections = check_policy(code, entrypoint)
    if not rejections:
        return None
    reason = FailureReason.SYNTAX if rejections[0].syntax else FailureReason.REJECTED
    return EvaluationOutcome.failed(reason, "; ".join(str(r) for r in rejections))


@dataclass
class _Spare:
    """A forked, confined process waiting for its one task."""

    pid: int
    task_fd: int  # the zygote writes the request here, then closes it
    result_fd: int  # the zygote reads the frame here


class SandboxHarness:
    """Runs candidates of one evaluator, one fresh child process each.

    ``enforce_allowlist=False`` is for the escape tests only: it proves the process
    confinement holds on its own. ``network_isolated`` says the calling process already
    left the network (:func:`retune.evaluate.confine.isolate_process_network`). Not
    thread-safe: one candidate at a time. Close it to stop the waiting spare process.
    """

    def __init__(
        self,
        evaluator: types.ModuleType,
        entrypoint: str,
        limits: SandboxLimits,
        *,
        enforce_allowlist: bool = True,
        network_isolated: bool = False,
        policy_dir: Path | None = None,
    ) -> None:
        self._evaluate = evaluator.evaluate
        self.entrypoint = entrypoint
        self.limits = limits
        self.enforce_allowlist = enforce_allowlist
        self.network_isolated = network_isolated
        self._own_dir = policy_dir is None
        self.policy_dir = policy_dir or Path(tempfile.mkdtemp(prefix="retune-policies-"))
        self.policy_dir.chmod(0o711)  # the candidate, as nobody, may read its own file
        self._watch = _snapshot_trusted_code(evaluator)
        self._spare: _Spare | None = None
        self._counter = 0
        self.last_isolation: dict[str, Any] = {}

    def close(self) -> None:
        """Kill the waiting spare process; remove the policy directory if it is ours."""
        spare, self._spare = self._spare, None
        if spare is not None:
            _kill_group(spare.pid)
            os.waitpid(spare.pid, 0)
            os.close(spare.task_fd)
            os.close(spare.result_fd)
        if self._own_dir:
            shutil.rmtree(self.policy_dir, ignore_errors=True)

    def __enter__(self) -> SandboxHarness:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, task: EvaluationTask) -> EvaluationOutcome:
        """Evaluate one candidate; every problem with it becomes a failed outcome."""
        if self.enforce_allowlist:
            verdict = precheck(task.policy_code, self.entrypoint)
            if verdict is not None:
                return verdict
        self._counter += 1
        path = self.policy_dir / f"policy-{self._counter}.py"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            os.fchmod(descriptor, 0o644)
            handle.write(task.policy_code)
        nonce = secrets.token_hex(16)
        request = {
            "nonce": nonce,
            "kind": "task",
            "path": str(path),
            "code": task.policy_code,
            "context": task.context.model_dump(mode="json"),
            "subset": task.subset,
        }
        try:
            started = time.monotonic()
            end = self._dispatch(request, self.limits.wall_seconds)
            outcome, isolation = _classify(end, nonce, self.limits, time.monotonic() - started)
        finally:
            path.unlink(missing_ok=True)
        if isolation:
            self.last_isolation = isolation
        return outcome

    def probe(self) -> dict[str, Any]:
        """Confine one process that runs nothing, and report which layers took."""
        nonce = secrets.token_hex(16)
        end = self._dispatch({"nonce": nonce, "kind": "probe"}, _PROBE_SECONDS)
        frame = _parse_frame(end.data, nonce)
        if isinstance(frame, dict) and frame.get("kind") == "probe":
            self.last_isolation = frame.get("isolation") or {}
            return self.last_isolation
        detail = frame.get("detail") if isinstance(frame, dict) else frame
        return {"error": str(detail or "the probe process failed")}

    def _dispatch(self, request: dict[str, Any], wall_seconds: float) -> _ChildEnd:
        """Hand the request to a spare, fork the next spare, supervise the first."""
        payload = json.dumps(request).encode()
        for _ in range(2):
            spare, self._spare = self._spare or self._fork_spare(), None
            started = time.monotonic()
            if _hand_over(spare, payload):
                break
            _kill_group(spare.pid)  # it died waiting (or cannot read): use a fresh one
            os.waitpid(spare.pid, 0)
            os.close(spare.result_fd)
        else:
            raise OSError("the candidate process exited before it received its task")
        self._spare = self._fork_spare()
        return _supervise(spare.pid, spare.result_fd, started + wall_seconds)

    def _fork_spare(self) -> _Spare:
        task_read, task_write = os.pipe()
        result_read, result_write = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the candidate process; never returns
            try:
                os.close(task_write)
                os.close(result_read)
                self._candidate(task_read, result_write, parent)
            finally:
                os._exit(_EXIT_HARNESS)
        os.close(task_read)
        os.close(result_write)
        with contextlib.suppress(OSError):  # the child does it too; whoever is first
            os.setpgid(pid, pid)
        return _Spare(pid, task_write, result_read)

    def _candidate(self, task_fd: int, result_fd: int, parent: int) -> NoReturn:
        setup_error, isolation = "", {}
        try:
            ballast = mmap.mmap(-1, _BALLAST_BYTES)  # reserved address space, untouched
            keep = (task_fd, result_fd)
            isolation = confine_candidate(keep, self.limits, self.network_isolated, parent)
        except BaseException as exc:  # confinement failed: nothing untrusted may run
            setup_error = f"sandbox setup failed: {exc!r}"
        request = json.loads(_read_all(task_fd))
        frame: dict[str, Any] = {"nonce": request["nonce"], "isolation": isolation}
        if setup_error or request["kind"] == "probe":
            frame.update(kind="setup" if setup_error else "probe", detail=setup_error)
            _send_and_exit(result_fd, frame)
        loader.activate(request["path"], request["code"], self.entrypoint)
        started = time.perf_counter()
        try:
            value = self._evaluate(request["path"], request["context"], request["subset"])
            frame.update(kind="result", value=value)
        except BaseException as exc:
            ballast.close()  # room to describe the failure if memory ran out
            frame.update(_describe_failure(exc))
        frame["seconds"] = time.perf_counter() - started
        tampered = _tampered(self._watch)
        if tampered:
            frame.update(kind="tampered", value=None, detail=tampered)
        _send_and_exit(result_fd, frame)


def _hand_over(spare: _Spare, payload: bytes) -> bool:
    """Write the whole request and close the pipe; False if the spare is gone."""
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(spare.task_fd, view) :]
        return True
    except OSError:
        return False
    finally:
        os.close(spare.task_fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _snapshot_trusted_code(evaluator: types.ModuleType) -> list[tuple[dict[str, Any], str, Any]]:
    """Functions of the evaluator, its sibling modules and retune.evaluate, as bound now."""
    directory = os.path.dirname(os.path.abspath(getattr(evaluator, "__file__", "") or "."))
    watched = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        if (
            module is evaluator
            or name.startswith("retune.evaluate")
            or (path and os.path.dirname(os.path.abspath(path)) == directory)
        ):
            namespace = vars(module)
            for key, value in list(namespace.items()):
                if isinstance(value, types.FunctionType):
                    watched.append((namespace, key, (value, value.__code__)))
    return watched


def _tampered(watched: list[tuple[dict[str, Any], str, Any]]) -> str:
    for namespace, key, (function, code) in watched:
        current = namespace.get(key)
        if current is not function or getattr(current, "__code__", None) is not code:
            return f"the candidate replaced trusted code ({key}); its result is discarded"
    return ""


def _describe_failure(exc: BaseException) -> dict[str, Any]:
    chain: BaseException | None = exc
    while chain is not None:
        if isinstance(chain, MemoryError):
            return {"kind": "memory"}
        chain = chain.__cause__ or chain.__context__
    if isinstance(exc, loader.PolicyRejected):
        return {"kind": "syntax" if exc.syntax else "rejected", "detail": str(exc)}
    try:
        message = f"{type(exc).__name__}: {exc}"
        frames = traceback.extract_tb(exc.__traceback__)
        if frames:
            last = frames[-1]
            where = f"{os.path.basename(last.filename)}, line {last.lineno}, in {last.name}"
            message += f" ({where})"
    except Exception:  # a hostile __str__ must not hide the failure itself
        message = type(exc).__name__
    return {"kind": "exception", "detail": message[:1000]}


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _send_and_exit(write_fd: int, frame: dict[str, Any]) -> NoReturn:
    try:
        try:
            data = json.dumps(frame, default=_jsonable, allow_nan=True).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            frame.update(kind="malformed", value=None, detail=f"the result is not JSON: {exc}")
            data = json.dumps(frame, default=repr).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view) :]
    finally:
        os._exit(0 if frame.get("kind") in ("result", "probe") else _EXIT_REPORTED)


@dataclass
class _ChildEnd:
    data: bytes
    status: int
    cpu_seconds: float
    timed_out: bool
    oversize: bool


def _supervise(pid: int, read_fd: int, deadline: float) -> _ChildEnd:
    """Collect the child's frame until it exits or the deadline passes; always reap it."""
    with contextlib.suppress(OSError):  # the child already did it, or is gone
        os.setpgid(pid, pid)
    chunks: list[bytes] = []
    size, timed_out, exited = 0, False, False
    poller = select.poll()
    poller.register(read_fd, select.POLLIN)
    try:
        pidfd = os.pidfd_open(pid)
        poller.register(pidfd, select.POLLIN)
    except OSError:
        pidfd = -1
    try:
        while not exited and size <= MAX_FRAME_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            wait = remaining if pidfd >= 0 else min(remaining, 0.005)
            for fd, _ in poller.poll(wait * 1000):
                if fd == pidfd:
                    exited = True
                    continue
                chunk = os.read(read_fd, 65536)
                if chunk:
                    chunks.append(chunk)
                    size += len(chunk)
                else:
                    poller.unregister(read_fd)
            if pidfd < 0 and not exited:
                exited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    finally:
        _kill_group(pid)  # before reaping, so the group id cannot have been reused
        if exited and size <= MAX_FRAME_BYTES:
            chunks.append(_drain(read_fd))
        _, status, usage = os.wait4(pid, 0)
        os.close(read_fd)
        if pidfd >= 0:
            os.close(pidfd)
    data = b"".join(chunks)
    cpu = usage.ru_utime + usage.ru_stime
    return _ChildEnd(data, status, cpu, timed_out, len(data) > MAX_FRAME_BYTES)


def _kill_group(pid: int) -> None:
    """SIGKILL the child and its process group (the child leads it)."""
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(OSError):
            kill(pid, signal.SIGKILL)


def _drain(read_fd: int) -> bytes:
    os.set_blocking(read_fd, False)
    parts: list[bytes] = []
    total = 0
    try:
        while total <= MAX_FRAME_BYTES and (chunk := os.read(read_fd, 65536)):
            parts.append(chunk)
            total += len(chunk)
    except BlockingIOError:
        pass  # whatever a leftover writer still holds open is not the result
    return b"".join(parts)


def _parse_frame(data: bytes, nonce: str) -> dict[str, Any] | str | None:
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


def _classify(
    end: _ChildEnd, nonce: str, limits: SandboxLimits, elapsed: float
) -> tuple[EvaluationOutcome, dict[str, Any]]:
    """Turn how the child ended into an outcome (and the isolation it reported)."""
    failed = EvaluationOutcome.failed
    if end.oversize:
        return failed(FailureReason.MALFORMED, "the result is larger than 1 MiB", elapsed), {}
    if end.timed_out:
        detail = f"exceeded the wall-time limit of {limits.wall_seconds:g} s"
        return failed(FailureReason.TIMEOUT, detail, elapsed), {}
    cpu_detail = f"exceeded the CPU-time limit of {limits.cpu_seconds:g} s"
    if os.WIFSIGNALED(end.status):
        signum = os.WTERMSIG(end.status)
        if signum == signal.SIGXCPU or (
            signum == signal.SIGKILL and end.cpu_seconds >= math.ceil(limits.cpu_seconds)
        ):
            return failed(FailureReason.CPU, cpu_detail, elapsed), {}
        name = signal.Signals(signum).name if signum in signal.valid_signals() else str(signum)
        hint = " (the out-of-memory killer?)" if signum == signal.SIGKILL else ""
        return failed(FailureReason.CRASH, f"killed by {name}{hint}", elapsed), {}
    code = os.WEXITSTATUS(end.status)
    frame = _parse_frame(end.data, nonce)
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
    reasons = {
        "memory": (FailureReason.MEMORY, f"exceeded the memory limit of {limits.memory_mb} MB"),
        "exception": (FailureReason.EXCEPTION, detail),
        "rejected": (FailureReason.REJECTED, detail),
        "syntax": (FailureReason.SYNTAX, detail),
        "tampered": (FailureReason.MALFORMED, detail),
        "malformed": (FailureReason.MALFORMED, detail),
        "setup": (FailureReason.INFRASTRUCTURE, detail),
    }
    if kind in reasons and code == _EXIT_REPORTED:
        reason, text = reasons[kind]
        return failed(reason, text, seconds), isolation
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
