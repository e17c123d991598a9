"""The search builder: one wiring of a search from a spec, and the typed outcomes it
returns (a stop reason, budget exhaustion reported by the mutator)."""

from __future__ import annotations

from pathlib import Path

from retune.evaluate.contract import EvaluationContext
from retune.search.builder import SearchBuilder, SearchSetup, warm_limit, warm_programs
from retune.search.builtin import BuiltinMutator, FreeMutations
from retune.search.config import EngineConfig, engine_config, search_budget
from retune.search.ledger import Budget
from retune.search.llm import LLMMutator
from retune.search.mutation import DuplicateCheck, MutationRequest, MutationResult
from retune.search.state import EngineState, StopReason, decode_state
from retune.spec import ModelTier, TargetSpec, load_target
from retune.store.file import FileStore
from tests.staticscore import StaticExecutor
from tests.test_engine import SEED

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "01-cache-eviction" / "target.yaml"
CONTEXT = EvaluationContext(workload={"request_rate": 10.0})


def spec(evaluations: int = 30) -> TargetSpec:
    """Example 01's spec around the static scorer's program ``f``."""
    target_spec = load_target(EXAMPLE).spec
    search = target_spec.search.model_copy(
        update={
            "budget": target_spec.search.budget.model_copy(
                update={"max_evaluations": evaluations, "max_wall_seconds": None}
            ),
            "archive": target_spec.search.archive.model_copy(
                update={"cells": 12, "initial_population": 6}
            ),
        }
    )
    policy = target_spec.policy.model_copy(update={"entrypoint": "f"})
    return target_spec.model_copy(update={"search": search, "policy": policy})


def test_the_configuration_is_the_specs_with_the_callers_overrides() -> None:
    setup = SearchSetup(spec(), CONTEXT, seed_code=SEED, evaluator_identity="evaluator")
    config = SearchBuilder(setup).config
    assert config == engine_config(
        setup.spec, CONTEXT, seed_code=SEED, evaluator_source="evaluator"
    )
    assert config.budget == search_budget(setup.spec.search.budget)
    assert config.budget.max_evaluations == 30

    retune = SearchBuilder(
        SearchSetup(setup.spec, CONTEXT, seed_code=SEED, seed=4, seed_offset=3)
    ).config
    assert retune.seed == 7
    budget = Budget(max_evaluations=5, max_usd=0.5)
    assert SearchBuilder(
        SearchSetup(setup.spec, CONTEXT, seed_code=SEED, budget=budget)
    ).budget == (budget)


def test_a_checkpoint_of_another_mutator_or_evaluator_is_not_this_search() -> None:
    def fingerprint(**changes: object) -> str:
        base: dict[str, object] = {"evaluator_identity": "evaluator"}
        return SearchBuilder(
            SearchSetup(spec(), CONTEXT, seed_code=SEED, **{**base, **changes})  # type: ignore[arg-type]
        ).config.fingerprint

    same = fingerprint()
    assert fingerprint() == same
    assert fingerprint(evaluator_identity="another") != same
    assert fingerprint(mutator="llm") == f"{same}-llm"
    # Budgets may change between a run and its resume.
    assert fingerprint(budget=Budget(max_evaluations=99)) == same


def test_the_mutator_is_the_builtin_one_unless_the_llm_tiers_are_asked_for() -> None:
    builder = SearchBuilder(SearchSetup(spec(), CONTEXT, seed_code=SEED))
    assert isinstance(builder.mutator(builder.ledger()), BuiltinMutator)
    tier = ModelTier.model_validate(
        {
            "name": "cheap",
            "role": "mutate",
            "baseUrl": "http://127.0.0.1:9/v1",
            "model": "m",
            "pricing": {"inputPerMillion": 1.0, "outputPerMillion": 2.0},
        }
    )
    llm = SearchBuilder(
        SearchSetup(
            spec(), CONTEXT, seed_code=SEED, seed=5, seed_offset=2, mutator="llm", models=[tier]
        )
    )
    free = llm.mutator(llm.ledger())
    assert isinstance(free, FreeMutations), "refining LLM searches mutate for free too"
    assert (free.tune_share, free.edit_share) == (0.3, 0.3)
    assert isinstance(free.edits, BuiltinMutator)
    mutator = free.models
    assert isinstance(mutator, LLMMutator)
    assert [t.name for t in mutator.tiers] == ["cheap"]
    assert isinstance(mutator.fallback, BuiltinMutator)
    assert mutator.seed == 5, "a retune's offset moves the engine's plan, not the tiers' seed"
    assert llm.config.seed == 7


