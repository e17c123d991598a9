"""The engine's configuration, and how a target's spec makes it."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, Field

from retune.evaluate.contract import EvaluationContext
from retune.search.builtin import BuiltinMutator, ParameterBounds
from retune.search.ledger import Budget
from retune.search.selection import Tiering
from retune.spec import BudgetSpec, PolicySpec, TargetSpec
from retune.spec.search import EXPLORE_DEFAULT, search_identity

# Evaluations a search spends on the plain edits before it refines: strictly above the
# budgets of a retune (7 to 24 evaluations), so those search exactly as they always have.
EXPLORE = EXPLORE_DEFAULT


class EngineConfig(BaseModel):
    """Everything that shapes a search. Its fingerprint guards resumes."""

    seed: int = 0
    budget: Budget = Field(default_factory=Budget)
    cells: int = 64
    initial_population: int = 12
    structural: list[str] = Field(
        default_factory=lambda: ["loops", "branches", "depth", "math_ops"]
    )
    behavioural: list[str] = Field(default_factory=list)
    cascade: bool = True
    quick_threshold: float = 0.9
    quick_spread: float = 0.5
    tiering: Tiering = Field(default_factory=Tiering)
    window: int = 4
    explore: int | None = EXPLORE
    """Evaluations before the search refines: constant tuning, crossover and the
    conditional bonus join the built-in mutator's edits, and a child whose quick result
    is its parent's is a no-op (not evaluated in full). Until then the search draws and
    spends exactly as one that never refines; None: it never does."""
    free_start: int = 0
    """Most evaluations of the free start: a search of the built-in mutator's edits run
    before an LLM search, apart from it (``spec.search.freeStart``); 0 for a search
    without models."""
    context: EvaluationContext = Field(default_factory=EvaluationContext)
    fingerprint: str = ""


def window_for(spec: TargetSpec) -> int:
    """Candidates in flight. Fixed by the spec, not the machine, so runs replay anywhere."""
    parallelism = spec.search.max_concurrency or spec.evaluator.parallelism
    return max(2, 2 * parallelism)


def search_budget(
    spec: BudgetSpec,
    *,
    max_evaluations: int | None = None,
    max_usd: float | None = None,
    max_wall_seconds: float | None = None,
) -> Budget:
    """The budget ``spec`` sets, with each limit given here in place of the spec's."""
    return Budget(
        max_evaluations=spec.max_evaluations if max_evaluations is None else max_evaluations,
        max_usd=spec.max_usd if max_usd is None else max_usd,
        max_wall_seconds=spec.max_wall_seconds if max_wall_seconds is None else max_wall_seconds,
    )


def engine_config(
    spec: TargetSpec,
    context: EvaluationContext,
    *,
    seed_code: str,
    evaluator_source: str = "",
    budget: Budget | None = None,
    seed: int | None = None,
) -> EngineConfig:
    """The engine configuration for ``spec``; ``budget`` and ``seed`` override the spec's."""
    search = spec.search
    budget = budget or search_budget(search.budget)
    seed = search.seed if seed is None else seed
    config = EngineConfig(
        seed=seed,
        budget=budget,
        cells=search.archive.cells,
        initial_population=search.archive.initial_population,
        structural=list(search.archive.structural_descriptors),
        behavioural=list(search.archive.behavioural_descriptors),
        cascade=search.cascade.enabled,
        quick_threshold=search.cascade.quick_threshold,
        quick_spread=search.cascade.quick_spread,
        tiering=Tiering(
            stagnation_evaluations=search.tiering.stagnation_evaluations,
            paradigm_every=search.tiering.paradigm_every,
            initial_seeds=search.tiering.initial_seeds,
        ),
        window=window_for(spec),
        explore=search.explore,
        free_start=free_start_of(spec, search.mutator),
        context=context,
    )
    # Budgets may change between a run and its resume; everything else may not.
    # An operator upgrade resumes the searches it finds: added settings at their default
    # are left out.
    # The free start is left out: like a budget, it leaves the search as it is.
    identity = search_identity(
        config.model_dump(mode="json", exclude={"budget", "fingerprint", "free_start"})
    )
    identity["seed_code"] = seed_code
    identity["evaluator"] = hashlib.sha256(evaluator_source.encode()).hexdigest()
    identity["mutator"] = spec.search.mutator
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    config.fingerprint = digest
    return config


def free_start_of(spec: TargetSpec, mutator: str) -> int:
    """The evaluations given to free edits before the first model call: ``freeStart``
    for the ``llm`` mutator on a code policy (a parameter-only policy's edits are the
    parameters, which the models' answers already are)."""
    if mutator != "llm" or spec.policy.kind == "parameters":
        return 0
    return spec.search.free_start


def builtin_mutator(policy: PolicySpec) -> BuiltinMutator:
    bounds = [
        ParameterBounds(name=p.name, low=p.min, high=p.max, integer=p.integer, step=p.step)
        for p in policy.parameters
    ]
    return BuiltinMutator(policy.entrypoint, bounds if policy.kind == "parameters" else None)
