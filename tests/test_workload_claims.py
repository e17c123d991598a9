"""One target per workload: the oldest target of a Deployment tunes it, any other is
Degraded naming it, and recovers once it is gone."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from retune.handlers.claims import Claim, claim_of, claim_problem
from retune.handlers.reconcile import TargetLoop
from retune.spec import Phase, TargetStatus
from tests.test_controller_adapters import _Cluster, _node, _operator_context, _steady_body

OLDER = Claim("2026-12-01T10:00:00Z", "cache-old")
NEWER = Claim("2026-12-02T09:00:00Z", "cache-new")


def test_a_targets_claim_is_its_workload_and_creation_time() -> None:
    body = {
        "metadata": {"creationTimestamp": "2026-12-01T10:00:00Z"},
        "spec": {"workloadRef": {"name": "cache"}},
    }
    assert claim_of("shop", "cache-old", body) == {("shop", "cache"): OLDER}
    assert claim_of("shop", "broken", {"spec": {}}) is None  # the schema check says why


def test_the_oldest_target_of_a_workload_holds_it_then_the_first_by_name() -> None:
    claims = {("shop", "cache"): [NEWER, OLDER], ("shop", "router"): [NEWER]}
    assert claim_problem("shop", "cache-old", "cache", claims) is None
    problem = claim_problem("shop", "cache-new", "cache", claims)
    assert problem is not None and problem.path == "spec.workloadRef.name"
    assert "Deployment shop/cache is tuned by OptimizationTarget cache-old" in problem.message
    assert "one target per workload" in problem.message
    assert claim_problem("shop", "cache-new", "router", claims) is None  # its own workload
    assert claim_problem("other", "cache-new", "cache", claims) is None  # another namespace
    twin = Claim(OLDER.created, "a-twin")  # created in the same second: by name
    assert claim_problem("shop", "cache-old", "cache", {("shop", "cache"): [OLDER, twin]})


def test_a_second_target_of_a_workload_is_degraded_until_the_first_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[str] = []
    monkeypatch.setattr(kopf, "event", lambda *args, **kwargs: events.append(kwargs["reason"]))
    cluster, nodes = _Cluster(), [_node("cpu-0", "m7i.xlarge")]
    body: dict[str, Any] = _steady_body(cluster, nodes)
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    workload = body["spec"]["workloadRef"]["name"]
    mine = Claim("2026-12-02T09:00:00Z", name)
    claims = {(namespace, workload): [mine, Claim("2026-12-01T10:00:00Z", "older")]}
    loop = TargetLoop(_operator_context(cluster), namespace, name)

    asyncio.run(loop.reconcile(body, nodes, claims))
    status = TargetStatus.model_validate(cluster.statuses[-1])
    degraded = status.condition("Degraded")
    assert status.phase is Phase.DEGRADED and degraded is not None
    assert "is tuned by OptimizationTarget older" in degraded.message
    assert "spec.workloadRef.name" in degraded.message
    assert "InvalidSpec" in events

    claims[namespace, workload] = [mine]  # the older target is deleted
    asyncio.run(loop.reconcile(body, nodes, claims))
    assert loop.status is not None and loop.status.phase is not Phase.DEGRADED
