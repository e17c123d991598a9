"""Evaluator for the autoscaling problem: how well a replica-count rule tracks its traffic.

``evaluate(policy_path, profile, subset)`` replays three synthetic traffic phases built
from the workload profile (``diurnal``, ``bursty``, ``flash``) through a deployment whose
replica count the policy sets every sync period, and scores per phase::

    phase score = good_fraction x efficiency

``good_fraction`` is the share of requests whose queueing delay met the objective (a
request over it counts ``slo / wait``); ``efficiency`` is the replica-seconds an ideal
autoscaler at ``efficient_utilization`` would use over those used (at most 1). The score
is the weighted mean over phases. ``quick`` simulates ``hours_quick``, ``full`` and
``holdout`` ``hours_full`` (holdout on other traffic seeds). The policy is untrusted and
is only ever loaded through ``retune.evaluate.loader.load_policy``.
"""

from __future__ import annotations

from autoscale_model import PHASES, cpu_speed, parse_inputs, replica_capacity
from autoscale_sim import PhaseResult, PolicyError, ReplicasFn, arrival_rates, simulate

from retune.evaluate.loader import load_policy

ENTRYPOINT = "replicas"
SUBSET_SEEDS = {"quick": 0, "full": 0, "holdout": 1}

__all__ = ["ENTRYPOINT", "PolicyError", "evaluate", "score_policy"]


def evaluate(policy_path: str, profile: dict, subset: str) -> dict:
    """Score the policy file at ``policy_path``; the evaluator contract's entry point."""
    parse_inputs(profile)
    return score_policy(load_policy(policy_path, ENTRYPOINT), profile, subset)


def score_policy(policy: ReplicasFn, profile: dict, subset: str) -> dict:
    """Score an already loaded ``replicas`` function."""
    if subset not in SUBSET_SEEDS:
        raise ValueError(f"unknown subset {subset!r}; expected one of {sorted(SUBSET_SEEDS)}")
    workload, params, seed = parse_inputs(profile)
    hardware = profile.get("hardware") or {}
    capacity = replica_capacity(workload, params, hardware)
    hours = params.hours_quick if subset == "quick" else params.hours_full
    weights = params.weights()
    results: dict[str, PhaseResult] = {}
    for index, phase in enumerate(PHASES):
        if weights[phase] <= 0:
            continue
        rates = arrival_rates(workload, params, phase, hours, [seed, SUBSET_SEEDS[subset], index])
        results[phase] = simulate(rates, capacity, workload, params, policy)
    subscores = {phase: round(r.score, 6) for phase, r in results.items()}
    total = sum(weights[p] for p in results)
    score = sum(weights[p] * subscores[p] for p in results) / total if total else 0.0
    return {
        "score": round(score, 6),
        "subscores": subscores,
        "metrics": _metrics(results, capacity, cpu_speed(hardware)[0]),
        "feedback": _feedback(results, params.wait_slo_seconds),
    }


def _metrics(results: dict[str, PhaseResult], capacity: float, speed: float) -> dict[str, float]:
    metrics: dict[str, float] = {"replica_capacity_rps": round(capacity, 3), "cpu_speed": speed}
    for phase, r in results.items():
        metrics[f"{phase}_good_fraction"] = round(r.good_fraction, 4)
        metrics[f"{phase}_efficiency"] = round(r.efficiency, 4)
        metrics[f"{phase}_worst_wait_s"] = round(min(r.worst_wait, 1e9), 3)
        metrics[f"{phase}_scale_events"] = float(r.scale_events)
    metrics["policy_calls"] = float(sum(r.policy_calls for r in results.values()))
    return metrics


def _feedback(results: dict[str, PhaseResult], slo: float) -> str:
    """Per-phase delay and efficiency, and the likeliest weakness of the weakest phase."""
    parts = [
        f"{phase}: {r.good_fraction:.0%} of requests within the {slo:g}s delay objective, "
        f"efficiency {r.efficiency:.2f}"
        for phase, r in results.items()
    ]
    text = "; ".join(parts) + "."
    if not results:
        return text
    weakest = min(results, key=lambda phase: results[phase].score)
    worst = results[weakest]
    if worst.good_fraction < 0.9:
        text += (
            f" {weakest}: requests queued (worst delay {worst.worst_wait:.1f}s); new replicas "
            "take minutes to start, so scale up earlier (queue_length, request_rate)."
        )
    elif worst.efficiency < 0.8:
        text += f" {weakest}: too many idle replicas; aim closer to the efficient utilization."
    return text
