"""Where a search is wired: the one place local mode, the operator and the benchmarks
build the engine.

A :class:`SearchBuilder` turns a target's spec (and what the caller overrides: budget,
seed, mutator, model tiers) into the engine's configuration, then the ledger, the
mutator (the built-in one, or the LLM tiers with it as their fallback) and the engine
itself, on the executor and store the caller runs it with. Running it gives a
:class:`SearchResult`; :func:`validate_best` re-scores that result's best against the seed
policy on held-out seeds.

The steps are separate because the operator needs each one's answer before the next: the
configuration's fingerprint to decide whether its checkpoint may be resumed, the ledger
to report a baseline, the mutator (whose keys may be missing) before it starts pods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from retune.evaluate.contract import EvaluationContext, Executor
from retune.evaluate.parameters import seed_problem, values_only_problem
from retune.search.archive import Archive, Elite
from retune.search.builtin import FreeMutations
from retune.search.config import EngineConfig, builtin_mutator, engine_config, free_start_of
from retune.search.engine import Engine, Progress, SearchConfigError
from retune.search.journal import Journal
from retune.search.ledger import Budget, Ledger, LedgerState
from retune.search.mutation import Mutator
from retune.search.state import EngineState, StopReason
from retune.search.validation import ValidationReport, validate
from retune.spec import ApiKeySource, EvaluatorSpec, ModelTier, TargetSpec
from retune.store.base import Store

ApiKeyResolver = Callable[[ApiKeySource], str | None]


@dataclass(frozen=True)
class SearchSetup:
    """What a search starts from, beyond its spec: ``None`` means the spec's own."""

    spec: TargetSpec
    context: EvaluationContext
    """What the evaluator is told: the workload profile, the hardware, the params."""
    seed_code: str
    """The program the search starts from."""
    evaluator_identity: str = ""
    """The evaluator's source (or, in a cluster, its image and command): a checkpoint
    made with another evaluator is never resumed."""
    budget: Budget | None = None
    seed: int | None = None
    """In place of ``spec.search.seed``."""
    seed_offset: int = 0
    """Added to the engine's seed only (a retune plans differently from the first search;
    the model tiers keep the run's seed)."""
    mutator: str | None = None
    """``builtin`` or ``llm`` in place of ``spec.search.mutator``; part of the checkpoint's
    identity when given."""
    models: list[ModelTier] | None = None
    """The LLM tiers in place of ``spec.search.models``."""

    @property
    def mutator_kind(self) -> str:
        return self.mutator or self.spec.search.mutator


@dataclass(frozen=True)
class SearchResult:
    """A finished (or stopped) search: its final state and why it stopped."""

    state: EngineState
    config: EngineConfig

    @property
    def stop_reason(self) -> StopReason:
        assert self.state.stop_reason is not None, "a search that ran has a stop reason"
        return self.state.stop_reason

    @property
    def ledger(self) -> LedgerState:
        return self.state.ledger

    @property
    def best(self) -> Elite:
        assert self.state.best is not None, "a search that ran has scored its seed"
        return self.state.best

    @property
    def seed_elite(self) -> Elite:
        assert self.state.seed_elite is not None, "a search that ran has scored its seed"
        return self.state.seed_elite

    @property
    def improved(self) -> bool:
        """Whether a program other than the seed is the best."""
        return self.best.index != self.seed_elite.index

    def elites(self, limit: int | None = None) -> list[str]:
        """The archive's programs, best first (what a warm start re-scores)."""
        return warm_programs(self.state, limit)


