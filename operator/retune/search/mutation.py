"""The mutator interface: how the engine asks for a new program.

The engine *plans* every mutation (parent, inspirations, tier, seed) with its own seeded
RNG, then hands the plan to a mutator. A mutator is deterministic given the request, so a
run with the same seed and the same model responses replays exactly; a slow mutator
(an LLM) may be called from several threads at once.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from retune.search.constants import Trial


class MutationKind(StrEnum):
    MUTATE = "mutate"  # an ordinary edit of the parent (cheap tier)
    PARADIGM = "paradigm"  # a bold rewrite (strong tier), on stagnation or on schedule
    INIT = "init"  # a structurally different seed for the initial population


class SearchPhase(StrEnum):
    """Which edits a mutation may use, set by the engine from ``search.explore``."""

    EXPLORE = "explore"  # the plain edits: every search's first evaluations
    REFINE = "refine"  # also constant tuning, crossover and the conditional bonus


class Inspiration(BaseModel):
    """Another elite shown to the mutator for contrast."""

    code: str
    score: float
    subscores: dict[str, float] = Field(default_factory=dict)


class MutationRequest(BaseModel):
    """One planned mutation."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    kind: MutationKind = MutationKind.MUTATE
    parent_code: str
    parent_score: float | None = None
    parent_subscores: dict[str, float] = Field(default_factory=dict)
    parent_feedback: str = ""
    inspirations: list[Inspiration] = Field(default_factory=list)
    seed: int  # drives every random choice the mutator makes
    candidate_index: int = 0
    phase: SearchPhase = SearchPhase.EXPLORE
    # programs that differ from the parent only in their numeric constants (the parent
    # among them once it is quick-scored), with their quick scores: what a constant tuner
    # fits; filled only when refining
    relatives: list[Trial] = Field(default_factory=list)


class MutationResult(BaseModel):
    """A mutator's answer: a new program, or the reason there is none."""

    code: str | None = None
    failure: str | None = None
    description: str = ""
    model: str | None = None  # which model wrote it; None for the built-in mutator
    duplicates: int = 0  # answers that held a program the engine already had (paid for)
    budget_exhausted: bool = False
    """No program, because the budget cannot pay for another call: the search stops
    planning new mutations."""

    @property
    def ok(self) -> bool:
        return self.code is not None


DuplicateCheck = Callable[[str], bool]


class MutatorRejected(Exception):
    """The mutator cannot work as configured: an endpoint refuses its requests (a wrong
    key, model name or parameter). The search stops and says so, rather than go on with a
    fallback the user did not ask for; ``path`` is the spec field to fix."""

    def __init__(self, message: str, path: str = "spec.search.models") -> None:
        super().__init__(message)
        self.path = path


class Mutator(Protocol):
    """Turns a planned mutation into a program (or a failure with a reason)."""

    @property
    def concurrency(self) -> int:
        """How many mutations may run at once."""
        ...

    def mutate(self, request: MutationRequest, is_duplicate: DuplicateCheck) -> MutationResult:
        """Return a new program for ``request``.

        ``is_duplicate(code)`` says whether a program is already known to the engine, so
        a mutator can try again instead of returning a program that would be skipped.
        Never raises for a bad answer from a model; that is a failed mutation. Raises
        :class:`MutatorRejected` only when no mutation can succeed as configured.
        """
        ...
