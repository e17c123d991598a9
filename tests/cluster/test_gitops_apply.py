"""retune and a GitOps tool on one Deployment, on the real control plane.

A promotion is a server-side apply as the field manager ``retune`` of the fields retune
owns, and nothing else. Then an apply of the user's own manifest by another field manager
(Flux's kustomize-controller, Argo CD, ``kubectl apply --server-side``) cannot silently
undo a promotion: a manifest that leaves the policy volume to retune keeps it; one that
names the seed ConfigMap conflicts with ``retune`` instead of reverting it; and one whose
retune-owned fields are taken from the live object (Argo CD's ``RespectIgnoreDifferences``)
applies cleanly. Pods are not needed here: only the Deployment objects are looked at.
"""

from __future__ import annotations

import copy
import json
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from retune.rollout import POLICY_REVISION_ANNOTATION, TRACK_LABEL
from retune.rollout.apps import FIELD_MANAGER, KubeDeploymentApi
from retune.rollout.deployments import Deployments, RolloutTarget
from retune.spec import PolicyVolume, WorkloadRef
from tests.cluster.controlplane import ControlPlane
from tests.cluster.test_rollout_deployments import operator_identity

pytestmark = pytest.mark.cluster

APP = {"app": "cache"}
VOLUME = PolicyVolume()
REVISION = "cache-policy-1a2b3c"


def manifest(*, with_volume: bool, image: str = "example/cache:1") -> dict[str, Any]:
    """The user's Deployment as their repository holds it."""
    container: dict[str, Any] = {"name": "cache", "image": image}
    pod: dict[str, Any] = {"containers": [container]}
    if with_volume:
        container["volumeMounts"] = [{"name": VOLUME.name, "mountPath": VOLUME.mount_path}]
        pod["volumes"] = [{"name": VOLUME.name, "configMap": {"name": "cache-seed"}}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "cache", "labels": APP},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": APP},
            "template": {"metadata": {"labels": APP}, "spec": pod},
        },
    }


class Repository:
    """The user's side: their manifest, applied by their GitOps tool's field manager."""

    def __init__(self, cluster: ControlPlane, namespace: str) -> None:
        self.namespace = namespace
        self.apps: Any = client.AppsV1Api(cluster.api())
        operator = operator_identity(cluster, namespace)
        target = RolloutTarget(namespace, "cache", WorkloadRef(name="cache"), VOLUME)
        self.retune = Deployments(KubeDeploymentApi(operator, namespace), target)

    def apply(self, body: dict[str, Any], manager: str, *, force: bool) -> None:
        """Server-side apply as ``manager`` (``force``: take conflicting fields over)."""
        self.apps.patch_namespaced_deployment(
            body["metadata"]["name"],
            self.namespace,
            body,
            field_manager=manager,
            force=force,
            _content_type="application/apply-patch+yaml",
        )

    def live(self) -> dict[str, Any]:
        response = self.apps.read_namespaced_deployment(
            "cache", self.namespace, _preload_content=False
        )
        return cast(dict[str, Any], json.loads(response.data))


@pytest.fixture
def repository(cluster: ControlPlane, namespace: str) -> Repository:
    return Repository(cluster, namespace)


def policy_of(deployment: dict[str, Any]) -> str | None:
    for volume in deployment["spec"]["template"]["spec"].get("volumes") or []:
        if volume["name"] == VOLUME.name:
            return cast(str, volume["configMap"]["name"])
    return None


def owned_fields(deployment: dict[str, Any], manager: str) -> set[str]:
    """The leaf field paths ``manager`` owns through Apply, e.g. ``f:spec/f:replicas``."""
    [entry] = [
        e
        for e in deployment["metadata"]["managedFields"]
        if e["manager"] == manager and e["operation"] == "Apply"
    ]
    leaves: set[str] = set()

    def walk(node: dict[str, Any], path: str) -> None:
        children = {k: v for k, v in node.items() if k != "."}
        if not children:
            leaves.add(path)
        for key, child in children.items():
            walk(child, f"{path}/{key}" if path else key)

    walk(entry["fieldsV1"], "")
    return leaves


