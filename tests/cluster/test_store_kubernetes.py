"""The checkpoint ConfigMap on a real API server: round trip, optimistic concurrency,
ownership."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from retune.spec import API_VERSION, GROUP, KIND, PLURAL, VERSION
from retune.store.kubernetes import CheckpointConflict, CheckpointTooLarge, KubernetesStore
from tests.cluster.controlplane import ControlPlane
from tests.cluster.processes import wait_until

TARGET = {
    "apiVersion": API_VERSION,
    "kind": KIND,
    "metadata": {"name": "cache"},
    "spec": {
        "workloadRef": {"name": "cache"},
        "policy": {"entrypoint": "priority", "signature": "priority()", "seed": {"inline": "x"}},
        "evaluator": {"image": "example/evaluator:1"},
    },
}


def owner_of(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    custom: Any = client.CustomObjectsApi(api)
    target = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, TARGET)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": "cache",
        "uid": target["metadata"]["uid"],
    }


def store(api: client.ApiClient, namespace: str, owner: dict[str, Any]) -> KubernetesStore:
    return KubernetesStore(api, namespace=namespace, target="cache", owner=owner)


def test_a_checkpoint_round_trips_and_is_owned_by_the_target(
    cluster: ControlPlane, namespace: str
) -> None:
    api = cluster.api()
    owner = owner_of(api, namespace)
    first = store(api, namespace, owner)
    assert first.load() is None
    document = bytes(range(256)) * 10
    first.save(document)
    first.save(document + b"more")
    assert store(api, namespace, owner).load() == document + b"more"

    config_map = client.CoreV1Api(api).read_namespaced_config_map("cache-checkpoint", namespace)
    [reference] = config_map.metadata.owner_references
    assert (reference.kind, reference.name, reference.uid) == (KIND, "cache", owner["uid"])
    assert config_map.metadata.labels["retune.dev/role"] == "checkpoint"

    custom: Any = client.CustomObjectsApi(api)
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "cache")

    def collected() -> bool:
        try:
            client.CoreV1Api(api).read_namespaced_config_map("cache-checkpoint", namespace)
        except ApiException as error:
            return error.status == 404
        return False

    wait_until(collected, 60, "the garbage collector to delete the checkpoint")


def test_a_second_writer_is_refused_and_nothing_is_overwritten(
    cluster: ControlPlane, namespace: str
) -> None:
    api = cluster.api()
    owner = owner_of(api, namespace)
    ours, theirs = store(api, namespace, owner), store(api, namespace, owner)
    ours.load()
    ours.save(b"ours-1")
    ours.load()
    theirs.load()
    theirs.save(b"theirs-2")
    with pytest.raises(CheckpointConflict, match="changed by someone else"):
        ours.save(b"ours-2")
    assert store(api, namespace, owner).load() == b"theirs-2"

    fresh = store(api, namespace, owner)  # never loaded: it may only create
    with pytest.raises(CheckpointConflict, match="created by someone else"):
        fresh.save(b"fresh")
    assert store(api, namespace, owner).load() == b"theirs-2"

    theirs.delete()
    with pytest.raises(CheckpointConflict, match="was deleted"):
        ours.save(b"ours-3")


def test_a_checkpoint_too_large_for_a_config_map_fails_before_writing(
    cluster: ControlPlane, namespace: str
) -> None:
    api = cluster.api()
    checkpoints = store(api, namespace, owner_of(api, namespace))
    checkpoints.load()
    with pytest.raises(CheckpointTooLarge, match=r"spec.search.archive.cells"):
        checkpoints.save(b"x" * 800_000)
    assert checkpoints.load() is None
