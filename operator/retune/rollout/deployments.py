"""The canary and stable Deployments of one target: create, scale, promote, roll back.

The replica share keeps the stable whole: at a step of ``p`` percent the canary runs
``ceil(N * p / 100)`` pods *beside* the stable's ``N`` (at least one), so the stable is never
scaled, its pods never restarted, until a promotion. Both sets of pods carry the same
labels (the canary's add ``retune.dev/track=canary``), so the workload's Service sends the
canary about ``p / (100 + p)`` of the requests; a step of 100 runs a full-size canary
beside the stable.

Every operation reads first and writes only what differs, so it can be repeated after a
crash at any point: the canary is found by name and checked to be this target's, writes
to the canary carry the resourceVersion they were computed from, and a promotion is
recorded on the stable itself (its policy volume, and the ``retune.dev/policy-revision``
annotation), which is what makes a half-done promotion visible to the next attempt. The
stable is the user's: it is written by server-side apply of retune's own fields only
(:func:`stable_apply`), never replaced or merge-patched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from retune.evaluate.podspec import ROLE_LABEL, TARGET_LABEL, owner_reference, short_name
from retune.evaluate.podspec import target_label as target_label_value
from retune.rollout.apps import Conflict, DeploymentApi, Json
from retune.rollout.errors import RolloutError, WorkloadMissing
from retune.rollout.observation import CanaryScale
from retune.rollout.template import (
    POLICY_REVISION_ANNOTATION,
    TRACK_LABEL,
    canary_replicas,
    canary_selector,
    canary_template,
    digest,
    policy_config_map,
    with_policy,
    with_track,
)
from retune.signals.analysis import CANARY_TRACK, STABLE_TRACK
from retune.spec import PolicyVolume, WorkloadRef

ROLE_CANARY = "canary"
TEMPLATE_HASH_ANNOTATION = "retune.dev/canary-hash"
"""On the canary Deployment: a hash of what it was made from, to tell when it is stale."""
_ATTEMPTS = 4


@dataclass(frozen=True)
class RolloutTarget:
    """Where a target's rollout happens."""

    namespace: str
    name: str
    """The OptimizationTarget's name."""
    workload: WorkloadRef
    volume: PolicyVolume
    owner: Mapping[str, Any] | None = None
    """The target's ``apiVersion``, ``kind``, ``name`` and ``uid``: the canary is owned by
    it, so it goes when the target goes. None leaves the canary unowned (tests)."""


