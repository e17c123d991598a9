"""The canary's side of a reconcile: read a rollout (:func:`read_canary`) and carry out the
controller's writes to its Deployments (:func:`write_canary`).

Either one that fails is reported to the controller as a
:class:`~retune.controller.CanaryFailure`: permanent when only a change of the spec or the
workload can fix it (a :class:`~retune.rollout.RolloutError`, a request the API server
refuses as invalid or forbidden), passing otherwise (the next reconcile tries again).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from retune.controller import (
    CanaryFailure,
    CanaryReading,
    CanaryWrite,
    PromoteCanary,
    RemoveCanary,
    ScaleCanary,
)
from retune.handlers.gather import metrics_provider
from retune.handlers.kube import Cluster
from retune.rollout import Controls, RolloutError
from retune.rollout.apps import KubeDeploymentApi
from retune.rollout.canary import observe
from retune.rollout.deployments import Deployments, RolloutTarget
from retune.spec import OptimizationTarget, RolloutStatus

_PERMANENT_STATUSES = frozenset({400, 403, 404, 422})
T = TypeVar("T")


def rollout_target(target: OptimizationTarget, owner: Mapping[str, Any] | None) -> RolloutTarget:
    """Where ``target``'s rollouts happen."""
    spec = target.spec
    return RolloutTarget(
        namespace=target.metadata.namespace,
        name=target.metadata.name,
        workload=spec.workload_ref,
        volume=spec.policy.volume,
        owner=owner,
    )


def deployments_of(
    cluster: Cluster, target: OptimizationTarget, owner: Mapping[str, Any] | None
) -> Deployments:
    """``target``'s stable and canary Deployments, through the API."""
    where = rollout_target(target, owner)
    return Deployments(KubeDeploymentApi(cluster.api, where.namespace), where)


def read_canary(
    deployments: Deployments,
    target: OptimizationTarget,
    rollout: RolloutStatus,
    now: datetime,
    *,
    annotations: Mapping[str, str] | None,
    prometheus_url: str | None,
) -> CanaryReading:
    """The rollout in ``rollout`` as the cluster shows it (no writes)."""
    provider = metrics_provider(target, prometheus_url)
    controls = Controls.from_annotations(annotations)
    try:
        return _reported(
            lambda: observe(deployments, provider, target.spec.rollout, rollout, now, controls)
        )
    finally:
        provider.close()


def write_canary(deployments: Deployments, action: CanaryWrite) -> CanaryFailure | None:
    """Carry out one of the controller's writes to a rollout's Deployments; the failure,
    if it failed."""

    def write() -> bool:
        if isinstance(action, ScaleCanary):
            return deployments.ensure_canary(action.revision, action.share).changed
        if isinstance(action, PromoteCanary):
            return deployments.promote(action.revision)
        assert isinstance(action, RemoveCanary)
        return deployments.delete_canary()

    outcome = _reported(write)
    return outcome if isinstance(outcome, CanaryFailure) else None


def _reported(call: Callable[[], T]) -> T | CanaryFailure:
    try:
        return call()
    except RolloutError as error:
        return CanaryFailure(str(error), permanent=True)
    except ApiException as error:
        return CanaryFailure(describe(error), permanent=error.status in _PERMANENT_STATUSES)
    except (HTTPError, OSError) as error:
        return CanaryFailure(f"the API server could not be reached: {error}", permanent=False)


def describe(error: ApiException) -> str:
    """An API error as the API server put it."""
    try:
        message = json.loads(error.body or "{}").get("message")
    except ValueError:
        message = None
    return f"{error.status} {error.reason}: {message or error.body}"
