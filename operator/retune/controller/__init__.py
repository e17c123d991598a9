"""The per-target controller: pure decisions over a target's status and observations.

:func:`decide` takes the status, the :class:`Facts` gathered by the operator's adapters and
the time, and returns a :class:`Decision`: the new status, the actions to carry out
(start or stop a worker, publish a revision) and the Events to post. No I/O happens here.
"""

from retune.controller.decision import (
    Action,
    Decision,
    Event,
    ForgetWork,
    PublishRevision,
    StartSearch,
    StartValidation,
    StopWork,
)
from retune.controller.digests import spec_digests
from retune.controller.draft import candidate_id, ledger_status
from retune.controller.facts import (
    Facts,
    SearchOutcome,
    SearchProgress,
    Signals,
    SignalsReading,
    SignalsWaiting,
    SpecDigests,
    ValidationOutcome,
    WorkKind,
    WorkReport,
    WorkState,
)
from retune.controller.machine import decide, resume_point

__all__ = [
    "Action",
    "Decision",
    "Event",
    "Facts",
    "ForgetWork",
    "PublishRevision",
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
    "WorkKind",
    "WorkReport",
    "WorkState",
    "candidate_id",
    "decide",
    "ledger_status",
    "resume_point",
    "spec_digests",
]
