"""The canary's template edits, and whole rollouts reconciled one tick at a time against an
in-memory Deployment API: each tick reads the rollout (:func:`retune.rollout.canary.observe`),
lets the controller decide, and carries its writes out as the operator does
(:func:`retune.handlers.canary.write_canary`).

The same operations run on the real control plane in
``tests/cluster/test_rollout_deployments.py``; here they are fast and exhaustive.
"""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from retune.controller import CanaryFailure, Decision, PromoteCanary
from retune.evaluate.podspec import ROLE_LABEL, TARGET_LABEL
from retune.handlers.canary import write_canary
from retune.rollout import (
    ABORT_ANNOTATION,
    POLICY_REVISION_ANNOTATION,
    PROMOTE_ANNOTATION,
    TRACK_LABEL,
    RolloutError,
    WorkloadMissing,
    canary_replicas,
)
from retune.rollout.apps import Conflict, Json
from retune.rollout.deployments import ROLE_CANARY, Deployments, RolloutTarget
from retune.rollout.template import canary_selector, policy_config_map, with_policy
from retune.signals import RecordedProvider
from retune.spec import AnalysisQuery, Phase, PolicyVolume, RolloutSpec, WorkloadRef
from tests.rollout_loop import RolloutLoop

T0 = datetime(2025, 1, 1, tzinfo=UTC)
VOLUME = PolicyVolume()
QUERY = AnalysisQuery(name="errors", query='errors{track="{{track}}"}', threshold=0.05)
CANARY_QUERY = 'errors{track="canary"}'


class FakeDeployments:
    """Deployments in one namespace, with resourceVersion, uid and generation kept the
    way the API server keeps them."""

    def __init__(self) -> None:
        self.objects: dict[str, Json] = {}
        self.writes: list[tuple[str, str]] = []
        self.applied: list[Json] = []
        self._counter = itertools.count(1)

    def get(self, name: str) -> Json | None:
        found = self.objects.get(name)
        return copy.deepcopy(found) if found is not None else None

    def create(self, body: Json) -> Json:
        name = body["metadata"]["name"]
        if name in self.objects:
            raise Conflict(f"{name} exists")
        stored = copy.deepcopy(body)
        stored["metadata"].update(uid=f"uid-{next(self._counter)}", generation=1)
        return self._store("create", stored)

    def replace(self, body: Json) -> Json:
        current = self._current(body["metadata"]["name"], body["metadata"]["resourceVersion"])
        stored = copy.deepcopy(body)
        stored["metadata"]["uid"] = current["metadata"]["uid"]
        stored["metadata"]["generation"] = current["metadata"]["generation"] + (
            stored["spec"] != current["spec"]
        )
        return self._store("replace", stored)

    def apply(self, body: Json) -> Json:
        """Server-side apply, as far as these tests need it: lists merged by their keys."""
        self.applied.append(copy.deepcopy(body))
        current = self.objects[body["metadata"]["name"]]
        merged = _apply(copy.deepcopy(current), body)
        merged["metadata"]["generation"] += merged["spec"] != current["spec"]
        return self._store("apply", merged)

    def delete(self, name: str, uid: str) -> bool:
        found = self.objects.get(name)
        if found is None or found["metadata"]["uid"] != uid:
            return False
        del self.objects[name]
        self.writes.append(("delete", name))
        return True

    def _current(self, name: str, version: str | None) -> Json:
        current = self.objects[name]
        if version is not None and version != current["metadata"]["resourceVersion"]:
            raise Conflict(f"{name} changed")
        return current

    def _store(self, verb: str, stored: Json) -> Json:
        stored["metadata"]["resourceVersion"] = str(next(self._counter))
        self.objects[stored["metadata"]["name"]] = stored
        self.writes.append((verb, stored["metadata"]["name"]))
        return copy.deepcopy(stored)


_LIST_KEYS = {"containers": "name", "volumes": "name", "volumeMounts": "mountPath"}


def _apply(document: Any, config: Any, key: str | None = None) -> Any:
    if isinstance(config, list) and key in _LIST_KEYS and isinstance(document, list):
        by_key = _LIST_KEYS[key]
        for entry in config:
            found = next((d for d in document if d.get(by_key) == entry[by_key]), None)
            if found is None:
                document.append(copy.deepcopy(entry))
            else:
                _apply(found, entry)
        return document
    if not isinstance(config, dict) or not isinstance(document, dict):
        return copy.deepcopy(config)
    for name, value in config.items():
        document[name] = _apply(document.get(name), value, name)
    return document


