"""How a winner is rolled out, and what makes the operator tune again."""

from __future__ import annotations

import itertools
from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator

from retune.spec.base import (
    Name,
    PromQL,
    Seconds,
    SpecModel,
    check_placeholders,
    duplicates,
    invalid,
    render_query,
)
from retune.spec.signals import Comparison, within
from retune.spec.units import validate_cron

ANALYSIS_PLACEHOLDERS: tuple[str, ...] = ("track", "namespace", "target")
"""Placeholders an analysis query may use: ``{{track}}`` is ``stable`` or ``canary`` (the
``retune.dev/track`` pod label), ``{{namespace}}`` the target's namespace, ``{{target}}``
the target's name."""


class AnalysisQuery(SpecModel):
    """A check run on the canary's (and the stable's) pods at every canary step."""

    name: Name
    """Name of the check."""
    query: PromQL
    """PromQL returning one number; may use ``{{track}}``, ``{{namespace}}`` and
    ``{{target}}``."""
    threshold: float
    """The bound the value must respect."""
    comparison: Comparison = "below"
    """Whether the value must stay below or above the threshold."""

    @field_validator("query")
    @classmethod
    def _known_placeholders(cls, query: str) -> str:
        check_placeholders(query, ANALYSIS_PLACEHOLDERS)
        return query

    def render(self, *, track: str, namespace: str, target: str = "") -> str:
        """The query with its placeholders filled in."""
        return render_query(self.query, {"track": track, "namespace": namespace, "target": target})

    def passes(self, value: float) -> bool:
        """Whether ``value`` respects the threshold."""
        return within(value, self.threshold, self.comparison)


class ApprovalMode(StrEnum):
    """Who decides that a validated revision goes out as a canary."""

    AUTO = "auto"
    """retune does: every validated winner is rolled out."""
    MANUAL = "manual"
    """A person does: the revision waits (phase ``AwaitingApproval``) until the target is
    annotated ``retune.dev/approve=<revision>``."""
    RECOMMEND = "recommend"
    """Nobody here: the revision and its evidence are published (``status.approval``, an
    Event, ``retune export``), never rolled out."""


class RolloutSpec(SpecModel):
    """The replica-share canary that rolls a validated winner out."""

    approval: ApprovalMode = ApprovalMode.AUTO
    """``auto`` rolls validated winners out; ``manual`` waits for
    ``retune.dev/approve=<revision>``; ``recommend`` publishes them and never rolls out."""

    steps: list[int] = Field(default=[10, 25, 50], min_length=1, max_length=20)
    """Canary share of the replicas at each step, in percent, increasing."""
    interval_seconds: Seconds = Field(
        default=60, ge=1, validation_alias="interval", serialization_alias="interval"
    )
    """Time between steps; the analysis runs at the end of each."""
    analysis: list[AnalysisQuery] = []
    """Checks that must pass at every step."""
    failure_limit: int = Field(default=1, ge=1, le=100)
    """Failed analyses after which the canary is rolled back."""
    no_data: Literal["hold", "rollback"] = "hold"
    """What a check without data means: ``hold`` keeps the step (never promotes) and rolls
    back after ``noDataLimit`` intervals in a row; ``rollback`` counts it as a failure."""
    no_data_limit: int = Field(default=3, ge=1, le=100)
    """Intervals in a row without data after which a held canary is rolled back."""

    @field_validator("steps")
    @classmethod
    def _increasing_percentages(cls, steps: list[int]) -> list[int]:
        for index, step in enumerate(steps):
            if not 1 <= step <= 100:
                raise invalid(f"must be a percentage from 1 to 100 (got {step})", str(index))
        if any(later <= earlier for earlier, later in itertools.pairwise(steps)):
            raise invalid(f"must increase from step to step (got {steps})")
        return steps

    @field_validator("analysis")
    @classmethod
    def _unique_names(cls, analysis: list[AnalysisQuery]) -> list[AnalysisQuery]:
        repeated = duplicates([query.name for query in analysis])
        if repeated:
            raise invalid(f"duplicate analysis name {repeated[0]!r}")
        return analysis


class DriftSpec(SpecModel):
    """When a change in the workload profile triggers a retune."""

    threshold: float = Field(default=0.2, gt=0)
    """Relative change of any profile value (0.2 = 20 %) that counts as drift."""
    for_seconds: Seconds = Field(
        default=600, ge=0, validation_alias="for", serialization_alias="for"
    )
    """How long the drift must last before a retune starts."""


class SpendLimitSpec(SpecModel):
    """At most ``maxUsd`` on model calls in any ``window``, over all of a target's searches."""

    max_usd: float = Field(gt=0)
    """US dollars the target's searches may spend on model calls within any window."""
    window_seconds: Seconds = Field(
        default=30 * 86400, gt=0, validation_alias="window", serialization_alias="window"
    )
    """The window: a search's spending counts until this long after the search ended."""


class RetuneSpec(SpecModel):
    """What makes the operator search again once a policy is stable."""

    paused: bool = False
    """Stop all searching and rollouts (the stable policy stays)."""
    on_slo_violation: bool = True
    """Retune when an SLO is violated."""
    drift: DriftSpec = Field(default_factory=DriftSpec)
    """Retune when the workload profile drifts."""
    on_hardware_change: bool = True
    """Retune when the hardware under the workload changes."""
    hardware_settle_seconds: Seconds = Field(default=120, ge=0)
    """How long a new hardware fingerprint must hold before it counts (rolling node
    upgrades pass through mixed states)."""
    schedule: str | None = Field(default=None, min_length=1, max_length=256)
    """Cron schedule (5 fields, UTC) of periodic retunes, e.g. ``0 3 * * 0``."""
    cooldown_seconds: Seconds = Field(
        default=1800, ge=0, validation_alias="cooldown", serialization_alias="cooldown"
    )
    """Least time between the end of one search and the start of the next."""
    warm_start: bool = True
    """Seed a new search with the previous archive's elites, re-scored."""
    spend_limit: SpendLimitSpec | None = None
    """Cap on what the target's searches together spend on model calls in a window (the
    first search and every retune; ``spec.search.budget.maxUsd`` caps each one): a search
    that calls models gets what is left of it as its USD budget, and one that would start
    with nothing left waits until earlier spending leaves the window. Unset: no cap
    across searches."""

    @field_validator("schedule")
    @classmethod
    def _cron(cls, schedule: str | None) -> str | None:
        if schedule is None:
            return None
        try:
            return validate_cron(schedule)
        except ValueError as error:
            raise invalid(str(error)) from None
