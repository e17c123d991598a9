"""The per-target controller: pure decisions over a target's status and observations.

:func:`decide` takes the status, the :class:`Facts` gathered by the operator's adapters and
the time, and returns a :class:`Decision`: the new status, the actions to carry out
(start or stop a worker, publish a revision, scale, promote or remove a canary, clear
annotations) and the Events to post. No I/O happens here: when a decision needs the
signals, the retune triggers' readings or a reading of the rollout, it says so, and the
adapters decide again with them. Nothing here imports the cluster client or kopf (the
layer contract in ``.importlinter`` holds it so).
"""

from retune.controller.decision import (
    Action,
    CanaryWrite,
    ClearAnnotations,
    Decision,
    Event,
    ForgetWork,
    PromoteCanary,
    PublishRevision,
    RemoveCanary,
    ScaleCanary,
    StartSearch,
    StartValidation,
    StopWork,
)
from retune.controller.digests import spec_digests
from retune.controller.draft import ledger_status
from retune.controller.facts import (
    CanaryFailure,
    CanaryReading,
    Facts,
    HardwareReading,
    SearchOutcome,
    SearchProgress,
    Signals,
    SignalsReading,
    SignalsWaiting,
    SpecDigests,
    ValidationOutcome,
    WatchReading,
    WorkKind,
    WorkReport,
    WorkState,
)
from retune.controller.machine import decide, resume_point
from retune.controller.schedule import next_fire
from retune.controller.triggers import RETUNE_TRIGGERS, RetuneTrigger
from retune.controller.undo import rollout_score
from retune.controller.writes import CHECK_REFRESH, status_worth_writing

__all__ = [
    "CHECK_REFRESH",
    "RETUNE_TRIGGERS",
    "Action",
    "CanaryFailure",
    "CanaryReading",
    "CanaryWrite",
    "ClearAnnotations",
    "Decision",
    "Event",
    "Facts",
    "ForgetWork",
    "HardwareReading",
    "PromoteCanary",
    "PublishRevision",
    "RemoveCanary",
    "RetuneTrigger",
    "ScaleCanary",
    "SearchOutcome",
    "SearchProgress",
    "Signals",
    "SignalsReading",
    "SignalsWaiting",
    "SpecDigests",
    "StartSearch",
    "StartValidation",
    "StopWork",
    "ValidationOutcome",
    "WatchReading",
    "WorkKind",
    "WorkReport",
    "WorkState",
    "decide",
    "ledger_status",
    "next_fire",
    "resume_point",
    "rollout_score",
    "spec_digests",
    "status_worth_writing",
]
