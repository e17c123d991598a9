"""The read side of a rollout's reconcile: what the Deployments and the analysis show now.

:func:`observe` reads; it never writes. The controller decides the step from what it
returns and asks for the writes (the canary's share, a promotion, removing the canary) as
actions, which the adapters carry out through :class:`~retune.rollout.deployments.Deployments`
— every one of those operations reads first and writes only what differs, so a write
repeated after a crash finishes the first instead of doing it twice.
"""

from __future__ import annotations

from datetime import datetime

from retune.rollout.controls import Controls
from retune.rollout.deployments import Deployments
from retune.rollout.observation import CanaryObservation
from retune.rollout.steps import analysis_needed
from retune.rollout.template import policy_config_map
from retune.signals.analysis import analyse
from retune.signals.metrics import MetricsProvider
from retune.spec import RolloutSpec, RolloutStatus


def observe(
    deployments: Deployments,
    metrics: MetricsProvider,
    spec: RolloutSpec,
    rollout: RolloutStatus,
    now: datetime,
    controls: Controls | None = None,
) -> CanaryObservation:
    """Read the rollout in ``rollout``: the stable, the canary, and the current step's
    analysis when the step will be judged now (not for a stable that runs the revision
    already: a promotion is never analysed, or rolled back, a second time).

    Raises :class:`~retune.rollout.RolloutError` when the workload is missing or a
    Deployment of the canary's name is not this target's.
    """
    stable = deployments.stable()
    stable_revision = policy_config_map(stable["spec"]["template"], deployments.target.volume)
    replicas, current = deployments.canary_state(stable, rollout.revision)
    report = None
    if stable_revision != rollout.revision and analysis_needed(spec, rollout, now, controls):
        target = deployments.target
        report = analyse(spec.analysis, metrics, namespace=target.namespace, target=target.name)
    return CanaryObservation(
        revision=rollout.revision,
        stable_revision=stable_revision,
        stable_replicas=int(stable.get("spec", {}).get("replicas", 1)),
        canary_replicas=replicas,
        canary_current=current,
        analysis=report,
    )
