"""How candidates are scored, and how a winner is validated before rollout."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from retune.spec.base import (
    LABEL_KEY_PATTERN,
    DNSSubdomain,
    Name,
    Quantity,
    RelativePath,
    Seconds,
    SpecModel,
    duplicates,
    invalid,
)
from retune.spec.units import parse_quantity

DEFAULT_EVALUATOR_PATH = "/opt/retune/evaluator/evaluator.py"
"""Where the evaluator images built from ``evaluator-images/`` keep the evaluator."""
EVALUATOR_REF_PATTERN = r"^(/\S*|[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)$"
ENV_NAME_PATTERN = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def _label_keys(keys: dict[str, str]) -> dict[str, str]:
    bad = [key for key in keys if len(key) > 317 or not re.fullmatch(LABEL_KEY_PATTERN, key)]
    if bad:
        raise invalid(f"{bad[0]!r} is not a label key such as 'example.com/name'")
    return keys


class LocalObjectReference(SpecModel):
    """An object in the target's namespace, by name."""

    name: DNSSubdomain


class Resources(SpecModel):
    """CPU and memory of one evaluation, used as both request and limit."""

    cpu: Quantity = "1"
    """CPU, e.g. ``500m`` or ``2``."""
    memory: Quantity = "1Gi"
    """Memory, e.g. ``512Mi`` or ``2Gi``."""

    @property
    def cpu_cores(self) -> float:
        """The CPU quantity in cores."""
        return parse_quantity(self.cpu)

    @property
    def memory_bytes(self) -> int:
        """The memory quantity in bytes."""
        return int(parse_quantity(self.memory))


class EvaluatorSpec(SpecModel):
    """The evaluator that scores candidates, where it runs, and how a winner is validated."""

    module: RelativePath | None = None
    """Path of the evaluator's Python module, relative to the target file. Local mode."""
    image: str | None = Field(default=None, min_length=1, max_length=1024)
    """Container image with the evaluator, for evaluation pods in the cluster."""
    command: list[str] = Field(default=["retune-evaluate"], min_length=1)
    """Command that runs the evaluator contract in the image."""
    path: str = Field(
        default=DEFAULT_EVALUATOR_PATH,
        max_length=4096,
        json_schema_extra={"pattern": EVALUATOR_REF_PATTERN},
    )
    """The evaluator inside the image: the absolute path of its Python file (modules beside
    it can be imported), or a dotted module name importable there. Cluster only; local
    mode uses ``module``."""
    env: dict[str, str] = {}
    """Extra environment variables of evaluation pods (e.g. ``PYTHONPATH``); names starting
    with ``RETUNE_`` are retune's own and cannot be set."""
    resources: Resources = Field(default_factory=Resources)
    """CPU and memory of each evaluation."""
    timeout_seconds: Seconds = Field(default=60, ge=1, le=86400)
    """Wall-time limit of one evaluation."""
    parallelism: int = Field(default=2, ge=1, le=256)
    """How many evaluations run at once."""
    params: dict[str, Any] = {}
    """The evaluator's own parameters, passed through unchanged."""
    node_selector: dict[str, str] | None = None
    """Node selector of evaluation pods; unset means the workload's own."""
    affinity: dict[str, Any] | None = None
    """Affinity of evaluation pods; unset means the workload's own."""
    tolerations: list[dict[str, Any]] | None = None
    """Tolerations of evaluation pods; unset means the workload's own."""
    runtime_class_name: DNSSubdomain | None = None
    """RuntimeClass of evaluation pods, e.g. ``gvisor`` or ``kata``: a sandboxed runtime for
    policies an LLM wrote, beneath the pod's own hardening."""
    priority_class_name: DNSSubdomain | None = None
    """PriorityClass of evaluation pods (a low one lets the workload preempt them)."""
    image_pull_secrets: list[LocalObjectReference] = []
    """Secrets for pulling the evaluator image, e.g. ``[{name: regcred}]``."""
    pod_labels: dict[str, str] = {}
    """Extra labels of evaluation pods (retune's own labels win: they select the pods)."""
    pod_annotations: dict[str, str] = {}
    """Extra annotations of evaluation pods (e.g. a service mesh's opt-out)."""

    _pod_metadata_keys = field_validator("pod_labels", "pod_annotations")(_label_keys)
    required_subscores: list[Name] = []
    """Subscores (names in the evaluator's ``subscores``) on which a candidate must be no
    worse than the stable policy, on the held-out seeds, to be rolled out."""
    required_subsets: list[Name] | None = None
    """Deprecated: the old name of ``requiredSubscores``, still read (and moved there)."""
    min_improvement: float = Field(default=0.01, ge=0)
    """Relative improvement over the stable policy a candidate needs (0.01 = 1 %)."""
    holdout_seeds: int = Field(default=3, ge=1, le=100)
    """Held-out seeds on which candidate and stable policy are re-scored before rollout."""

    @property
    def memory_mb_limit(self) -> int:
        """The memory limit of one evaluation in MiB."""
        return self.resources.memory_bytes // 2**20

    @field_validator("path")
    @classmethod
    def _evaluator_ref(cls, path: str) -> str:
        if not re.match(EVALUATOR_REF_PATTERN, path):
            raise invalid(
                f"must be an absolute path such as {DEFAULT_EVALUATOR_PATH} or a dotted module "
                f"name such as my_evaluator.main (got {path!r})"
            )
        return path

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not ENV_NAME_PATTERN.match(name):
                raise invalid(f"{name!r} is not a valid environment variable name")
            if name.startswith("RETUNE_"):
                raise invalid(f"{name!r}: names starting with RETUNE_ are retune's own")
        return env

    @model_validator(mode="after")
    def _module_or_image(self) -> EvaluatorSpec:
        if self.module is None and self.image is None:
            raise invalid("set module (local mode), image (cluster), or both")
        if self.required_subsets is not None:
            if self.required_subscores:
                raise invalid(
                    "requiredSubsets is the old name of requiredSubscores; keep only "
                    "requiredSubscores",
                    "requiredSubsets",
                )
            self.required_subscores, self.required_subsets = self.required_subsets, None
        repeated = duplicates(self.required_subscores)
        if repeated:
            raise invalid(f"duplicate subscore {repeated[0]!r}", "requiredSubscores")
        return self
