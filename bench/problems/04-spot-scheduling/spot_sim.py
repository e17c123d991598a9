"""One job at a time: every step the policy picks spot, on-demand or nothing.

Each step (``params.step_minutes``) the policy sees the job's progress, the deadline and
the spot market, and returns what runs for the step. Starting an instance — after waiting,
after a preemption, or on switching between spot and on-demand — costs
``restart_minutes`` of setup that is paid for but makes no progress. Spot is preempted at
the start of the first step without capacity; progress made so far is kept. Asking for spot
when there is none runs nothing that step. A job ends when its work is done (the last step
is billed for the part used) or at its deadline, finished or not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from spot_model import ON_DEMAND, SPOT, WAIT, SpotParams, SpotWorkload
from spot_trace import Job

DecideFn = Callable[..., object]
_EPSILON = 1e-9  # float sums of step lengths


class PolicyError(Exception):
    """The policy raised, or returned something that is not a number."""


@dataclass
class JobResult:
    """What one job cost and whether it met its deadline."""

    finished: bool
    cost: float
    on_demand_cost: float  # what running on on-demand from the start would cost
    spot_hours: float = 0.0
    on_demand_hours: float = 0.0
    idle_hours: float = 0.0
    setup_hours: float = 0.0
    restarts: int = 0
    preemptions: int = 0
    spot_refused: int = 0  # steps the policy asked for spot while there was none
    policy_calls: int = 0
    slack_left_hours: float = 0.0  # deadline minus finish time (0 when missed)

    @property
    def saving(self) -> float:
        """The share of the on-demand-only cost saved."""
        return 1.0 - self.cost / self.on_demand_cost

    def score(self, miss_penalty: float) -> float:
        return self.saving if self.finished else -miss_penalty


def simulate(job: Job, workload: SpotWorkload, params: SpotParams, decide: DecideFn) -> JobResult:
    """Run ``job`` to its end, asking ``decide`` what to run every step."""
    step = params.step_minutes / 60.0
    restart = workload.restart_minutes / 60.0
    prices = {SPOT: params.on_demand_price * workload.spot_price_ratio,
              ON_DEMAND: params.on_demand_price}  # fmt: skip
    result = JobResult(
        finished=False,
        cost=0.0,
        on_demand_cost=params.on_demand_price * (job.work_hours + restart),
    )
    progress = setup_left = 0.0
    instance = WAIT
    streak_start = 0
    for i, available in enumerate(job.available):
        now = i * step
        time_left = job.deadline_hours - now
        if i and available != job.available[i - 1]:
            streak_start = i
        if instance == SPOT and not available:
            instance = WAIT
            result.preemptions += 1
        choice = _decide(
            decide,
            i,
            now,
            time_left,
            job.work_hours - progress,
            progress,
            restart,
            1.0 if available else 0.0,
            instance,
            (i - streak_start) * step,
        )
        result.policy_calls += 1
        if choice == SPOT and not available:
            result.spot_refused += 1
            choice = WAIT
        if choice != instance:
            if choice != WAIT:
                result.restarts += 1
                setup_left = restart
            instance = choice
        span = min(step, time_left)
        if instance == WAIT:
            result.idle_hours += span
            continue
        setup = min(setup_left, span)
        setup_left -= setup
        need = job.work_hours - progress
        done = span - setup >= need - _EPSILON
        used = setup + need if done else span
        result.cost += prices[instance] * used
        result.setup_hours += setup
        if instance == SPOT:
            result.spot_hours += used
        else:
            result.on_demand_hours += used
        if done:
            result.finished = True
            result.slack_left_hours = time_left - used
            break
        progress += span - setup
    return result


def _decide(decide: DecideFn, step: int, *args: float) -> int:
    """Call the policy; its number read as a choice (below 0.5 wait, below 1.5 spot)."""
    try:
        value = decide(*args)
    except Exception as exc:
        raise PolicyError(
            f"decide() raised {type(exc).__name__}: {exc} (step {step}, hour {args[0]:.2f})"
        ) from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PolicyError(
            f"decide() returned {value!r}; expected a number: 0 (run nothing), 1 (spot) "
            f"or 2 (on-demand) (step {step}, hour {args[0]:.2f})"
        )
    return WAIT if value < 0.5 else SPOT if value < 1.5 else ON_DEMAND
