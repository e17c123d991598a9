"""The cascade's screen: which children of a parent are worth a full evaluation.

A child is scored on the evaluator's ``quick`` stage first; it goes on to the ``full``
stage only if its quick score is within a margin of its parent's. A margin that is a fixed
share of the parent's score (``quickThreshold``, 0.9 = 10 % below the parent) screens
nothing when every program scores within a few per cent of the seed, which is the usual
case once a search is under way. So the margin also adapts to the spread of the quick
scores the search has seen: it is the tighter of the fixed share and ``quickSpread``
robust standard deviations (1.4826 x the median absolute deviation, which a few broken
programs scoring 0 do not inflate) of the recent quick scores.

Once a search refines (``search.explore``), a child whose quick result equals its
parent's, score and every subscore to the last digit, is a no-op: with a deterministic
evaluator it decides exactly as its parent does, so its full evaluation is not run.
Unless it is a smaller program than its parent: such a *simplification* (a clause that
never decides dropped, say) is evaluated in full and, scoring as its parent, takes its
parent's place in the archive. Some ideas take two edits whose first alone changes
nothing; a search that drops neutral simplifications never takes the second step.

The margin is fixed when a candidate is planned, from scores applied in index order, so a
run still depends only on its seed and what the evaluator returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from statistics import median

from retune.evaluate.contract import EvaluationResult
from retune.search.mutation import SearchPhase
from retune.search.program import program_size
from retune.search.state import Candidate

# Quick scores kept for the spread, and how many are needed before it is trusted.
RECENT_QUICK_SCORES = 64
MIN_QUICK_SCORES = 8
MAD_TO_SIGMA = 1.4826  # the MAD of a normal distribution times this is its sigma


def robust_spread(scores: Sequence[float]) -> float:
    """A standard deviation estimated from the median absolute deviation of ``scores``."""
    centre = median(scores)
    return MAD_TO_SIGMA * median(abs(score - centre) for score in scores)


def quick_margin(
    reference: float, recent: Sequence[float], *, threshold: float, spread_factor: float
) -> float:
    """How far below ``reference`` (the parent's quick score) a child's quick score may be.

    ``threshold`` is the fixed share (``cascade.quickThreshold``); ``spread_factor`` the
    number of robust standard deviations of the ``recent`` quick scores
    (``cascade.quickSpread``; 0 turns the adaptive part off). Until ``MIN_QUICK_SCORES``
    scores are in, only the fixed share applies.
    """
    fixed = (1.0 - threshold) * abs(reference)
    if spread_factor <= 0 or len(recent) < MIN_QUICK_SCORES:
        return fixed
    return min(fixed, spread_factor * robust_spread(recent[-RECENT_QUICK_SCORES:]))


def passes_screen(quick_score: float, reference: float | None, margin: float) -> bool:
    """Whether a child with ``quick_score`` goes on to the full evaluation."""
    return reference is None or quick_score >= reference - margin


def is_no_op(
    quick: EvaluationResult, parent_score: float | None, parent_subscores: dict[str, float]
) -> bool:
    """Whether a child's ``quick`` result is its parent's quick result, score and every
    subscore; never for a parent with no quick result or a result with no subscores."""
    return (
        parent_score is not None
        and quick.score == parent_score
        and bool(quick.subscores)
        and quick.subscores == parent_subscores
    )


class Verdict(StrEnum):
    """What a mutation's quick result decides."""

    FULL = "full"  # evaluate in full
    SIMPLER = "simpler"  # a no-op smaller than its parent: evaluate in full, keep on ties
    NO_OP = "no-op"  # decides as its parent: not evaluated in full
    STOP = "cascade"  # too far below its parent: not evaluated in full


def verdict(candidate: Candidate, threshold: float) -> Verdict:
    """The cascade's verdict on a mutation whose quick evaluation succeeded.

    ``threshold`` is the fixed share, used for candidates planned before margins adapted.
    Only a refining child can be a no-op; the seed and warm programs have no quick result
    (they go straight to the full stage), so their children never are.
    """
    quick = candidate.quick.result if candidate.quick else None
    assert quick is not None
    request = candidate.request
    refining = request is not None and request.phase is SearchPhase.REFINE
    if refining and is_no_op(quick, candidate.parent_quick_score, candidate.parent_quick_subscores):
        assert request is not None and candidate.code is not None
        if program_size(candidate.code) < program_size(request.parent_code):
            return Verdict.SIMPLER
        return Verdict.NO_OP
    reference = candidate.parent_quick_score
    margin = candidate.quick_margin
    if margin is None and reference is not None:
        margin = (1.0 - threshold) * abs(reference)
    return Verdict.FULL if passes_screen(quick.score, reference, margin or 0.0) else Verdict.STOP