def test_a_promotion_owns_only_retunes_fields_and_survives_a_forced_reapply(
    repository: Repository,
) -> None:
    # Given a Deployment applied from the repository by Flux, leaving the volume to retune
    repository.apply(manifest(with_volume=False), "kustomize-controller", force=True)
    # When retune promotes a revision
    assert repository.retune.patch_stable(REVISION)
    live = repository.live()
    assert policy_of(live) == REVISION
    # Then retune owns exactly its fields: the volume's ConfigMap, the mount, the track
    # label and the revision annotation; not the image, the replicas or the selector
    mount = f'k:{{"mountPath":"{VOLUME.mount_path}"}}'
    volume = f'k:{{"name":"{VOLUME.name}"}}'
    template = "f:spec/f:template"
    containers = f'{template}/f:spec/f:containers/k:{{"name":"cache"}}'
    assert owned_fields(live, FIELD_MANAGER) == {
        f"f:metadata/f:annotations/f:{POLICY_REVISION_ANNOTATION}",
        f"{template}/f:metadata/f:labels/f:{TRACK_LABEL}",
        f"{containers}/f:name",
        f"{containers}/f:volumeMounts/{mount}/f:name",
        f"{containers}/f:volumeMounts/{mount}/f:mountPath",
        f"{containers}/f:volumeMounts/{mount}/f:readOnly",
        f"{template}/f:spec/f:volumes/{volume}/f:name",
        f"{template}/f:spec/f:volumes/{volume}/f:configMap/f:name",
    }
    # When Flux applies the original manifest again, forcing, and then a new image
    repository.apply(manifest(with_volume=False), "kustomize-controller", force=True)
    repository.apply(manifest(with_volume=False, image="example/cache:2"), "kustomize-controller", force=True)  # fmt: skip
    # Then the promoted policy stays, and the repository's change went through beside it
    live = repository.live()
    assert policy_of(live) == REVISION
    [container] = live["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "example/cache:2"
    assert [m["name"] for m in container["volumeMounts"]] == [VOLUME.name]
    assert live["spec"]["template"]["metadata"]["labels"] == {**APP, TRACK_LABEL: "stable"}
    assert live["metadata"]["annotations"][POLICY_REVISION_ANNOTATION] == REVISION
    # And a second promotion of the same revision writes nothing
    generation = live["metadata"]["generation"]
    assert not repository.retune.patch_stable(REVISION)
    assert repository.live()["metadata"]["generation"] == generation


def test_a_manifest_naming_the_seed_conflicts_with_retune_instead_of_reverting_it(
    repository: Repository,
) -> None:
    # Given a Deployment applied by Argo CD (server-side) with the seed policy mounted
    original = manifest(with_volume=True)
    repository.apply(original, "argocd-controller", force=False)
    assert policy_of(repository.live()) == "cache-seed"
    # When retune promotes a revision: it takes the volume's ConfigMap name over
    assert repository.retune.patch_stable(REVISION)
    assert policy_of(repository.live()) == REVISION
    # Then applying the original manifest again is refused, naming retune and the field
    with pytest.raises(ApiException) as refused:
        repository.apply(original, "argocd-controller", force=False)
    assert refused.value.status == 409
    body = json.loads(refused.value.body)
    assert f'conflict with "{FIELD_MANAGER}"' in body["message"]
    assert ".configMap.name" in body["message"]
    assert policy_of(repository.live()) == REVISION
    # When the manifest takes the fields retune owns from the live object, as Argo CD's
    # RespectIgnoreDifferences does, it applies, and the promoted policy stays
    respectful = copy.deepcopy(original)
    respectful["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] = REVISION
    repository.apply(respectful, "argocd-controller", force=False)
    live = repository.live()
    assert policy_of(live) == REVISION
    # And the image, replicas and selector are still the repository's alone
    assert not any("image" in f or "replicas" in f for f in owned_fields(live, FIELD_MANAGER))
    assert "f:spec/f:replicas" in owned_fields(live, "argocd-controller")
