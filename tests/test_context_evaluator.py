"""The test evaluator's ``context`` mode, which the context library's end-to-end scene
(tests/e2e/test_library.py) is scored by: its premise, and the scene's two searches run
here, in seconds, as the operator runs them, so that a change to the search that would
leave the scene without a winner per mix fails here first, saying so."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from retune.evaluate.contract import EvaluationContext, SandboxLimits
from retune.evaluate.loader import compile_policy
from retune.evaluate.local import LocalExecutor
from retune.search.builder import SearchBuilder, SearchSetup, warm_limit, warm_programs
from retune.search.state import EngineState
from retune.spec import TargetSpec
from retune.store.file import FileStore
from tests.e2e.scenarios import DRIFTED, RECENCY_FROM, context_target
from tests.e2e.workload import LRU, MIX
from tests.imports import import_file

FIXTURES = Path(__file__).parent / "fixtures"
rules = import_file(FIXTURES / "context_rules.py", "retune_test_context_rules")
PARAMS = {"mode": "context", "recency_from": RECENCY_FROM}
RECORDED = dict(MIX)
DRIFTED_MIX = {**MIX, **DRIFTED}


def lru(size: float, now: float, last_access: float, *rest: float) -> float:
    return last_access


def lfu(size: float, now: float, last_access: float, access_count: float, *rest: float) -> float:
    return access_count


def hybrid(size: float, now: float, last_access: float, access_count: float, *rest: float) -> float:
    return last_access + 0.01 * access_count - 1e-6 * size


def scored(policy: Callable[..., float], mix: dict[str, float]) -> float:
    return float(rules.context_score(policy, mix, PARAMS)["score"])


def test_the_recorded_mix_wants_frequency_and_the_drifted_one_recency() -> None:
    assert RECORDED["key_space"] < RECENCY_FROM <= DRIFTED_MIX["key_space"]
    assert (scored(lru, RECORDED), scored(lru, DRIFTED_MIX)) == (50.0, 100.0)
    assert (scored(lfu, RECORDED), scored(lfu, DRIFTED_MIX)) == (100.0, 50.0)
    # what one mix likes more the other likes less: any policy's two scores sum to 150
    for policy in (lru, lfu, hybrid, lambda *args: 1.0):
        assert scored(policy, RECORDED) + scored(policy, DRIFTED_MIX) == pytest.approx(150.0)
    assert 50.0 < scored(hybrid, RECORDED) < 100.0


def test_a_policy_that_returns_no_number_fails() -> None:
    with pytest.raises(ValueError, match="priority returned nan"):
        rules.context_score(lambda *args: float("nan"), RECORDED, PARAMS)


def _search(
    spec: TargetSpec,
    mix: dict[str, float],
    seed_code: str,
    out: Path,
    *,
    seed_offset: int = 0,
    warm: list[str] | None = None,
) -> tuple[EngineState, int]:
    context = EvaluationContext(workload=mix, params=dict(spec.evaluator.params))
    builder = SearchBuilder(
        SearchSetup(spec, context, seed_code=seed_code, seed_offset=seed_offset)
    )
    limits = SandboxLimits(wall_seconds=10, cpu_seconds=10, memory_mb=256)
    with LocalExecutor(FIXTURES / "scoring_evaluator.py", "priority", limits, workers=2) as pool:
        search = builder.build(executor=pool, store=FileStore(out), warm_programs=warm)
        return search.run().state, warm_limit(builder.config)


def _score_of(code: str, mix: dict[str, float]) -> float:
    return scored(compile_policy(code, "priority"), mix)


def test_the_library_scene_gets_a_winner_per_mix_and_the_first_wins_its_return(
    tmp_path: Path,
) -> None:
    """The scene's searches as the operator runs them: the first on the recorded mix from
    the cache's LRU, the retune on the drifted mix from the first winner, warm-started from
    the first archive's best, at the seed offset of a first retune."""
    spec = TargetSpec.model_validate(context_target("library")["spec"])
    first, limit = _search(spec, RECORDED, LRU, tmp_path / "first")
    assert first.best is not None and first.seed_elite is not None
    assert first.best.score > first.seed_elite.score, "the recorded mix's search found nothing"
    winner = first.best.code
    warm = warm_programs(first, limit)
    retune, _ = _search(spec, DRIFTED_MIX, winner, tmp_path / "retune", seed_offset=1, warm=warm)
    assert retune.best is not None and retune.seed_elite is not None
    assert retune.seed_elite.code == winner
    assert retune.best.score > retune.seed_elite.score, "the drifted mix's retune found nothing"
    # back on the recorded mix, the first winner beats the drifted mix's
    assert _score_of(winner, RECORDED) > _score_of(retune.best.code, RECORDED)
