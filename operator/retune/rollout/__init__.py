"""Rollout: a validated policy revision goes out as a replica-share canary beside the
stable workload, and is promoted or rolled back on the analysis of each step.

- :mod:`~retune.rollout.steps`: the pure step decisions (wait, next share, hold, promote,
  roll back) from the spec, the status and the analysis;
- :mod:`~retune.rollout.controls`: the manual-control annotations;
- :mod:`~retune.rollout.template` and :mod:`~retune.rollout.deployments`: the canary and
  stable Deployments (pure template edits, then idempotent API operations);
- :mod:`~retune.rollout.canary`: one reconcile tick tying them together;
- :mod:`~retune.rollout.revisions`: policy revisions as immutable ConfigMaps.

See ``docs/rollout.md``.
"""

from retune.rollout.apps import DeploymentApi, KubeDeploymentApi
from retune.rollout.canary import CanaryRunner, Tick
from retune.rollout.controls import (
    ABORT_ANNOTATION,
    APPROVE_ANNOTATION,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    RETUNE_ANNOTATION,
    UNDO_ANNOTATION,
    Controls,
)
from retune.rollout.deployments import (
    POLICY_REVISION_ANNOTATION,
    CanaryScale,
    Deployments,
    RolloutTarget,
)
from retune.rollout.errors import RolloutError, WorkloadMissing
from retune.rollout.steps import (
    Action,
    Decision,
    Hold,
    Promote,
    Rollback,
    SetShare,
    Wait,
    analysis_due,
    begin,
    decide,
    record,
)
from retune.rollout.template import TRACK_LABEL, canary_replicas

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
    "CanaryRunner",
    "CanaryScale",
    "Controls",
    "Decision",
    "DeploymentApi",
    "Deployments",
    "Hold",
    "KubeDeploymentApi",
    "Promote",
    "Rollback",
    "RolloutError",
    "RolloutTarget",
    "SetShare",
    "Tick",
    "Wait",
    "WorkloadMissing",
    "analysis_due",
    "begin",
    "canary_replicas",
    "decide",
    "record",
]
