"""Choosing what to mutate next: the parent, its inspirations and the mutation kind."""

from __future__ import annotations

import random

from pydantic import BaseModel

from retune.search.archive import Elite
from retune.search.mutation import MutationKind
from retune.search.program import program_size


class Tiering(BaseModel):
    """When to ask for a paradigm shift instead of an ordinary mutation."""

    stagnation_evaluations: int = 40
    paradigm_every: int = 100
    initial_seeds: int = 3


def choose_kind(
    tiering: Tiering, evaluations: int, last_improvement: int, last_paradigm: int
) -> MutationKind:
    """PARADIGM when the best has not moved for a while, or on schedule; else MUTATE."""
    stagnant = evaluations - max(last_improvement, last_paradigm)
    if tiering.stagnation_evaluations and stagnant >= tiering.stagnation_evaluations:
        return MutationKind.PARADIGM
    if tiering.paradigm_every and evaluations - last_paradigm >= tiering.paradigm_every:
        return MutationKind.PARADIGM
    return MutationKind.MUTATE


def choose_parent(
    elites: list[Elite],
    kind: MutationKind,
    rng: random.Random,
    exhausted: frozenset[int] = frozenset(),
    *,
    smaller_on_ties: bool = False,
) -> Elite:
    """Mostly exploit (a tournament on score), sometimes explore (any niche).

    An ordinary mutation skips the ``exhausted`` elites (their children's answers kept
    repeating known programs: what the mutator makes of them is used up) while others
    remain. A tournament's tie goes to the earlier program, or with ``smaller_on_ties``
    (a refining search) to the smaller one.
    """
    if kind is MutationKind.PARADIGM:
        ranked = sorted(elites, key=lambda e: (-e.score, e.index))
        return rng.choice(ranked[: max(1, len(ranked) // 4)])
    pool = [e for e in elites if e.index not in exhausted] or elites
    if rng.random() < 0.65:
        contenders = [rng.choice(pool) for _ in range(min(3, len(pool)))]
        if smaller_on_ties:
            return max(contenders, key=lambda e: (e.score, -program_size(e.code), -e.index))
        return max(contenders, key=lambda e: (e.score, -e.index))
    return rng.choice(pool)


def choose_inspirations(
    elites: list[Elite], parent: Elite, rng: random.Random, count: int = 2
) -> list[Elite]:
    """Other niches' programs, shown to an LLM mutator for contrast."""
    others = [e for e in elites if e.index != parent.index]
    return rng.sample(others, min(count, len(others)))
