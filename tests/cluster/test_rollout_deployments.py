"""The canary on the real control plane: Deployments, ReplicaSets, pods, a Service, and the
analysis against the real Prometheus.

The controller-manager makes the ReplicaSets and pods, the scheduler binds them and the node
agent runs them (idle containers). Every Deployment call is made as a ServiceAccount with
only :data:`ROLLOUT_RULES`, so the RBAC the rollout needs is pinned here too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from kubernetes import client

from retune.rollout import POLICY_REVISION_ANNOTATION, TRACK_LABEL
from retune.rollout.apps import KubeDeploymentApi, publish_revision
from retune.rollout.deployments import Deployments, RolloutTarget
from retune.rollout.revisions import revision_manifest, revision_name
from retune.signals import RecordedProvider
from retune.signals.prometheus import PrometheusProvider
from retune.spec import AnalysisQuery, PolicyVolume, RolloutSpec, WorkloadRef
from retune.spec.base import render_query
from tests.cluster.controlplane import ControlPlane
from tests.cluster.exporter import MetricsExporter
from tests.cluster.processes import wait_until
from tests.cluster.prometheus import PrometheusServer
from tests.rollout_loop import RolloutLoop, canary_reasons

pytestmark = pytest.mark.cluster

# What the operator's Role needs for rollouts.
ROLLOUT_RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments"],
     "verbs": ["get", "create", "update", "patch", "delete"]},
]  # fmt: skip
APP = {"app": "cache"}
VOLUME = PolicyVolume()
T0 = datetime(2025, 1, 1, tzinfo=UTC)
ERRORS = AnalysisQuery(
    name="errors",
    query='max(retune_test_errors{namespace="{{namespace}}",track="{{track}}"})',
    threshold=0.05,
)


def operator_identity(cluster: ControlPlane, namespace: str) -> client.ApiClient:
    """A client acting as the ServiceAccount ``retune`` of ``namespace``, allowed only
    :data:`ROLLOUT_RULES`."""
    admin = cluster.api()
    core: Any = client.CoreV1Api(admin)
    rbac: Any = client.RbacAuthorizationV1Api(admin)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "retune"}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "retune"}, "rules": ROLLOUT_RULES})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "retune"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "retune"},
        "subjects": [{"kind": "ServiceAccount", "name": "retune", "namespace": namespace}],
    })  # fmt: skip
    return cluster.api(cluster.serviceaccount_kubeconfig(namespace, "retune"))


class Shop:
    """A namespace with the workload ``cache`` (4 replicas, its policy from a ConfigMap),
    its Service, and the operator's identity."""

    def __init__(self, cluster: ControlPlane, namespace: str) -> None:
        self.namespace = namespace
        admin = cluster.api()
        self.core: Any = cast(Any, client.CoreV1Api(admin))
        self.apps: Any = cast(Any, client.AppsV1Api(admin))
        self.operator = operator_identity(cluster, namespace)
        self.core.create_namespaced_config_map(
            namespace, {"metadata": {"name": "cache-seed"}, "data": {"policy.py": "seed"}}
        )
        self.core.create_namespaced_service(namespace, {
            "metadata": {"name": "cache"},
            "spec": {"selector": APP, "ports": [{"port": 80, "targetPort": 8080}]},
        })  # fmt: skip
        self.apps.create_namespaced_deployment(namespace, {
            "metadata": {"name": "cache", "labels": APP},
            "spec": {
                "replicas": 4,
                "selector": {"matchLabels": APP},
                "template": {
                    "metadata": {"labels": APP},
                    "spec": {
                        "containers": [{"name": "cache", "image": "example/cache:1",
                                        "volumeMounts": [{"name": VOLUME.name,
                                                          "mountPath": VOLUME.mount_path}]}],
                        "volumes": [{"name": VOLUME.name, "configMap": {"name": "cache-seed"}}],
                    },
                },
            },
        })  # fmt: skip
        self.target = RolloutTarget(namespace, "cache", WorkloadRef(name="cache"), VOLUME)
        self.deployments = Deployments(KubeDeploymentApi(self.operator, namespace), self.target)
        self.wait_for_pods("stable", 4, track=None)

    def revision(self, code: str) -> str:
        """Publish a policy revision ConfigMap, as the controller does after validation."""
        name = revision_name("cache", code)
        owner = {"apiVersion": "retune.dev/v1alpha1", "kind": "OptimizationTarget",
                 "name": "cache", "uid": "unowned"}  # fmt: skip
        manifest = revision_manifest(
            name=name, namespace=self.namespace, owner=owner, code=code, file_name="policy.py"
        )
        manifest["metadata"].pop("ownerReferences")
        publish_revision(self.core.api_client, manifest)
        return name

    def deployment(self, name: str) -> Any:
        return self.apps.read_namespaced_deployment(name, self.namespace)

    def canary_exists(self) -> bool:
        names = [
            d.metadata.name for d in self.apps.list_namespaced_deployment(self.namespace).items
        ]
        return "cache-canary" in names

    def pods(self, selector: str) -> list[Any]:
        items = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        return [pod for pod in items if pod.metadata.deletion_timestamp is None]

    def wait_for_pods(self, what: str, count: int, track: str | None) -> list[Any]:
        """Wait until exactly ``count`` live pods of the track are bound and running."""
        selector = "app=cache" + (f",{TRACK_LABEL}={track}" if track else "")

        def ready() -> tuple[list[Any]] | None:
            pods = self.pods(selector)
            running = [p for p in pods if p.spec.node_name and p.status.phase == "Running"]
            return (pods,) if len(pods) == len(running) == count else None

        found = cast(tuple[list[Any]], wait_until(ready, 60, f"{count} {what} pods running"))
        return found[0]

    def rollout(self, spec: RolloutSpec, metrics: Any, revision: str) -> RolloutLoop:
        """The rollout of ``revision``, reconciled as the operator does it."""
        return RolloutLoop(self.deployments, metrics, spec, revision)


