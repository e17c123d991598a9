"""The free start of an LLM search (``spec.search.freeStart``): the built-in mutator's
edits take the first evaluations, and the models are first called once those stop paying
or their share of the budget is spent; the models then begin with their own initial
population, and a run killed during the free start resumes to the same run."""

from __future__ import annotations

from pathlib import Path

import pytest

from retune.search.builtin import BuiltinMutator, FreeMutations
from retune.search.config import EngineConfig
from retune.search.engine import Engine
from retune.search.ledger import Budget
from retune.search.mutation import DuplicateCheck, MutationKind, MutationRequest, MutationResult
from retune.search.selection import Tiering
from retune.search.state import EngineState, decode_state
from retune.store.file import FileStore
from tests.staticscore import StaticExecutor
from tests.test_engine import SEED, Stop, crash_at, fingerprint


class Models:
    """Stands for the LLM tiers: answers with a new program, and records what it was
    asked (candidate index and kind)."""

    concurrency = 2

    def __init__(self) -> None:
        self.asked: list[tuple[int, MutationKind]] = []

    def mutate(self, request: MutationRequest, is_duplicate: DuplicateCheck) -> MutationResult:
        self.asked.append((request.candidate_index, request.kind))
        code = SEED.replace("z > 3", f"z > {3 + request.candidate_index}")
        return MutationResult(code=code, model="small")


class WorseEdits:
    """Built-in edits that never beat the seed: every constant moves away from the
    static scorer's target."""

    concurrency = 1

    def mutate(self, request: MutationRequest, is_duplicate: DuplicateCheck) -> MutationResult:
        return MutationResult(code=SEED.replace("2.0", f"{100 + request.candidate_index}.0"))


def engine(
    tmp: Path,
    models: Models,
    *,
    free_start: int,
    evaluations: int = 90,
    edits: object | None = None,
    stagnation: int = 40,
    **kwargs: object,
) -> Engine:
    config = EngineConfig(
        seed=5,
        budget=Budget(max_evaluations=evaluations),
        cells=12,
        initial_population=6,
        window=4,
        tiering=Tiering(stagnation_evaluations=stagnation, initial_seeds=2),
        free_start=free_start,
        fingerprint="test",
    )
    mutator = FreeMutations(models, 0.0, edits=edits or BuiltinMutator("f"))  # type: ignore[arg-type]
    return Engine(
        config,
        seed_code=SEED,
        mutator=mutator,
        executor=StaticExecutor(),
        store=FileStore(tmp / "ck"),
        **kwargs,  # type: ignore[arg-type]
    )


def first_asked(models: Models) -> int:
    return min(index for index, _ in models.asked)


def test_the_free_start_takes_its_evaluations_then_the_models_take_over(tmp_path: Path) -> None:
    models = Models()
    state = engine(tmp_path, models, free_start=10).run()
    assert state.free_started == 10 and state.free_over
    asked = sorted(models.asked)
    assert first_asked(models) == 11, "candidates 1-10 were the built-in edits', unpaid"
    # the models' first candidates are their initial population: the init calls first
    assert [kind for _, kind in asked[:2]] == [MutationKind.INIT, MutationKind.INIT]
    assert all(kind is not MutationKind.INIT for _, kind in asked[2:])
    assert len(models.asked) == state.next_index - 11


def test_the_free_start_ends_when_its_edits_stall(tmp_path: Path) -> None:
    models = Models()
    state = engine(tmp_path, models, free_start=50, edits=WorseEdits(), stagnation=6).run()
    assert state.free_over
    # the seed is the best all along: six more evaluations, and the models are called
    assert 6 <= state.free_started <= 6 + 4, "stopped within a window of the stall"
    assert first_asked(models) == state.free_started + 1


def test_a_small_budget_keeps_two_thirds_of_its_evaluations_for_the_models(
    tmp_path: Path,
) -> None:
    models = Models()
    state = engine(tmp_path, models, free_start=200, evaluations=24).run()
    assert state.free_started == 8
    assert first_asked(models) == 9


def test_without_a_free_start_the_models_write_the_first_candidate(tmp_path: Path) -> None:
    models = Models()
    state = engine(tmp_path, models, free_start=0).run()
    assert (state.free_started, first_asked(models)) == (0, 1)
    assert sorted(models.asked)[0][1] is MutationKind.INIT


@pytest.mark.parametrize("stop_after", [4, 11, 30])
def test_a_run_killed_in_or_after_its_free_start_resumes_to_the_same_run(
    tmp_path: Path, stop_after: int
) -> None:
    reference = engine(tmp_path / "ref", Models(), free_start=16).run()
    with pytest.raises(Stop):
        engine(tmp_path / "run", Models(), free_start=16, on_progress=crash_at(stop_after)).run()
    saved: EngineState = decode_state(FileStore(tmp_path / "run" / "ck").load() or b"")
    assert saved.applied == stop_after
    resumed = engine(tmp_path / "run", Models(), free_start=16, resume=True).run()
    assert fingerprint(resumed) == fingerprint(reference)
    assert (resumed.free_started, resumed.free_over) == (16, True)
