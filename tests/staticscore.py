"""A test executor that scores programs by reading them, never by running them.

Engine tests need many cheap, deterministic scores; generated policies must never run
outside the sandbox, so this scorer only inspects the syntax tree: the score rewards
numeric constants near a target and penalises size, and "quick" is a noisy cheaper view.
"""

from __future__ import annotations

import ast
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from retune.evaluate.contract import (
    STAGE_QUICK,
    EvaluationOutcome,
    EvaluationResult,
    EvaluationTask,
    FailureReason,
)


def static_score(code: str, stage: str) -> EvaluationOutcome:
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return EvaluationOutcome.failed(FailureReason.SYNTAX, exc.msg)
    constants = [
        float(n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and type(n.value) in (int, float)
    ]
    size = sum(1 for _ in ast.walk(tree))
    if "fail_me" in code:
        return EvaluationOutcome.failed(FailureReason.EXCEPTION, "asked to fail")
    closeness = -sum(min(abs(c - 7.0), 10.0) for c in constants) / max(1, len(constants))
    a = closeness
    b = -0.01 * size
    score = a + b if stage != STAGE_QUICK else a + b + 0.05 * (len(constants) % 3)
    return EvaluationOutcome(result=EvaluationResult(score=score, subscores={"a": a, "b": b}))


class StaticExecutor:
    """Scores on a small thread pool; records every task it was given."""

    def __init__(self, workers: int = 2) -> None:
        self._pool = ThreadPoolExecutor(workers)
        self.tasks: list[EvaluationTask] = []
        self._lock = threading.Lock()
        self.capacity = workers

    def submit(self, task: EvaluationTask) -> Future[EvaluationOutcome]:
        with self._lock:
            self.tasks.append(task)
        return self._pool.submit(static_score, task.policy_code, task.stage)

    def close(self) -> None:
        self._pool.shutdown()