@pytest.fixture
def shop(cluster: ControlPlane, namespace: str) -> Shop:
    return Shop(cluster, namespace)


def policy_of(deployment_or_pod: Any) -> str:
    """The ConfigMap mounted as the policy volume of a Deployment's template, or a pod."""
    spec = getattr(deployment_or_pod.spec, "template", None)
    volumes = (spec.spec if spec is not None else deployment_or_pod.spec).volumes
    [volume] = [v for v in volumes if v.name == VOLUME.name]
    return str(volume.config_map.name)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_canary_joins_the_service_with_the_new_revision_and_steps_up(shop: Shop) -> None:
    # Given a validated revision
    revision = shop.revision("def priority(): return 2\n")
    # When its canary starts at 25 %
    scale = shop.deployments.ensure_canary(revision, 25)
    # Then one canary pod runs beside the four stable ones, with the revision mounted
    assert (scale.canary, scale.stable, scale.changed) == (1, 4, True)
    canary = shop.deployment("cache-canary")
    assert canary.spec.template.metadata.labels == {**APP, TRACK_LABEL: "canary"}
    assert canary.spec.selector.match_labels == {**APP, TRACK_LABEL: "canary"}
    assert policy_of(canary) == revision
    assert canary.metadata.annotations[POLICY_REVISION_ANNOTATION] == revision
    [pod] = shop.wait_for_pods("canary", 1, track="canary")
    assert policy_of(pod) == revision
    # And the Service's selector picks the canary's pod with the stable's
    service = shop.core.read_namespaced_service("cache", shop.namespace)
    selector = ",".join(f"{k}={v}" for k, v in service.spec.selector.items())
    assert len(shop.pods(selector)) == 5
    # When the same step is ensured again, nothing is written
    assert not shop.deployments.ensure_canary(revision, 25).changed
    assert shop.deployment("cache-canary").metadata.generation == canary.metadata.generation
    # When it steps up to 50 %, two canary pods run; the stable is never touched
    assert shop.deployments.ensure_canary(revision, 50).canary == 2
    shop.wait_for_pods("canary", 2, track="canary")
    stable = shop.deployment("cache")
    assert (stable.spec.replicas, stable.metadata.generation) == (4, 1)


