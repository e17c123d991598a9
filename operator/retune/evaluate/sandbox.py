"""The harness: runs one candidate in a fresh, confined process and judges the outcome.

The process that owns a :class:`SandboxHarness` is a trusted *zygote*: it has already
imported the evaluator, and it forks one child per candidate. Before any untrusted code
runs, the child points stdin/stdout/stderr at /dev/null, closes every other descriptor but
its result pipe, sets rlimits (address space, CPU, no core, no file writes, few
descriptors), leaves the network (a fresh network namespace, when permitted), drops to
uid/gid 65534 when root, forbids new processes (``RLIMIT_NPROC=0``), applies a Landlock
ruleset when the kernel has one (no file writes, no exec, no TCP, no signals out), and
clears the environment. It then calls the evaluator, which loads the policy through
:func:`retune.evaluate.loader.load_policy` (allowlist + restricted builtins), and writes
one JSON frame carrying a per-task nonce to the pipe.

The zygote enforces the wall-time limit (SIGKILL to the child's process group), waits for
the child to be gone, and only then classifies: a clean exit with a valid frame and a
valid :class:`EvaluationResult` is the only way to a score.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import mmap
import os
import resource
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
from retune.evaluate.contract import (
    EvaluationOutcome,
    EvaluationResult,
    EvaluationTask,
    FailureReason,
    SandboxLimits,
)

NOBODY = 65534
MAX_FRAME_BYTES = 1 << 20
MAX_OPEN_FILES = 32
_BALLAST_BYTES = 4 << 20  # freed on MemoryError so the child can still report it
_EXIT_REPORTED = 3  # the child reported a failure through the pipe
_EXIT_HARNESS = 70  # the child's own harness code failed

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS = 1, 4, 38
_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_RESTRICT_SELF = 444, 446


def precheck(code: str, entrypoint: str) -> EvaluationOutcome | None:
    """The static verdict: a REJECTED/SYNTAX outcome, or None if the policy may run."""
    rejections = check_policy(code, entrypoint)
    if not rejections:
        return None
    reason = FailureReason.SYNTAX if rejections[0].syntax else FailureReason.REJECTED
    return EvaluationOutcome.failed(reason, "; ".join(str(r) for r in rejections))


def isolate_process_network() -> bool:
    """Move the calling process (a zygote) into an empty network namespace, if permitted.

    Its children then inherit the isolation and skip the per-candidate ``unshare``.
    """
    return _libc.unshare(_CLONE_NEWNET) == 0


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when the thread that started it exits."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class SandboxHarness:
    """Runs candidates of one evaluator, one fresh child process each.

    ``enforce_allowlist=False`` is for the escape tests only: it proves the process
    confinement holds on its own. Not thread-safe: one candidate at a time.
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
        self.network_isolated = network_isolated  # set when the zygote left the network
        self._own_dir = policy_dir is None
        self.policy_dir = policy_dir or Path(tempfile.mkdtemp(prefix="retune-policies-"))
        self.policy_dir.chmod(0o711)  # the candidate, as nobody, may read its own file
        self._watch = _snapshot_trusted_code(evaluator)
        self._counter = 0
        self.last_isolation: dict[str, Any] = {}

    def close(self) -> None:
        """Remove the policy directory if this harness created it."""
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
        policy_path = self.policy_dir / f"policy-{self._counter}.py"
        descriptor = os.open(policy_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            os.fchmod(descriptor, 0o644)
            handle.write(task.policy_code)
        try:
            return self._run_forked(task, str(policy_path))
        finally:
            policy_path.unlink(missing_ok=True)

    def probe(self) -> dict[str, Any]:
        """Fork one confined child that runs nothing, and report which layers took."""
        nonce = secrets.token_hex(16)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            frame: dict[str, Any] = {"nonce": nonce, "kind": "probe"}
            try:
                frame["isolation"] = self._confine(write_fd, os.getppid())
            except BaseException as exc:
                frame = {"nonce": nonce, "kind": "setup", "detail": repr(exc)}
            _send_and_exit(write_fd, frame)
        os.close(write_fd)
        end = _supervise(pid, read_fd, time.monotonic() + 10.0)
        parsed = _parse_frame(end.data, nonce)
        if isinstance(parsed, dict) and parsed.get("kind") == "probe":
            self.last_isolation = parsed.get("isolation") or {}
            return self.last_isolation
        return {"error": str(parsed.get("detail") if isinstance(parsed, dict) else parsed)}

    def _run_forked(self, task: EvaluationTask, policy_path: str) -> EvaluationOutcome:
        nonce = secrets.token_hex(16)
        read_fd, write_fd = os.pipe()
        parent = os.getpid()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the candidate process; never returns
            os.close(read_fd)
            self._child(task, policy_path, write_fd, nonce, parent)
        os.close(write_fd)
        end = _supervise(pid, read_fd, started + self.limits.wall_seconds)
        outcome, isolation = _classify(end, nonce, self.limits, time.monotonic() - started)
        if isolation:
            self.last_isolation = isolation
        return outcome

    def _child(
        self, task: EvaluationTask, policy_path: str, write_fd: int, nonce: str, parent: int
    ) -> NoReturn:
        frame: dict[str, Any] = {"nonce": nonce}
        try:
            loader.activate(policy_path, task.policy_code, self.entrypoint)
            ballast = mmap.mmap(-1, _BALLAST_BYTES)  # reserved address space, untouched
            frame["isolation"] = self._confine(write_fd, parent)
        except BaseException as exc:  # confinement failed: nothing untrusted may run
            frame.update(kind="setup", detail=f"sandbox setup failed: {exc!r}")
            _send_and_exit(write_fd, frame)
        started = time.perf_counter()
        try:
            value = self._evaluate(policy_path, task.context.model_dump(), task.subset)
            frame.update(kind="result", value=value)
        except BaseException as exc:
            ballast.close()  # room to describe the failure if memory ran out
            frame.update(_describe_failure(exc))
        frame["seconds"] = time.perf_counter() - started
        tampered = _tampered(self._watch)
        if tampered:
            frame.update(kind="tampered", value=None, detail=tampered)
        _send_and_exit(write_fd, frame)

    def _confine(self, keep_fd: int, parent: int) -> dict[str, Any]:
        """Everything that must hold before untrusted code runs, in this order."""
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGXCPU):
            signal.signal(signum, signal.SIG_DFL)
        os.setpgid(0, 0)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            if fd != devnull:
                os.dup2(devnull, fd)
        os.closerange(3, keep_fd)
        os.closerange(keep_fd + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        limits = self.limits
        cpu = max(1, math.ceil(limits.cpu_seconds))
        mapped = _mapped_bytes()
        for which, value in (
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_FSIZE, 0),
            (resource.RLIMIT_NOFILE, MAX_OPEN_FILES),
            (resource.RLIMIT_AS, mapped + limits.memory_mb * (1 << 20)),
        ):
            resource.setrlimit(which, (value, value))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        network = "zygote" if self.network_isolated else "none"
        if not self.network_isolated and _libc.unshare(_CLONE_NEWNET) == 0:
            network = "namespace"
        user = "unchanged"
        if os.geteuid() == 0:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            if os.getresuid() != (NOBODY,) * 3 or os.getresgid() != (NOBODY,) * 3:
                raise PermissionError("could not drop privileges to nobody")
            user = "nobody"
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
        no_new_privs = _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        _prctl(_PR_SET_DUMPABLE, 0)
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # after the uid change, which clears it
        if os.getppid() != parent:  # the zygote died before the death signal was armed
            os._exit(_EXIT_HARNESS)
        landlock = _landlock_restrict() if no_new_privs else 0
        os.environ.clear()
        return {
            "network": network,
            "user": user,
            "landlock_abi": landlock,
            "no_new_privs": no_new_privs,
        }


