"""What the controller decides at one reconcile: the new status, actions and events.

The adapters carry out the actions in order, post the events, patch the status, and
reconcile again after ``requeue_after`` seconds (or sooner, when the target changes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from retune.spec import TargetStatus


@dataclass(frozen=True)
class StartSearch:
    """Start a search worker on this profile and hardware.

    With ``resume``, continue the checkpoint if it belongs to the same configuration (the
    engine's fingerprint decides); without, any checkpoint is discarded first.
    """

    profile: dict[str, float]
    hardware: dict[str, str]
    resume: bool


@dataclass(frozen=True)
class StartValidation:
    """Re-score the checkpoint's best candidate against the stable policy."""

    profile: dict[str, float]
    hardware: dict[str, str]


@dataclass(frozen=True)
class StopWork:
    """Stop the target's worker; its checkpoint stays."""

    reason: str


@dataclass(frozen=True)
class ForgetWork:
    """The worker's final report has been taken into the status; drop it."""


@dataclass(frozen=True)
class PublishRevision:
    """Create the immutable ConfigMap revision of a validated policy (idempotent)."""

    name: str
    code: str
    candidate: int
    score: float | None
    stable_score: float | None


Action = StartSearch | StartValidation | StopWork | ForgetWork | PublishRevision


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event about the target: every decision gets one."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Decision:
    """The outcome of one reconcile."""

    status: TargetStatus
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: float = 60.0
    needs_signals: bool = False
    """The decision could not be made without the signals: read them and decide again."""
