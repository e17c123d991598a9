"""The OptimizationTarget resource: metadata, spec and status."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from pydantic.alias_generators import to_camel

from retune.spec.base import DNSSubdomain, SpecModel, duplicates, invalid
from retune.spec.evaluator import EvaluatorSpec
from retune.spec.policy import PolicySpec, WorkloadRef
from retune.spec.rollout import RetuneSpec, RolloutSpec
from retune.spec.search import SearchSpec
from retune.spec.signals import SLO, HardwareSpec, ProfileSpec
from retune.spec.status import TargetStatus

GROUP = "retune.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "OptimizationTarget"
PLURAL = "optimizationtargets"
SINGULAR = "optimizationtarget"
SHORT_NAMES: tuple[str, ...] = ("ot",)


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """An ownerReference to the target, so the garbage collector removes what we made.

    ``blockOwnerDeletion`` stays off: it only matters for foreground deletion of the
    target, and would need update on ``optimizationtargets/finalizers`` where the
    OwnerReferencesPermissionEnforcement admission plugin is on.
    """
    missing = [key for key in ("apiVersion", "kind", "name", "uid") if not owner.get(key)]
    if missing:
        raise ValueError(f"owner needs {', '.join(missing)} (the target's metadata)")
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["name"],
        "uid": owner["uid"],
        "controller": True,
        "blockOwnerDeletion": False,
    }


class ObjectMeta(BaseModel):
    """The part of Kubernetes object metadata retune uses; other keys are kept as given."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: DNSSubdomain
    namespace: DNSSubdomain = "default"
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: datetime | None = None


class TargetSpec(SpecModel):
    """An OptimizationTarget keeps a Deployment's policy tuned to its workload, hardware and
    SLOs: it searches for a better policy, validates it, rolls it out as a canary, and
    searches again when the SLOs, the workload or the hardware call for it."""

    workload_ref: WorkloadRef
    """The Deployment whose pods load the policy."""
    policy: PolicySpec
    """The policy being tuned."""
    evaluator: EvaluatorSpec
    """How candidates are scored and validated."""
    profile: ProfileSpec = Field(default_factory=ProfileSpec)
    """The workload profile handed to the evaluator."""
    hardware: HardwareSpec = Field(default_factory=HardwareSpec)
    """The node labels that define a hardware class."""
    slos: list[SLO] = []
    """Service-level objectives; a violation can trigger a retune."""
    search: SearchSpec = Field(default_factory=SearchSpec)
    """How the search runs."""
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    """How a validated winner is rolled out."""
    retune: RetuneSpec = Field(default_factory=RetuneSpec)
    """What triggers a new search."""

    @model_validator(mode="after")
    def _unique_slo_names(self) -> TargetSpec:
        repeated = duplicates([slo.name for slo in self.slos])
        if repeated:
            raise invalid(f"duplicate SLO name {repeated[0]!r}", "slos")
        return self


class OptimizationTarget(SpecModel):
    """An ``OptimizationTarget`` as written by the user (and, in the cluster, its status)."""

    api_version: Literal["retune.dev/v1alpha1"] = "retune.dev/v1alpha1"
    kind: Literal["OptimizationTarget"] = "OptimizationTarget"
    metadata: ObjectMeta
    spec: TargetSpec
    status: TargetStatus | None = None

    _source: str = PrivateAttr(default="<memory>")
    _base_dir: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> str:
        """Where the target was read from (a file path, or ``namespace/name``)."""
        return self._source

    @property
    def base_dir(self) -> Path | None:
        """Directory that relative paths in the spec are resolved against."""
        return self._base_dir

    def bind_source(self, source: str, base_dir: Path | None) -> None:
        """Record where the target came from (done by the loaders)."""
        self._source = source
        self._base_dir = base_dir

    def resolve_path(self, relative: str) -> Path:
        """A path from the spec (seed file, evaluator module, recorded profile), resolved
        against the target file's directory."""
        path = Path(relative)
        if path.is_absolute() or self._base_dir is None:
            return path
        return self._base_dir / path

    def to_dict(self) -> dict[str, Any]:
        """The target as a Kubernetes object: camelCase keys, unset fields omitted."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