def workload(replicas: int = 4) -> Json:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "cache", "namespace": "shop", "uid": "stable-uid", "generation": 1,
                     "resourceVersion": "0"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "cache"}},
            "template": {
                "metadata": {"labels": {"app": "cache"}},
                "spec": {
                    "containers": [
                        {"name": "cache", "image": "cache:1",
                         "volumeMounts": [{"name": "retune-policy", "mountPath": "/etc/p"}]},
                        {"name": "sidecar", "image": "proxy:1"},
                    ],
                    "volumes": [{"name": "retune-policy",
                                 "configMap": {"name": "cache-seed", "defaultMode": 420}}],
                },
            },
        },
    }  # fmt: skip


def setup(
    values: dict[str, float] | None = None, **rollout: object
) -> tuple[FakeDeployments, RolloutLoop]:
    api = FakeDeployments()
    api.objects["cache"] = workload()
    settings: dict[str, object] = {"steps": [25, 100], "interval": 60, "analysis": [QUERY]}
    settings.update(rollout)
    spec = RolloutSpec.model_validate(settings)
    target = RolloutTarget("shop", "cache-target", WorkloadRef(name="cache"), VOLUME)
    provider = RecordedProvider(values if values is not None else {CANARY_QUERY: 0.01})
    return api, RolloutLoop(Deployments(api, target), provider, spec)


def messages(decision: Decision) -> list[str]:
    return [event.message for event in decision.events]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- template ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stable", "share", "canary"),
    [(4, 10, 1), (4, 25, 1), (4, 50, 2), (4, 100, 4), (10, 25, 3), (1, 1, 1), (0, 50, 0)],
)
def test_canary_replicas_are_the_share_of_the_stable_rounded_up(
    stable: int, share: int, canary: int
) -> None:
    assert canary_replicas(stable, share) == canary


def test_the_policy_volume_is_repointed_keeping_its_mode_and_the_workloads_mount() -> None:
    template = workload()["spec"]["template"]
    changed = with_policy(template, VOLUME, "cache-policy-1", None)
    assert policy_config_map(changed, VOLUME) == "cache-policy-1"
    assert changed["spec"]["volumes"] == [
        {"name": "retune-policy", "configMap": {"name": "cache-policy-1", "defaultMode": 420}}
    ]
    cache, sidecar = changed["spec"]["containers"]
    assert cache["volumeMounts"] == [{"name": "retune-policy", "mountPath": "/etc/p"}]
    assert sidecar["volumeMounts"] == [
        {"name": "retune-policy", "mountPath": "/etc/retune/policy", "readOnly": True}
    ]
    assert template == workload()["spec"]["template"]  # the argument is left alone


def test_a_missing_policy_volume_is_added_and_mounted_in_the_named_container_only() -> None:
    template = workload()["spec"]["template"]
    template["spec"].pop("volumes")
    changed = with_policy(template, VOLUME, "cache-policy-1", "sidecar")
    assert changed["spec"]["volumes"] == [
        {"name": "retune-policy", "configMap": {"name": "cache-policy-1"}}
    ]
    assert "readOnly" not in changed["spec"]["containers"][0]["volumeMounts"][0]
    assert changed["spec"]["containers"][1]["volumeMounts"][0]["readOnly"] is True
    with pytest.raises(RolloutError, match=r"workloadRef.container: 'web' is not a container"):
        with_policy(template, VOLUME, "cache-policy-1", "web")


def test_the_canary_selector_narrows_the_stables_to_the_canary_track() -> None:
    selector = {"matchLabels": {"app": "cache"}, "matchExpressions": [{"key": "tier"}]}
    assert canary_selector(selector) == {
        "matchLabels": {"app": "cache", TRACK_LABEL: "canary"},
        "matchExpressions": [{"key": "tier"}],
    }


