"""The workload a target tunes, and the policy it loads."""

from __future__ import annotations

import keyword
from typing import Literal

from pydantic import Field, field_validator, model_validator

from retune.spec.base import (
    ABSOLUTE_PATH_PATTERN,
    FILE_NAME_PATTERN,
    DNSLabel,
    DNSSubdomain,
    Identifier,
    KeyRef,
    RelativePath,
    SpecModel,
    duplicates,
    invalid,
)


class WorkloadRef(SpecModel):
    """The workload whose pods load the policy."""

    kind: Literal["Deployment"] = "Deployment"
    """Kind of the workload. Only Deployment is supported."""
    name: DNSSubdomain
    """Name of the workload, in the target's namespace."""
    container: DNSLabel | None = None
    """Container that reads the policy; if unset, every container mounts the policy volume."""


class PolicySource(SpecModel):
    """Where a policy's program comes from. Exactly one of file, inline or configMapRef."""

    file: RelativePath | None = None
    """Path of a file, relative to the target file. Local mode only."""
    inline: str | None = Field(default=None, min_length=1, max_length=262144)
    """The program itself."""
    config_map_ref: KeyRef | None = None
    """A key of a ConfigMap holding the program."""

    @model_validator(mode="after")
    def _exactly_one(self) -> PolicySource:
        given = [
            key
            for key, value in (
                ("file", self.file),
                ("inline", self.inline),
                ("configMapRef", self.config_map_ref),
            )
            if value is not None
        ]
        if len(given) != 1:
            got = "none" if not given else ", ".join(given)
            raise invalid(f"set exactly one of file, inline or configMapRef (got {got})")
        return self


class ParameterSpec(SpecModel):
    """A numeric parameter of a ``parameters`` policy, and the range the search may use."""

    name: Identifier
    """Name of the parameter: a module-level constant of the program, ``NAME = <number>``."""
    min: float
    """Smallest value the search may try."""
    max: float
    """Largest value the search may try."""
    integer: bool = False
    """Whether the parameter only takes whole numbers."""
    step: float | None = Field(default=None, gt=0)
    """Smallest meaningful change; values are kept on the grid min + k * step."""

    @model_validator(mode="after")
    def _range(self) -> ParameterSpec:
        if self.min >= self.max:
            raise invalid(f"must be greater than min (got min {self.min}, max {self.max})", "max")
        if self.step is not None and self.step > self.max - self.min:
            raise invalid(f"must not exceed max - min ({self.max - self.min:g})", "step")
        return self


class PolicyVolume(SpecModel):
    """The pod-template volume through which the workload reads the policy file."""

    name: DNSLabel = "retune-policy"
    """Name of the volume in the pod template."""
    mount_path: str = Field(
        default="/etc/retune/policy", pattern=ABSOLUTE_PATH_PATTERN, max_length=4096
    )
    """Directory the volume is mounted at."""
    file_name: str = Field(default="policy.py", pattern=FILE_NAME_PATTERN, max_length=253)
    """Name of the policy file inside the mount path."""


class PolicySpec(SpecModel):
    """The policy being tuned: a program, or a set of parameters, that the workload loads."""

    kind: Literal["code", "parameters"] = "code"
    """``code``: the search rewrites the program. ``parameters``: it only moves the values
    of the declared parameters (module-level constants); a revision then holds them as
    JSON beside the program too."""
    language: Literal["python"] = "python"
    """Language of the program."""
    entrypoint: Identifier
    """Name of the function the workload calls."""
    signature: str = Field(min_length=1, max_length=2048)
    """Human-readable signature of the entrypoint, shown to the model in prompts."""
    description: str = Field(default="", max_length=16384)
    """What the policy decides and what a good one does; shown to the model in prompts."""
    seed: PolicySource
    """The starting program, also the stable policy until a better one is rolled out."""
    parameters: list[ParameterSpec] = []
    """Tunable parameters; required when kind is ``parameters``."""
    volume: PolicyVolume = Field(default_factory=PolicyVolume)
    """How the policy file reaches the workload's pods."""

    @field_validator("entrypoint")
    @classmethod
    def _not_keyword(cls, value: str) -> str:
        if keyword.iskeyword(value):
            raise invalid(f"must not be a Python keyword (got {value!r})")
        return value

    @model_validator(mode="after")
    def _parameters_match_kind(self) -> PolicySpec:
        if self.kind == "parameters" and not self.parameters:
            raise invalid("required when kind is 'parameters' (list at least one)", "parameters")
        if self.kind == "code" and self.parameters:
            raise invalid("only used when kind is 'parameters'", "parameters")
        repeated = duplicates([parameter.name for parameter in self.parameters])
        if repeated:
            raise invalid(f"duplicate parameter name {repeated[0]!r}", "parameters")
        return self
