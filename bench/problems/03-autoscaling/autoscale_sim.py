"""Traffic generation and the replica simulation for the autoscaling problem.

Time advances in steps of ``params.step_seconds`` (the HPA sync period). Each step:
requests arrive at the phase's rate; ready replicas serve up to their capacity and the
rest queue; then the policy sees what an autoscaler sees (replicas, CPU utilization,
queue length, request rate) and returns the replica count it wants. New replicas serve
only after ``pod_startup_seconds``; removed replicas go at once (pending ones first).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from autoscale_model import ScalingParams, ScalingWorkload

ReplicasFn = Callable[..., float]


class PolicyError(Exception):
    """The policy raised, or returned something that is not a finite number."""


@dataclass
class PhaseResult:
    requests: float = 0.0
    good_requests: float = 0.0  # weighted by how far their wait stayed within the objective
    replica_seconds: float = 0.0
    ideal_replica_seconds: float = 0.0
    worst_wait: float = 0.0
    scale_events: int = 0
    policy_calls: int = 0
    waits: list[float] = field(default_factory=list)

    @property
    def good_fraction(self) -> float:
        return self.good_requests / self.requests if self.requests else 0.0

    @property
    def efficiency(self) -> float:
        if not self.replica_seconds:
            return 0.0
        return min(1.0, self.ideal_replica_seconds / self.replica_seconds)

    @property
    def score(self) -> float:
        return self.good_fraction * self.efficiency


def arrival_rates(
    workload: ScalingWorkload, params: ScalingParams, phase: str, hours: float, seed: list[int]
) -> list[float]:
    """Requests per second for every step of a phase, seeded."""
    rng = random.Random("/".join(map(str, [phase, *seed])))
    steps = max(1, int(hours * 3600 / params.step_seconds))
    amplitude = (workload.peak_to_mean - 1.0) / (workload.peak_to_mean + 1.0)
    period = 8 * 3600.0  # a compressed day: three cycles in a full evaluation
    rates: list[float] = []
    burst_left = 0
    burst_level = 1.0
    burst_steps = max(1, int(workload.burst_minutes * 60 / params.step_seconds))
    flash_at = rng.uniform(0.3, 0.6) * steps
    for step in range(steps):
        t = step * params.step_seconds
        base = workload.request_rate * (1.0 + amplitude * math.sin(2 * math.pi * t / period))
        level = 1.0
        if phase == "bursty":
            if (
                burst_left == 0
                and rng.random() < workload.bursts_per_hour * params.step_seconds / 3600
            ):
                burst_left = burst_steps
                burst_level = rng.uniform(0.6, 1.0) * (workload.burst_multiplier - 1.0) + 1.0
            if burst_left:
                level = burst_level
                burst_left -= 1
        elif phase == "flash":
            # A flash crowd: traffic quadruples within two minutes, then decays for an hour.
            since = (step - flash_at) * params.step_seconds
            if since >= 0:
                rise = min(1.0, since / 120.0)
                level = 1.0 + 3.0 * rise * math.exp(-max(0.0, since - 120.0) / 2700.0)
        noise = math.exp(rng.gauss(0.0, 0.05))
        rates.append(base * level * noise)
    return rates


def simulate(
    rates: list[float],
    capacity: float,
    workload: ScalingWorkload,
    params: ScalingParams,
    policy: ReplicasFn,
) -> PhaseResult:
    """Replay ``rates`` through a deployment scaled by ``policy``."""
    dt = params.step_seconds
    startup_steps = math.ceil(workload.pod_startup_seconds / dt)
    initial = max(params.min_replicas, math.ceil(rates[0] / (capacity * 0.6)))
    ready = initial
    pending: list[int] = []  # the step at which each starting replica becomes ready
    queue = 0.0
    result = PhaseResult()
    for step, rate in enumerate(rates):
        now_ready = [s for s in pending if s <= step]
        if now_ready:
            ready += len(now_ready)
            pending = [s for s in pending if s > step]
        serve = ready * capacity * dt
        arrivals = rate * dt
        served = min(queue + arrivals, serve)
        queue = queue + arrivals - served
        wait = queue / (ready * capacity) if ready else float("inf")
        slo = params.wait_slo_seconds
        good = 1.0 if wait <= slo else slo / wait
        result.requests += arrivals
        result.good_requests += arrivals * good
        result.worst_wait = max(result.worst_wait, wait)
        result.waits.append(wait)
        result.replica_seconds += (ready + len(pending)) * dt
        ideal = max(params.min_replicas, rate / (capacity * params.efficient_utilization))
        result.ideal_replica_seconds += ideal * dt
        utilization = served / serve if serve else 1.0
        current = ready + len(pending)
        desired = _call(policy, step, step * dt, current, ready, utilization, queue, rate, capacity)
        target = min(params.max_replicas, max(params.min_replicas, math.ceil(desired - 1e-9)))
        if target > current:
            pending.extend([step + startup_steps] * (target - current))
            result.scale_events += 1
        elif target < current:
            drop = current - target
            cancelled = min(drop, len(pending))
            pending = sorted(pending)[: len(pending) - cancelled]  # the latest go first
            ready -= drop - cancelled
            result.scale_events += 1
        result.policy_calls += 1
    return result


def _call(policy: ReplicasFn, step: int, *args: float) -> float:
    try:
        value = policy(*args)
    except Exception as exc:
        raise PolicyError(f"replicas() raised {type(exc).__name__}: {exc} (step {step})") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PolicyError(f"replicas() returned {value!r}, not a finite number (step {step})")
    return float(value)
