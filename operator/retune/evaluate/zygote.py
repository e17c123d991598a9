"""The worker process of the local executor: a zygote that forks one child per candidate.

It starts as a fresh interpreter with a minimal environment, reads its configuration
line, leaves the network, answers ``{"importing": true}``, imports the evaluator, probes
the confinement, and answers ``{"ready": ...}``. Then it reads ``{"seq", "task"}`` lines and answers ``{"seq",
"outcome"}`` lines. Tasks that arrive while a candidate runs are checked and prepared at
once and handed to the next (already confined) process, which starts the moment the
running candidate is done; the zygote then reaps and judges the finished one.
"""

from __future__ import annotations

import gc
import json
import os
import select
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retune.evaluate.confine import die_with_parent, isolate_process_network
from retune.evaluate.contract import (
    EvaluationContext,
    EvaluationOutcome,
    EvaluationTask,
    FailureReason,
    SandboxLimits,
)
from retune.evaluate.loader import load_evaluator
from retune.evaluate.sandbox import Prepared, Running, SandboxHarness

Send = Callable[[dict[str, Any]], None]


class _Inbox:
    """Lines from the executor, read without blocking while a candidate runs."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.closed = False

    def pull(self) -> bool:
        """Read what is available now; False once the executor has gone."""
        readable = select.select([self.fd], [], [], 0)[0]
        chunk = os.read(self.fd, 1 << 16) if readable else None
        if chunk == b"":
            self.closed = True
        elif chunk:
            self.buffer += chunk
        return not self.closed

    def wait(self) -> None:
        select.select([self.fd], [], [])
        self.pull()

    def lines(self) -> list[bytes]:
        *complete, self.buffer = self.buffer.split(b"\n")
        return [line for line in complete if line.strip()]


class _Pipeline:
    """Runs tasks in arrival order, each handed over before the previous one is reaped.

    While a candidate runs, the next task is checked, written and handed to the waiting
    process, which starts it the moment the running candidate closes its gate.
    """

    def __init__(self, harness: SandboxHarness, inbox: _Inbox, send: Send) -> None:
        self.harness = harness
        self.inbox = inbox
        self.send = send
        self.ready: deque[tuple[int, Prepared]] = deque()
        self.queued: tuple[int, Running] | None = None  # handed over, behind the running one
        self.busy = False

    def take(self) -> bool:
        """Take in the tasks that arrived; False once the executor has gone."""
        alive = self.inbox.pull()
        for line in self.inbox.lines():
            message = json.loads(line)
            seq = int(message["seq"])
            try:
                prepared = self.harness.prepare(EvaluationTask.model_validate(message["task"]))
            except Exception as exc:  # disk full, a task that does not validate, ...
                prepared = _infrastructure(exc)
            if isinstance(prepared, EvaluationOutcome):
                self._reply(seq, prepared)  # refused statically: no process needed
            else:
                self.ready.append((seq, prepared))
        if self.busy and self.queued is None and self.ready:
            self.queued = self._launch_next()
        return alive

    def serve(self) -> None:
        running: tuple[int, Running] | None = None
        while True:
            if running is None:
                while not self.ready:
                    if self.inbox.closed:
                        return
                    self.inbox.wait()
                    self.take()
                running = self._launch_next()
                continue
            seq, current = running
            wake = None if self.inbox.closed else self.inbox.fd
            self.busy = True
            try:
                self.harness.collect(current, wake, self.take)
            finally:
                self.busy = False
            if self.queued is not None:
                running, self.queued = self.queued, None
                self.harness.restart_clock(running[1])
            else:
                running = self._launch_next() if self.ready else None
            try:
                outcome = self.harness.judge(current)
            except Exception as exc:
                outcome = _infrastructure(exc)
            self._reply(seq, outcome)
            self.harness.replenish()

    def _launch_next(self) -> tuple[int, Running] | None:
        seq, prepared = self.ready.popleft()
        try:
            return seq, self.harness.launch(prepared)
        except Exception as exc:  # fork refused, ...
            self._reply(seq, _infrastructure(exc))
            return None

    def _reply(self, seq: int, outcome: EvaluationOutcome) -> None:
        self.send({"seq": seq, "outcome": outcome.model_dump(mode="json")})


def _infrastructure(exc: BaseException) -> EvaluationOutcome:
    return EvaluationOutcome.failed(FailureReason.INFRASTRUCTURE, f"the harness failed: {exc!r}")


def serve_worker() -> None:
    """A worker's main loop (runs in its own interpreter; see ``LocalExecutor``)."""
    die_with_parent()
    inbox = _Inbox(os.dup(0))
    replies = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # stray prints (the evaluator's) go to stderr, never into the protocol

    def send(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message).encode() + b"\n")
        replies.flush()

    try:
        while not (lines := inbox.lines()):
            inbox.wait()
            if inbox.closed:
                return
        config = json.loads(lines[0])
        network = isolate_process_network()
        policy_dir = Path(config["policy_dir"])
        policy_dir.mkdir(mode=0o711, exist_ok=True)
        send({"importing": True})  # the executor's import deadline starts now
        evaluator = load_evaluator(config["evaluator"])
        harness = SandboxHarness(
            evaluator,
            config["entrypoint"],
            SandboxLimits.model_validate(config["limits"]),
            enforce_allowlist=bool(config["enforce_allowlist"]),
            network=network,
            policy_dir=policy_dir,
        )
        isolation = harness.probe()
        EvaluationContext().model_dump(mode="json")  # build lazy serializers before forking
        gc.freeze()  # keep the collector from touching (and copying) the zygote's objects
    except BaseException as exc:
        send({"error": str(exc) or repr(exc)})
        raise SystemExit(1) from None
    send({"ready": True, "isolation": isolation})
    pipeline = _Pipeline(harness, inbox, send)
    inbox.buffer = b"".join(line + b"\n" for line in lines[1:]) + inbox.buffer
    pipeline.take()
    pipeline.serve()
