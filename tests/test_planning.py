"""The planner's choice of parents: once a search refines, its seed stays a parent even
after the archive has lost it; before that, only the archive's elites are parents."""

from __future__ import annotations

import random

from retune.search.archive import Archive, Elite
from retune.search.config import EngineConfig
from retune.search.planning import Planner
from retune.search.state import EngineState

SEED = "def decide(x):\n    return 0\n"
EXPLORE = 32


def elite(index: int, score: float) -> Elite:
    code = SEED if index == 0 else f"def decide(x):\n    return {index} if x > 1 else 0\n"
    return Elite(index=index, code=code, code_hash=str(index), score=score)


def parents_planned(evaluations: int, *, seed_kept: bool = False) -> list[int]:
    """The parents of 200 candidates planned from one state: six elites that all beat the
    seed, and the seed itself in the archive only with ``seed_kept``."""
    config = EngineConfig(explore=EXPLORE)
    archive = Archive.empty(config.structural, [], config.cells)
    for e in [elite(i, 0.4 + i / 100) for i in range(20, 26)]:
        archive.insert(e)
    if seed_kept:
        archive.insert(elite(0, 0.3))
    state = EngineState(
        fingerprint="",
        window=4,
        rng_state=[],
        archive=archive.state,
        applied=evaluations,
        next_index=evaluations,
        last_improvement=evaluations,
        last_paradigm=evaluations,
        seed_elite=elite(0, 0.3),
    )
    planner = Planner(config, state, archive, random.Random(7), SEED)
    return [planner.plan(evaluations + i).parent for i in range(200)]


def test_a_refining_search_keeps_its_seed_as_a_parent() -> None:
    parents = parents_planned(evaluations=EXPLORE)
    assert 0 in parents
    # One parent among seven, not the usual one: it scores below every elite.
    assert parents.count(0) < len(parents) / 7
    assert set(parents) > {0}


def test_an_exploring_search_keeps_to_its_archive() -> None:
    assert 0 not in parents_planned(evaluations=EXPLORE - 1)


def test_the_seed_is_not_added_twice_when_the_archive_kept_it() -> None:
    kept = parents_planned(evaluations=EXPLORE, seed_kept=True)
    lost = parents_planned(evaluations=EXPLORE)
    assert 0 in kept
    # The same draws pick from the same seven programs either way.
    assert kept.count(0) == lost.count(0)
