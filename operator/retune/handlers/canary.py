"""The canary's side of a reconcile: one tick of :class:`retune.rollout.CanaryRunner`
(Deployments and the analysis queries), and removing a canary the controller dropped.

A tick that fails is reported to the controller as a
:class:`~retune.controller.CanaryFailure`: permanent when only a change of the spec or the
workload can fix it (a :class:`~retune.rollout.RolloutError`, a request the API server
refuses as invalid or forbidden), passing otherwise (the next tick tries again).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from retune.controller import CanaryFailure, CanaryReading
from retune.handlers.gather import metrics_provider
from retune.handlers.kube import Cluster
from retune.rollout import (
    CanaryRunner,
    Deployments,
    KubeDeploymentApi,
    RolloutError,
    RolloutTarget,
)
from retune.spec import OptimizationTarget, RolloutStatus

_PERMANENT_STATUSES = frozenset({400, 403, 404, 422})


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


def canary_tick(
    cluster: Cluster,
    target: OptimizationTarget,
    owner: Mapping[str, Any],
    rollout: RolloutStatus,
    now: datetime,
    *,
    annotations: Mapping[str, str] | None,
    score: float | None,
    prometheus_url: str | None,
) -> CanaryReading:
    """Advance the rollout in ``rollout`` by one tick (acting on the Deployments)."""
    provider = metrics_provider(target, prometheus_url)
    runner = CanaryRunner.for_target(
        cluster.api, provider, target.spec.rollout, rollout_target(target, owner)
    )
    try:
        return runner.tick(rollout, now, annotations, score)
    except RolloutError as error:
        return CanaryFailure(str(error), permanent=True)
    except ApiException as error:
        return CanaryFailure(describe(error), permanent=error.status in _PERMANENT_STATUSES)
    except (HTTPError, OSError) as error:
        return CanaryFailure(f"the API server could not be reached: {error}", permanent=False)
    finally:
        provider.close()


def remove_canary(cluster: Cluster, target: OptimizationTarget) -> bool:
    """Delete ``target``'s canary Deployment; False when there was none."""
    where = rollout_target(target, None)
    return Deployments(KubeDeploymentApi(cluster.api, where.namespace), where).delete_canary()


def describe(error: ApiException) -> str:
    """An API error as the API server put it."""
    try:
        message = json.loads(error.body or "{}").get("message")
    except ValueError:
        message = None
    return f"{error.status} {error.reason}: {message or error.body}"
