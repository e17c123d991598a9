"""The search engine: determinism, exact resume, budgets, dedup, cascade, archive."""

from __future__ import annotations

import ast
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from retune.search.archive import Archive, Elite
from retune.search.builtin import BuiltinMutator
from retune.search.config import EngineConfig
from retune.search.engine import Engine, EngineError, Progress
from retune.search.ledger import Budget
from retune.search.mutation import DuplicateCheck, MutationKind, MutationRequest, MutationResult
from retune.search.program import normalised_hash
from retune.search.selection import choose_parent
from retune.search.state import decode_state
from retune.store.file import FileStore
from tests.staticscore import StaticExecutor

SEED = """def f(x, y):
    z = x * 2.0 + y
    if z > 3:
        return z - 1.5
    return z + 0.5
"""


def make_engine(tmp: Path, evaluations: int = 80, resume: bool = False, **kwargs: object) -> Engine:
    config = EngineConfig(
        seed=11,
        budget=Budget(max_evaluations=evaluations),
        cells=12,
        initial_population=6,
        window=4,
        fingerprint="test",
    )
    return Engine(
        config,
        seed_code=kwargs.pop("seed_code", SEED),  # type: ignore[arg-type]
        mutator=kwargs.pop("mutator", BuiltinMutator("f")),  # type: ignore[arg-type]
        executor=kwargs.pop("executor", StaticExecutor()),  # type: ignore[arg-type]
        store=FileStore(tmp / "ck"),
        resume=resume,
        **kwargs,  # type: ignore[arg-type]
    )


def fingerprint(engine_state) -> list[tuple[int, float | None, str | None]]:  # type: ignore[no-untyped-def]
    return [(h.index, h.score, h.failure) for h in engine_state.history]


def test_same_seed_gives_identical_runs(tmp_path: Path) -> None:
    a = make_engine(tmp_path / "a").run()
    b = make_engine(tmp_path / "b").run()
    assert fingerprint(a) == fingerprint(b)
    assert a.best is not None and b.best is not None
    assert a.best.code == b.best.code
    assert a.best.score > a.seed_elite.score  # type: ignore[union-attr]


def test_a_different_seed_explores_differently(tmp_path: Path) -> None:
    a = make_engine(tmp_path / "a").run()
    engine = make_engine(tmp_path / "b")
    engine.rng.seed(12)
    b = engine.run()
    assert fingerprint(a) != fingerprint(b)


class Stop(Exception):
    pass


def crash_at(stop_after: int) -> Callable[[Progress], None]:
    """A progress callback that stops a run (as a kill would) at its ``stop_after``-th
    report: one report per applied candidate."""
    reports = 0

    def crash(_: Progress) -> None:
        nonlocal reports
        reports += 1
        if reports == stop_after:
            raise Stop

    return crash


@pytest.mark.parametrize("stop_after", [3, 9, 27, 55])
def test_killed_and_resumed_run_matches_uninterrupted(tmp_path: Path, stop_after: int) -> None:
    reference = make_engine(tmp_path / "ref").run()
    with pytest.raises(Stop):
        make_engine(tmp_path / "run", on_progress=crash_at(stop_after)).run()
    saved = decode_state(FileStore(tmp_path / "run" / "ck").load() or b"")
    assert saved.applied == stop_after
    resumed = make_engine(tmp_path / "run", resume=True).run()
    assert fingerprint(resumed) == fingerprint(reference)
    assert resumed.ledger.evaluations == reference.ledger.evaluations


def test_evaluation_budget_is_never_exceeded(tmp_path: Path) -> None:
    executor = StaticExecutor()
    state = make_engine(tmp_path, evaluations=37, executor=executor).run()
    assert state.ledger.evaluations == 37
    candidates = {t.task_id.split("-")[0] for t in executor.tasks}
    assert len(candidates) == 37


def test_no_program_is_evaluated_twice(tmp_path: Path) -> None:
    executor = StaticExecutor()
    make_engine(tmp_path, evaluations=120, executor=executor).run()
    full = [normalised_hash(t.policy_code) for t in executor.tasks if t.stage == "full"]
    assert len(full) == len(set(full))


