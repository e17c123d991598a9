"""bench/problems/04-spot-scheduling: the simulator's accounting, the traces' determinism,
the evaluator's contract, and the README's baseline table."""

from __future__ import annotations

import importlib
import itertools
import json
import math
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from retune.evaluate.allowlist import check_policy
from retune.evaluate.contract import EvaluationResult
from retune.evaluate.loader import compile_policy, load_evaluator
from retune.spec import load_target
from tests.imports import import_file

PROBLEM = Path(__file__).resolve().parents[1] / "bench" / "problems" / "04-spot-scheduling"
ARGS = "elapsed, time_left, work_left, work_done, restart_hours, spot_available, instance, streak_hours"
REGIMES = {"calm", "volatile", "drought"}


def policy(body: str) -> Any:
    return compile_policy(f"def decide({ARGS}):\n    {body}\n", "decide")


ON_DEMAND_ONLY = "return 2"
SPOT_ONLY = "return 1"


@pytest.fixture(scope="module")
def evaluator() -> ModuleType:
    return load_evaluator(PROBLEM / "evaluator.py")


@pytest.fixture(scope="module")
def sim(evaluator: ModuleType) -> ModuleType:
    return importlib.import_module("spot_sim")


@pytest.fixture(scope="module")
def trace(evaluator: ModuleType) -> ModuleType:
    return importlib.import_module("spot_trace")


@pytest.fixture(scope="module")
def model(evaluator: ModuleType) -> ModuleType:
    return importlib.import_module("spot_model")


def context(seed: int = 0, **params: Any) -> dict[str, Any]:
    """The evaluation context `retune run` builds from the problem's target.yaml."""
    target = load_target(PROBLEM / "target.yaml")
    spec = target.spec
    assert spec.profile.recorded is not None
    return {
        "workload": json.loads(target.resolve_path(spec.profile.recorded).read_text()),
        "hardware": dict(spec.hardware.recorded),
        "params": {**spec.evaluator.params, **params},
        "seed": seed,
    }


def write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "policy.py"
    path.write_text(f"def decide({ARGS}):\n    {body}\n")
    return str(path)


# -- the simulator -------------------------------------------------------------------------


def one_job(trace: ModuleType, available: list[bool], work: float = 2.0, slack: float = 1.0):
    return trace.Job(work_hours=work, deadline_hours=work + slack, available=tuple(available))


def test_on_demand_only_never_misses_and_saves_nothing(evaluator: ModuleType) -> None:
    decide = policy(ON_DEMAND_ONLY)
    for seed in (0, 1, 7):
        for stage in ("quick", "full", "holdout"):
            result = evaluator.score_policy(decide, context(seed), stage)
            assert result["score"] == 0.0
            assert set(result["subscores"].values()) == {0.0}
            assert not any(result["metrics"][f"{r}_missed"] for r in REGIMES)


def test_spot_all_the_time_pays_the_spot_price_for_work_and_one_setup(
    sim: ModuleType, trace: ModuleType, model: ModuleType
) -> None:
    workload, params, _ = model.parse_inputs(context())
    job = one_job(trace, [True] * 18)  # 3 hours at 10-minute steps
    result = sim.simulate(job, workload, params, policy(SPOT_ONLY))
    assert result.finished and result.restarts == 1 and result.preemptions == 0
    restart = workload.restart_minutes / 60
    assert math.isclose(result.cost, workload.spot_price_ratio * (2.0 + restart))
    assert math.isclose(result.saving, 1 - workload.spot_price_ratio)


def test_a_preemption_costs_a_restart_and_a_gap_costs_time(
    sim: ModuleType, trace: ModuleType, model: ModuleType
) -> None:
    workload, params, _ = model.parse_inputs(context())
    job = one_job(trace, [True] * 6 + [False] * 2 + [True] * 10)
    result = sim.simulate(job, workload, params, policy(SPOT_ONLY))
    assert (result.preemptions, result.restarts, result.spot_refused) == (1, 2, 2)
    assert math.isclose(result.setup_hours, 2 * workload.restart_minutes / 60)
    assert math.isclose(result.idle_hours, 2 / 6)


def test_a_policy_that_never_uses_on_demand_misses_a_long_outage(
    sim: ModuleType, trace: ModuleType, model: ModuleType
) -> None:
    workload, params, _ = model.parse_inputs(context())
    # Two hours of spot, then none for the rest of a 3-hour slack.
    job = one_job(trace, [True] * 12 + [False] * 30, work=4.0, slack=3.0)
    missed = sim.simulate(job, workload, params, policy(SPOT_ONLY))
    assert not missed.finished and missed.score(params.miss_penalty) == -params.miss_penalty
    seed = compile_policy((PROBLEM / "seed_policy.py").read_text(), "decide")
    rescued = sim.simulate(job, workload, params, seed)
    assert rescued.finished and 0.0 < rescued.saving < 1 - workload.spot_price_ratio


def test_the_regimes_and_the_penalty_show_in_the_score(evaluator: ModuleType) -> None:
    result = evaluator.score_policy(policy(SPOT_ONLY), context(), "full")
    metrics = result["metrics"]
    assert metrics["drought_missed"] > metrics["calm_missed"]
    assert result["subscores"]["drought"] < 0
    harsher = evaluator.score_policy(policy(SPOT_ONLY), context(miss_penalty=2.0), "full")
    assert harsher["score"] < result["score"]


