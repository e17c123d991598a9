"""What the operator observes: the workload profile, the hardware, and the SLOs."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from retune.spec.base import (
    LabelKey,
    Name,
    PromQL,
    RelativePath,
    Seconds,
    SpecModel,
    Url,
    check_placeholders,
    invalid,
    render_query,
)
from retune.spec.units import format_duration

Comparison = Literal["below", "above"]
"""``below``: good while the value is at most the threshold; ``above``: at least."""


def within(value: float, threshold: float, comparison: Comparison) -> bool:
    """Whether ``value`` respects ``threshold`` under ``comparison`` (bounds included)."""
    return value <= threshold if comparison == "below" else value >= threshold


DEFAULT_HARDWARE_LABEL_KEYS: tuple[str, ...] = (
    "node.kubernetes.io/instance-type",
    "kubernetes.io/arch",
    "feature.node.kubernetes.io/cpu-model.vendor_id",
    "feature.node.kubernetes.io/cpu-model.family",
    "feature.node.kubernetes.io/cpu-model.id",
    "nvidia.com/gpu.product",
    "nvidia.com/gpu.memory",
)

# Labels that change while the hardware stays the same: a fingerprint built from them would
# trigger a retune for nothing.
VOLATILE_LABEL_KEYS: frozenset[str] = frozenset(
    {
        "nvidia.com/gfd.timestamp",
        "nvidia.com/mig.config.state",
        "kubernetes.io/hostname",
    }
)


class ProfileSpec(SpecModel):
    """The workload profile: named values that describe how the workload is being used."""

    queries: dict[str, PromQL] = {}
    """Profile name -> PromQL query returning one number."""
    recorded: RelativePath | None = None
    """JSON or YAML file of name -> number, relative to the target file; used when there is
    no Prometheus (local mode)."""
    prometheus_url: Url | None = None
    """Prometheus to query; defaults to the operator's configured one."""
    interval_seconds: Seconds = Field(
        default=300, ge=10, validation_alias="interval", serialization_alias="interval"
    )
    """How often the profile is read."""

    @field_validator("queries")
    @classmethod
    def _query_names(cls, queries: dict[str, str]) -> dict[str, str]:
        for name in queries:
            if not name or not (name.replace("_", "a").replace("-", "a").isalnum()):
                raise invalid(f"profile name {name!r} must use only letters, digits, '_', '-'")
        return queries


class HardwareSpec(SpecModel):
    """The node labels that define a hardware class."""

    volatile_label_keys: ClassVar[frozenset[str]] = VOLATILE_LABEL_KEYS

    label_keys: list[LabelKey] = Field(default=list(DEFAULT_HARDWARE_LABEL_KEYS), min_length=1)
    """Node label keys whose values form the hardware fingerprint."""
    recorded: dict[str, str] = {}
    """The hardware labels to assume in local mode (label key -> value)."""

    @field_validator("label_keys")
    @classmethod
    def _stable_keys(cls, keys: list[str]) -> list[str]:
        for index, key in enumerate(keys):
            if key in VOLATILE_LABEL_KEYS:
                message = f"{key!r} changes without the hardware changing; remove it"
                raise invalid(message, str(index))
            if key in keys[:index]:
                raise invalid(f"duplicate label key {key!r}", str(index))
        return keys


class BurnRateWindow(SpecModel):
    """A multi-window burn-rate alert: both windows must burn faster than ``burnRate``."""

    long_window_seconds: Seconds = Field(
        ge=60, validation_alias="longWindow", serialization_alias="longWindow"
    )
    """The long window, e.g. 1h."""
    short_window_seconds: Seconds = Field(
        ge=60, validation_alias="shortWindow", serialization_alias="shortWindow"
    )
    """The short window, e.g. 5m; must be shorter than the long one."""
    burn_rate: float = Field(gt=0)
    """How many times faster than sustainable the error budget is being spent."""

    @model_validator(mode="after")
    def _short_is_shorter(self) -> BurnRateWindow:
        if self.short_window_seconds >= self.long_window_seconds:
            raise invalid("must be shorter than longWindow", "shortWindow")
        return self


