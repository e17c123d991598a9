"""The free start of an LLM search (``spec.search.freeStart``): a search of the built-in
mutator's edits, run before the models' search and apart from it. The models' search is
then the one it would be without it (same requests, same programs, same spend); the free
start's best is the run's until the models beat it; its evaluations come on top of the
budget's, a third of them at most; and a run killed in or after it resumes to the same
run."""

from __future__ import annotations

import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from retune.evaluate.contract import EvaluationOutcome, EvaluationTask
from retune.search.builder import warm_programs
from retune.search.builtin import BuiltinMutator
from retune.search.config import EngineConfig
from retune.search.engine import Engine, Progress
from retune.search.ledger import Budget
from retune.search.mutation import DuplicateCheck, MutationKind, MutationRequest, MutationResult
from retune.search.selection import Tiering
from retune.search.state import EngineState, StopReason, decode_state
from retune.store.file import FileStore
from tests.staticscore import StaticExecutor, static_score
from tests.test_engine import SEED, Stop, crash_at, fingerprint


class Models:
    """Stands for the LLM tiers: answers with a new program, and records what it was
    asked (candidate index, kind, parent and inspirations)."""

    concurrency = 2

    def __init__(self, offset: float = 3.0) -> None:
        self.offset = offset
        self.asked: list[tuple[int, MutationKind, str, tuple[str, ...]]] = []

    def mutate(self, request: MutationRequest, is_duplicate: DuplicateCheck) -> MutationResult:
        inspirations = tuple(i.code for i in request.inspirations)
        self.asked.append(
            (request.candidate_index, request.kind, request.parent_code, inspirations)
        )
        value = self.offset + request.candidate_index
        return MutationResult(code=SEED.replace("z > 3", f"z > {value}"), model="small")


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
    return Engine(
        config,
        seed_code=SEED,
        mutator=models,
        executor=StaticExecutor(),
        store=FileStore(tmp / "ck"),
        free_mutator=edits or BuiltinMutator("f"),  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


class SlowExecutor(StaticExecutor):
    """Scores as the static executor does, each evaluation taking ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def submit(self, task: EvaluationTask) -> Future[EvaluationOutcome]:
        def slow() -> EvaluationOutcome:
            time.sleep(self.seconds)
            return static_score(task.policy_code, task.stage)

        return self._pool.submit(slow)


def free_evaluations(state: EngineState) -> int:
    return state.ledger.free_evaluations


def test_the_models_search_is_the_one_it_would_be_without_a_free_start(
    tmp_path: Path,
) -> None:
    alone, after = Models(), Models()
    without = engine(tmp_path / "without", alone, free_start=0).run()
    state = engine(tmp_path / "with", after, free_start=30).run()
    assert free_evaluations(without) == 0 and free_evaluations(state) == 30
    # asked the same (parents, inspirations: no free start program among them), in the
    # same order of plans, with the same results
    assert after.asked == alone.asked
    assert fingerprint(state) == fingerprint(without)
    assert state.archive == without.archive
    assert state.ledger.evaluations == without.ledger.evaluations == 90
    assert state.best_found == without.best_found
    free = state.free_start
    assert free is not None and free.stop_reason is StopReason.EVALUATIONS
    free_programs = {h.index for h in free.history if h.score is not None}
    assert len(free_programs) > 20


def test_the_free_start_calls_no_model_and_its_best_is_the_runs_until_beaten(
    tmp_path: Path,
) -> None:
    # The models' programs move the seed's 3 far from the scorer's 7: never better than
    # the free start's edits, whose best stays the run's.
    models = Models(offset=40.0)
    state = engine(tmp_path, models, free_start=30).run()
    free = state.free_start
    assert free is not None and free.best is not None and state.best is not None
    assert min(index for index, *_ in models.asked) == 1, "the models begin at their own 1"
    assert free.best.score > free.seed_elite.score  # type: ignore[union-attr]
    assert state.best.code == free.best.code and state.best_from_free_start
    # named apart from the models' candidate of that number, in the status and Events
    assert state.best_name == f"f{free.best.index}"
    assert state.best_found is not None and state.best_found < state.best.score
    # without a free start the run's best would be the models' best
    plain = engine(tmp_path / "plain", Models(offset=40.0), free_start=0).run()
    assert plain.best is not None and plain.best.score == state.best_found
    # a retune's warm start re-scores it first, though it is in no archive of the search
    assert warm_programs(state)[0] == free.best.code
    assert free.best.code not in warm_programs(plain)


def test_the_models_best_replaces_the_free_starts_once_higher(tmp_path: Path) -> None:
    state = engine(tmp_path, Models(), free_start=3).run()
    free = state.free_start
    assert free is not None and free.best is not None and state.best is not None
    assert state.best_found == state.best.score > free.best.score
    assert not state.best_from_free_start and state.best_name == f"c{state.best.index}"


def test_the_free_start_runs_its_budget_even_while_its_edits_find_nothing(
    tmp_path: Path,
) -> None:
    # the built-in edits improve in bursts: a stretch with nothing better is not the end
    state = engine(tmp_path, Models(), free_start=25, edits=WorseEdits(), stagnation=6).run()
    free = state.free_start
    assert free is not None and free.stop_reason is StopReason.EVALUATIONS
    assert free.best is not None and free.best.index == 0, "the seed, best all along"
    assert (free_evaluations(state), state.ledger.evaluations) == (25, 90)


def test_a_free_start_takes_at_most_a_third_of_the_budget_on_top_of_it(
    tmp_path: Path,
) -> None:
    state = engine(tmp_path, Models(), free_start=200, evaluations=24).run()
    assert (free_evaluations(state), state.ledger.evaluations) == (8, 24)
    small = engine(tmp_path / "small", Models(), free_start=200, evaluations=2).run()
    assert small.free_start is None, "a third of 2 evaluations is none"


def test_a_free_start_takes_at_most_a_third_of_the_wall_time(tmp_path: Path) -> None:
    config = EngineConfig(
        seed=5,
        budget=Budget(max_evaluations=600, max_wall_seconds=3.0),
        window=4,
        free_start=200,
        fingerprint="test",
    )
    state = Engine(
        config,
        seed_code=SEED,
        mutator=Models(),
        executor=SlowExecutor(0.05),
        store=FileStore(tmp_path / "ck"),
        free_mutator=BuiltinMutator("f"),
    ).run()
    free = state.free_start
    assert free is not None and free.stop_reason is StopReason.WALL_TIME
    assert free_evaluations(state) < 200
    # the search had the rest: its seed scored, its own candidates evaluated
    assert state.stop_reason is StopReason.WALL_TIME and state.seed_elite is not None
    assert state.ledger.evaluations > 1


def test_the_free_start_reports_its_own_progress_then_the_search_its_own(
    tmp_path: Path,
) -> None:
    reports: list[Progress] = []
    engine(tmp_path, Models(), free_start=10, on_progress=reports.append).run()
    free = [r for r in reports if r.free_start]
    assert len(free) == 11 and free[-1].evaluations == 10, "one per candidate, one at the end"
    assert all(r.max_evaluations == 10 and r.usd == 0 for r in free)
    after = reports[len(free) :]
    assert not any(r.free_start for r in after)
    assert after[-1].evaluations == 90 and after[-1].free_evaluations == 10
    # the run's best so far, the free start's included, from the first report on
    assert after[0].best_score is not None and after[0].best_score >= free[-1].best_score  # type: ignore[operator]


@pytest.mark.parametrize("stop_after", [4, 11, 30])
def test_a_run_killed_in_or_after_its_free_start_resumes_to_the_same_run(
    tmp_path: Path, stop_after: int
) -> None:
    reference = engine(tmp_path / "ref", Models(), free_start=16).run()
    with pytest.raises(Stop):
        engine(tmp_path / "run", Models(), free_start=16, on_progress=crash_at(stop_after)).run()
    saved: EngineState = decode_state(FileStore(tmp_path / "run" / "ck").load() or b"")
    assert saved.free_start is not None
    if stop_after <= 16:
        assert saved.free_start.applied == stop_after and saved.applied == 0
    resumed = engine(tmp_path / "run", Models(), free_start=16, resume=True).run()
    assert fingerprint(resumed) == fingerprint(reference)
    assert fingerprint(resumed.free_start) == fingerprint(reference.free_start)
    assert resumed.ledger.free_evaluations == 16
    assert resumed.ledger.evaluations == reference.ledger.evaluations


def test_a_search_begun_without_a_free_start_resumes_without_one(tmp_path: Path) -> None:
    reference = engine(tmp_path / "ref", Models(), free_start=0).run()
    with pytest.raises(Stop):
        engine(tmp_path / "run", Models(), free_start=0, on_progress=crash_at(20)).run()
    resumed = engine(tmp_path / "run", Models(), free_start=16, resume=True).run()
    assert resumed.free_start is None and resumed.ledger.free_evaluations == 0
    assert fingerprint(resumed) == fingerprint(reference)
