"""What the routing evaluator is told: the traffic profile, its parameters, the GPU.

The GPU comes from the node's ``nvidia.com/gpu.product`` label (NVIDIA GPU Feature
Discovery). The catalog below holds rough serving figures for an 8B-parameter model in
16-bit weights under a vLLM-style engine; they are estimates from the GPUs' published
compute and memory bandwidth, not measurements, and every one can be overridden through
``spec.evaluator.params``. What matters for routing is their *ratios*: how fast a replica
prefills, how fast it decodes, and how much KV-cache memory is left after the weights.
"""

from __future__ import annotations

import math
import re

from pydantic import BaseModel, ConfigDict, Field

from retune.evaluate.inputs import read_context

LEVELS = ("low", "medium", "high")


class GpuSpec(BaseModel):
    """One replica's speed and memory."""

    model_config = ConfigDict(extra="forbid")

    name: str
    memory_gb: float = Field(gt=0)
    prefill_tokens_per_s: float = Field(gt=0)  # prompt tokens a replica prefills per second
    decode_tokens_per_s: float = Field(gt=0)  # output tokens per second, per sequence


# Searched in order in the gpu.product label; the first match wins, so the more specific
# patterns come first (A100 80GB before A100, L40S before L4).
GPU_CATALOG: tuple[tuple[str, GpuSpec], ...] = tuple(
    (pattern, GpuSpec(name=name, memory_gb=mem, prefill_tokens_per_s=pf, decode_tokens_per_s=dc))
    for pattern, name, mem, pf, dc in (
        ("H200", "H200", 141, 26000, 120),
        ("H100", "H100-80GB", 80, 24000, 90),
        ("A100.*80GB", "A100-80GB", 80, 11000, 60),
        ("A100", "A100-40GB", 40, 11000, 55),
        ("L40S", "L40S", 48, 9000, 45),
        ("A10G", "A10G", 24, 3600, 30),
        (r"L4\b", "L4", 24, 2800, 18),
    )
)
DEFAULT_GPU = "NVIDIA-H100-80GB-HBM3"


class RoutingWorkload(BaseModel):
    """The recorded traffic profile (one number per PromQL query)."""

    model_config = ConfigDict(extra="ignore")

    request_rate: float = Field(20.0, gt=0, description="requests per second, whole pool")
    arrival_cv: float = Field(1.5, ge=0.1, le=10, description="inter-arrival burstiness")
    prompt_tokens_mean: float = Field(2000.0, ge=1)
    output_tokens_mean: float = Field(200.0, ge=1)
    shared_prefix_fraction: float = Field(0.6, ge=0, le=0.99, description="prompt in prefixes")
    prefix_groups: float = Field(120.0, ge=1, description="distinct shared prefixes in use")
    prefix_zipf_alpha: float = Field(0.9, ge=0, le=2.5, description="prefix popularity skew")


class RoutingParams(BaseModel):
    """The evaluator's own knobs (``spec.evaluator.params``)."""

    model_config = ConfigDict(extra="forbid")

    replicas: int | str = Field("auto", description="replica count, or 'auto' to size the pool")
    target_utilization: float = Field(
        0.8, gt=0, le=1.5, description="'auto' sizes the pool to this uncached prefill load"
    )
    load_levels: dict[str, float] = Field(
        default_factory=lambda: {"low": 0.5, "medium": 1.0, "high": 1.2},
        description="request-rate multipliers, one per load level (subscore)",
    )
    level_weights: dict[str, float] = Field(
        default_factory=lambda: {"low": 1.0, "medium": 1.0, "high": 1.0}
    )
    requests_full: int = Field(10000, ge=200, description="requests per level, full/holdout")
    requests_quick: int = Field(2000, ge=100, description="requests per level, quick")
    warmup_fraction: float = Field(0.1, ge=0, lt=0.9, description="unscored prefix")
    ttft_slo_seconds: float = Field(2.0, gt=0, description="time-to-first-token objective")
    model_weights_gb: float = Field(16.0, gt=0)
    kv_bytes_per_token: float = Field(131072.0, gt=0)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    prefix_cache_share: float = Field(0.5, gt=0, lt=1, description="KV memory kept for prefixes")
    decode_interference: float = Field(0.5, ge=0, description="prefill slowdown at full batch")
    gpu: GpuSpec | None = Field(None, description="overrides the catalog entry")


