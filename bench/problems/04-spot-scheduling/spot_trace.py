"""Jobs and the spot capacity they meet: seeded, one list of jobs per regime.

Spot capacity alternates between runs of availability and gaps, both lognormal (a gap
that has lasted long tends to last longer, as capacity shortages do), with long capacity
droughts laid over them at random times. Availability is read at the start of every
decision step; a gap shorter than a step can fall between two reads and go unseen.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from spot_model import SpotParams, SpotWorkload

SIGMA = 1.0  # lognormal shape of runs and gaps
BURN_IN_HOURS = 24.0  # the market runs this long before a job starts, so it starts mid-pattern
REGIME_SHAPES = {
    # regime: (uptime factor, gap factor, drought rate factor)
    "calm": (1.0, 1.0, 1.0),
    "volatile": (0.25, 1.0, 1.0),
    "drought": (1.0, 1.0, 4.0),
}


@dataclass(frozen=True)
class Job:
    """One job: the compute it needs, its deadline, and spot capacity at every step."""

    work_hours: float
    deadline_hours: float
    available: tuple[bool, ...]


def generate_jobs(
    workload: SpotWorkload, params: SpotParams, regime: str, count: int, seed: list[int]
) -> list[Job]:
    """``count`` jobs of ``regime``; the first k of n jobs are the k jobs of a shorter list."""
    rng = random.Random("/".join(map(str, ["spot", regime, *seed])))
    uptime_factor, gap_factor, drought_factor = REGIME_SHAPES[regime]
    step = params.step_minutes / 60.0
    jobs = []
    for _ in range(count):
        slack = workload.slack_hours * rng.uniform(1 - params.slack_spread, 1 + params.slack_spread)
        deadline = workload.job_hours + slack
        steps = math.ceil(deadline / step - 1e-9)
        available = spot_availability(
            rng,
            steps,
            step,
            uptime=workload.spot_uptime_hours * uptime_factor,
            gap=workload.spot_outage_hours * gap_factor,
            droughts_per_hour=workload.long_outages_per_day * drought_factor / 24.0,
            drought_hours=workload.long_outage_hours,
        )
        jobs.append(Job(workload.job_hours, deadline, available))
    return jobs


def spot_availability(
    rng: random.Random,
    steps: int,
    step: float,
    *,
    uptime: float,
    gap: float,
    droughts_per_hour: float,
    drought_hours: float,
) -> tuple[bool, ...]:
    """Whether spot capacity is there at the start of each of ``steps`` steps."""
    horizon = steps * step
    outages: list[tuple[float, float]] = []
    t, up = -BURN_IN_HOURS, True
    while t < horizon:
        mean = uptime if up else gap
        length = rng.lognormvariate(math.log(mean) - SIGMA**2 / 2, SIGMA)
        if not up:
            outages.append((t, t + length))
        t, up = t + length, not up
    if droughts_per_hour > 0:
        t = -BURN_IN_HOURS
        while True:
            t += rng.expovariate(droughts_per_hour)
            if t >= horizon:
                break
            outages.append((t, t + drought_hours * rng.uniform(0.5, 1.5)))
    available = [True] * steps
    for start, end in outages:
        # Steps whose start time i * step lies in [start, end).
        for i in range(max(0, math.ceil(start / step)), min(steps, math.ceil(end / step))):
            available[i] = False
    return tuple(available)
