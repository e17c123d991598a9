"""Planning a candidate: what it is (the seed, a warm program or a mutation), and for a
mutation its kind, parent, inspirations and request.

The planner reads the engine's state as the in-order application of results left it, and
moves only what planning owns (the last paradigm call, the random stream), so a run that
replays its results replays its plans.
"""

from __future__ import annotations

import random

from retune.search.archive import Archive, Elite
from retune.search.cascade import quick_margin
from retune.search.config import EngineConfig
from retune.search.constants import skeleton_hash
from retune.search.mutation import Inspiration, MutationKind, MutationRequest, SearchPhase
from retune.search.selection import choose_inspirations, choose_kind, choose_parent
from retune.search.state import Candidate, EngineState, Origin

# Answers repeating known programs, over a parent's children, after which ordinary
# mutations pick other parents (while there are any).
REPEATS_TO_EXHAUST = 2


class Planner:
    """Plans candidates for one engine, from its state, archive and random stream."""

    def __init__(
        self,
        config: EngineConfig,
        state: EngineState,
        archive: Archive,
        rng: random.Random,
        seed_code: str,
    ) -> None:
        self.config = config
        self.state = state
        self.archive = archive
        self.rng = rng
        self.seed_code = seed_code

    def plan(self, index: int) -> Candidate:
        state, config = self.state, self.config
        warm = state.warm_programs
        if index == 0:
            return Candidate(index=0, origin=Origin.SEED, code=self.seed_code)
        if index <= len(warm):
            return Candidate(index=index, origin=Origin.WARM, code=warm[index - 1])
        evaluations = state.applied - state.skipped_applied
        refining = config.explore is not None and evaluations >= config.explore
        elites = self._parents(refining)
        if index < config.initial_population:
            initial_strong = index - len(warm) <= config.tiering.initial_seeds
            kind = MutationKind.INIT if initial_strong else MutationKind.MUTATE
        else:
            kind = choose_kind(
                config.tiering, evaluations, state.last_improvement, state.last_paradigm
            )
            if kind is MutationKind.PARADIGM:
                state.last_paradigm = evaluations
        if elites:
            parent: Elite | None = choose_parent(
                elites, kind, self.rng, self._exhausted(), smaller_on_ties=refining
            )
            inspirations = choose_inspirations(elites, parent, self.rng) if parent else []
        else:  # only the seed is known so far, and it is still being scored
            parent, inspirations = None, []
        seed = self.rng.getrandbits(63)
        parent_skeleton = skeleton_hash(parent.code) if parent and refining else None
        request = MutationRequest(
            kind=kind,
            parent_code=parent.code if parent else self.seed_code,
            parent_score=parent.score if parent else None,
            parent_subscores=parent.subscores if parent else {},
            parent_feedback=parent.feedback if parent else "",
            inspirations=[
                Inspiration(code=e.code, score=e.score, subscores=e.subscores) for e in inspirations
            ],
            seed=seed,
            candidate_index=index,
            phase=SearchPhase.REFINE if refining else SearchPhase.EXPLORE,
            relatives=list(state.trials.get(parent_skeleton or "", [])),
        )
        return Candidate(
            index=index,
            kind=kind,
            parent=parent.index if parent else 0,
            parent_quick_score=parent.quick_score if parent else None,
            parent_quick_subscores=parent.quick_subscores if parent else {},
            quick_margin=self._quick_margin(parent.quick_score if parent else None),
            inspirations=[e.index for e in inspirations],
            seed=seed,
            request=request,
            known_below=state.applied,
        )

    def _parents(self, refining: bool) -> list[Elite]:
        """The programs a parent and its inspirations are chosen from: the archive's
        elites (the seed until there are any), and in a refining search the seed too
        when the archive lost it. The first edits that beat the seed take its niche, and
        can close the way out that starts from it: the seed stays a parent, one among
        the elites (and so an inspiration too: a crossover donor, a reference program in
        an LLM prompt)."""
        seed = self.state.seed_elite
        elites = self.archive.elites()
        if not elites:
            return [seed] if seed else []
        if seed and refining and all(e.index != seed.index for e in elites):
            return [*elites, seed]
        return elites

    def _quick_margin(self, reference: float | None) -> float | None:
        """How far below ``reference`` (a parent's quick score) a child's quick score may
        fall and still be evaluated in full; None without a reference."""
        if reference is None:
            return None
        return quick_margin(
            reference,
            self.state.quick_scores,
            threshold=self.config.quick_threshold,
            spread_factor=self.config.quick_spread,
        )

    def _exhausted(self) -> frozenset[int]:
        """Elites whose children's answers repeated known programs ``REPEATS_TO_EXHAUST``
        times: asking the same mutator about them again mostly buys the same programs."""
        counts = self.state.repeats_by_parent
        return frozenset(i for i, n in counts.items() if n >= REPEATS_TO_EXHAUST)