class Deployments:
    """The Deployment operations of one target's rollouts, each idempotent."""

    def __init__(self, api: DeploymentApi, target: RolloutTarget) -> None:
        self.api = api
        self.target = target
        self.canary_name = short_name(target.workload.name, "-canary")

    # -- reading --------------------------------------------------------------------------
    def stable(self) -> Json:
        """The workload Deployment; raises :class:`WorkloadMissing` when it is gone."""
        found = self.api.get(self.target.workload.name)
        if found is None:
            raise WorkloadMissing(
                f"spec.workloadRef: Deployment {self.target.namespace}/"
                f"{self.target.workload.name} does not exist"
            )
        return found

    def stable_revision(self) -> str | None:
        """The ConfigMap the stable's policy volume mounts (None without one)."""
        return policy_config_map(self.stable()["spec"]["template"], self.target.volume)

    def canary(self) -> Json | None:
        """This target's canary Deployment, if it exists.

        Raises :class:`RolloutError` when a Deployment of the canary's name belongs to
        someone else: it is never taken over.
        """
        found = self.api.get(self.canary_name)
        if found is None:
            return None
        labels = found.get("metadata", {}).get("labels") or {}
        mine = {ROLE_LABEL: ROLE_CANARY, TARGET_LABEL: target_label_value(self.target.name)}
        if all(labels.get(key) == value for key, value in mine.items()):
            return found
        where = f"Deployment {self.target.namespace}/{self.canary_name}"
        other = labels.get(TARGET_LABEL) if labels.get(ROLE_LABEL) == ROLE_CANARY else None
        if other:  # another target's rollout: two targets tune the same workload
            raise RolloutError(
                f"{where} is the canary of target {other}, which tunes the same workload "
                f"(spec.workloadRef {self.target.workload.name}): one target per workload; "
                "delete one of them or point its spec.workloadRef elsewhere"
            )
        raise RolloutError(
            f"{where} exists and is not the canary of target {self.target.name}; rename or "
            "delete it"
        )

    def canary_state(self, stable: Json, revision: str) -> tuple[int | None, bool]:
        """The canary's replicas (None without a canary) and whether it runs ``revision``
        on ``stable``'s current pod template."""
        current = self.canary()
        if current is None:
            return None, False
        desired = self._canary_manifest(stable, revision, 0)
        return current["spec"].get("replicas"), _hash_of(current) == _hash_of(desired)

    # -- canary ---------------------------------------------------------------------------
    def ensure_canary(self, revision: str, share: int) -> CanaryScale:
        """Make the canary run ``revision`` at ``share`` percent beside the stable."""
        stable = self.stable()
        replicas = stable.get("spec", {}).get("replicas", 1)
        desired = self._canary_manifest(stable, revision, canary_replicas(replicas, share))
        want = desired["spec"]["replicas"]
        for _ in range(_ATTEMPTS):
            current = self.canary()
            if current is None:
                try:
                    self.api.create(desired)
                except Conflict:
                    continue  # created meanwhile (a second operator replica): compare it
                return CanaryScale(want, replicas, changed=True)
            if _hash_of(current) == _hash_of(desired) and current["spec"].get("replicas") == want:
                return CanaryScale(want, replicas, changed=False)
            body = {**desired, "metadata": {**desired["metadata"]}}
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                self.api.replace(body)
            except Conflict:
                continue
            return CanaryScale(want, replicas, changed=True)
        raise _busy(self.canary_name)

    def delete_canary(self) -> bool:
        """Delete the canary (its pods go with it); False when there was none."""
        current = self.canary()
        if current is None:
            return False
        return self.api.delete(self.canary_name, current["metadata"]["uid"])

    # -- outcomes -------------------------------------------------------------------------
    def patch_stable(self, revision: str) -> bool:
        """Point the stable's policy volume at ``revision``, label its pods
        ``retune.dev/track=stable`` and record the revision in an annotation; False when
        it already was so. The stable's replicas are not touched.

        The write is a server-side apply of :func:`stable_apply` only: the fields retune
        owns, so an apply of the user's own manifest by another manager leaves them be
        (or, setting one of them, conflicts with ``retune`` instead of reverting it).
        """
        stable = self.stable()
        template = stable["spec"]["template"]
        target = self.target
        wanted = with_track(
            with_policy(template, target.volume, revision, target.workload.container),
            STABLE_TRACK,
        )
        annotations = stable["metadata"].get("annotations") or {}
        if wanted == template and annotations.get(POLICY_REVISION_ANNOTATION) == revision:
            return False
        self.api.apply(stable_apply(target, wanted, revision))
        return True

    def promote(self, revision: str) -> bool:
        """Patch the stable to ``revision``, then delete the canary. Returns whether
        anything changed; repeating it (after a crash half-way) finishes the first."""
        patched = self.patch_stable(revision)
        deleted = self.delete_canary()
        return patched or deleted

    def rollback(self) -> bool:
        """Delete the canary; the stable is not touched. False when there was none."""
        return self.delete_canary()

    # -- helpers --------------------------------------------------------------------------
    def _canary_manifest(self, stable: Json, revision: str, replicas: int) -> Json:
        target = self.target
        spec = stable["spec"]
        canary_spec: Json = {
            "selector": canary_selector(spec["selector"]),
            "template": canary_template(
                spec["template"], target.volume, revision, target.workload.container
            ),
            "revisionHistoryLimit": 1,
        }
        for key in ("strategy", "minReadySeconds", "progressDeadlineSeconds"):
            if key in spec:
                canary_spec[key] = spec[key]
        metadata: Json = {
            "name": self.canary_name,
            "namespace": target.namespace,
            "labels": {
                TARGET_LABEL: target_label_value(target.name),
                ROLE_LABEL: ROLE_CANARY,
                TRACK_LABEL: CANARY_TRACK,
                "app.kubernetes.io/managed-by": "retune",
            },
            "annotations": {
                POLICY_REVISION_ANNOTATION: revision,
                TEMPLATE_HASH_ANNOTATION: digest(canary_spec),
            },
        }
        if target.owner is not None:
            metadata["ownerReferences"] = [owner_reference(target.owner)]
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata,
            "spec": {**canary_spec, "replicas": replicas},
        }


def stable_apply(target: RolloutTarget, template: Json, revision: str) -> Json:
    """The apply configuration of the stable Deployment: exactly the fields retune owns.

    ``template`` is the stable's pod template as retune wants it (:func:`with_policy`,
    :func:`with_track`); of it, the configuration keeps the track label, the policy volume's
    ConfigMap name, and the policy volume's mount in the containers it goes into. Lists
    are merged by their keys (containers and volumes by name, mounts by path), so the
    user's other entries and fields are not retune's.
    """
    volume = next(v for v in template["spec"]["volumes"] if v.get("name") == target.volume.name)
    containers = []
    for container in template["spec"]["containers"]:
        mounts = [
            m for m in container.get("volumeMounts") or [] if m.get("name") == target.volume.name
        ]
        if target.workload.container in (None, container["name"]) and mounts:
            containers.append({"name": container["name"], "volumeMounts": mounts[:1]})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": target.workload.name,
            "namespace": target.namespace,
            "annotations": {POLICY_REVISION_ANNOTATION: revision},
        },
        "spec": {
            "template": {
                "metadata": {"labels": {TRACK_LABEL: STABLE_TRACK}},
                "spec": {
                    "containers": containers,
                    "volumes": [
                        {"name": volume["name"], "configMap": {"name": volume["configMap"]["name"]}}
                    ],
                },
            }
        },
    }


def _hash_of(deployment: Json) -> str | None:
    annotations = deployment.get("metadata", {}).get("annotations") or {}
    value = annotations.get(TEMPLATE_HASH_ANNOTATION)
    return str(value) if value is not None else None


def _busy(name: str) -> RolloutError:
    return RolloutError(f"Deployment {name} kept changing while it was being updated; retry")