def test_cascade_stops_weak_candidates_before_the_full_evaluation(tmp_path: Path) -> None:
    executor = StaticExecutor()
    state = make_engine(tmp_path, evaluations=120, executor=executor).run()
    quick = {t.task_id.split("-")[0] for t in executor.tasks if t.stage == "quick"}
    full = {t.task_id.split("-")[0] for t in executor.tasks if t.stage == "full"}
    assert state.ledger.quick_evaluations > 0
    assert quick - full, "some candidates should stop after the quick stage"
    screened = sum(1 for h in state.history if h.failure in ("cascade", "no-op"))
    assert screened == len(quick - full)


def test_archive_cells_are_fixed_after_the_initial_population(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, evaluations=100)
    state = engine.run()
    archive = Archive(state.archive)
    assert archive.frozen and state.archive.centroids is not None
    for cell, elite in state.archive.cells.items():
        assert archive.cell_of(elite) == cell
    assert len(state.archive.cells) >= 3


def test_a_failing_seed_stops_the_run_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="seed policy failed"):
        make_engine(tmp_path, seed_code="def f(x, y):\n    return fail_me\n").run()


def test_checkpoint_holds_in_flight_work_and_rng(tmp_path: Path) -> None:
    def crash(progress: Progress) -> None:
        if progress.evaluations >= 10:
            raise Stop

    with pytest.raises(Stop):
        make_engine(tmp_path, on_progress=crash).run()
    state = decode_state(FileStore(tmp_path / "ck").load() or b"")
    assert state.pending, "candidates in flight are part of the checkpoint"
    assert all(c.request is not None for c in state.pending.values() if c.origin == "mutation")
    assert len(state.rng_state) == 3


def test_resume_refuses_another_configuration(tmp_path: Path) -> None:
    make_engine(tmp_path, evaluations=10).run()
    config = EngineConfig(seed=11, budget=Budget(max_evaluations=10), fingerprint="other")
    with pytest.raises(EngineError, match="different target"):
        Engine(
            config,
            seed_code=SEED,
            mutator=BuiltinMutator("f"),
            executor=StaticExecutor(),
            store=FileStore(tmp_path / "ck"),
            resume=True,
        )


def test_normalised_hash_ignores_layout_comments_and_local_names() -> None:
    a = "def f(x):\n    '''doc'''\n    t = x + 1  # comment\n    return t\n"
    b = "def f(x):\n    s = (x + 1)\n\n    return s\n"
    c = "def f(x):\n    s = x + 2\n    return s\n"
    assert normalised_hash(a) == normalised_hash(b)
    assert normalised_hash(a) != normalised_hash(c)


def test_builtin_mutator_is_deterministic_and_parses() -> None:
    from retune.search.mutation import MutationRequest

    mutator = BuiltinMutator("f")
    for seed in range(50):
        request = MutationRequest(parent_code=SEED, seed=seed)
        first = mutator.mutate(request, lambda _: False)
        second = mutator.mutate(request, lambda _: False)
        assert first.code == second.code and first.code is not None
        compile(first.code, "<m>", "exec")
        assert normalised_hash(first.code) != normalised_hash(SEED)


def test_builtin_mutator_moves_parameters_within_bounds() -> None:
    from retune.search.builtin import ParameterBounds
    from retune.search.mutation import MutationKind, MutationRequest

    code = "BATCH = 32\nTIMEOUT = 0.5\n\ndef f():\n    return BATCH\n"
    bounds = [ParameterBounds("BATCH", 1, 64, integer=True), ParameterBounds("TIMEOUT", 0.1, 1.0)]
    mutator = BuiltinMutator("f", bounds)
    rng = random.Random(0)
    for _ in range(100):
        kind = rng.choice(list(MutationKind))
        result = mutator.mutate(
            MutationRequest(parent_code=code, seed=rng.getrandbits(32), kind=kind), lambda _: False
        )
        assert result.code is not None
        namespace = {  # read, never run: generated programs only run in the sandbox
            node.targets[0].id: node.value.value
            for node in ast.parse(result.code).body
            if isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
        }
        assert 1 <= namespace["BATCH"] <= 64 and isinstance(namespace["BATCH"], int)  # type: ignore[operator]
        assert 0.1 <= namespace["TIMEOUT"] <= 1.0  # type: ignore[operator]


