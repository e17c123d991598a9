"""Rollout: a validated policy revision goes out as a replica-share canary beside the
stable workload, and is promoted or rolled back on the analysis of each step.

- :mod:`~retune.rollout.steps`: the pure step logic (wait, next share, hold, promote, roll
  back) from the spec, the status and the analysis;
- :mod:`~retune.rollout.observation`: what the cluster shows of a rollout at one reconcile;
- :mod:`~retune.rollout.controls`: the manual-control annotations;
- :mod:`~retune.rollout.template`: pure pod-template edits;
- :mod:`~retune.rollout.revisions`: policy revisions' names and ConfigMaps.

This package exports only what needs no cluster client, so the controller can use it and
stay pure. The API side is imported from its modules by the adapters:
:mod:`~retune.rollout.apps` (the API calls), :mod:`~retune.rollout.deployments` (the canary
and stable Deployments, idempotent operations) and :mod:`~retune.rollout.canary` (reading
a rollout). See ``docs/rollout.md``.
"""

from retune.rollout.controls import (
    ABORT_ANNOTATION,
    APPROVE_ANNOTATION,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    RETUNE_ANNOTATION,
    UNDO_ANNOTATION,
    Controls,
)
from retune.rollout.errors import RolloutError, WorkloadMissing
from retune.rollout.observation import CanaryObservation, CanaryScale
from retune.rollout.steps import (
    Action,
    Hold,
    Promote,
    Rollback,
    SetShare,
    Step,
    Wait,
    analysis_due,
    analysis_needed,
    begin,
    next_step,
    record,
)
from retune.rollout.template import POLICY_REVISION_ANNOTATION, TRACK_LABEL, canary_replicas

__all__ = [
    "ABORT_ANNOTATION",
    "APPROVE_ANNOTATION",
    "PAUSE_ANNOTATION",
    "POLICY_REVISION_ANNOTATION",
    "PROMOTE_ANNOTATION",
    "RETUNE_ANNOTATION",
    "TRACK_LABEL",
    "UNDO_ANNOTATION",
    "Action",
    "CanaryObservation",
    "CanaryScale",
    "Controls",
    "Hold",
    "Promote",
    "Rollback",
    "RolloutError",
    "SetShare",
    "Step",
    "Wait",
    "WorkloadMissing",
    "analysis_due",
    "analysis_needed",
    "begin",
    "canary_replicas",
    "next_step",
    "record",
]