def test_a_promotion_patches_the_stable_once_and_removes_the_canary(shop: Shop) -> None:
    revision = shop.revision("def priority(): return 3\n")
    shop.deployments.ensure_canary(revision, 50)
    shop.wait_for_pods("canary", 2, track="canary")
    # When it is promoted, twice
    assert shop.deployments.promote(revision) is True
    assert shop.deployments.promote(revision) is False
    # Then the stable runs the revision, its pods labelled stable; it was patched once
    stable = shop.deployment("cache")
    assert policy_of(stable) == revision
    assert stable.metadata.annotations[POLICY_REVISION_ANNOTATION] == revision
    assert stable.spec.template.metadata.labels == {**APP, TRACK_LABEL: "stable"}
    assert (stable.spec.replicas, stable.metadata.generation) == (4, 2)
    # And the canary is gone, its pods with it; the stable's pods roll to the revision
    assert not shop.canary_exists()
    pods = shop.wait_for_pods("stable", 4, track="stable")
    assert {policy_of(pod) for pod in pods} == {revision}
    shop.wait_for_pods("workload", 4, track=None)  # and no other pod is left


def test_a_rollback_removes_the_canary_and_leaves_the_stable_untouched(shop: Shop) -> None:
    before = shop.deployment("cache")
    stable_pods = {p.metadata.name for p in shop.pods("app=cache")}
    revision = shop.revision("def priority(): return 4\n")
    shop.deployments.ensure_canary(revision, 100)
    shop.wait_for_pods("canary", 4, track="canary")
    # When it is rolled back, twice
    assert shop.deployments.rollback() is True
    assert shop.deployments.rollback() is False
    # Then the canary and its pods are gone, and the stable is as it was
    assert not shop.canary_exists()
    shop.wait_for_pods("canary", 0, track="canary")
    after = shop.deployment("cache")
    assert after.metadata.generation == before.metadata.generation == 1
    assert after.spec == before.spec and policy_of(after) == "cache-seed"
    assert {p.metadata.name for p in shop.wait_for_pods("stable", 4, track=None)} == stable_pods


def test_an_operator_killed_at_every_step_promotes_exactly_once(shop: Shop) -> None:
    """Each tick first runs in an operator that dies before saving the status (its writes
    to the cluster stand, its status is lost); a new operator then runs the same tick from
    the saved status. One promotion, one history entry, one patch of the stable."""
    revision = shop.revision("def priority(): return 5\n")
    spec = RolloutSpec(steps=[25, 50, 100], interval_seconds=60, analysis=[ERRORS])
    canary_value = render_query(ERRORS.query, {"namespace": shop.namespace, "track": "canary"})
    rollout = shop.rollout(spec, RecordedProvider({canary_value: 0.01}), revision)
    now = T0
    while rollout.running:
        rollout.tick(now, saved=False)  # killed before the status is saved
        rollout.tick(now)  # restarted
        now += timedelta(seconds=60)
    assert [record.outcome for record in rollout.status.history] == ["Promoted"]
    stable = shop.deployment("cache")
    assert policy_of(stable) == revision and stable.metadata.generation == 2
    assert not shop.canary_exists()


def test_a_promotion_cut_in_half_is_finished_by_the_next_tick(shop: Shop) -> None:
    revision = shop.revision("def priority(): return 6\n")
    spec = RolloutSpec(steps=[50], interval_seconds=60)
    rollout = shop.rollout(spec, RecordedProvider({}), revision)
    rollout.tick(T0)
    shop.deployments.patch_stable(revision)  # the operator dies after this
    decision = rollout.tick(at(60))
    assert canary_reasons([decision]) == ["CanaryPromoted"] and rollout.analysed == 0
    assert [record.outcome for record in rollout.status.history] == ["Promoted"]
    assert not shop.canary_exists() and shop.deployment("cache").metadata.generation == 2


