"""A target's rollout reconciled as the operator does it, minus kopf.

Each tick decides (:func:`retune.controller.decide`); when the decision asks for the
rollout, reads it (:func:`retune.rollout.canary.observe`) and decides again; carries the
canary writes out (:func:`retune.handlers.canary.write_canary`); and keeps the status, or,
for an operator killed before it could save it, drops it. Used against an in-memory
Deployment API and against the real control plane.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from retune.controller import CanaryWrite, Decision, decide
from retune.handlers.canary import write_canary
from retune.handlers.reconcile import controls_of
from retune.rollout import Controls
from retune.rollout.canary import observe
from retune.rollout.deployments import Deployments
from retune.rollout.observation import CanaryObservation
from retune.signals.metrics import MetricsProvider
from retune.spec import Phase, RolloutSpec
from tests.test_controller_rollout import facts, ready_status


class RolloutLoop:
    """The rollout of ``revision`` (a validated revision, Ready to go out)."""

    def __init__(
        self,
        deployments: Deployments,
        metrics: MetricsProvider,
        spec: RolloutSpec,
        revision: str | None = None,
    ) -> None:
        self.deployments = deployments
        self.metrics = metrics
        self.spec = spec
        self.status = ready_status()
        if revision is not None:
            self.status = self.status.model_copy(update={"validated_revision": revision})
        assert self.status.validated_revision is not None
        self.revision = self.status.validated_revision
        self.readings: list[CanaryObservation] = []

    @property
    def running(self) -> bool:
        """Whether the rollout has not ended yet."""
        return self.status.phase is not Phase.STABLE

    def tick(
        self, now: datetime, annotations: dict[str, str] | None = None, *, saved: bool = True
    ) -> Decision:
        """One reconcile at ``now``; with ``saved=False`` the operator dies before the
        status is written (its writes to the Deployments stand)."""
        seen = facts(
            rollout=self.spec,
            controls=controls_of({"metadata": {"annotations": annotations or {}}}),
        )
        decision = decide(self.status, seen, now)
        if decision.needs_canary:
            assert decision.status.rollout is not None
            controls = Controls.from_keys(seen.controls)
            reading = observe(
                self.deployments, self.metrics, self.spec, decision.status.rollout, now, controls
            )
            self.readings.append(reading)
            decision = decide(self.status, replace(seen, canary=reading), now)
        for action in decision.actions:
            if isinstance(action, CanaryWrite):
                failure = write_canary(self.deployments, action)
                assert failure is None, failure
        if saved:
            self.status = decision.status
        return decision

    def run(self, start: datetime) -> list[Decision]:
        """Tick to the rollout's end, one interval at a time."""
        decisions, now = [], start
        while self.running:
            decisions.append(self.tick(now))
            now += timedelta(seconds=self.spec.interval_seconds)
        return decisions

    @property
    def analysed(self) -> int:
        """How many readings carried an analysis."""
        return sum(reading.analysis is not None for reading in self.readings)


def canary_reasons(decisions: list[Decision]) -> list[str]:
    """Each decision's canary Event reason (``CanaryStep``, ``CanaryPromoted``...)."""
    return [
        next((e.reason for e in d.events if e.reason.startswith("Canary")), "") for d in decisions
    ]
