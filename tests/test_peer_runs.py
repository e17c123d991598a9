"""How the side-by-side benchmark counts retune's failed evaluations from its history."""

from __future__ import annotations

import sys

from retune.search.state import HistoryPoint
from tests.llm_server import REPO

sys.path.insert(0, str(REPO / "bench"))
from peer_runs import failed_evaluations


def point(
    index: int, evaluations: int, failure: str | None, score: float | None = None
) -> HistoryPoint:
    return HistoryPoint(
        index=index, evaluations=evaluations, score=score, best=0.5, usd=0.0, failure=failure
    )


def test_only_evaluations_that_gave_no_score_are_failures() -> None:
    history = [
        point(0, 1, None, 0.5),  # the seed
        point(1, 2, "cascade"),  # scored at the quick stage, too low to go on
        point(2, 3, "no-op"),  # scored at the quick stage exactly as its parent
        point(3, 3, "duplicate"),  # never evaluated
        point(4, 4, "PolicyError: priority() raised ZeroDivisionError"),
        point(5, 5, "Timeout"),
        point(6, 5, "mutation failed: budget"),  # never evaluated
    ]
    assert failed_evaluations(history) == 2