# -- ticks ------------------------------------------------------------------------------
def test_a_passing_canary_steps_up_and_is_promoted_once() -> None:
    api, rollout = setup()
    revision = rollout.revision
    first = rollout.tick(T0)
    assert rollout.status.phase is Phase.CANARY
    assert f"canary of {revision} starts at 25% (1 canary pod beside 4 stable)" in messages(first)
    canary = api.objects["cache-canary"]
    assert canary["spec"]["replicas"] == 1
    assert canary["spec"]["template"]["metadata"]["labels"] == {
        "app": "cache",
        TRACK_LABEL: "canary",
    }
    assert policy_config_map(canary["spec"]["template"], VOLUME) == revision
    assert canary["metadata"]["annotations"][POLICY_REVISION_ANNOTATION] == revision

    waiting = rollout.tick(at(30))
    assert waiting.events == [] and waiting.requeue_after == 30
    assert api.writes == [("create", "cache-canary")]  # a quiet tick writes nothing

    rollout.tick(at(60))
    assert rollout.analysed == 1 and rollout.status.rollout is not None
    assert rollout.status.rollout.verdicts == {"errors": "pass"}
    assert api.objects["cache-canary"]["spec"]["replicas"] == 4

    rollout.tick(at(120))
    assert rollout.status.phase is Phase.STABLE and rollout.status.stable_revision == revision
    assert [r.outcome for r in rollout.status.history] == ["Promoted"]
    stable = api.objects["cache"]
    assert policy_config_map(stable["spec"]["template"], VOLUME) == revision
    assert stable["spec"]["template"]["metadata"]["labels"][TRACK_LABEL] == "stable"
    assert stable["metadata"]["annotations"][POLICY_REVISION_ANNOTATION] == revision
    assert (stable["spec"]["replicas"], stable["metadata"]["generation"]) == (4, 2)
    assert "cache-canary" not in api.objects


def test_a_promotion_cut_short_by_a_crash_is_finished_not_repeated() -> None:
    api, rollout = setup(values={CANARY_QUERY: 0.5})  # the analysis would now fail
    rollout.tick(T0)
    rollout.deployments.patch_stable(rollout.revision)  # the first half of a promotion
    resumed = rollout.tick(at(60))
    assert rollout.analysed == 0  # no second analysis, and no rollback of a promotion
    assert [r.outcome for r in rollout.status.history] == ["Promoted"]
    assert "promotion finished" in messages(resumed)[0]
    assert "cache-canary" not in api.objects
    assert api.objects["cache"]["metadata"]["generation"] == 2
    assert rollout.deployments.promote(rollout.revision) is False


def test_a_failing_canary_is_rolled_back_and_the_stable_untouched() -> None:
    api, rollout = setup(values={CANARY_QUERY: 0.5})
    before = copy.deepcopy(api.objects["cache"])
    rollout.tick(T0)
    decision = rollout.tick(at(60))
    assert [r.outcome for r in rollout.status.history] == ["RolledBack"]
    assert [e.reason for e in decision.events] == ["CanaryRolledBack"]
    assert "errors" in messages(decision)[0]
    assert "cache-canary" not in api.objects and api.objects["cache"] == before
    assert rollout.deployments.rollback() is False


def test_every_operation_repeated_changes_nothing_more() -> None:
    api, rollout = setup()
    deployments = rollout.deployments
    assert deployments.ensure_canary("cache-policy-1", 25).changed
    assert not deployments.ensure_canary("cache-policy-1", 25).changed
    assert deployments.ensure_canary("cache-policy-1", 50).changed
    assert deployments.ensure_canary("cache-policy-2", 50).changed  # a new revision
    assert policy_config_map(api.objects["cache-canary"]["spec"]["template"], VOLUME) == (
        "cache-policy-2"
    )
    assert deployments.promote("cache-policy-2") and not deployments.promote("cache-policy-2")
    assert not deployments.rollback()


def test_what_is_read_of_the_canary_matches_what_a_write_would_change() -> None:
    api, rollout = setup()
    deployments = rollout.deployments
    deployments.ensure_canary("cache-policy-1", 25)
    stable = deployments.stable()
    assert deployments.canary_state(stable, "cache-policy-1") == (1, True)
    assert deployments.canary_state(stable, "cache-policy-2") == (1, False)
    api.objects["cache"]["spec"]["template"]["metadata"]["labels"]["tier"] = "web"
    assert deployments.canary_state(deployments.stable(), "cache-policy-1") == (1, False)
    del api.objects["cache-canary"]
    assert deployments.canary_state(stable, "cache-policy-1") == (None, False)


def test_a_deleted_canary_is_made_again_by_the_next_tick() -> None:
    api, rollout = setup()
    rollout.tick(T0)
    del api.objects["cache-canary"]
    decision = rollout.tick(at(10))
    assert [e.reason for e in decision.events] == ["CanaryWaiting"]  # it wrote: worth saying
    assert "cache-canary" in api.objects


