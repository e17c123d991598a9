"""What the autoscaling evaluator is told: the traffic profile, its knobs, the node type.

The profile comes from Prometheus (or ``profile.json``), the parameters from the target's
``spec.evaluator.params``, the hardware from node labels. All are validated here, so a bad
value fails with the field's name rather than deep inside the simulator.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from retune.evaluate.inputs import read_context, weights_by_name

PHASES = ("diurnal", "bursty", "flash")

# Relative per-vCPU request throughput by instance family (m6i = 1.0). Rough figures:
# what matters to the policy is that a replica's capacity follows the node type.
_FAMILY_SPEED = {"m6i": 1.0, "c6i": 1.15, "r6i": 1.0, "m7i": 1.12, "c7g": 1.05, "m6g": 0.85}
_SIZE_VCPUS = {"large": 2, "xlarge": 4, "2xlarge": 8, "4xlarge": 16}


class ScalingWorkload(BaseModel):
    """The recorded traffic profile (one number per PromQL query)."""

    model_config = ConfigDict(extra="ignore")

    request_rate: float = Field(300.0, gt=0, description="mean requests per second")
    peak_to_mean: float = Field(1.6, ge=1.0, le=5.0, description="diurnal peak over mean")
    bursts_per_hour: float = Field(1.5, ge=0.0, le=30.0)
    burst_multiplier: float = Field(2.5, ge=1.0, le=10.0, description="burst peak over base")
    burst_minutes: float = Field(6.0, gt=0.0, le=120.0)
    cpu_seconds_per_request: float = Field(0.02, gt=0.0, description="CPU per request")
    pod_startup_seconds: float = Field(90.0, ge=0.0, le=1800.0)


class ScalingParams(BaseModel):
    """The evaluator's own knobs (``spec.evaluator.params``)."""

    model_config = ConfigDict(extra="forbid")

    pod_cpus: float = Field(2.0, gt=0.0, description="CPU request of one replica")
    step_seconds: float = Field(15.0, gt=0.0, le=300.0, description="HPA sync period")
    hours_full: float = Field(12.0, gt=0.0, le=72.0, description="simulated hours, full")
    hours_quick: float = Field(4.0, gt=0.0, le=72.0, description="simulated hours, quick")
    wait_slo_seconds: float = Field(0.5, gt=0.0, description="queueing delay objective")
    efficient_utilization: float = Field(0.8, gt=0.0, le=1.0, description="ideal CPU use")
    min_replicas: int = Field(2, ge=1)
    max_replicas: int = Field(400, ge=1)
    phase_weights: dict[str, float] = Field(
        default_factory=lambda: {"diurnal": 1.0, "bursty": 1.0, "flash": 1.0}
    )

    def weights(self) -> dict[str, float]:
        return weights_by_name(self.phase_weights, PHASES, "params.phase_weights")


def parse_inputs(profile: dict) -> tuple[ScalingWorkload, ScalingParams, int]:
    """Validate the evaluation context; raise ``ValueError`` naming the bad field."""
    workload, params, seed = read_context(profile, ScalingWorkload, ScalingParams)
    params.weights()
    if params.min_replicas > params.max_replicas:
        raise ValueError("params.min_replicas must not exceed params.max_replicas")
    return workload, params, seed


def cpu_speed(hardware: dict[str, str]) -> tuple[float, str]:
    """Per-vCPU speed of the node type relative to m6i, and where it came from."""
    value = hardware.get("node.kubernetes.io/instance-type", "")
    match = re.match(r"^([a-z]\d+[a-z]*)\.(\w+)$", value)
    if match and match.group(1) in _FAMILY_SPEED and match.group(2) in _SIZE_VCPUS:
        return _FAMILY_SPEED[match.group(1)], f"instance type {value}"
    return 1.0, "default (m6i)"


def replica_capacity(workload: ScalingWorkload, params: ScalingParams, hardware: dict) -> float:
    """Requests per second one replica serves at 100% CPU."""
    speed, _ = cpu_speed(hardware)
    return params.pod_cpus * speed / workload.cpu_seconds_per_request