def test_a_built_search_runs_to_a_typed_result(tmp_path: Path) -> None:
    builder = SearchBuilder(SearchSetup(spec(evaluations=24), CONTEXT, seed_code=SEED))
    result = builder.build(executor=StaticExecutor(), store=FileStore(tmp_path / "ck")).run()
    assert result.stop_reason is StopReason.EVALUATIONS
    checkpoint = decode_state(FileStore(tmp_path / "ck").load() or b"")
    assert checkpoint.stop_reason is StopReason.EVALUATIONS, "read back as the enum"
    assert result.ledger.evaluations == 24
    assert result.improved and result.best.score > result.seed_elite.score
    elites = result.elites()
    assert elites[0] == result.best.code
    assert result.elites(2) == elites[:2] == warm_programs(result.state, 2)

    again = SearchBuilder(SearchSetup(spec(evaluations=24), CONTEXT, seed_code=SEED)).build(
        executor=StaticExecutor(), store=FileStore(tmp_path / "again")
    )
    assert again.run().state.history == result.state.history, "the same seed, the same run"


def test_a_warm_start_takes_at_most_a_third_of_the_evaluations() -> None:
    config = EngineConfig(initial_population=12, budget=Budget(max_evaluations=60))
    assert warm_limit(config) == 11
    assert warm_limit(config.model_copy(update={"budget": Budget(max_evaluations=9)})) == 3
    assert warm_limit(config.model_copy(update={"budget": Budget(max_usd=1.0)})) == 11


class _Spending:
    """The built-in mutator, but candidates ``refused`` fail with a budget refusal's words,
    flagged as budget exhaustion or not."""

    concurrency = 1

    def __init__(self, refused: range, *, exhausted: bool) -> None:
        self.inner = BuiltinMutator("f")
        self.refused, self.exhausted = refused, exhausted

    def mutate(self, request: MutationRequest, is_duplicate: DuplicateCheck) -> MutationResult:
        if request.candidate_index not in self.refused:
            return self.inner.mutate(request, is_duplicate)
        return MutationResult(
            failure="budget: a call may cost up to $0.01; the budget cannot cover it",
            budget_exhausted=self.exhausted,
        )


def _search(store: Path, mutator: _Spending) -> EngineState:
    builder = SearchBuilder(SearchSetup(spec(evaluations=30), CONTEXT, seed_code=SEED))
    search = builder.build(executor=StaticExecutor(), store=FileStore(store), mutator=mutator)
    return search.run().state


def test_a_mutator_out_of_budget_stops_the_search_by_its_flag_not_its_words(
    tmp_path: Path,
) -> None:
    refused = range(9, 12)
    spent = _search(tmp_path / "spent", _Spending(refused, exhausted=True))
    assert spent.stop_reason is StopReason.USD
    assert spent.usd_exhausted
    assert spent.ledger.evaluations < 30
    window = spent.window
    assert spent.next_index <= 9 + window, "no mutation is planned once the budget is spent"

    worded = _search(tmp_path / "worded", _Spending(refused, exhausted=False))
    assert worded.stop_reason is StopReason.EVALUATIONS
    assert not worded.usd_exhausted
    assert worded.ledger.evaluations == 30
    assert worded.ledger.failed_mutations == len(refused)