@pytest.fixture
def exporter(prometheus: PrometheusServer, metrics_exporter: MetricsExporter) -> MetricsExporter:
    prometheus.add_target("cache", metrics_exporter.address)
    return metrics_exporter


def test_prometheus_analysis_promotes_a_good_canary_and_rolls_back_a_bad_one(
    shop: Shop, prometheus: PrometheusServer, exporter: MetricsExporter
) -> None:
    def serve(canary: float) -> None:
        exporter.set("retune_test_errors", canary, namespace=shop.namespace, track="canary")
        exporter.set("retune_test_errors", 0.02, namespace=shop.namespace, track="stable")
        query = ERRORS.render(track="canary", namespace=shop.namespace)
        wait_until(
            lambda: [s for s in prometheus.query(query) if float(s["value"][1]) == canary],
            30,
            f"Prometheus to scrape {canary}",
        )

    spec = RolloutSpec(steps=[50, 100], interval_seconds=1, analysis=[ERRORS])
    provider = PrometheusProvider(prometheus.url)
    # Given a canary whose error rate is below the threshold, it is promoted
    serve(0.01)
    good = shop.revision("def priority(): return 7\n")
    rollout = shop.rollout(spec, provider, good)
    decisions = rollout.run(T0)
    assert canary_reasons(decisions) == ["CanaryStep", "CanaryStep", "CanaryPromoted"]
    first, last = (reading.analysis for reading in rollout.readings[1:])
    assert first is not None and first.results[0].stable is not None
    assert first.results[0].stable.describe() == "0.02"
    assert last is not None and last.results[0].canary.describe() == "0.01"
    assert policy_of(shop.deployment("cache")) == good
    # Given a canary whose error rate is above it, it is rolled back at its first step
    serve(0.4)
    rollout = shop.rollout(spec, provider, shop.revision("def priority(): return 8\n"))
    decisions = rollout.run(at(100))
    assert canary_reasons(decisions) == ["CanaryStep", "CanaryRolledBack"]
    assert "errors: canary 0.4 is not at most 0.05" in decisions[-1].events[0].message
    assert policy_of(shop.deployment("cache")) == good and not shop.canary_exists()


def test_prometheus_stopped_mid_canary_is_never_promoted(
    shop: Shop, prometheus: PrometheusServer, exporter: MetricsExporter
) -> None:
    exporter.set("retune_test_errors", 0.01, namespace=shop.namespace, track="canary")
    prometheus.wait_for_query(ERRORS.render(track="canary", namespace=shop.namespace))
    held = RolloutSpec(steps=[100], interval_seconds=1, analysis=[ERRORS], no_data_limit=2)
    provider = PrometheusProvider(prometheus.url, timeout=2, retries=0)
    revision = shop.revision("def priority(): return 9\n")
    rollout = shop.rollout(held, provider, revision)
    rollout.tick(T0)
    # When Prometheus stops mid-canary
    prometheus.stop()
    # Then with noData: hold the canary is held at its share...
    decision = rollout.tick(at(1))
    assert canary_reasons([decision]) == ["CanaryHeld"]
    message = decision.events[0].message
    assert "no data 1/2 in a row, holding at 100%" in message and "unavailable" in message
    assert "(4 canary pods beside 4 stable)" in message
    assert rollout.status.rollout is not None
    assert rollout.status.rollout.analysis == {"errors": None}
    assert shop.canary_exists() and shop.deployment("cache-canary").spec.replicas == 4
    # ...and rolled back once the limit is reached; the stable keeps its policy
    decision = rollout.tick(at(2))
    assert canary_reasons([decision]) == ["CanaryRolledBack"] and not shop.canary_exists()
    assert policy_of(shop.deployment("cache")) == "cache-seed"
    # And with noData: rollback, the first interval without data is a failure
    strict = held.model_copy(update={"no_data": "rollback"})
    decisions = shop.rollout(strict, provider, revision).run(at(10))
    assert canary_reasons(decisions) == ["CanaryStep", "CanaryRolledBack"]
    assert policy_of(shop.deployment("cache")) == "cache-seed"
