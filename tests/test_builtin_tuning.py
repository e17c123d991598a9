"""The built-in search's no-op check, constant tuning and crossover."""

from __future__ import annotations

from pathlib import Path

from retune.evaluate import syntax
from retune.search.archive import Archive, Elite
from retune.search.builtin import BuiltinMutator
from retune.search.constants import Trial, constant_values, skeleton_hash
from retune.search.engine import Engine, EngineConfig
from retune.search.ledger import Budget
from retune.search.mutation import DuplicateCheck, Inspiration, MutationRequest, MutationResult
from retune.search.state import EngineState
from retune.search.tuning import tune_constants
from retune.store.file import FileStore
from tests.staticscore import StaticExecutor, static_score

SEED = """def f(x, y):
    z = x * 2.0 + y
    if z > 3:
        return z - 1.5
    return z + 0.5
"""
COMPARISONS = [">=", "<", "<=", "==", "!="]


class SameNumbersOtherComparison:
    """Children that differ from the seed only in a comparison: the static scorer gives
    them the seed's subscores to the last digit."""

    concurrency = 1

    def mutate(self, request: MutationRequest, is_duplicate: DuplicateCheck) -> MutationResult:
        for op in COMPARISONS:
            code = SEED.replace("z > 3", f"z {op} 3")
            if not is_duplicate(code):
                return MutationResult(code=code)
        return MutationResult(failure="no comparison left")


def test_a_child_scoring_exactly_as_its_parent_is_a_no_op_without_a_full_evaluation(
    tmp_path: Path,
) -> None:
    executor = StaticExecutor()
    config = EngineConfig(
        seed=3, budget=Budget(max_evaluations=6), cells=4, initial_population=2, window=1
    )
    engine = Engine(
        config,
        seed_code=SEED,
        mutator=SameNumbersOtherComparison(),
        executor=executor,
        store=FileStore(tmp_path / "ck"),
    )
    state = engine.run()
    no_ops = [h for h in state.history if h.failure == "no-op"]
    assert len(no_ops) == len(COMPARISONS)
    full = [t.task_id for t in executor.tasks if t.stage == "full"]
    assert full == ["c0-full"], "only the seed is scored in full"
    # Each no-op spent its quick evaluation, which the ledger counts as one.
    assert state.ledger.evaluations == 1 + len(COMPARISONS)
    assert state.ledger.quick_evaluations == len(COMPARISONS)
    assert not state.repeats_by_parent, "a no-op does not count towards exhausting its parent"


def test_the_engine_keeps_scored_constants_per_skeleton_and_hands_them_to_the_mutator(
    tmp_path: Path,
) -> None:
    config = EngineConfig(
        seed=5, budget=Budget(max_evaluations=60), cells=8, initial_population=4, window=2
    )
    seen: list[MutationRequest] = []

    class Recording(BuiltinMutator):
        def mutate(self, request: MutationRequest, is_duplicate: DuplicateCheck) -> MutationResult:
            seen.append(request)
            return super().mutate(request, is_duplicate)

    engine = Engine(
        config,
        seed_code=SEED,
        mutator=Recording("f"),
        executor=StaticExecutor(),
        store=FileStore(tmp_path / "ck"),
    )
    state = engine.run()
    seed_trials = state.trials[skeleton_hash(SEED) or ""]
    assert seed_trials[0].values == constant_values(SEED)
    assert any(r.relatives for r in seen)
    for request in seen:
        for trial in request.relatives:
            assert len(trial.values) == len(constant_values(request.parent_code) or [])
    assert any("tune constants" in h for h in (c.description for c in _elites(state)))


def _elites(state: EngineState) -> list[Elite]:
    return Archive(state.archive).elites()


def _score(code: str) -> float:
    result = static_score(code, "full").result
    assert result is not None
    return result.score


def test_tuning_constants_is_deterministic_and_climbs_the_scores_it_is_fed() -> None:
    tree = syntax.parse(SEED)
    trials = [Trial(values=constant_values(SEED) or [], score=_score(SEED))]
    first = tune_constants(tree, trials, 7, lambda code: True)
    assert first == tune_constants(tree, trials, 7, lambda code: True)
    best = _score(SEED)
    start = best
    for seed in range(40):
        proposal = tune_constants(tree, trials, seed, lambda code: True)
        assert proposal is not None
        code, description = proposal
        assert description.startswith("tune constants")
        assert skeleton_hash(code) == skeleton_hash(SEED)
        score = _score(code)
        trials.append(Trial(values=constant_values(code) or [], score=score))
        best = max(best, score)
    assert best > start + 1.0  # constants near 7 score best; the seed's are 2, 3, 1.5, 0.5


def test_crossover_grafts_a_term_of_an_inspiration() -> None:
    donor = "def f(x, y):\n    return x * y - 4.0\n"
    mutator = BuiltinMutator("f")
    descriptions = []
    for seed in range(60):
        request = MutationRequest(
            parent_code=SEED, seed=seed, inspirations=[Inspiration(code=donor, score=1.0)]
        )
        result = mutator.mutate(request, lambda code: False)
        assert result.code is not None
        compile(result.code, "<child>", "exec")
        descriptions.append(result.description)
    assert any(d.startswith("crossover") and "x * y" in d for d in descriptions)