class Search:
    """A built search, ready to run on its executor and store."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def state(self) -> EngineState:
        """The state so far (progress reports read it while the search runs)."""
        return self._engine.state

    @property
    def config(self) -> EngineConfig:
        return self._engine.config

    def run(self) -> SearchResult:
        """Search until a budget is reached (or resume a search that was stopped)."""
        return SearchResult(self._engine.run(), self._engine.config)


class SearchBuilder:
    """Builds one search from a :class:`SearchSetup`, step by step."""

    def __init__(self, setup: SearchSetup) -> None:
        self.setup = setup
        self.config = engine_config(
            setup.spec,
            setup.context,
            seed_code=setup.seed_code,
            evaluator_source=setup.evaluator_identity,
            budget=setup.budget,
            seed=(setup.spec.search.seed if setup.seed is None else setup.seed) + setup.seed_offset,
        )
        if setup.mutator is not None:
            self.config.fingerprint += f"-{setup.mutator}"
            self.config.free_start = free_start_of(setup.spec, setup.mutator)

    @property
    def budget(self) -> Budget:
        return self.config.budget

    def ledger(self, journal: Journal | None = None) -> Ledger:
        """A ledger of this search's budget; ``journal`` writes its spending ahead."""
        return Ledger(self.config.budget, journal=journal)

    def mutator(
        self,
        ledger: Ledger,
        *,
        audit_path: Path | None = None,
        resolve_api_key: ApiKeyResolver | None = None,
    ) -> Mutator:
        """The built-in mutator, or the LLM tiers paid from ``ledger`` with the built-in
        one as their fallback and for the free mutations (a share once the search
        refines). Keys come from ``resolve_api_key`` (by default the
        environment); raises :class:`~retune.search.llm.LLMConfigError` naming the field
        when a tier cannot be used."""
        setup = self.setup
        policy = setup.spec.policy
        fallback = builtin_mutator(policy)
        if setup.mutator_kind != "llm":
            return fallback
        from retune.search.llm import build_llm_mutator

        search = setup.spec.search
        if setup.models is not None:
            search = search.model_copy(update={"models": setup.models})
        # An unset seed and seed 0 both leave the tiers on the spec's seed, as runs have
        # always been seeded; the engine takes the given seed as it is.
        models = build_llm_mutator(
            search,
            policy,
            ledger,
            fallback,
            audit_path,
            setup.seed or search.seed,
            resolve_api_key,
        )
        # Parameter-only policies have no program constants to tune but their parameters.
        if fallback.parameters or not search.free_share:
            return models
        return FreeMutations(models, search.free_share, edits=fallback)

    def build(
        self,
        *,
        executor: Executor,
        store: Store,
        ledger: Ledger | None = None,
        mutator: Mutator | None = None,
        warm_programs: list[str] | None = None,
        resume: bool = False,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> Search:
        """The search on ``executor``, checkpointing to ``store``: resumed from the store
        when ``resume`` (refused if the checkpoint is of another configuration), else
        fresh, re-scoring ``warm_programs`` first. Without a ``ledger`` or ``mutator``,
        the default ones are built."""
        policy = self.setup.spec.policy
        if policy.kind == "parameters":
            unheld = seed_problem(policy, self.setup.seed_code)  # the contract it sets
            if unheld is not None:
                raise SearchConfigError(unheld, "spec.policy.seed")
            seed, params = self.setup.seed_code, policy.parameters
            warm_programs = [  # a search of this target as a code policy left others
                code
                for code in warm_programs or []
                if values_only_problem(seed, code, params) is None
            ]
        ledger = ledger or self.ledger()
        engine = Engine(
            self.config,
            seed_code=self.setup.seed_code,
            mutator=mutator or self.mutator(ledger),
            executor=executor,
            store=store,
            ledger=ledger,
            warm_programs=warm_programs,
            on_progress=on_progress,
            resume=resume,
            free_mutator=builtin_mutator(policy) if self.config.free_start else None,
        )
        return Search(engine)


def warm_programs(state: EngineState, limit: int | None = None) -> list[str]:
    """The best ``limit`` elites of a previous search's archive (all without a limit),
    best first; the run's best among them when its free start found it."""
    elites = Archive(state.archive).elites()
    if state.best is not None and state.best_from_free_start:
        elites.append(state.best)
    elites.sort(key=lambda e: (-e.score, e.index))
    return [elite.code for elite in elites[:limit]]


def warm_limit(config: EngineConfig) -> int:
    """How many elites a warm start re-scores: within the initial population, and at most
    a third of an evaluation budget, so the search still has room to move."""
    limit = max(1, config.initial_population - 1)
    if config.budget.max_evaluations is not None:
        limit = min(limit, max(1, config.budget.max_evaluations // 3))
    return limit


def validate_best(
    executor: Executor,
    evaluator: EvaluatorSpec,
    context: EvaluationContext,
    *,
    candidate_code: str,
    stable_code: str,
) -> ValidationReport:
    """Re-score the candidate (a search's best) and the stable policy side by side on
    ``evaluator``'s held-out seeds; its minimum improvement and required subscores
    decide."""
    return validate(
        executor,
        context,
        candidate_code=candidate_code,
        stable_code=stable_code,
        min_improvement=evaluator.min_improvement,
        required_subscores=list(evaluator.required_subscores),
        seeds=evaluator.holdout_seeds,
    )
