"""What the spot-scheduling evaluator is told: the job, the spot market's history, its knobs.

The profile comes from Prometheus (or ``profile.json``) and the parameters from the
target's ``spec.evaluator.params``. Both are validated here, so a bad value fails with the
field's name rather than deep inside the simulator.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from retune.evaluate.inputs import read_context, weights_by_name

# The subscores: spot markets of the same zone's statistics, three ways.
#   calm      the recorded availability: hours-long spot runs, short gaps
#   volatile  preemptions four times as often (uptimes a quarter as long)
#   drought   the recorded pattern plus long capacity droughts four times as often
REGIMES = ("calm", "volatile", "drought")

# Decisions the policy returns (after rounding): what runs during the next step.
WAIT, SPOT, ON_DEMAND = 0, 1, 2


class SpotWorkload(BaseModel):
    """The recorded job and spot-market profile (one number per PromQL query)."""

    model_config = ConfigDict(extra="ignore")

    job_hours: float = Field(24.0, gt=0.0, le=500.0, description="compute hours the job needs")
    slack_hours: float = Field(12.0, ge=0.0, le=500.0, description="deadline minus job_hours")
    restart_minutes: float = Field(
        12.0, ge=0.0, le=600.0, description="setup lost each time an instance (re)starts"
    )
    spot_uptime_hours: float = Field(
        4.0, gt=0.0, le=1000.0, description="mean run of continuous spot availability"
    )
    spot_outage_hours: float = Field(
        0.75, gt=0.0, le=1000.0, description="mean gap without spot capacity"
    )
    long_outages_per_day: float = Field(0.4, ge=0.0, le=24.0, description="capacity droughts")
    long_outage_hours: float = Field(8.0, gt=0.0, le=200.0, description="mean drought length")
    spot_price_ratio: float = Field(
        0.32, gt=0.0, lt=1.0, description="spot price over the on-demand price"
    )


class SpotParams(BaseModel):
    """The evaluator's own knobs (``spec.evaluator.params``)."""

    model_config = ConfigDict(extra="forbid")

    step_minutes: float = Field(10.0, gt=0.0, le=120.0, description="decision period")
    jobs_full: int = Field(32, ge=1, le=1000, description="jobs per regime, full/holdout")
    jobs_quick: int = Field(8, ge=1, le=1000, description="jobs per regime, quick stage")
    slack_spread: float = Field(
        0.5, ge=0.0, lt=1.0, description="each job's slack is slack_hours x U[1-s, 1+s]"
    )
    miss_penalty: float = Field(
        1.0, ge=0.0, description="a job that misses its deadline scores -miss_penalty"
    )
    on_demand_price: float = Field(1.0, gt=0.0, description="$ per hour of on-demand")
    regime_weights: dict[str, float] = Field(
        default_factory=lambda: {"calm": 1.0, "volatile": 1.0, "drought": 1.0}
    )

    def weights(self) -> dict[str, float]:
        return weights_by_name(self.regime_weights, REGIMES, "params.regime_weights")

    @model_validator(mode="after")
    def _quick_is_smaller(self) -> SpotParams:
        if self.jobs_quick > self.jobs_full:
            raise ValueError("jobs_quick must not exceed jobs_full")
        return self


def parse_inputs(profile: dict) -> tuple[SpotWorkload, SpotParams, int]:
    """Validate the evaluation context; raise ``ValueError`` naming the bad field."""
    workload, params, seed = read_context(profile, SpotWorkload, SpotParams)
    params.weights()
    # On-demand from the first step must always make it: the yardstick of every saving.
    tightest = workload.slack_hours * (1 - params.slack_spread)
    if tightest * 60 < workload.restart_minutes:
        raise ValueError(
            f"workload.slack_hours: the tightest job's slack ({tightest:.2f} h, with "
            f"params.slack_spread {params.slack_spread}) is shorter than one restart "
            f"({workload.restart_minutes:g} min); no policy could meet every deadline"
        )
    return workload, params, seed
