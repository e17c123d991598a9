"""Evaluator for the spot-scheduling problem: finish by the deadline, pay as little as possible.

``evaluate(policy_path, profile, stage)`` runs batches of jobs, one batch per spot-market
regime (``calm``, ``volatile``, ``drought``, built from the recorded market statistics),
asking the policy's ``decide(...)`` every step whether the job runs on spot, on on-demand
or not at all. Per job::

    job score = 1 - cost / (cost of on-demand from the start)   if it met its deadline
              = -miss_penalty                                    if it missed it

A regime's subscore is the mean over its jobs; the score is the weighted mean over
regimes. On-demand only scores exactly 0. ``quick`` runs the first ``jobs_quick`` jobs
of each regime, ``full`` ``jobs_full``, ``holdout`` ``jobs_full`` on other seeds. The
policy is untrusted and is only ever loaded through ``retune.evaluate.loader.load_policy``.
"""

from __future__ import annotations

from spot_model import REGIMES, SpotParams, parse_inputs
from spot_sim import DecideFn, JobResult, PolicyError, simulate
from spot_trace import generate_jobs

from retune.evaluate.loader import load_policy

ENTRYPOINT = "decide"
STAGE_SEEDS = {"quick": 0, "full": 0, "holdout": 1}  # holdout jobs use other seeds

__all__ = ["ENTRYPOINT", "PolicyError", "evaluate", "score_policy"]


def evaluate(policy_path: str, profile: dict, stage: str) -> dict:
    """Score the policy file at ``policy_path``; the evaluator contract's entry point."""
    parse_inputs(profile)  # fail on a bad context before loading anything
    return score_policy(load_policy(policy_path, ENTRYPOINT), profile, stage)


def score_policy(decide: DecideFn, profile: dict, stage: str) -> dict:
    """Score an already loaded ``decide`` function."""
    if stage not in STAGE_SEEDS:
        raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(STAGE_SEEDS)}")
    workload, params, seed = parse_inputs(profile)
    count = params.jobs_quick if stage == "quick" else params.jobs_full
    weights = params.weights()
    results: dict[str, list[JobResult]] = {}
    for index, regime in enumerate(REGIMES):
        if weights[regime] <= 0:
            continue
        jobs = generate_jobs(workload, params, regime, count, [seed, STAGE_SEEDS[stage], index])
        results[regime] = [simulate(job, workload, params, decide) for job in jobs]
    subscores = {
        regime: round(_mean([job.score(params.miss_penalty) for job in jobs]), 6) + 0.0
        for regime, jobs in results.items()
    }
    total = sum(weights[r] for r in results)
    score = sum(weights[r] * subscores[r] for r in results) / total if total else 0.0
    return {
        "score": round(score, 6) + 0.0,  # + 0.0: never -0.0
        "subscores": subscores,
        "metrics": _metrics(results),
        "feedback": _feedback(results, params),
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _metrics(results: dict[str, list[JobResult]]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for regime, jobs in results.items():
        met = [job for job in jobs if job.finished]
        compute = sum(job.spot_hours + job.on_demand_hours for job in jobs)
        metrics[f"{regime}_missed"] = float(len(jobs) - len(met))
        metrics[f"{regime}_saving_when_met"] = round(_mean([job.saving for job in met]), 4)
        metrics[f"{regime}_spot_share"] = round(
            sum(job.spot_hours for job in jobs) / compute if compute else 0.0, 4
        )
        metrics[f"{regime}_restarts_per_job"] = round(_mean([job.restarts for job in jobs]), 3)
        metrics[f"{regime}_slack_left_hours"] = round(
            _mean([job.slack_left_hours for job in met]), 3
        )
    everything = [job for jobs in results.values() for job in jobs]
    metrics["preemptions"] = float(sum(job.preemptions for job in everything))
    metrics["spot_refused_steps"] = float(sum(job.spot_refused for job in everything))
    metrics["policy_calls"] = float(sum(job.policy_calls for job in everything))
    return metrics


def _feedback(results: dict[str, list[JobResult]], params: SpotParams) -> str:
    """Per-regime saving and misses, and the likeliest weakness of the weakest regime."""
    parts = []
    for regime, jobs in results.items():
        missed = sum(1 for job in jobs if not job.finished)
        saving = _mean([job.saving for job in jobs if job.finished])
        parts.append(f"{regime}: saved {saving:.1%} when met, {missed}/{len(jobs)} missed")
    text = "; ".join(parts) + "."
    if not results:
        return text
    weakest = min(
        results, key=lambda r: _mean([job.score(params.miss_penalty) for job in results[r]])
    )
    jobs = results[weakest]
    missed = sum(1 for job in jobs if not job.finished)
    compute = sum(job.spot_hours + job.on_demand_hours for job in jobs)
    on_demand_share = sum(job.on_demand_hours for job in jobs) / compute if compute else 0.0
    setup_share = sum(job.setup_hours for job in jobs) / compute if compute else 0.0
    if missed:
        text += (
            f" {weakest}: {missed} job(s) missed the deadline, each scoring "
            f"-{params.miss_penalty:g}; a spot gap outlasted the slack. Move to on-demand "
            "while time_left - work_left still covers a restart, or once spot has been out "
            "for long (streak_hours)."
        )
    elif setup_share > 0.05:
        text += (
            f" {weakest}: {setup_share:.0%} of paid hours went to restarts; switching back "
            "to spot right after each gap, or between spot and on-demand, costs a restart "
            "each time."
        )
    elif on_demand_share > 0.3:
        text += (
            f" {weakest}: {on_demand_share:.0%} of compute ran on on-demand; while slack "
            "is left, waiting out a spot gap, or going back to spot when it returns (one "
            "restart), costs less."
        )
    return text