DEFAULT_BURN_RATE_WINDOWS: tuple[tuple[int, int, float], ...] = (
    (3600, 300, 14.4),
    (21600, 1800, 6.0),
)
"""(long, short, burn rate) pairs of the SRE workbook's multi-window alerts."""


def _default_windows() -> list[BurnRateWindow]:
    return [
        BurnRateWindow(long_window_seconds=long, short_window_seconds=short, burn_rate=rate)
        for long, short, rate in DEFAULT_BURN_RATE_WINDOWS
    ]


class SLO(SpecModel):
    """A service-level objective. Either a threshold (``query``, ``threshold``,
    ``comparison``, ``for``) or an error budget (``errorQuery``, ``totalQuery``,
    ``objective``, ``burnRateWindows``)."""

    name: Name
    """Name of the objective."""
    query: PromQL | None = None
    """Threshold SLO: PromQL returning one number."""
    threshold: float | None = None
    """Threshold SLO: the bound the value must respect."""
    comparison: Comparison = "below"
    """Threshold SLO: whether the value must stay below or above the threshold."""
    for_seconds: Seconds = Field(
        default=300, ge=0, validation_alias="for", serialization_alias="for"
    )
    """Threshold SLO: how long the bound must be broken before it counts as a violation."""
    error_query: PromQL | None = None
    """Error-budget SLO: PromQL for the rate of bad events; may use ``{{window}}``."""
    total_query: PromQL | None = None
    """Error-budget SLO: PromQL for the rate of all events; may use ``{{window}}``."""
    objective: float | None = Field(default=None, gt=0, lt=1)
    """Error-budget SLO: the good fraction to keep, e.g. 0.999."""
    burn_rate_windows: list[BurnRateWindow] = Field(default_factory=_default_windows, min_length=1)
    """Error-budget SLO: the windows, by default the SRE workbook's 1h/5m x14.4 and
    6h/30m x6."""

    def holds(self, value: float) -> bool:
        """Whether a threshold SLO's ``value`` respects it."""
        if self.threshold is None:
            raise ValueError(f"SLO {self.name!r} is not a threshold SLO")
        return within(value, self.threshold, self.comparison)

    @property
    def kind(self) -> Literal["threshold", "burn_rate"]:
        """Which form of objective this is."""
        return "threshold" if self.query is not None else "burn_rate"

    @model_validator(mode="after")
    def _one_form(self) -> SLO:
        threshold_form = self.query is not None or self.threshold is not None
        budget_form = any(
            value is not None for value in (self.error_query, self.total_query, self.objective)
        )
        if threshold_form and budget_form:
            raise invalid("set either query/threshold or errorQuery/totalQuery/objective, not both")
        if not threshold_form and not budget_form:
            raise invalid("set query and threshold, or errorQuery, totalQuery and objective")
        required = (
            [("query", self.query), ("threshold", self.threshold)]
            if threshold_form
            else [
                ("errorQuery", self.error_query),
                ("totalQuery", self.total_query),
                ("objective", self.objective),
            ]
        )
        for key, value in required:
            if value is None:
                raise invalid("required field missing", key)
        for key, query in (("errorQuery", self.error_query), ("totalQuery", self.total_query)):
            if query is not None:
                check_placeholders(query, {"window"}, key, required={"window"})
        return self

    def render_error_queries(self, window_seconds: float) -> tuple[str, str]:
        """The error and total queries of a burn-rate SLO over one window."""
        if self.error_query is None or self.total_query is None:
            raise ValueError(f"SLO {self.name!r} is not an error-budget SLO")
        values = {"window": format_duration(window_seconds)}
        return render_query(self.error_query, values), render_query(self.total_query, values)
