"""One target per workload: the oldest target of a Deployment tunes it, any other is
Degraded naming it, and recovers once it is gone."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
import pytest

from retune.handlers.claims import Claim, claim_of, claim_problem, rivals, workload_of
from retune.handlers.operator import OperatorOptions, build_registry
from retune.handlers.reconcile import TargetLoop
from retune.spec import Phase, TargetStatus
from tests.test_controller_adapters import _Cluster, _node, _operator_context, _steady_body


def _deleting(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` once its deletion has begun."""
    return {**body, "metadata": {**body["metadata"], "deletionTimestamp": "2026-12-03T08:00:00Z"}}


OLDER = Claim("2026-12-01T10:00:00Z", "cache-old")
NEWER = Claim("2026-12-02T09:00:00Z", "cache-new")


def test_a_targets_claim_is_its_workload_and_creation_time() -> None:
    body = {
        "metadata": {"creationTimestamp": "2026-12-01T10:00:00Z"},
        "spec": {"workloadRef": {"name": "cache"}},
    }
    assert claim_of("shop", "cache-old", body) == {("shop", "cache"): OLDER}
    assert claim_of("shop", "broken", {"spec": {}}) is None  # the schema check says why
    deleting = _deleting(body)
    assert claim_of("shop", "cache-old", deleting) is None  # it lets go as its deletion begins


def test_a_target_letting_go_of_its_workload_wakes_the_workloads_other_targets() -> None:
    claims = {("shop", "cache"): [NEWER, OLDER], ("shop", "router"): [Claim("x", "router-1")]}
    assert rivals("shop", "cache-old", "cache", claims) == ["cache-new"]
    assert rivals("shop", "cache-old", "router", claims) == ["router-1"]  # pointed elsewhere
    assert rivals("other", "cache-old", "cache", claims) == []  # another namespace
    assert rivals("shop", "cache-old", None, claims) == []  # it named no workload
    assert workload_of({"workloadRef": {"name": "cache"}}) == "cache"
    assert workload_of({"workloadRef": {}}) is None and workload_of(None) is None


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

    # While this target is being deleted, the older one's claim does not degrade it
    events.clear()
    deleting = _deleting(body)
    asyncio.run(
        TargetLoop(_operator_context(cluster), namespace, name).reconcile(deleting, nodes, claims)
    )
    assert "InvalidSpec" not in events

    claims[namespace, workload] = [mine]  # the older target is deleted
    asyncio.run(loop.reconcile(body, nodes, claims))
    assert loop.status is not None and loop.status.phase is not Phase.DEGRADED


def _handler(registry: kopf.OperatorRegistry, handler_id: str, reason: str) -> Any:
    found = [
        h.fn
        for h in registry._changing.get_all_handlers()
        if h.id == handler_id and h.reason is not None and h.reason.value == reason
    ]
    assert len(found) == 1, (handler_id, reason)
    return found[0]


def test_the_operator_wakes_the_next_target_when_the_holder_is_deleted_or_moves() -> None:
    cluster = _Cluster()
    cluster.delete_target_objects = lambda namespace, name: []  # type: ignore[attr-defined]
    context = _operator_context(cluster)
    registry = build_registry(context, OperatorOptions())
    index = {("shop", "cache"): [NEWER], ("shop", "router"): [Claim("x", "router-1")]}
    woken = lambda: {key for key, event in context.wakeups.items() if event.is_set()}  # noqa: E731
    logger = logging.getLogger("test")

    # The holder's deletion began: its claim has left the index, the next in line wakes
    deleted = _handler(registry, "cleanup-target", "delete")
    spec = {"workloadRef": {"name": "cache"}}
    asyncio.run(
        deleted(namespace="shop", name="cache-old", spec=spec, logger=logger, workload_index=index)
    )
    assert woken() == {("shop", "cache-new")}

    # A target pointed from the router elsewhere wakes the router's other targets
    context.wakeups.clear()
    changed = _handler(registry, "wake/spec", "update")
    asyncio.run(
        changed(
            namespace="shop",
            name="router-0",
            old={"workloadRef": {"name": "router"}},
            new={"workloadRef": {"name": "cache"}},
            workload_index=index,
        )
    )
    assert woken() == {("shop", "router-0"), ("shop", "router-1")}

    # A change that keeps its workload wakes only itself
    context.wakeups.clear()
    asyncio.run(
        changed(namespace="shop", name="cache-new", old=spec, new=spec, workload_index=index)
    )
    assert woken() == {("shop", "cache-new")}