def test_builtin_mutator_imports_math_when_it_adds_a_math_call() -> None:
    from retune.search.mutation import MutationKind, MutationRequest

    mutator = BuiltinMutator("f")
    with_math = 0
    for seed in range(200):
        request = MutationRequest(parent_code=SEED, seed=seed, kind=MutationKind.PARADIGM)
        code = mutator.mutate(request, lambda _: False).code
        assert code is not None
        if "math." in code:
            with_math += 1
            assert code.startswith("import math\n")
    assert with_math > 0


def test_a_resumed_warm_start_rescores_every_warm_program(tmp_path: Path) -> None:
    # more warm programs than the window of 4 plans at once: some are unplanned at the crash
    warm = [SEED.replace("1.5", f"{2.0 + k / 10}") for k in range(1, 6)]
    reference = make_engine(tmp_path / "ref", warm_programs=warm).run()

    def crash(progress: Progress) -> None:
        raise Stop

    with pytest.raises(Stop):
        make_engine(tmp_path / "run", warm_programs=warm, on_progress=crash).run()
    saved = decode_state(FileStore(tmp_path / "run" / "ck").load() or b"")
    assert saved.next_index <= len(warm)  # a warm program was still to be planned
    executor = StaticExecutor()
    # as a restarted operator does: the warm programs are not given again
    resumed = make_engine(tmp_path / "run", resume=True, executor=executor).run()
    evaluated = {task.policy_code for task in executor.tasks}
    assert all(program in evaluated for program in warm[saved.next_index - 1 :])  # unplanned
    assert fingerprint(resumed) == fingerprint(reference)


def test_ordinary_mutations_skip_exhausted_parents_while_others_remain() -> None:
    elites = [
        Elite(index=i, code=f"def f(x, y):\n    return {i}\n", code_hash=str(i), score=s)
        for i, s in enumerate([0.9, 0.5, 0.4, 0.3])
    ]
    rng = random.Random(3)
    picked = {
        choose_parent(elites, MutationKind.MUTATE, rng, frozenset({0})).index for _ in range(300)
    }
    assert picked == {1, 2, 3}
    everyone = frozenset(range(4))
    picked = {choose_parent(elites, MutationKind.MUTATE, rng, everyone).index for _ in range(300)}
    assert 0 in picked  # all used up: the best is a parent again
    picked = {
        choose_parent(elites, MutationKind.PARADIGM, rng, frozenset({0})).index for _ in range(50)
    }
    assert picked == {0}  # a paradigm shift starts from the best quarter regardless


class RepeatingAroundTheSeed:
    """The built-in mutator, but every answer for a child of the seed repeated a known
    program ``repeats`` times before it (as an LLM tier reports)."""

    def __init__(self, repeats: int) -> None:
        self.inner = BuiltinMutator("f")
        self.repeats = repeats
        self.seed_children: list[int] = []  # candidate indexes

    @property
    def concurrency(self) -> int:
        return 1

    def mutate(self, request: MutationRequest, is_duplicate: DuplicateCheck) -> MutationResult:
        result = self.inner.mutate(request, is_duplicate)
        if request.parent_code != SEED:
            return result
        self.seed_children.append(request.candidate_index)
        return result.model_copy(update={"duplicates": self.repeats})


def test_a_parent_whose_children_keep_repeating_is_left_for_others(tmp_path: Path) -> None:
    runs = {}
    for repeats in (0, 2):
        mutator = RepeatingAroundTheSeed(repeats)
        state = make_engine(tmp_path / str(repeats), evaluations=60, mutator=mutator).run()
        runs[repeats] = (sorted(mutator.seed_children), state.repeats_by_parent)
    (plain, none_counted), (repeating, counted) = runs[0], runs[2]
    assert none_counted.get(0, 0) == 0 and counted[0] == 2 * len(repeating)
    # The seed is used up once its first child (candidate 1) is applied: later children
    # come only from candidates planned before that (the window of 4 in flight).
    assert max(repeating) <= 1 + 4 < max(plain)
