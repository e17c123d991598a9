"""Shared building blocks of the resource models: base classes and constrained value types.

Python attributes are snake_case; YAML/JSON keys are camelCase. Spec models forbid unknown
keys so a typo is an error, never a silently ignored setting. A ``null`` value means
"not set", as it does for Kubernetes objects, so an empty YAML section falls back to its
defaults.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from retune.spec.units import (
    DURATION_PATTERN,
    QUANTITY_HINT,
    QUANTITY_PATTERN,
    parse_duration,
    parse_quantity,
)

IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
CONFIG_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
URL_PATTERN = r"^https?://[^\s/?#]+\S*$"
ABSOLUTE_PATH_PATTERN = r"^/\S*$"
FILE_NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"

# How a pattern is described in an error message, instead of the regular expression.
PATTERN_DESCRIPTIONS = {
    IDENTIFIER_PATTERN: "an identifier (letters, digits and _, not starting with a digit)",
    NAME_PATTERN: "a name of letters, digits, '-', '_' and '.'",
    DNS_LABEL_PATTERN: "a lowercase DNS label (a-z, 0-9 and '-')",
    DNS_SUBDOMAIN_PATTERN: "a lowercase DNS name (a-z, 0-9, '-' and '.')",
    CONFIG_KEY_PATTERN: "a key of letters, digits, '-', '_' and '.'",
    LABEL_KEY_PATTERN: "a Kubernetes label key such as 'example.com/name'",
    URL_PATTERN: "an http:// or https:// URL",
    ABSOLUTE_PATH_PATTERN: "an absolute path",
    FILE_NAME_PATTERN: "a file name without '/'",
    DURATION_PATTERN: "a duration such as 30s, 5m or 1h30m",
    QUANTITY_PATTERN: QUANTITY_HINT,
}

Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN, max_length=128)]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=63)]
DNSLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, max_length=63)]
DNSSubdomain = Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]
ConfigKey = Annotated[str, StringConstraints(pattern=CONFIG_KEY_PATTERN, max_length=253)]
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN, max_length=317)]
Url = Annotated[str, StringConstraints(pattern=URL_PATTERN, max_length=2048)]
RelativePath = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
PromQL = Annotated[str, StringConstraints(min_length=1, max_length=8192)]
NonEmptyStr = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


def invalid(message: str, field: str | None = None) -> PydanticCustomError:
    """A validation error with a user-facing ``message``, optionally about a sub-``field``.

    ``field`` is the camelCase key (or dotted key path) inside the model being validated;
    it is appended to the problem's path, so a rule checked on a whole model still points
    at the field the user has to change.
    """
    context: dict[str, Any] = {"message": message}
    if field:
        context["field"] = field
    return PydanticCustomError("retune", "{message}", context)


def _drop_nulls(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: value for key, value in data.items() if value is not None}
    return data


class SpecModel(BaseModel):
    """Base of every spec model: camelCase keys, unknown keys rejected, null means unset."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _null_means_unset(cls, data: Any) -> Any:
        return _drop_nulls(data)


class StatusModel(BaseModel):
    """Base of the status models: camelCase keys, unknown keys kept (written by the operator)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        use_attribute_docstrings=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _null_means_unset(cls, data: Any) -> Any:
        return _drop_nulls(data)


class KeyRef(SpecModel):
    """One key of a ConfigMap or Secret in the target's namespace."""

    name: DNSSubdomain
    """Name of the ConfigMap or Secret."""
    key: ConfigKey
    """Key inside it."""


# -- durations -------------------------------------------------------------------------------
# In YAML a duration is an integer number of seconds or a Go-style string; in Python it is
# always seconds. The CRD declares it int-or-string with the duration pattern.

_DURATION_SCHEMA = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "x-kubernetes-int-or-string": True,
    "pattern": DURATION_PATTERN,
}


def _seconds(value: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError as error:
        raise invalid(str(error)) from None


def _whole_seconds(value: Any) -> int:
    seconds = _seconds(value)
    if seconds != int(seconds):
        raise invalid(f"must be a whole number of seconds (got {value!r})")
    return int(seconds)


Seconds = Annotated[int, BeforeValidator(_whole_seconds), WithJsonSchema(_DURATION_SCHEMA)]
"""A duration stored as whole seconds."""


def _dump_seconds(seconds: float) -> int | str:
    # The CRD declares durations int-or-string, so a fraction is written as a string.
    return int(seconds) if seconds == int(seconds) else f"{seconds:g}s"


FloatSeconds = Annotated[
    float,
    BeforeValidator(_seconds),
    PlainSerializer(_dump_seconds),
    WithJsonSchema(_DURATION_SCHEMA),
]
"""A duration stored as (possibly fractional) seconds."""


# -- quantities ------------------------------------------------------------------------------


def _quantity(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise invalid(f"must be {QUANTITY_HINT}")
    text = str(value).strip()
    try:
        amount = parse_quantity(text)
    except ValueError as error:
        raise invalid(str(error)) from None
    if amount <= 0:
        raise invalid(f"must be greater than 0 (got {value!r})")
    return text


Quantity = Annotated[
    str,
    BeforeValidator(_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": True,
            "pattern": QUANTITY_PATTERN,
        }
    ),
]
"""A positive Kubernetes quantity, kept as the string the user wrote (``"500m"``, ``"1Gi"``)."""


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def placeholders(template: str) -> set[str]:
    """The ``{{name}}`` placeholders used in a query template."""
    return set(_PLACEHOLDER.findall(template))


def check_placeholders(
    template: str,
    allowed: Collection[str],
    field: str | None = None,
    required: Collection[str] = (),
) -> None:
    """Raise a field problem if ``template`` uses a placeholder outside ``allowed``, or
    lacks one of ``required``."""
    unknown = sorted(placeholders(template) - set(allowed))
    if unknown:
        known = ", ".join("{{" + name + "}}" for name in sorted(allowed)) or "none"
        raise invalid(f"unknown placeholder {{{{{unknown[0]}}}}} (allowed: {known})", field)
    missing = sorted(set(required) - placeholders(template))
    if missing:
        example = "rate(errors_total[{{" + missing[0] + "}}])"
        raise invalid(f"must use {{{{{missing[0]}}}}} where the range goes, e.g. {example}", field)


def render_query(template: str, values: Mapping[str, str]) -> str:
    """Substitute ``{{name}}`` placeholders; every placeholder must have a value."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ValueError(f"no value for placeholder {{{{{name}}}}} in {template!r}")
        return values[name]

    return _PLACEHOLDER.sub(substitute, template)


def duplicates(values: list[str]) -> list[str]:
    """The values that occur more than once, in first-seen order."""
    seen: set[str] = set()
    repeated: list[str] = []
    for value in values:
        if value in seen and value not in repeated:
            repeated.append(value)
        seen.add(value)
    return repeated
