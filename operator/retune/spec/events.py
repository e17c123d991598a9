"""The Kubernetes Events a target gets: every reason, and which of them are warnings.

Every decision the operator makes posts an Event on the target. Their reasons are part of
the resource's interface: users filter on them (``kubectl get events
--field-selector reason=...``), the chart's dashboard and alerts count them
(``retune_events_total{type, reason}``), and ``docs/operator.md`` lists them. So they are
one enum, and whether a reason is a warning is said once, here, not at each place that
posts one.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

EventType = Literal["Normal", "Warning"]


class EventReason(StrEnum):
    """Why an Event was posted on a target."""

    # searching and validating
    SIGNALS_READ = "SignalsRead"
    SEARCH_STARTED = "SearchStarted"
    SEARCH_RESUMED = "SearchResumed"
    SEARCH_FINISHED = "SearchFinished"
    NO_IMPROVEMENT = "NoImprovement"
    VALIDATION_STARTED = "ValidationStarted"
    VALIDATION_PASSED = "ValidationPassed"
    VALIDATION_FAILED = "ValidationFailed"
    REVISION_PUBLISHED = "RevisionPublished"
    # approval
    AWAITING_APPROVAL = "AwaitingApproval"
    APPROVED = "Approved"
    APPROVAL_REPLACED = "ApprovalReplaced"
    APPROVAL_WITHDRAWN = "ApprovalWithdrawn"
    REVISION_RECOMMENDED = "RevisionRecommended"
    # the rollout
    ROLLOUT_STARTED = "RolloutStarted"
    CANARY_STEP = "CanaryStep"
    CANARY_WAITING = "CanaryWaiting"
    CANARY_PROMOTED = "CanaryPromoted"
    # retunes
    HARDWARE_CHANGED = "HardwareChanged"
    HARDWARE_SETTLED = "HardwareSettled"
    PROFILE_DRIFTED = "ProfileDrifted"
    SLO_MET = "SLOMet"
    RETUNE_DEFERRED = "RetuneDeferred"
    RETUNE_STARTED = "RetuneStarted"
    RETUNE_IGNORED = "RetuneIgnored"
    # the library of contexts
    CONTEXT_RECALLED = "ContextRecalled"
    RECALL_VALIDATED = "RecallValidated"
    CONTEXT_RESTORED = "ContextRestored"
    CONTEXT_REMEMBERED = "ContextRemembered"
    CONTEXT_CURRENT = "ContextCurrent"
    CONTEXT_UNKNOWN = "ContextUnknown"
    # controls and the spec
    UNDO_REQUESTED = "UndoRequested"
    CONTROL_IGNORED = "ControlIgnored"
    SPEC_CHANGED = "SpecChanged"
    PAUSED = "Paused"
    UNPAUSED = "Unpaused"
    RECOVERED = "Recovered"
    # warnings (WARNINGS below)
    CANARY_HELD = "CanaryHeld"
    CANARY_ROLLED_BACK = "CanaryRolledBack"
    CANARY_ABORTED = "CanaryAborted"
    CANARY_INTERRUPTED = "CanaryInterrupted"
    ROLLOUT_ERROR = "RolloutError"
    APPROVAL_IGNORED = "ApprovalIgnored"
    UNDO_IGNORED = "UndoIgnored"
    SLO_VIOLATED = "SLOViolated"
    INVALID_SPEC = "InvalidSpec"
    SEARCH_FAILED = "SearchFailed"
    VALIDATION_ERROR = "ValidationError"
    INTERRUPTED = "Interrupted"
    RECALL_FAILED = "RecallFailed"
    MODEL_TIER_RESTING = "ModelTierResting"
    SPEND_LIMIT_REACHED = "SpendLimitReached"
    UNSETTLED_CALLS_CHARGED = "UnsettledCallsCharged"
    # why the signals cannot be read (also the SignalsReady condition's reason)
    PROMETHEUS_UNAVAILABLE = "PrometheusUnavailable"
    PROFILE_NO_DATA = "ProfileNoData"
    PROFILE_INVALID = "ProfileInvalid"
    PROFILE_UNAVAILABLE = "ProfileUnavailable"
    INVALID_QUERY = "InvalidQuery"
    WORKLOAD_NOT_FOUND = "WorkloadNotFound"
    NO_MATCHING_NODES = "NoMatchingNodes"


WARNINGS: frozenset[EventReason] = frozenset(
    {
        EventReason.CANARY_HELD,
        EventReason.CANARY_ROLLED_BACK,
        EventReason.CANARY_ABORTED,
        EventReason.CANARY_INTERRUPTED,
        EventReason.ROLLOUT_ERROR,
        EventReason.APPROVAL_IGNORED,
        EventReason.UNDO_IGNORED,
        EventReason.SLO_VIOLATED,
        EventReason.INVALID_SPEC,
        EventReason.SEARCH_FAILED,
        EventReason.VALIDATION_ERROR,
        EventReason.INTERRUPTED,
        EventReason.RECALL_FAILED,
        EventReason.MODEL_TIER_RESTING,
        EventReason.SPEND_LIMIT_REACHED,
        EventReason.UNSETTLED_CALLS_CHARGED,
        EventReason.PROMETHEUS_UNAVAILABLE,
        EventReason.PROFILE_NO_DATA,
        EventReason.PROFILE_INVALID,
        EventReason.PROFILE_UNAVAILABLE,
        EventReason.INVALID_QUERY,
        EventReason.WORKLOAD_NOT_FOUND,
        EventReason.NO_MATCHING_NODES,
    }
)
"""The reasons posted as ``Warning``: something went wrong or waits on the user. Every
other reason is ``Normal``."""


def event_type(reason: EventReason) -> EventType:
    """The Event type a reason is posted with."""
    return "Warning" if reason in WARNINGS else "Normal"
