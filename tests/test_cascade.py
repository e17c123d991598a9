"""The cascade's screen adapts to the spread of quick scores, and a quick plus a full
evaluation counts once against the evaluation budget."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

import pytest

from retune.evaluate.contract import EvaluationOutcome, EvaluationResult, EvaluationTask
from retune.search.builtin import BuiltinMutator
from retune.search.cascade import MIN_QUICK_SCORES, passes_screen, quick_margin, robust_spread
from retune.search.config import EngineConfig
from retune.search.engine import Engine
from retune.search.ledger import Budget
from retune.search.state import EngineState
from retune.store.file import FileStore
from tests.staticscore import StaticExecutor
from tests.test_engine import SEED

# Every program scores within 5 % of 100: the case a fixed share of the parent's score
# (0.9 x 100 = 90) cannot screen.
CENTRE, SCALE = 100.0, 0.4


class NarrowExecutor(StaticExecutor):
    """The static scorer squeezed into [~95.6, 100]: same order, tiny relative spread."""

    def submit(self, task: EvaluationTask) -> Future[EvaluationOutcome]:
        inner = super().submit(task)
        squeezed: Future[EvaluationOutcome] = Future()

        def squeeze(done: Future[EvaluationOutcome]) -> None:
            outcome = done.result()
            if outcome.result is None:
                squeezed.set_result(outcome)
                return
            score = CENTRE + SCALE * max(outcome.result.score, -10.0)
            squeezed.set_result(EvaluationOutcome(result=EvaluationResult(score=score)))

        inner.add_done_callback(squeeze)
        return squeezed


def search(tmp: Path, evaluations: int, **config: float) -> tuple[EngineState, NarrowExecutor]:
    executor = NarrowExecutor()
    engine = Engine(
        EngineConfig(
            seed=5,
            budget=Budget(max_evaluations=evaluations),
            cells=12,
            initial_population=6,
            window=4,
            fingerprint="cascade",
            **config,  # type: ignore[arg-type]
        ),
        seed_code=SEED,
        mutator=BuiltinMutator("f"),
        executor=executor,
        store=FileStore(tmp / "ck"),
    )
    return engine.run(), executor


def stages_by_candidate(executor: NarrowExecutor) -> dict[str, set[str]]:
    stages: dict[str, set[str]] = {}
    for task in executor.tasks:
        stages.setdefault(task.task_id.split("-")[0], set()).add(task.stage)
    return stages


def test_scores_within_five_percent_are_still_screened(tmp_path: Path) -> None:
    state, _ = search(tmp_path, evaluations=80)
    scores = [h.score for h in state.history if h.score is not None]
    assert max(scores) / min(scores) < 1.05, "the premise: every score within 5 %"
    screened = [h for h in state.history if h.failure == "cascade"]
    assert len(screened) >= 5, "the quick stage must screen some children out"
    assert state.ledger.quick_evaluations == len(screened)


def test_a_fixed_share_of_the_parent_screens_nothing_there(tmp_path: Path) -> None:
    # The control: quickSpread 0 is the old fixed 0.9 x parent screen.
    state, _ = search(tmp_path, evaluations=80, quick_spread=0.0)
    assert not [h for h in state.history if h.failure == "cascade"]


def test_a_quick_plus_a_full_evaluation_counts_once(tmp_path: Path) -> None:
    state, executor = search(tmp_path, evaluations=60)
    stages = stages_by_candidate(executor)
    both = [c for c, s in stages.items() if s == {"quick", "full"}]
    assert both, "some candidates went on to the full evaluation"
    assert len(executor.tasks) > state.ledger.evaluations == 60 == len(stages)
    assert state.ledger.quick_evaluations + state.ledger.full_evaluations == 60


def test_the_margin_is_the_tighter_of_the_share_and_the_spread() -> None:
    narrow = [100.0 + 0.1 * (i % 7) for i in range(20)]
    margin = quick_margin(100.0, narrow, threshold=0.9, spread_factor=0.5)
    assert 0 < margin == pytest.approx(0.5 * robust_spread(narrow))
    assert margin < 1.0 < 10.0  # the fixed share alone would allow 10
    wide = [float(i * 10) for i in range(20)]
    assert quick_margin(100.0, wide, threshold=0.9, spread_factor=0.5) == pytest.approx(10.0)
    few = narrow[: MIN_QUICK_SCORES - 1]
    assert quick_margin(100.0, few, threshold=0.9, spread_factor=0.5) == pytest.approx(10.0)


def test_broken_programs_do_not_widen_the_screen() -> None:
    scores = [100.0 + 0.1 * (i % 5) for i in range(30)] + [0.0] * 5
    assert quick_margin(100.0, scores, threshold=0.9, spread_factor=0.5) < 0.5


def test_a_child_of_a_parent_without_a_quick_score_always_goes_on() -> None:
    assert passes_screen(1.0, None, 0.0)
    assert passes_screen(99.0, 100.0, 1.0) and not passes_screen(98.9, 100.0, 1.0)
