"""What the controller decides at one reconcile: the new status, actions and events.

The adapters carry out the actions in order, post the events, patch the status, and
reconcile again after ``requeue_after`` seconds (or sooner, when the target changes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from retune.spec import TargetStatus
from retune.spec.events import EventReason, EventType


@dataclass(frozen=True)
class StartSearch:
    """Start a search worker on this profile and hardware.

    With ``resume``, continue the checkpoint if it belongs to the same configuration (the
    engine's fingerprint decides); without, any checkpoint is discarded first.
    """

    profile: dict[str, float]
    hardware: dict[str, str]
    resume: bool
    seed_revision: str | None = None
    """Start from this policy revision (the stable one) instead of ``spec.policy.seed``."""
    seed_offset: int = 0
    """Added to ``spec.search.seed``, so that each retune searches differently."""
    warm_start: bool = False
    """Re-score the previous archive's elites first."""
    usd_allowance: float | None = None
    """At most this many USD (``spec.retune.spendLimit``'s room when the search started),
    below the spec's own budget."""
    counted_usd: float = 0.0
    """What the status counted of the search before this one (its ledger's USD)."""
    search_id: str = ""
    """The search's own id, the same for each of its attempts (its spend journal's
    ``owner``): a resume under another configuration keeps the money of its own journal."""


@dataclass(frozen=True)
class StartValidation:
    """Re-score the checkpoint's best candidate against the stable policy; with
    ``revision``, that revision's policy instead (a known context's winner, recalled)."""

    profile: dict[str, float]
    hardware: dict[str, str]
    revision: str | None = None
    """The revision to re-score instead of the checkpoint's best."""
    stable_revision: str | None = None
    """The revision it is scored against, with ``revision`` (None: ``spec.policy.seed``)."""


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
    candidate: str | None  # its name in the search (``c12``)
    score: float | None
    stable_score: float | None


@dataclass(frozen=True)
class ScaleCanary:
    """Make the canary Deployment run ``revision`` at ``share`` percent beside the stable
    (creating it, or updating a stale one)."""

    revision: str
    share: int


@dataclass(frozen=True)
class PromoteCanary:
    """Point the stable at ``revision``, then delete the canary."""

    revision: str


@dataclass(frozen=True)
class RemoveCanary:
    """Delete the target's canary Deployment: its rollout is rolled back, or ends without
    an outcome of its own (the target was paused, its spec changed)."""

    reason: str


@dataclass(frozen=True)
class ClearAnnotations:
    """Remove one-shot manual-control annotations that have been acted upon (after the
    status is written, so that a crash in between acts on them again, not never)."""

    keys: tuple[str, ...]


Action = (
    StartSearch
    | StartValidation
    | StopWork
    | ForgetWork
    | PublishRevision
    | ScaleCanary
    | PromoteCanary
    | RemoveCanary
    | ClearAnnotations
)

CanaryWrite = ScaleCanary | PromoteCanary | RemoveCanary
"""The actions that write a rollout's Deployments."""


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event about the target: every decision gets one."""

    type: EventType
    reason: EventReason
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
    needs_watch: bool = False
    """Likewise, without the retune triggers' readings (a Stable target)."""
    needs_canary: bool = False
    """Likewise, without a reading of the rollout in ``status.rollout``: its Deployments,
    and its analysis when the step is judged now."""
