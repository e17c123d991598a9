"""Evaluator for examples/02-request-routing: where to send each LLM request.

``evaluate(policy_path, profile, stage)`` replays synthetic traffic drawn from the
workload profile through a pool of model-serving replicas sized from the GPU in the node
labels, routing every request with the policy's ``choose(request, replicas)``.

Each load level (``low``, ``medium``, ``high``: multiples of the recorded request rate)
scores::

    level score = goodput x 1 / (1 + p99_ttft / ttft_slo)

where goodput is the share of requests whose time to first token (TTFT) met
``params.ttft_slo_seconds`` and p99_ttft is the 99th-percentile TTFT. Both higher
throughput within the objective and a shorter tail raise it; it is 1 only for instant
first tokens. The score is the weighted mean over levels. ``quick`` runs the three levels
on short traces, ``full`` at full length, ``holdout`` at full length on other seeds.
"""

from __future__ import annotations

import math

from routing_model import LEVELS, Pool, gpu_spec, parse_inputs, size_pool
from routing_sim import ChooseFn, LevelResult, PolicyError, generate, simulate

from retune.evaluate.loader import load_policy

ENTRYPOINT = "choose"
STAGE_SEEDS = {"quick": 0, "full": 0, "holdout": 1}  # holdout traffic uses other seeds

__all__ = ["ENTRYPOINT", "PolicyError", "evaluate", "score_policy"]


def evaluate(policy_path: str, profile: dict, stage: str) -> dict:
    """Score the policy file at ``policy_path``; the evaluator contract's entry point."""
    parse_inputs(profile)  # fail on a bad context before loading anything
    return score_policy(load_policy(policy_path, ENTRYPOINT), profile, stage)


def score_policy(choose: ChooseFn, profile: dict, stage: str) -> dict:
    """Score an already loaded ``choose`` function."""
    if stage not in STAGE_SEEDS:
        raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(STAGE_SEEDS)}")
    workload, params, seed = parse_inputs(profile)
    pool = size_pool(workload, params, gpu_spec(profile.get("hardware") or {}, params))
    count = params.requests_quick if stage == "quick" else params.requests_full

    results: dict[str, LevelResult] = {}
    for index, level in enumerate(LEVELS):
        weight = params.level_weights.get(level, 0.0)
        multiplier = params.load_levels.get(level, 0.0)
        if weight <= 0 or multiplier <= 0:
            continue
        rate = workload.request_rate * multiplier
        arrivals = generate(workload, params, rate, count, [seed, STAGE_SEEDS[stage], index])
        results[level] = simulate(arrivals, pool, params, choose)

    slo = params.ttft_slo_seconds
    stats = {level: _level_stats(result, slo) for level, result in results.items()}
    subscores = {level: round(s["score"], 6) for level, s in stats.items()}
    total = sum(params.level_weights[level] for level in results)
    score = (
        sum(params.level_weights[lv] * subscores[lv] for lv in results) / total if total else 0.0
    )
    return {
        "score": round(score, 6),
        "subscores": subscores,
        "metrics": _metrics(results, stats, pool),
        "feedback": _feedback(stats, slo),
    }


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1)]


def _level_stats(result: LevelResult, slo: float) -> dict[str, float]:
    ttft = sorted(result.ttft)
    p99 = _percentile(ttft, 0.99)
    goodput = sum(1 for t in ttft if t <= slo) / len(ttft) if ttft else 0.0
    mean_routed = sum(result.routed) / len(result.routed)
    return {
        "score": goodput / (1.0 + p99 / slo),
        "goodput": goodput,
        "p50": _percentile(ttft, 0.50),
        "p99": p99,
        "cache_hit": result.cached_tokens / result.prompt_tokens if result.prompt_tokens else 0.0,
        "imbalance": max(result.routed) / mean_routed if mean_routed else 0.0,
        "slot_waits": result.slot_waits / len(ttft) if ttft else 0.0,
    }


def _metrics(
    results: dict[str, LevelResult], stats: dict[str, dict[str, float]], pool: Pool
) -> dict[str, float]:
    metrics: dict[str, float] = {
        "replicas": float(pool.replicas),
        "prefix_cache_tokens": float(pool.prefix_cache_tokens),
        "max_running": float(pool.max_running),
        "policy_calls": float(sum(r.policy_calls for r in results.values())),
    }
    for level, s in stats.items():
        metrics[f"{level}_p99_ttft_s"] = round(s["p99"], 4)
        metrics[f"{level}_goodput"] = round(s["goodput"], 4)
        metrics[f"{level}_prefix_hit"] = round(s["cache_hit"], 4)
        metrics[f"{level}_imbalance"] = round(s["imbalance"], 3)
        metrics[f"{level}_slot_waits"] = round(s["slot_waits"], 4)
    return metrics


def _feedback(stats: dict[str, dict[str, float]], slo: float) -> str:
    """Per-level tail latency and cache use, and the likeliest cause of the weakest level."""
    parts = [
        f"{level}: p99 TTFT {s['p99']:.2f}s, goodput {s['goodput']:.0%}, "
        f"prefix hits {s['cache_hit']:.0%}, busiest replica {s['imbalance']:.2f}x mean"
        for level, s in stats.items()
    ]
    text = "; ".join(parts) + "."
    if not stats:
        return text
    weakest = min(stats, key=lambda level: stats[level]["score"])
    worst = stats[weakest]
    if worst["p99"] > slo and worst["slot_waits"] > 0.1:
        text += (
            f" {weakest}: {worst['slot_waits']:.0%} of requests waited for a decode slot "
            "(KV memory full), which est_wait does not show; weigh free_slots."
        )
    elif worst["p99"] > slo and worst["imbalance"] > 1.5:
        text += f" {weakest}: load is uneven; spill away from busy replicas (queue_len, est_wait)."
    elif worst["p99"] > slo and worst["cache_hit"] < 0.5:
        text += f" {weakest}: few prefix hits; prefer replicas with has_prefix to cut prefill."
    return text
