"""The built-in search once it refines: the no-op check, constant tuning, crossover and
the conditional bonus -- and none of them before ``explore`` evaluations."""

from __future__ import annotations

from pathlib import Path

from retune.evaluate import syntax
from retune.search.builtin import BuiltinMutator
from retune.search.config import EngineConfig
from retune.search.constants import Trial, constant_values, skeleton_hash
from retune.search.engine import Engine
from retune.search.ledger import Budget
from retune.search.mutation import (
    DuplicateCheck,
    Inspiration,
    MutationRequest,
    MutationResult,
    SearchPhase,
)
from retune.search.state import EngineState
from retune.search.tuning import tune_constants
from retune.store.file import FileStore
from tests.staticscore import StaticExecutor, static_score
from tests.test_engine import SEED

# The seed with other numbers: a quick-scored parent (the seed itself has no quick result).
CHILD = SEED.replace("2.0", "7.0")
COMPARISONS = [">=", "<", "<=", "==", "!="]


class SameNumbersOtherComparison:
    """CHILD from the seed; from CHILD, children that differ from it only in a comparison,
    which the static scorer gives CHILD's subscores to the last digit."""

    concurrency = 1

    def mutate(self, request: MutationRequest, is_duplicate: DuplicateCheck) -> MutationResult:
        if request.parent_code == SEED:
            if is_duplicate(CHILD):
                return MutationResult(failure="the seed's one child is known")
            return MutationResult(code=CHILD)
        for op in COMPARISONS:
            code = CHILD.replace("z > 3", f"z {op} 3")
            if not is_duplicate(code):
                return MutationResult(code=code)
        return MutationResult(failure="no comparison left")


def run_comparisons(tmp_path: Path, explore: int | None) -> tuple[EngineState, StaticExecutor]:
    executor = StaticExecutor()
    config = EngineConfig(
        seed=3,
        budget=Budget(max_evaluations=2 + len(COMPARISONS)),
        cells=4,
        initial_population=2,
        window=1,
        explore=explore,
    )
    engine = Engine(
        config,
        seed_code=SEED,
        mutator=SameNumbersOtherComparison(),
        executor=executor,
        store=FileStore(tmp_path / "ck"),
    )
    return engine.run(), executor


def test_a_child_scoring_exactly_as_its_parent_is_a_no_op_without_a_full_evaluation(
    tmp_path: Path,
) -> None:
    state, executor = run_comparisons(tmp_path, explore=0)
    no_ops = [h for h in state.history if h.failure == "no-op"]
    assert len(no_ops) == len(COMPARISONS)
    full = [t.task_id for t in executor.tasks if t.stage == "full"]
    assert full == ["c0-full", "c1-full"], "only the seed and CHILD are scored in full"
    # Each no-op spent its quick evaluation, which the ledger counts as one.
    assert state.ledger.evaluations == 2 + len(COMPARISONS)
    assert state.ledger.quick_evaluations == len(COMPARISONS)
    assert not state.repeats_by_parent, "a no-op does not count towards exhausting its parent"


def test_before_explore_the_same_children_are_evaluated_in_full(tmp_path: Path) -> None:
    state, executor = run_comparisons(tmp_path, explore=None)
    assert not [h for h in state.history if h.failure == "no-op"]
    full = [t for t in executor.tasks if t.stage == "full"]
    assert len(full) == 2 + len(COMPARISONS)


class Recording(BuiltinMutator):
    """The built-in mutator, keeping every request and what it answered, by candidate."""

    def __init__(self) -> None:
        super().__init__("f")
        self.requests: dict[int, MutationRequest] = {}
        self.descriptions: dict[int, str] = {}

    def mutate(self, request: MutationRequest, is_duplicate: DuplicateCheck) -> MutationResult:
        result = super().mutate(request, is_duplicate)
        self.requests[request.candidate_index] = request
        self.descriptions[request.candidate_index] = result.description
        return result


def search(tmp_path: Path, explore: int | None, evaluations: int) -> tuple[EngineState, Recording]:
    mutator = Recording()
    config = EngineConfig(
        seed=5,
        budget=Budget(max_evaluations=evaluations),
        cells=8,
        initial_population=4,
        window=2,
        explore=explore,
    )
    engine = Engine(
        config,
        seed_code=SEED,
        mutator=mutator,
        executor=StaticExecutor(),
        store=FileStore(tmp_path / "ck"),
    )
    return engine.run(), mutator


def test_past_explore_the_history_holds_tuned_crossed_and_no_op_children(
    tmp_path: Path,
) -> None:
    explore = 12
    state, mutator = search(tmp_path, explore, 80)
    refining = {i for i, r in mutator.requests.items() if r.phase is SearchPhase.REFINE}
    first = min(refining)
    assert refining == {i for i in mutator.requests if i >= first}
    assert first >= explore, "no candidate refines before explore evaluations are applied"
    assert all(not r.relatives for i, r in mutator.requests.items() if i < first)

    def evaluated(prefix: str) -> list[int]:
        return [
            h.index
            for h in state.history
            if mutator.descriptions.get(h.index, "").startswith(prefix)
            and h.failure != "duplicate"
            and not (h.failure or "").startswith("mutation failed")
        ]

    for prefix in ("tune constants", "crossover"):
        assert evaluated(prefix), f"no {prefix!r} child was evaluated"
        assert min(evaluated(prefix)) >= first
    assert any("conditional bonus" in mutator.descriptions[i] for i in refining)
    early = [d for i, d in mutator.descriptions.items() if i < first]
    assert not any("conditional bonus" in d for d in early)
    assert [h for h in state.history if h.failure == "no-op"], "no no-op was recognised"
    assert all(h.index >= first for h in state.history if h.failure == "no-op")


def test_the_engine_keeps_scored_constants_per_skeleton_and_hands_them_to_the_mutator(
    tmp_path: Path,
) -> None:
    state, mutator = search(tmp_path, 0, 60)
    assert any(r.relatives for r in mutator.requests.values())
    for request in mutator.requests.values():
        for trial in request.relatives:
            assert len(trial.values) == len(constant_values(request.parent_code) or [])
    kept = [h.index for h in state.history if h.kept]
    assert any("tune constants" in mutator.descriptions.get(i, "") for i in kept), (
        "no tuned child entered the archive"
    )


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


def test_crossover_grafts_a_term_of_an_inspiration_only_when_refining() -> None:
    donor = "def f(x, y):\n    return x * y - 4.0\n"
    mutator = BuiltinMutator("f")
    descriptions: dict[SearchPhase, list[str]] = {phase: [] for phase in SearchPhase}
    for phase in SearchPhase:
        for seed in range(60):
            request = MutationRequest(
                parent_code=SEED,
                seed=seed,
                phase=phase,
                inspirations=[Inspiration(code=donor, score=1.0)],
            )
            result = mutator.mutate(request, lambda code: False)
            assert result.code is not None
            compile(result.code, "<child>", "exec")
            descriptions[phase].append(result.description)
    refined = descriptions[SearchPhase.REFINE]
    assert any(d.startswith("crossover") and "x * y" in d for d in refined)
    assert not any(d.startswith(("crossover", "tune")) for d in descriptions[SearchPhase.EXPLORE])
