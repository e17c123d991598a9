"""The engine's complete state: what a checkpoint holds and a resume restores."""

from __future__ import annotations

import json
import zlib
from enum import StrEnum

from pydantic import BaseModel, Field, model_validator

from retune.evaluate.contract import EvaluationOutcome
from retune.search.archive import ArchiveState, Elite
from retune.search.constants import Trial
from retune.search.ledger import LedgerState
from retune.search.mutation import MutationKind, MutationRequest

CHECKPOINT_VERSION = 1


class Stage(StrEnum):
    PLANNED = "planned"  # parent and seed chosen; mutation not done
    MUTATED = "mutated"  # program written; waiting for its in-order dedup check
    QUICK = "quick"  # quick (cascade) evaluation in flight
    FULL = "full"  # full evaluation in flight
    DONE = "done"  # finished; waiting to be applied in order


class Origin(StrEnum):
    SEED = "seed"
    WARM = "warm"  # an elite of an earlier search, re-scored here
    MUTATION = "mutation"


class StopReason(StrEnum):
    """Why a search stopped: the budget it reached."""

    EVALUATIONS = "evaluation budget reached"
    USD = "USD budget reached"
    WALL_TIME = "wall-time budget reached"


class Candidate(BaseModel):
    """One planned program, from plan to verdict."""

    index: int
    origin: Origin = Origin.MUTATION
    kind: MutationKind = MutationKind.MUTATE
    parent: int | None = None
    parent_quick_score: float | None = None
    parent_quick_subscores: dict[str, float] = Field(default_factory=dict)
    # how far below its parent's quick score this child may be and still get the full
    # evaluation; fixed when planned (None in checkpoints older than the adaptive screen)
    quick_margin: float | None = None
    seed: int = 0
    inspirations: list[int] = Field(default_factory=list)
    request: MutationRequest | None = None  # kept so a resume asks for the same mutation
    known_below: int = 0  # programs of candidates below this count as known duplicates
    stage: Stage = Stage.PLANNED
    code: str | None = None
    code_hash: str | None = None
    model: str | None = None
    description: str = ""
    duplicates: int = 0  # answers for it that repeated a known program
    skipped: str | None = None  # why it was never evaluated (duplicate, failed mutation)
    budget_exhausted: bool = False  # its mutation failed because the budget is spent
    cascade_rejected: bool = False
    no_op: bool = False  # its quick result was its parent's: not evaluated in full
    simpler: bool = False  # ... but it is smaller than its parent: evaluated in full
    quick: EvaluationOutcome | None = None
    full: EvaluationOutcome | None = None

    @property
    def evaluated(self) -> bool:
        return self.skipped is None

    @property
    def score(self) -> float | None:
        return self.full.result.score if self.full and self.full.result else None


class HistoryPoint(BaseModel):
    """One applied candidate, for progress reports and the report's plot."""

    index: int
    evaluations: int
    score: float | None
    best: float | None
    usd: float
    kept: bool = False
    failure: str | None = None


class EngineState(BaseModel):
    version: int = CHECKPOINT_VERSION
    fingerprint: str  # of the configuration; a resume with another one is refused
    window: int
    rng_state: list[object]
    next_index: int = 0  # the next candidate to plan
    checked: int = 0  # candidates below this passed the in-order dedup check
    applied: int = 0  # candidates below this are applied to the archive
    pending: dict[int, Candidate] = Field(default_factory=dict)
    seen: dict[str, int] = Field(default_factory=dict)  # normalised hash -> candidate index
    archive: ArchiveState
    ledger: LedgerState = Field(default_factory=LedgerState)
    history: list[HistoryPoint] = Field(default_factory=list)
    best: Elite | None = None  # the run's best: this search's or its free start's
    # the best score this search's own candidates reached: what its stagnation rule counts
    # from (the free start's best aside, so a free start leaves the search as it was)
    best_found: float | None = None
    seed_elite: Elite | None = None
    # elites of an earlier search, re-scored first (candidates 1..n): kept, so a resume
    # plans the ones not yet planned as they were meant to be
    warm_programs: list[str] = Field(default_factory=list)
    skipped_applied: int = 0  # applied candidates that were never evaluated
    last_improvement: int = 0  # evaluations count when the best last improved
    last_paradigm: int = 0  # evaluations count at the last paradigm call
    # the free start (``spec.search.freeStart``): a search of the built-in edits of its
    # own, run before this one, its state kept here so a resume finds it
    free_start: EngineState | None = None
    usd_exhausted: bool = False
    # parent index -> answers for its children that repeated a known program (applied
    # candidates only, so a replay counts the same)
    repeats_by_parent: dict[int, int] = Field(default_factory=dict)
    # quick scores of the latest applied candidates, in index order: the spread the
    # cascade's screen adapts to
    quick_scores: list[float] = Field(default_factory=list)
    # skeleton hash -> the latest quick-scored programs of that skeleton (their numeric
    # constants and quick score), in index order
    trials: dict[str, list[Trial]] = Field(default_factory=dict)
    stop_reason: StopReason | None = None

    @model_validator(mode="after")
    def _best_found(self) -> EngineState:
        # Checkpoints from before ``best_found``: without a free start, the best is the
        # search's own.
        if self.best_found is None and self.best is not None and self.free_start is None:
            self.best_found = self.best.score
        return self

    @property
    def best_name(self) -> str | None:
        """How the run's best is named in the status and in Events: ``c12``, the
        search's candidate 12 (the seed is ``c0``), or ``f12``, its free start's."""
        if self.best is None:
            return None
        return f"{'f' if self.best_from_free_start else 'c'}{self.best.index}"

    @property
    def best_from_free_start(self) -> bool:
        """Whether the run's best is its free start's: the search never reached it."""
        if self.free_start is None or self.best is None:
            return False
        return self.best_found is None or self.best.score > self.best_found


def encode_state(state: EngineState) -> bytes:
    return zlib.compress(state.model_dump_json().encode(), level=6)


def decode_state(document: bytes) -> EngineState:
    data = json.loads(zlib.decompress(document))
    if not isinstance(data, dict):
        raise ValueError(f"not a retune checkpoint (a JSON {type(data).__name__})")
    if data.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint version {data.get('version')} is not {CHECKPOINT_VERSION}")
    return EngineState.model_validate(data)