def _mapped_bytes() -> int:
    """The address space already mapped, so memory_mb is what the candidate may add."""
    with open("/proc/self/statm", "rb") as handle:
        return int(handle.read().split()[0]) * resource.getpagesize()


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


def _landlock_restrict() -> int:
    """Deny file writes, exec, TCP and outbound signals; returns the ABI used, 0 if none."""
    abi = _syscall(_SYS_LANDLOCK_CREATE_RULESET, None, 0, 1)
    if abi < 1:
        return 0
    # v1 rights except READ_FILE (1 << 2) and READ_DIR (1 << 3); later ABIs add more.
    fs = (1 << 13) - 1 - (1 << 2) - (1 << 3)
    fs |= (1 << 13) if abi >= 2 else 0  # REFER
    fs |= (1 << 14) if abi >= 3 else 0  # TRUNCATE
    fs |= (1 << 15) if abi >= 5 else 0  # IOCTL_DEV
    attr = _RulesetAttr(fs, 0b11 if abi >= 4 else 0, 0b11 if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = _syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        return 0
    try:
        ok = _syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) == 0
    finally:
        os.close(ruleset)
    return abi if ok else 0


def _syscall(number: int, *args: Any) -> int:
    """A raw syscall with every integer passed as a full machine word."""
    words = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return int(_libc.syscall(ctypes.c_long(number), *words))


def _prctl(option: int, value: int) -> bool:
    return int(_libc.prctl(*(ctypes.c_ulong(a) for a in (option, value, 0, 0, 0)))) == 0


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
