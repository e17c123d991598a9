"""What an applied candidate comes to: the elite it makes, whether it simplifies the best,
and the history's word for why it made none. Pure functions."""

from __future__ import annotations

from retune.evaluate.contract import EvaluationResult
from retune.search.archive import Elite
from retune.search.program import program_size
from retune.search.state import Candidate


def elite_of(candidate: Candidate, result: EvaluationResult) -> Elite:
    """The archive entry of a candidate whose full evaluation gave ``result``."""
    quick = candidate.quick.result if candidate.quick else None
    return Elite(
        index=candidate.index,
        code=candidate.code or "",
        code_hash=candidate.code_hash or "",
        score=result.score,
        quick_score=quick.score if quick else None,
        quick_subscores=quick.subscores if quick else {},
        subscores=result.subscores,
        feedback=result.feedback,
        parent=candidate.parent,
        model=candidate.model,
        description=candidate.description,
    )


def smaller_at_same_score(best: Elite, elite: Elite) -> bool:
    """Whether ``elite`` scores as ``best`` from a smaller program (fewer syntax-tree
    nodes): a simplification that takes the best's place."""
    return elite.score == best.score and program_size(elite.code) < program_size(best.code)


def failure_of(candidate: Candidate) -> str:
    """Why an evaluated candidate has no full result: a no-op, stopped by the cascade, or
    its evaluation's failure."""
    if candidate.no_op:
        return "no-op"
    if candidate.cascade_rejected:
        return "cascade"
    outcome = candidate.full or candidate.quick
    return f"{outcome.failure}: {outcome.detail[:200]}" if outcome else "no outcome"
