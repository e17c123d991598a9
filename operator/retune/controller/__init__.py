"""The per-target controller: pure decisions over a target's status and observations.

:func:`decide` takes the status, the :class:`Facts` gathered by the operator's adapters and
the time, and returns a :class:`Decision`: the new status, the actions to carry out
(start or stop a worker, publish a revision, remove a canary, clear annotations) and the
Events to post. No I/O happens here: when a decision needs the signals, the retune
triggers' readings or a canary tick, it says so, and the adapters decide again with them.
"""

from retune.controller.decision import (
    Action,
    ClearAnnotations,
    Decision,
    Event,
    ForgetWork,
    PublishRevision,
    RemoveCanary,
    StartSearch,
    StartValidation,
    StopWork,
)
from retune.controller.digests import spec_digests
from retune.controller.draft import candidate_id, ledger_status
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
    "ClearAnnotations",
    "Decision",
    "Event",
    "Facts",
    "ForgetWork",
    "HardwareReading",
    "PublishRevision",
    "RemoveCanary",
    "RetuneTrigger",
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
    "candidate_id",
    "decide",
    "ledger_status",
    "next_fire",
    "resume_point",
    "rollout_score",
    "spec_digests",
    "status_worth_writing",
]
