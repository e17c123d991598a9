"""The evaluator contract shared by every executor.

An evaluator is a Python module exposing::

    evaluate(policy_path: str, profile: dict, stage: str) -> dict

returning ``{"score": float, "subscores": {name: float}, "metrics": {name: float},
"feedback": str}``; higher scores are better. ``profile`` is an
:class:`EvaluationContext` dumped to a plain dict (the workload profile, the hardware,
the evaluator's own parameters and a seed). ``stage`` names how much to evaluate:
``"quick"`` (a cheap screen used by the cascade), ``"full"`` (everything), or
``"holdout"`` (the full evaluation on held-out seeds, used for validation before
rollout). A *stage* is how much of the problem is run; a *subscore* is one named part of
the result (``subscores``), which validation's ``requiredSubscores`` refer to. See
docs/evaluator.md.

The same contract runs in the local process pool and in evaluation pods.
"""

from __future__ import annotations

import math
from concurrent.futures import Future
from enum import StrEnum
from typing import Any, Protocol

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

STAGE_QUICK = "quick"
STAGE_FULL = "full"
STAGE_HOLDOUT = "holdout"


class EvaluationContext(BaseModel):
    """Everything an evaluator is told about the deployment it scores for."""

    model_config = ConfigDict(extra="forbid")

    workload: dict[str, float] = Field(default_factory=dict)
    hardware: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0


class EvaluationResult(BaseModel):
    """What an evaluator returns; validated at the boundary, so a malformed return fails."""

    model_config = ConfigDict(extra="forbid")

    score: float
    subscores: dict[str, float] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    feedback: str = ""

    @field_validator("score")
    @classmethod
    def _finite_score(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("score must be a finite number")
        return value

    @field_validator("subscores", "metrics")
    @classmethod
    def _finite_values(cls, values: dict[str, float]) -> dict[str, float]:
        for key, value in values.items():
            if not math.isfinite(value):
                raise ValueError(f"{key} must be a finite number")
        return values


class FailureReason(StrEnum):
    """Why a candidate produced no score. Each is a failed candidate, never a failed run."""

    REJECTED = "rejected"  # the static allowlist refused the program
    SYNTAX = "syntax"  # the program does not parse
    TIMEOUT = "timeout"  # wall-time limit
    CPU = "cpu"  # CPU-time limit
    MEMORY = "memory"  # memory limit
    CRASH = "crash"  # the process died (signal, non-zero exit, no result)
    EXCEPTION = "exception"  # the evaluator or the policy raised
    MALFORMED = "malformed"  # the evaluator returned something that is not a result
    CANCELLED = "cancelled"  # the run stopped before the candidate finished
    INFRASTRUCTURE = "infrastructure"  # the executor itself failed (pod lost, ...)


class EvaluationOutcome(BaseModel):
    """The harness's verdict on one candidate evaluation."""

    model_config = ConfigDict(extra="forbid")

    result: EvaluationResult | None = None
    failure: FailureReason | None = None
    detail: str = ""
    evaluator_seconds: float = 0.0  # time spent inside evaluate() itself

    @property
    def ok(self) -> bool:
        return self.result is not None

    @classmethod
    def failed(cls, reason: FailureReason, detail: str, seconds: float = 0.0) -> EvaluationOutcome:
        return cls(failure=reason, detail=detail[:2000], evaluator_seconds=seconds)


class EvaluationTask(BaseModel):
    """One candidate to score: the program text, the context and the evaluation stage."""

    model_config = ConfigDict(extra="forbid")

    task_id: str
    policy_code: str
    context: EvaluationContext
    # "subset" is the field's old name, still read from tasks written by older versions
    stage: str = Field(default=STAGE_FULL, validation_alias=AliasChoices("stage", "subset"))


class SandboxLimits(BaseModel):
    """Resource limits applied to every candidate process."""

    model_config = ConfigDict(extra="forbid")

    wall_seconds: float = Field(default=30.0, gt=0)
    cpu_seconds: float = Field(default=30.0, gt=0)
    memory_mb: int = Field(default=1024, gt=16)


class Executor(Protocol):
    """Runs evaluation tasks somewhere and reports each outcome through a future.

    Implementations never raise for a bad candidate: every problem with the candidate
    becomes a failed :class:`EvaluationOutcome`.
    """

    @property
    def capacity(self) -> int:
        """How many tasks can usefully run at once."""
        ...

    def submit(self, task: EvaluationTask) -> Future[EvaluationOutcome]: ...

    def close(self) -> None: ...
