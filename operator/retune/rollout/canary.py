"""One reconcile tick of a canary: read the status, decide, act, return the new status.

The caller (the operator) persists :attr:`Tick.status` in ``status.rollout``, appends
:attr:`Tick.record` to the history when the rollout ends, emits :attr:`Tick.message` as an
Event, removes the annotations in :attr:`Tick.consumed`, and calls again after
:meth:`Tick.requeue_after`. The tick itself keeps nothing in memory.

Acting is level-triggered: every tick of a running rollout brings the canary Deployment to
the status's share (creating it again if it was deleted), so whatever a crash interrupted
is finished by the next tick. A promotion is committed by patching the stable: a tick that
finds the stable already on the rollout's revision finishes that promotion (deletes the
canary) and reports it, instead of analysing, or rolling back, a second time. Together
this gives one promotion per rollout however often the operator restarts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from kubernetes import client

from retune.rollout.apps import KubeDeploymentApi
from retune.rollout.controls import ABORT_ANNOTATION, PROMOTE_ANNOTATION, Controls, is_set
from retune.rollout.deployments import CanaryScale, Deployments, RolloutTarget
from retune.rollout.steps import (
    Decision,
    Promote,
    Rollback,
    SetShare,
    Wait,
    decide,
    record,
)
from retune.signals.analysis import AnalysisReport, analyse
from retune.signals.metrics import MetricsProvider
from retune.spec import RolloutRecord, RolloutSpec, RolloutStatus


@dataclass(frozen=True)
class Tick:
    """What one tick decided and did."""

    decision: Decision
    status: RolloutStatus | None
    """The rollout's status to persist; None once it has ended."""
    record: RolloutRecord | None
    """The history entry when the rollout ended with this tick."""
    report: AnalysisReport | None
    """The analysis run in this tick, if one was."""
    scale: CanaryScale | None
    """The canary's size, while it runs."""
    consumed: tuple[str, ...]
    """One-shot annotations (abort, promote) to remove from the target."""

    @property
    def reason(self) -> str:
        """The Kubernetes Event reason, e.g. ``CanaryPromoted``."""
        return self.decision.action.event

    @property
    def message(self) -> str:
        """What happened and why, for an Event and the log."""
        text = self.decision.action.reason
        if self.scale is not None and not isinstance(self.decision.action, Wait):
            text += f" ({self.scale.describe()})"
        return text

    @property
    def notable(self) -> bool:
        """Whether this tick is worth an Event (anything but a quiet wait)."""
        return not isinstance(self.decision.action, Wait) or bool(self.scale and self.scale.changed)

    def requeue_after(self, now: datetime) -> float | None:
        """Seconds until the next tick is due; None when the rollout has ended."""
        if self.decision.next_check is None:
            return None
        return max(0.0, (self.decision.next_check - now).total_seconds())


class CanaryRunner:
    """Runs the rollouts of one target, one tick at a time."""

    def __init__(
        self, deployments: Deployments, metrics: MetricsProvider, spec: RolloutSpec
    ) -> None:
        self.deployments = deployments
        self.metrics = metrics
        self.spec = spec

    @classmethod
    def for_target(
        cls,
        api: client.ApiClient,
        metrics: MetricsProvider,
        spec: RolloutSpec,
        target: RolloutTarget,
    ) -> CanaryRunner:
        """A runner acting through the Kubernetes API ``api``."""
        return cls(Deployments(KubeDeploymentApi(api, target.namespace), target), metrics, spec)

    def tick(
        self,
        status: RolloutStatus,
        now: datetime,
        annotations: Mapping[str, str] | None = None,
        score: float | None = None,
    ) -> Tick:
        """Advance the rollout in ``status`` by one tick.

        ``annotations`` are the target's (the manual controls); ``score`` is the
        revision's validated score, kept in the history entry.
        """
        target = self.deployments.target
        reports: list[AnalysisReport] = []

        def run_analysis() -> AnalysisReport:
            report = analyse(
                self.spec.analysis, self.metrics, namespace=target.namespace, target=target.name
            )
            reports.append(report)
            return report

        if self.deployments.stable_revision() == status.revision:
            # Promoted already (a crash between patching the stable and recording it).
            action = Promote(f"the stable already runs {status.revision}; promotion finished")
            decision = Decision(action, status, None)
        else:
            controls = Controls.from_annotations(annotations)
            decision = decide(self.spec, status, now, run_analysis, controls)
        scale = self._act(decision)
        finished = decision.finished
        consumed = tuple(
            key
            for key in (ABORT_ANNOTATION, PROMOTE_ANNOTATION)
            if is_set(annotations, key) and finished
        )
        return Tick(
            decision=decision,
            status=None if finished else decision.status,
            record=record(decision, now, score),
            report=reports[0] if reports else None,
            scale=scale,
            consumed=consumed,
        )

    def remove_canary(self) -> bool:
        """Delete the target's canary, e.g. when a rollout is dropped without an outcome
        (the target paused, or its spec changed); False when there was none."""
        return self.deployments.delete_canary()

    def _act(self, decision: Decision) -> CanaryScale | None:
        action, status = decision.action, decision.status
        if isinstance(action, Promote):
            self.deployments.promote(status.revision)
            return None
        if isinstance(action, Rollback):
            self.deployments.rollback()
            return None
        share = action.share if isinstance(action, SetShare) else status.share
        return self.deployments.ensure_canary(status.revision, share)
