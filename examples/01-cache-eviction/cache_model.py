"""What the cache evaluator is told: the workload profile, its parameters, the node's memory.

The profile comes from Prometheus (or ``profile.json``), the parameters from the target's
``spec.evaluator.params``, the hardware from node labels. All three are validated here, so
a bad value fails with the field's name instead of deep inside the simulator.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from retune.evaluate.inputs import read_context, weights_by_name

PHASES = ("steady", "scan", "shift")
GIB = 1024**3


class CacheWorkload(BaseModel):
    """The recorded workload profile of the cache (one number per PromQL query)."""

    model_config = ConfigDict(extra="ignore")  # a profile may carry queries we do not use

    request_rate: float = Field(2000.0, gt=0, description="requests per second")
    key_space: float = Field(2e6, ge=100, description="distinct keys requested per day")
    zipf_alpha: float = Field(0.9, ge=0.0, le=2.5, description="key popularity skew")
    scan_fraction: float = Field(0.1, ge=0.0, le=0.9, description="share of sequential reads")
    scan_length_mean: float = Field(20000.0, ge=1, description="objects read per scan")
    object_size_mean_bytes: float = Field(32768.0, gt=0)
    object_size_median_bytes: float = Field(16384.0, gt=0)
    hot_set_turnover: float = Field(
        0.5, ge=0.0, description="share of the hottest 1% of keys replaced per hour"
    )


class CacheParams(BaseModel):
    """The evaluator's own knobs (``spec.evaluator.params``)."""

    model_config = ConfigDict(extra="forbid")  # a typo in a knob should fail, not be ignored

    sim_keys: int = Field(20000, ge=500, le=500_000, description="keys in the scaled trace")
    requests_full: int = Field(80000, ge=1000, description="requests per phase, full/holdout")
    requests_quick: int = Field(24000, ge=500, description="requests per phase, quick")
    warmup_fraction: float = Field(0.3, ge=0.0, lt=0.9, description="unscored trace prefix")
    eviction_samples: int = Field(8, ge=1, le=64, description="candidates per eviction")
    cache_memory_fraction: float = Field(0.5, gt=0.0, le=1.0, description="node memory used")
    memory_bytes: float | None = Field(None, gt=0, description="overrides the node's memory")
    shift_hours: float = Field(8.0, ge=0.0, description="hours of hot-set drift per phase")
    scan_size_factor: float = Field(2.0, gt=0.0, description="scan objects vs. mean size")
    phase_weights: dict[str, float] = Field(
        default_factory=lambda: {"steady": 1.0, "scan": 1.0, "shift": 1.0}
    )
    reference: Literal["s3fifo"] | None = Field(
        None, description="score a built-in algorithm instead of the policy (baselines only)"
    )

    def weights(self) -> dict[str, float]:
        return weights_by_name(self.phase_weights, PHASES, "params.phase_weights")


def parse_inputs(profile: dict) -> tuple[CacheWorkload, CacheParams, int]:
    """Validate the evaluation context; raise ``ValueError`` naming the bad field."""
    workload, params, seed = read_context(profile, CacheWorkload, CacheParams)
    params.weights()
    return workload, params, seed


# --- node memory -----------------------------------------------------------------------

_QUANTITY = re.compile(r"^\s*([0-9.]+)\s*([KMGTPE]i?)?\s*$")
_UNITS = {
    None: 1,
    "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
# GiB of memory per vCPU by instance family, for the three big clouds' naming schemes.
_AWS_GIB_PER_VCPU = {"c": 2, "m": 4, "t": 4, "r": 8, "x": 16, "z": 8, "i": 8}
_GCE_GIB_PER_VCPU = {"highcpu": 1, "standard": 4, "highmem": 8, "megamem": 14}
_AZURE_GIB_PER_VCPU = {"F": 2, "D": 4, "B": 4, "E": 8, "M": 28}


def _quantity(text: str) -> float | None:
    match = _QUANTITY.match(text)
    if not match:
        return None
    return float(match.group(1)) * _UNITS[match.group(2)]


def _instance_memory(instance_type: str) -> float | None:
    aws = re.match(r"^([a-z]+)\d+[a-z-]*\.(\d*)(nano|micro|small|medium|large|xlarge|metal)$",
                   instance_type)  # fmt: skip
    if aws:
        family, mult, size = aws.groups()
        per_vcpu = _AWS_GIB_PER_VCPU.get(family[0])
        vcpus = {"nano": 1, "micro": 1, "small": 1, "medium": 1, "large": 2, "xlarge": 4}.get(
            size, 0
        ) * (int(mult) if mult else 1)
        return per_vcpu * vcpus * GIB if per_vcpu and vcpus else None
    gce = re.match(r"^[a-z]\d[a-z]?-(highcpu|standard|highmem|megamem)-(\d+)$", instance_type)
    if gce:
        return _GCE_GIB_PER_VCPU[gce.group(1)] * int(gce.group(2)) * GIB
    azure = re.match(r"^Standard_([A-Z])(\d+)[a-z]*_v\d+$", instance_type)
    if azure and azure.group(1) in _AZURE_GIB_PER_VCPU:
        return _AZURE_GIB_PER_VCPU[azure.group(1)] * int(azure.group(2)) * GIB
    return None


def node_memory_bytes(hardware: dict[str, str], params: CacheParams) -> tuple[float, str]:
    """The node's memory in bytes, and where the number came from.

    In order: ``params.memory_bytes``; a ``memory`` hardware entry (a Kubernetes quantity,
    e.g. the node's allocatable ``16Gi``); the instance type label; else 16 GiB.
    """
    if params.memory_bytes is not None:
        return float(params.memory_bytes), "params.memory_bytes"
    for key in ("memory", "allocatable/memory", "retune.dev/memory"):
        value = hardware.get(key)
        if value is not None:
            parsed = _quantity(str(value))
            if parsed is None or parsed <= 0:
                raise ValueError(f"hardware[{key!r}]={value!r} is not a memory quantity")
            return parsed, f"hardware[{key!r}]"
    for key in ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type"):
        value = hardware.get(key)
        if value:
            memory = _instance_memory(str(value))
            if memory is not None:
                return memory, f"instance type {value}"
    return 16.0 * GIB, "default (16 GiB)"


def lognormal_sigma(mean: float, median: float) -> float:
    """Shape of a lognormal with this mean and median (0 when median >= mean)."""
    return math.sqrt(2.0 * math.log(mean / median)) if mean > median else 0.0
