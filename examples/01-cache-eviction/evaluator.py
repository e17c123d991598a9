"""Evaluator for examples/01-cache-eviction: the byte hit ratio of an eviction priority.

``evaluate(policy_path, profile, stage)`` replays three synthetic trace phases built from
the workload profile through a cache sized from the node's memory, evicting by the
policy's ``priority(...)``, and scores the weighted mean byte hit ratio:

- ``steady``: the profile's key-popularity skew, nothing else;
- ``scan``: the same, plus sequential scans of one-time objects (``scan_fraction``);
- ``shift``: the same, with the hot set drifting (``hot_set_turnover``).

``quick`` runs short versions of the three phases; ``full`` the full length; ``holdout``
the full length on other trace seeds. The policy is untrusted and is only ever loaded
through ``retune.evaluate.loader.load_policy``.
"""

from __future__ import annotations

from cache_model import PHASES, CacheParams, CacheWorkload, node_memory_bytes, parse_inputs
from cache_sim import PhaseResult, PolicyError, PriorityFn, simulate_priority, simulate_s3fifo
from cache_trace import generate

from retune.evaluate.loader import load_policy

ENTRYPOINT = "priority"
STAGE_SEEDS = {"quick": 0, "full": 0, "holdout": 1}  # holdout traces use other seeds

__all__ = ["ENTRYPOINT", "PolicyError", "evaluate", "score_policy"]


def evaluate(policy_path: str, profile: dict, stage: str) -> dict:
    """Score the policy file at ``policy_path``; the evaluator contract's entry point."""
    _, params, _ = parse_inputs(profile)
    if params.reference is not None:
        return score_policy(None, profile, stage)
    return score_policy(load_policy(policy_path, ENTRYPOINT), profile, stage)


def cache_capacity(workload: CacheWorkload, params: CacheParams, hardware: dict) -> dict:
    """The cache's real size and the share of the working set it holds."""
    memory, source = node_memory_bytes(hardware, params)
    cache_bytes = memory * params.cache_memory_fraction
    working_set = workload.key_space * workload.object_size_mean_bytes
    return {
        "memory_bytes": memory,
        "memory_source": source,
        "cache_bytes": cache_bytes,
        "cache_share": min(1.0, cache_bytes / working_set),
    }


def score_policy(priority: PriorityFn | None, profile: dict, stage: str) -> dict:
    """Score a loaded priority function (or ``params.reference`` when it is None)."""
    if stage not in STAGE_SEEDS:
        raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(STAGE_SEEDS)}")
    workload, params, seed = parse_inputs(profile)
    if priority is None and params.reference is None:
        raise ValueError("no policy given and params.reference is not set")
    capacity = cache_capacity(workload, params, profile.get("hardware") or {})
    length = params.requests_quick if stage == "quick" else params.requests_full
    weights = params.weights()

    results: dict[str, PhaseResult] = {}
    for index, phase in enumerate(PHASES):
        if weights[phase] <= 0:
            continue
        trace = generate(workload, params, phase, length, [seed, STAGE_SEEDS[stage], index])
        size = max(1, int(trace.working_set_bytes * capacity["cache_share"]))
        if priority is None:
            results[phase] = simulate_s3fifo(trace, size)
        else:
            sim_seed = seed * 1000 + STAGE_SEEDS[stage] * 10 + index
            results[phase] = simulate_priority(
                trace, size, priority, params.eviction_samples, sim_seed
            )

    subscores = {phase: round(r.byte_hit_ratio, 6) for phase, r in results.items()}
    total = sum(weights[p] for p in results)
    score = sum(weights[p] * subscores[p] for p in results) / total if total else 0.0
    return {
        "score": round(score, 6),
        "subscores": subscores,
        "metrics": _metrics(results, capacity),
        "feedback": _feedback(results),
    }


def _metrics(results: dict[str, PhaseResult], capacity: dict) -> dict[str, float]:
    requests = sum(r.requests for r in results.values())
    hits = sum(r.hits for r in results.values())
    evictions = sum(r.evictions for r in results.values())
    return {
        "hit_ratio": round(hits / requests, 6) if requests else 0.0,
        "evictions": float(evictions),
        "hot_evictions": float(sum(r.hot_evictions for r in results.values())),
        "rejected_inserts": float(sum(r.rejected for r in results.values())),
        "ghost_misses": float(sum(r.ghost_misses for r in results.values())),
        "policy_calls": float(sum(r.policy_calls for r in results.values())),
        "cache_share": round(capacity["cache_share"], 6),
        "cache_bytes": float(capacity["cache_bytes"]),
    }


def _feedback(results: dict[str, PhaseResult]) -> str:
    """A short, actionable note: per-phase byte hit ratios and the weakest spot."""
    parts = [f"{p} {r.byte_hit_ratio:.3f}" for p, r in results.items()]
    lines = ["byte hit ratio: " + ", ".join(parts) + "."]
    scan = results.get("scan")
    if scan and scan.evictions:
        regular = scan.evictions - scan.scan_evictions
        hot_share = scan.hot_evictions / scan.evictions
        if hot_share > 0.1:
            lines.append(
                f"scan: {hot_share:.0%} of evictions removed objects hit {3}+ times while "
                f"one-time scan objects stayed ({regular} regular vs {scan.scan_evictions} "
                "scan evictions); weigh access_count, or reject new objects."
            )
    shift = results.get("shift")
    if shift and shift.requests:
        lost = shift.ghost_misses / shift.requests
        if lost > 0.05:
            lines.append(
                f"shift: {lost:.0%} of requests missed on keys evicted shortly before; "
                "recency (now - last_access) or evicted_count may protect the new hot set."
            )
    rejected = sum(r.rejected for r in results.values())
    evictions = sum(r.evictions for r in results.values())
    if evictions and rejected / evictions > 0.5:
        lines.append(f"{rejected / evictions:.0%} of inserts were rejected at once.")
    return " ".join(lines)
