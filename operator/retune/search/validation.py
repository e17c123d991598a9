"""Validation before rollout: the best candidate against the stable policy on held-out
seeds of the full evaluation. Only a clear win, no worse on any required subscore, passes."""

from __future__ import annotations

from pydantic import BaseModel, Field

from retune.evaluate.contract import (
    STAGE_HOLDOUT,
    EvaluationContext,
    EvaluationOutcome,
    EvaluationResult,
    EvaluationTask,
    Executor,
)


class ValidationReport(BaseModel):
    passed: bool
    candidate_score: float | None
    stable_score: float | None
    improvement: float | None  # relative to |stable score|
    # subscore name -> (candidate, stable): every subscore both reported, the required
    # ones among them (the evidence a person approving a revision reads)
    subscores: dict[str, tuple[float, float]] = Field(default_factory=dict)
    reasons: list[str] = Field(default_factory=list)


def relative_improvement(candidate: float, stable: float) -> float:
    return (candidate - stable) / max(abs(stable), 1e-12)


def validate(
    executor: Executor,
    context: EvaluationContext,
    *,
    candidate_code: str,
    stable_code: str,
    min_improvement: float,
    required_subscores: list[str],
    seeds: int = 3,
) -> ValidationReport:
    """Re-score both programs on ``seeds`` held-out seeds, side by side, and decide.

    Each program's held-out score is the mean over the seeds; so are its subscores.
    """
    tasks = {
        (name, k): executor.submit(
            EvaluationTask(
                task_id=f"validate-{name}-{k}",
                policy_code=code,
                context=context.model_copy(update={"seed": context.seed + 1 + k}),
                stage=STAGE_HOLDOUT,
            )
        )
        for name, code in (("candidate", candidate_code), ("stable", stable_code))
        for k in range(seeds)
    }
    outcomes = {key: future.result() for key, future in tasks.items()}
    candidate = _mean_outcome([outcomes["candidate", k] for k in range(seeds)])
    stable = _mean_outcome([outcomes["stable", k] for k in range(seeds)])
    reasons = []
    if candidate.result is None:
        reasons.append(
            f"candidate failed on held-out seeds: {candidate.failure}: {candidate.detail[:200]}"
        )
    if stable.result is None:
        reasons.append(
            f"stable policy failed on held-out seeds: {stable.failure}: {stable.detail[:200]}"
        )
    if candidate.result is None or stable.result is None:
        return ValidationReport(
            passed=False,
            candidate_score=candidate.result.score if candidate.result else None,
            stable_score=stable.result.score if stable.result else None,
            improvement=None,
            reasons=reasons,
        )
    improvement = relative_improvement(candidate.result.score, stable.result.score)
    if improvement < min_improvement:
        reasons.append(
            f"improvement {improvement:+.2%} on held-out seeds is below the required {min_improvement:.2%}"
        )
    subscores = {}
    for name in required_subscores:
        ours = candidate.result.subscores.get(name)
        theirs = stable.result.subscores.get(name)
        if ours is None or theirs is None:
            reasons.append(f"required subscore {name!r} was not reported by the evaluator")
            continue
        subscores[name] = (ours, theirs)
        if ours < theirs:
            reasons.append(
                f"worse than the stable policy on required subscore {name!r}: {ours:.4f} < {theirs:.4f}"
            )
    for name in sorted(set(candidate.result.subscores) & set(stable.result.subscores)):
        subscores.setdefault(
            name, (candidate.result.subscores[name], stable.result.subscores[name])
        )
    return ValidationReport(
        passed=not reasons,
        candidate_score=candidate.result.score,
        stable_score=stable.result.score,
        improvement=improvement,
        subscores=subscores,
        reasons=reasons,
    )


def _mean_outcome(outcomes: list[EvaluationOutcome]) -> EvaluationOutcome:
    """The mean of several seeds' results; the first failure if any seed failed."""
    for outcome in outcomes:
        if outcome.result is None:
            return outcome
    results = [o.result for o in outcomes if o.result is not None]
    names = set.intersection(*(set(r.subscores) for r in results))
    return EvaluationOutcome(
        result=EvaluationResult(
            score=sum(r.score for r in results) / len(results),
            subscores={
                n: sum(r.subscores[n] for r in results) / len(results) for n in sorted(names)
            },
        )
    )
