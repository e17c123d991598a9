"""The harness: runs each candidate in a fresh, confined process and judges the outcome.

The process that owns a :class:`SandboxHarness` is a trusted *zygote*: it has already
imported the evaluator and forks one child per candidate. To keep fork and confinement
off the critical path, the next candidate's process is forked and confined (see
:mod:`retune.evaluate.confine`) while the current one runs; it then waits, able to do
nothing but read, for its single task. A process never runs a second candidate.

The child calls the evaluator, which loads the policy through
:func:`retune.evaluate.loader.load_policy` (allowlist + restricted builtins), writes one
JSON frame carrying the task's random nonce to a pipe only it can write to, and exits;
stdout and stderr go to /dev/null. The zygote (:mod:`retune.evaluate.supervise`) enforces
the wall-time limit, waits for the child to be gone, and only then judges the frame.

A run is ``prepare`` (static check, policy file), ``launch`` (hand it to the waiting
process), ``collect`` (read the frame), ``judge`` (reap, then classify) and ``replenish``
(fork the next waiting process). A worker launches its next candidate between ``collect``
and ``judge`` of the previous one, so the previous process's teardown overlaps the next
evaluation. :meth:`SandboxHarness.run` does it all for one task.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import secrets
import select
import shutil
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from retune.evaluate import loader
from retune.evaluate.allowlist import check_policy
from retune.evaluate.confine import confine_candidate
from retune.evaluate.contract import EvaluationOutcome, EvaluationTask, FailureReason, SandboxLimits
from retune.evaluate.supervise import (
    EXIT_REPORTED,
    Watch,
    collect,
    judge,
    kill_group,
    parse_frame,
    reap,
)

_BALLAST_BYTES = 4 << 20  # address space released on MemoryError, to report it
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
class Prepared:
    """A checked candidate, its policy file written, ready to hand to a process."""

    path: Path | None
    nonce: str
    payload: bytes


@dataclass
class Running:
    """A launched candidate."""

    prepared: Prepared
    watch: Watch


@dataclass
class _Spare:
    """A forked, confined process waiting for its one task.

    It starts the task only once the candidate launched before it is done: it holds the
    read end of that candidate's *gate* pipe, whose write end only that candidate holds
    and closes with its result pipe (or by exiting). So a worker can hand over the next
    task early, and it starts without waiting for the zygote to wake up.
    """

    pid: int
    task_fd: int  # the zygote writes the request here, then closes it
    result_fd: int  # the zygote reads the frame here


class SandboxHarness:
    """Runs candidates of one evaluator, one fresh child process each.

    ``enforce_allowlist=False`` is for the escape tests only: it proves the process
    confinement holds on its own. ``network`` says how the calling process already left
    the network (what :func:`retune.evaluate.confine.isolate_process_network` returned). Not
    thread-safe. Close it to stop the waiting spare process.
    """

    def __init__(
        self,
        evaluator: types.ModuleType,
        entrypoint: str,
        limits: SandboxLimits,
        *,
        enforce_allowlist: bool = True,
        network: str = "",
        policy_dir: Path | None = None,
    ) -> None:
        self._evaluate = evaluator.evaluate
        self.entrypoint = entrypoint
        self.limits = limits
        self.enforce_allowlist = enforce_allowlist
        self.network = network
        self._own_dir = policy_dir is None
        self.policy_dir = policy_dir or Path(tempfile.mkdtemp(prefix="retune-policies-"))
        self.policy_dir.chmod(0o711)  # the candidate, as nobody, may read its own file
        self._watch = _snapshot_trusted_code(evaluator)
        self._spare: _Spare | None = None
        self._gate = -1  # read end of the gate of the last process forked
        self._counter = 0
        self.last_isolation: dict[str, Any] = {}

    def close(self) -> None:
        """Kill the waiting spare process; remove the policy directory if it is ours."""
        spare, self._spare = self._spare, None
        if spare is not None:
            kill_group(spare.pid)
            os.waitpid(spare.pid, 0)
            os.close(spare.task_fd)
            os.close(spare.result_fd)
        if self._gate >= 0:
            os.close(self._gate)
            self._gate = -1
        if self._own_dir:
            shutil.rmtree(self.policy_dir, ignore_errors=True)

    def __enter__(self) -> SandboxHarness:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, task: EvaluationTask) -> EvaluationOutcome:
        """Evaluate one candidate; every problem with it becomes a failed outcome."""
        prepared = self.prepare(task)
        if isinstance(prepared, EvaluationOutcome):
            return prepared
        running = self.launch(prepared)
        try:
            self.collect(running)
        except BaseException:  # e.g. KeyboardInterrupt: the candidate must not outlive us
            self.abandon(running)
            raise
        outcome = self.judge(running)
        self.replenish()
        return outcome

    def prepare(self, task: EvaluationTask) -> Prepared | EvaluationOutcome:
        """Check the policy (a REJECTED/SYNTAX outcome ends here) and write its file."""
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
            "stage": task.stage,
        }
        return Prepared(path, nonce, json.dumps(request).encode())

    def launch(self, prepared: Prepared, wall_seconds: float | None = None) -> Running:
        """Hand the candidate to the waiting process; its clock starts now.

        If the previously launched candidate is still running, this one starts when that
        one is done: call :meth:`restart_clock` on it then.
        """
        for _ in range(2):
            spare, self._spare = self._spare or self._fork_spare(), None
            started = time.monotonic()
            if _hand_over(spare, prepared.payload):
                break
            kill_group(spare.pid)  # it died waiting: take a fresh one
            os.waitpid(spare.pid, 0)
            os.close(spare.result_fd)
        else:
            raise OSError("the candidate process exited before it received its task")
        wall = self.limits.wall_seconds if wall_seconds is None else wall_seconds
        return Running(prepared, Watch.start(spare.pid, spare.result_fd, started, wall))

    def replenish(self) -> None:
        """Fork and confine the next candidate's process now, if none is waiting.

        Called when the CPU is least busy with this harness's own work (after a judge);
        if it is never called, :meth:`launch` forks on demand.
        """
        if self._spare is None:
            with contextlib.suppress(OSError):  # fork refused now: launch will retry
                self._spare = self._fork_spare()

    def collect(
        self,
        running: Running,
        wake_fd: int | None = None,
        on_wake: Callable[[], bool] | None = None,
    ) -> None:
        """Read the candidate's frame until it is complete (see :func:`supervise.collect`)."""
        collect(running.watch, wake_fd, on_wake)

    def judge(self, running: Running) -> EvaluationOutcome:
        """Wait for the candidate's process to be gone, then classify how it ended."""
        try:
            end = reap(running.watch)
        finally:
            if running.prepared.path is not None:
                running.prepared.path.unlink(missing_ok=True)
        outcome, isolation = judge(end, running.prepared.nonce, self.limits)
        if isolation:
            self.last_isolation = isolation
        return outcome

    def restart_clock(self, running: Running) -> None:
        """Start a candidate's wall clock now: the one launched before it just finished."""
        running.watch.started = time.monotonic()

    def abandon(self, running: Running) -> None:
        """Kill and reap a launched candidate without judging it."""
        running.watch.timed_out = True
        self.judge(running)

    def probe(self) -> dict[str, Any]:
        """Confine one process that runs nothing, and report which layers took."""
        nonce = secrets.token_hex(16)
        payload = json.dumps({"nonce": nonce, "kind": "probe"}).encode()
        running = self.launch(Prepared(None, nonce, payload), _PROBE_SECONDS)
        collect(running.watch)
        parsed = parse_frame(reap(running.watch).data, nonce)
        if isinstance(parsed, dict) and parsed.get("kind") == "probe":
            self.last_isolation = parsed.get("isolation") or {}
            return self.last_isolation
        detail = parsed.get("detail") if isinstance(parsed, dict) else parsed
        return {"error": str(detail or "the probe process failed")}

    def _fork_spare(self) -> _Spare:
        task_read, task_write = os.pipe()
        result_read, result_write = os.pipe()
        gate_read, gate_write = os.pipe()
        wait_for, parent = self._gate, os.getpid()
        try:
            pid = os.fork()
        except OSError:
            for fd in (task_read, task_write, result_read, result_write, gate_read, gate_write):
                os.close(fd)
            raise
        if pid == 0:  # the candidate process; never returns
            try:
                for fd in (task_write, result_read, gate_read):
                    os.close(fd)
                self._candidate(task_read, result_write, (wait_for, gate_write), parent)
            finally:
                os._exit(_EXIT_HARNESS)
        for fd in (task_read, result_write, gate_write):
            os.close(fd)
        if wait_for >= 0:
            os.close(wait_for)
        self._gate = gate_read
        with contextlib.suppress(OSError):  # the child does it too; whoever is first
            os.setpgid(pid, pid)
        return _Spare(pid, task_write, result_read)

    def _candidate(
        self, task_fd: int, result_fd: int, gate: tuple[int, int], parent: int
    ) -> NoReturn:
        setup_error, isolation = "", {}
        wait_for, my_gate = gate
        try:
            ballast = mmap.mmap(-1, _BALLAST_BYTES)  # reserved address space, untouched
            keep = tuple(fd for fd in (task_fd, result_fd, wait_for, my_gate) if fd >= 0)
            isolation = confine_candidate(keep, self.limits, self.network, parent)
        except BaseException as exc:  # confinement failed: nothing untrusted may run
            setup_error = f"sandbox setup failed: {exc!r}"
        request = json.loads(_read_all(task_fd))
        if wait_for >= 0:  # the previous candidate is done (or gone): its gate closed
            select.select([wait_for], [], [])
            os.close(wait_for)
        frame: dict[str, Any] = {"nonce": request["nonce"], "isolation": isolation}
        if setup_error or request["kind"] == "probe":
            frame.update(kind="setup" if setup_error else "probe", detail=setup_error)
            _send_and_exit(result_fd, frame, my_gate)
        loader.activate(request["path"], request["code"], self.entrypoint)
        started = time.perf_counter()
        try:
            value = self._evaluate(request["path"], request["context"], request["stage"])
            frame.update(kind="result", value=value)
        except BaseException as exc:
            ballast.close()  # room to describe the failure if memory ran out
            frame.update(_describe_failure(exc))
        frame["seconds"] = time.perf_counter() - started
        tampered = _tampered(self._watch)
        if tampered:
            frame.update(kind="tampered", value=None, detail=tampered)
        _send_and_exit(result_fd, frame, my_gate)


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
    """Functions of the evaluator, its sibling modules and retune.evaluate, as bound now.

    Other threads may be importing meanwhile, growing ``sys.modules`` and the namespace of
    a module still running its body. Iterating either live (even through ``list(...)``)
    can be interrupted by a garbage collection that runs Python code and lets another
    thread in, so each is copied first with ``dict.copy``, which runs no Python code.
    """
    directory = os.path.dirname(os.path.abspath(getattr(evaluator, "__file__", "") or "."))
    watched = []
    for name, module in sys.modules.copy().items():
        path = getattr(module, "__file__", None) or ""
        if (
            module is evaluator
            or name.startswith("retune.evaluate")
            or (path and os.path.dirname(os.path.abspath(path)) == directory)
        ):
            namespace = vars(module)
            for key, value in namespace.copy().items():
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


def _send_and_exit(write_fd: int, frame: dict[str, Any], gate: int) -> NoReturn:
    try:
        try:
            data = json.dumps(frame, default=_jsonable, allow_nan=True).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            frame.update(kind="malformed", value=None, detail=f"the result is not JSON: {exc}")
            data = json.dumps(frame, default=repr).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view) :]
        os.close(write_fd)  # the frame is whole: the zygote may move on while we exit
        os.close(gate)  # and the next candidate may start
    finally:
        os._exit(0 if frame.get("kind") in ("result", "probe") else EXIT_REPORTED)