# -- the traces ----------------------------------------------------------------------------


def test_traces_are_seeded_and_quick_jobs_are_the_first_full_jobs(
    trace: ModuleType, model: ModuleType
) -> None:
    workload, params, _ = model.parse_inputs(context())
    full = trace.generate_jobs(workload, params, "calm", 8, [0, 0, 0])
    assert trace.generate_jobs(workload, params, "calm", 8, [0, 0, 0]) == full
    assert trace.generate_jobs(workload, params, "calm", 3, [0, 0, 0]) == full[:3]
    assert trace.generate_jobs(workload, params, "calm", 8, [1, 0, 0]) != full
    assert trace.generate_jobs(workload, params, "volatile", 8, [0, 0, 0]) != full


def test_the_regimes_differ_as_their_names_say(trace: ModuleType, model: ModuleType) -> None:
    workload, params, _ = model.parse_inputs(context())

    def stats(regime: str) -> tuple[float, float]:
        jobs = trace.generate_jobs(workload, params, regime, 64, [0, 0, 0])
        steps = [a for job in jobs for a in job.available]
        changes = sum(a != b for job in jobs for a, b in itertools.pairwise(job.available))
        return sum(steps) / len(steps), changes / len(jobs)

    calm, volatile, drought = stats("calm"), stats("volatile"), stats("drought")
    assert volatile[1] > 2 * calm[1]  # preempted far more often
    assert drought[0] < calm[0] - 0.1  # capacity missing far longer


# -- the evaluator contract ----------------------------------------------------------------


def test_the_target_and_its_policies_are_valid() -> None:
    target = load_target(PROBLEM / "target.yaml")
    spec = target.spec
    assert spec.policy.entrypoint == "decide"
    for path in [PROBLEM / "seed_policy.py", *sorted((PROBLEM / "baselines").glob("*.py"))]:
        assert check_policy(path.read_text(), "decide") == [], path.name
    assert spec.profile.recorded is not None
    recorded = json.loads(target.resolve_path(spec.profile.recorded).read_text())
    assert set(recorded) == set(spec.profile.queries), "every recorded value has its query"


def test_the_seed_scores_repeatably_and_quickly(evaluator: ModuleType) -> None:
    seed = str(PROBLEM / "seed_policy.py")
    started = time.process_time()
    result = evaluator.evaluate(seed, context(), "full")
    assert time.process_time() - started < 0.5
    EvaluationResult.model_validate(result)
    assert set(result["subscores"]) == REGIMES and 0.0 < result["score"] < 1.0
    assert evaluator.evaluate(seed, context(), "full") == result
    assert evaluator.evaluate(seed, context(1), "holdout") != evaluator.evaluate(
        seed, context(1), "full"
    )
    assert 0 < len(result["feedback"]) < 1000


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("return 'spot'", "returned 'spot'; expected a number: 0 .*, 1 .* or 2"),
        ("return None", "returned None; expected a number"),
        ("return math.nan", "returned nan; expected a number"),
        ("return elapsed >= 0", "returned True; expected a number"),
        ("return 1 / (elapsed - elapsed)", "decide\\(\\) raised ZeroDivisionError"),
    ],
)
def test_malformed_output_fails_with_a_reason(
    evaluator: ModuleType, tmp_path: Path, body: str, message: str
) -> None:
    with pytest.raises(evaluator.PolicyError, match=message):
        evaluator.evaluate(write(tmp_path, body), context(), "quick")


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("workload", "slack_hours", 0.1, "shorter than one restart"),
        ("workload", "spot_price_ratio", 1.5, "workload.spot_price_ratio"),
        ("params", "regime_weights", {"stormy": 1.0}, "unknown names \\['stormy'\\]"),
        ("params", "jobs_quick", 64, "jobs_quick must not exceed jobs_full"),
    ],
)
def test_a_bad_context_names_what_is_wrong(
    evaluator: ModuleType, section: str, key: str, value: object, message: str
) -> None:
    bad = context()
    bad[section] = {**bad[section], key: value}
    with pytest.raises(ValueError, match=message):
        evaluator.evaluate(str(PROBLEM / "seed_policy.py"), bad, "quick")


def test_an_unknown_stage_is_refused(evaluator: ModuleType) -> None:
    with pytest.raises(ValueError, match="unknown stage 'medium'"):
        evaluator.evaluate(str(PROBLEM / "seed_policy.py"), context(), "medium")


# -- the README ----------------------------------------------------------------------------


def test_the_readme_table_is_what_the_evaluator_measures() -> None:
    baselines = import_file(PROBLEM / "baselines.py", "retune_problem_04_baselines")
    rows = baselines.baseline_table()
    readme = (PROBLEM / "README.md").read_text().splitlines()
    missing = [line for line in baselines.format_rows(rows) if line not in readme]
    assert not missing, "README out of date; rerun baselines.py:\n" + "\n".join(missing)
    assert baselines.best_baseline(rows) == "greedy with a slack buffer"