def test_a_canary_made_from_an_older_stable_template_is_remade() -> None:
    api, rollout = setup()
    rollout.tick(T0)
    api.objects["cache"]["spec"]["template"]["spec"]["containers"][0]["image"] = "cache:2"
    rollout.tick(at(10))
    containers = api.objects["cache-canary"]["spec"]["template"]["spec"]["containers"]
    assert containers[0]["image"] == "cache:2"


def test_the_canary_follows_the_stables_replicas() -> None:
    api, rollout = setup()
    rollout.tick(T0)
    api.objects["cache"]["spec"]["replicas"] = 12
    rollout.tick(at(10))
    assert api.objects["cache-canary"]["spec"]["replicas"] == 3


def test_abort_and_promote_annotations_are_consumed() -> None:
    _, rollout = setup()
    rollout.tick(T0)
    aborted = rollout.tick(at(1), {ABORT_ANNOTATION: "true"})
    assert rollout.status.history[-1].outcome == "Aborted"
    assert any(getattr(a, "keys", None) == (ABORT_ANNOTATION,) for a in aborted.actions)

    api, rollout = setup(values={})  # no data at all: only a manual promote goes through
    rollout.tick(T0)
    promoted = rollout.tick(at(1), {PROMOTE_ANNOTATION: "true"})
    assert rollout.analysed == 0
    record = rollout.status.history[-1]
    assert (record.outcome, record.score) == ("Promoted", 0.53)  # the validated score
    assert any(getattr(a, "keys", None) == (PROMOTE_ANNOTATION,) for a in promoted.actions)
    stable = api.objects["cache"]["spec"]["template"]
    assert policy_config_map(stable, VOLUME) == rollout.revision


def test_a_foreign_deployment_with_the_canarys_name_is_never_taken_over() -> None:
    api, rollout = setup()
    api.objects["cache-canary"] = {**workload(), "metadata": {"name": "cache-canary"}}
    with pytest.raises(RolloutError, match="is not the canary of target cache-target"):
        rollout.tick(T0)
    deployments = rollout.deployments
    failure = write_canary(deployments, PromoteCanary("cache-policy-1"))
    assert isinstance(failure, CanaryFailure) and failure.permanent
    assert "is not the canary of target cache-target" in failure.message


def test_another_targets_canary_on_the_same_workload_is_named_and_never_taken_over() -> None:
    api, rollout = setup()
    other = workload()
    other["metadata"] = {
        "name": "cache-canary",
        "labels": {ROLE_LABEL: ROLE_CANARY, TARGET_LABEL: "cache-target-old"},
    }
    api.objects["cache-canary"] = other
    with pytest.raises(RolloutError, match="is the canary of target cache-target-old, which"):
        rollout.tick(T0)
    assert api.objects["cache-canary"] == other


def test_a_missing_workload_is_reported_with_the_field() -> None:
    api, rollout = setup()
    del api.objects["cache"]
    with pytest.raises(WorkloadMissing, match=r"spec.workloadRef: Deployment shop/cache"):
        rollout.tick(T0)


def test_a_promotion_applies_only_the_fields_retune_owns() -> None:
    api, rollout = setup()
    assert rollout.deployments.patch_stable("cache-policy-1")
    # The workload mounts the volume in "cache"; with no container named in the spec, the
    # sidecar gets the mount too, and both are in the configuration: nothing else is
    [applied] = api.applied
    assert applied == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "cache", "namespace": "shop",
                     "annotations": {POLICY_REVISION_ANNOTATION: "cache-policy-1"}},
        "spec": {"template": {
            "metadata": {"labels": {TRACK_LABEL: "stable"}},
            "spec": {
                "containers": [
                    {"name": "cache",
                     "volumeMounts": [{"name": "retune-policy", "mountPath": "/etc/p"}]},
                    {"name": "sidecar",
                     "volumeMounts": [{"name": "retune-policy", "mountPath": VOLUME.mount_path,
                                       "readOnly": True}]},
                ],
                "volumes": [{"name": "retune-policy", "configMap": {"name": "cache-policy-1"}}],
            },
        }},
    }  # fmt: skip
    stable = api.objects["cache"]["spec"]["template"]["spec"]
    assert stable["volumes"][0]["configMap"] == {"name": "cache-policy-1", "defaultMode": 420}
    assert [c["image"] for c in stable["containers"]] == ["cache:1", "proxy:1"]