def parse_inputs(profile: dict) -> tuple[RoutingWorkload, RoutingParams, int]:
    """Validate the evaluation context; raise ``ValueError`` naming the bad field."""
    workload, params, seed = read_context(profile, RoutingWorkload, RoutingParams)
    for name in ("load_levels", "level_weights"):
        table = getattr(params, name)
        if set(table) - set(LEVELS):
            raise ValueError(f"params.{name}: unknown levels {sorted(set(table) - set(LEVELS))}")
        if any(value < 0 for value in table.values()):
            raise ValueError(f"params.{name}: values must be >= 0")
    if isinstance(params.replicas, str) and params.replicas != "auto":
        raise ValueError(f"params.replicas={params.replicas!r}: expected an integer or 'auto'")
    return workload, params, seed


def gpu_spec(hardware: dict[str, str], params: RoutingParams) -> GpuSpec:
    """The replica's GPU from the node labels (or ``params.gpu``)."""
    if params.gpu is not None:
        return params.gpu
    product = str(hardware.get("nvidia.com/gpu.product") or DEFAULT_GPU)
    for pattern, spec in GPU_CATALOG:
        if re.search(pattern, product, re.IGNORECASE):
            memory_mib = hardware.get("nvidia.com/gpu.memory")  # GFD reports MiB
            if memory_mib and str(memory_mib).isdigit():
                return spec.model_copy(update={"memory_gb": int(memory_mib) * 2**20 / 1e9})
            return spec
    known = ", ".join(pattern for pattern, _ in GPU_CATALOG)
    raise ValueError(
        f"nvidia.com/gpu.product={product!r} is not in the GPU catalog ({known}); "
        "set params.gpu to describe it"
    )


class Pool(BaseModel):
    """The replica pool the policy routes across."""

    gpu: GpuSpec
    replicas: int
    prefix_cache_tokens: int
    max_running: int  # sequences a replica can hold in KV memory at once


def size_pool(workload: RoutingWorkload, params: RoutingParams, gpu: GpuSpec) -> Pool:
    """Derive the pool: KV memory from the GPU, and the replica count when 'auto'.

    'auto' sizes the pool as an autoscaler would: enough replicas that the recorded rate,
    with no prefix reuse at all, loads the tighter of the two resources -- prefill compute
    or decode slots (KV memory) -- to ``target_utilization``.
    """
    kv_bytes = (gpu.memory_gb - params.model_weights_gb) * 1e9 * params.gpu_memory_utilization
    if kv_bytes <= 0:
        raise ValueError(
            f"{gpu.name}: {gpu.memory_gb} GB leaves no KV memory after "
            f"params.model_weights_gb={params.model_weights_gb}"
        )
    kv_tokens = kv_bytes / params.kv_bytes_per_token
    sequence_tokens = workload.prompt_tokens_mean + workload.output_tokens_mean
    max_running = max(1, int(kv_tokens * (1 - params.prefix_cache_share) / sequence_tokens))
    if params.replicas == "auto":
        prefill_busy = workload.prompt_tokens_mean / gpu.prefill_tokens_per_s
        decode_busy = workload.output_tokens_mean / gpu.decode_tokens_per_s / max_running
        per_replica = 1.0 / max(prefill_busy, decode_busy)  # requests/s at 100% load
        replicas = math.ceil(workload.request_rate / (per_replica * params.target_utilization))
    else:
        replicas = int(params.replicas)
    if not 1 <= replicas <= 256:
        raise ValueError(f"the pool would have {replicas} replicas; expected 1..256")
    return Pool(
        gpu=gpu,
        replicas=replicas,
        prefix_cache_tokens=int(kv_tokens * params.prefix_cache_share),
        max_running=max_running,
    )
