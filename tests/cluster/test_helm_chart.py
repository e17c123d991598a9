"""The Helm chart: linted and rendered by the real helm, its RBAC tried on a real API server.

The rendered ServiceAccount and RBAC are applied to the test control plane, and requests
are made with that ServiceAccount's own token: what the operator needs must be allowed,
and nothing around it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.cluster.controlplane import ControlPlane
from tests.cluster.helm import (
    HelmError,
    apply_manifests,
    delete_manifests,
    find_manifest,
    find_manifests,
    install_dry_run,
    lint_chart,
    render_chart,
    require_helm,
    service_account_api_client,
)

pytestmark = pytest.mark.cluster

TARGETS = ("retune.dev", "v1alpha1")
TARGET = {
    "apiVersion": "retune.dev/v1alpha1",
    "kind": "OptimizationTarget",
    "metadata": {"name": "cache"},
    "spec": {
        "workloadRef": {"name": "cache"},
        "policy": {
            "entrypoint": "evict",
            "signature": "evict(cache, request)",
            "seed": {"inline": "def evict(cache, request):\n    return 0\n"},
        },
        "evaluator": {"module": "examples.cache.evaluator"},
        "search": {"budget": {"maxEvaluations": 10}},
    },
}


@pytest.fixture(scope="module", autouse=True)
def _helm_built() -> None:
    require_helm()


# -- lint and render ---------------------------------------------------------------------------


@pytest.mark.parametrize("values", [{}, {"watchNamespaces": ["team-a", "team-b"]}])
def test_chart_lints_strictly(values: dict[str, Any]) -> None:
    assert "0 chart(s) failed" in lint_chart(values, strict=True)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"watchNamepsaces": ["a"]}, "additional properties 'watchNamepsaces' not allowed"),
        ({"metrics": {"port": 80}}, "/metrics/port"),
        ({"llm": {"endpoints": [{"name": "openai"}]}}, "missing property 'apiKeySecret'"),
        ({"prometheus": {"url": "prometheus:9090"}}, "/prometheus/url"),
    ],
)
def test_lint_rejects_values_the_schema_forbids(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(HelmError) as failed:
        lint_chart(values)
    assert complaint in str(failed.value)


def test_deployment_is_one_hardened_replica_of_the_operator() -> None:
    deployment = find_manifest(render_chart(), "Deployment")
    spec = deployment["spec"]
    assert (spec["replicas"], spec["strategy"]) == (1, {"type": "Recreate"})
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/retune/operator:0.1.0"
    assert container["command"] == ["retune", "operator"]
    assert container["args"] == ["--all-namespaces", "--metrics-port=8080"]
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    service = find_manifest(render_chart(), "Service")
    assert service["spec"]["ports"][0]["name"] == "metrics"
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]


def test_values_reach_the_operator_arguments_and_environment() -> None:
    values = {
        "watchNamespaces": ["team-a", "team-b"],
        "prometheus": {"url": "http://prometheus.monitoring:9090"},
        "llm": {
            "endpoints": [
                {
                    "name": "open-ai",
                    "apiKeySecret": {"name": "retune-llm", "key": "openai"},
                }
            ]
        },
        "image": {
            "repository": "registry.example.com/retune",
            "tag": "dev",
            "pullPolicy": "Always",
        },
        "nodeSelector": {"kubernetes.io/arch": "arm64"},
    }
    pod = find_manifest(render_chart(values), "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["--namespace=team-a", "--namespace=team-b", "--metrics-port=8080"]
    assert container["image"] == "registry.example.com/retune:dev"
    assert container["env"] == [
        {"name": "RETUNE_PROMETHEUS_URL", "value": "http://prometheus.monitoring:9090"},
        {
            "name": "RETUNE_LLM_KEY_OPEN_AI",
            "valueFrom": {"secretKeyRef": {"name": "retune-llm", "key": "openai"}},
        },
    ]
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "arm64"}


def test_every_namespace_is_served_through_cluster_roles() -> None:
    docs = render_chart()
    assert not find_manifests(docs, "Role") and not find_manifests(docs, "RoleBinding")
    assert {role["metadata"]["name"] for role in find_manifests(docs, "ClusterRole")} == {
        "retune",
        "retune-cluster",
    }
    assert len(find_manifests(docs, "ClusterRoleBinding")) == 2


def test_watched_namespaces_get_a_role_each_and_only_cluster_reads() -> None:
    docs = render_chart({"watchNamespaces": ["team-a", "team-b"]})
    assert [role["metadata"]["namespace"] for role in find_manifests(docs, "Role")] == [
        "team-a",
        "team-b",
    ]
    assert len(find_manifests(docs, "RoleBinding")) == 2
    (cluster_role,) = find_manifests(docs, "ClusterRole")
    for rule in cluster_role["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
    resources = {resource for rule in cluster_role["rules"] for resource in rule["resources"]}
    assert resources == {"nodes", "customresourcedefinitions"}


def test_service_monitor_only_when_enabled() -> None:
    assert not find_manifests(render_chart(), "ServiceMonitor")
    monitor = find_manifest(render_chart({"serviceMonitor": {"enabled": True}}), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


# -- RBAC on the API server --------------------------------------------------------------------


Install = Callable[..., client.ApiClient]


@pytest.fixture
def install_identity(cluster: ControlPlane, namespace: str) -> Iterator[Install]:
    """Apply the chart's ServiceAccount and RBAC into ``namespace``; an API client as that account."""
    applied: list[dict[str, Any]] = []
    clients: list[client.ApiClient] = []

    def install(values: dict[str, Any] | None = None) -> client.ApiClient:
        # A release name of its own: the cluster-scoped roles outlive the namespace.
        release = f"rt-{uuid.uuid4().hex[:6]}"
        docs = render_chart(values, release=release, namespace=namespace)
        applied.extend(apply_manifests(cluster.api(), docs))
        account = find_manifest(docs, "ServiceAccount")["metadata"]["name"]
        clients.append(service_account_api_client(cluster, namespace, account))
        return clients[-1]

    yield install
    for api in clients:
        api.close()
    delete_manifests(cluster.api(), applied)


@pytest.fixture
def other_namespace(cluster: ControlPlane) -> Iterator[str]:
    """A namespace the tests never tell the chart about."""
    core = client.CoreV1Api(cluster.api())
    name = f"elsewhere-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


# (verb, API group, resource or resource/subresource) the operator needs in the namespaces
# it serves; the real requests in the tests below cover the rest.
NEEDED = [
    ("watch", "retune.dev", "optimizationtargets"),
    ("update", "retune.dev", "optimizationtargets/status"),
    ("create", "events.k8s.io", "events"),
    ("get", "", "pods/log"),
    ("watch", "", "pods"),
    ("patch", "apps", "deployments"),
    ("delete", "networking.k8s.io", "networkpolicies"),
    ("get", "", "secrets"),
]
CLUSTER_READS = [
    ("watch", "", "nodes"),
    ("watch", "apiextensions.k8s.io", "customresourcedefinitions"),
]
# Never: run code of its own, read Secrets in bulk, grant itself more, or touch the cluster.
NEVER_IN_NAMESPACE = [
    ("create", "", "pods"),
    ("create", "", "pods/exec"),
    ("list", "", "secrets"),
    ("watch", "", "secrets"),
    ("create", "", "secrets"),
    ("create", "", "serviceaccounts/token"),
    ("impersonate", "", "serviceaccounts"),
    ("create", "rbac.authorization.k8s.io", "rolebindings"),
    ("escalate", "rbac.authorization.k8s.io", "roles"),
    ("create", "retune.dev", "optimizationtargets"),
    ("delete", "retune.dev", "optimizationtargets"),
    ("update", "batch", "jobs"),
    ("update", "", "services"),
    ("create", "coordination.k8s.io", "leases"),
    ("create", "kopf.dev", "kopfpeerings"),
]
NEVER_IN_CLUSTER = [
    ("delete", "", "nodes"),
    ("patch", "", "nodes"),
    ("create", "", "namespaces"),
    ("create", "apiextensions.k8s.io", "customresourcedefinitions"),
    ("bind", "rbac.authorization.k8s.io", "clusterroles"),
    ("create", "kopf.dev", "clusterkopfpeerings"),
]

Access = tuple[str, str, str]


def can(api: client.ApiClient, access: Access, namespace: str = "", name: str = "") -> bool:
    """Whether the client's identity may do this, asked of the API server's authorizer."""
    verb, group, resource = access
    resource, _, subresource = resource.partition("/")
    attributes = {"verb": verb, "group": group, "resource": resource, "subresource": subresource}
    attributes |= {"namespace": namespace, "name": name}
    review = client.AuthorizationV1Api(api).create_self_subject_access_review(
        {"spec": {"resourceAttributes": attributes}}
    )
    return bool(review.status.allowed)


def allowed(api: client.ApiClient, accesses: list[Access], namespace: str = "") -> list[Access]:
    return [access for access in accesses if can(api, access, namespace)]


def refused(api: client.ApiClient, accesses: list[Access], namespace: str = "") -> list[Access]:
    return [access for access in accesses if not can(api, access, namespace)]


def forbidden(call: Callable[[], object]) -> bool:
    """Whether the API server answers the request with 403 Forbidden."""
    try:
        call()
    except ApiException as error:
        return error.status == 403
    return False


def suspended_job(name: str) -> dict[str, Any]:
    """A Job the Job controller makes no pod for."""
    container = {"name": "evaluate", "image": "retune/evaluator", "command": ["true"]}
    pod = {"restartPolicy": "Never", "containers": [container]}
    return {"metadata": {"name": name}, "spec": {"suspend": True, "template": {"spec": pod}}}


def event_about(target: str, namespace: str) -> dict[str, Any]:
    involved = {"kind": "OptimizationTarget", "name": target, "namespace": namespace}
    return {
        "metadata": {"name": f"{target}.search-started"},
        "involvedObject": involved,
        "reason": "SearchStarted",
        "message": "searching",
        "type": "Normal",
    }


def create_secret(cluster: ControlPlane, namespace: str, name: str) -> None:
    body = {"metadata": {"name": name}, "stringData": {"key": "sk-test"}}
    client.CoreV1Api(cluster.api()).create_namespaced_secret(namespace, body)


def test_operator_account_does_its_work_in_every_namespace(
    cluster: ControlPlane, install_identity: Install, other_namespace: str
) -> None:
    operator = install_identity()
    where = (*TARGETS, other_namespace, "optimizationtargets")
    client.CustomObjectsApi(cluster.api()).create_namespaced_custom_object(*where, TARGET)

    targets = client.CustomObjectsApi(operator)
    listed = targets.list_cluster_custom_object(*TARGETS, "optimizationtargets")["items"]
    assert (other_namespace, "cache") in [
        (item["metadata"]["namespace"], item["metadata"]["name"]) for item in listed
    ]
    targets.patch_namespaced_custom_object_status(
        *where, "cache", {"status": {"phase": "Searching"}}
    )
    annotate = {"metadata": {"annotations": {"retune.dev/handled": "true"}}}
    targets.patch_namespaced_custom_object(*where, "cache", annotate)

    core, batch = client.CoreV1Api(operator), client.BatchV1Api(operator)
    core.create_namespaced_config_map(other_namespace, {"metadata": {"name": "batch-1"}})
    core.delete_namespaced_config_map("batch-1", other_namespace)
    batch.create_namespaced_job(other_namespace, suspended_job("evaluate-1"))
    batch.delete_namespaced_job("evaluate-1", other_namespace, propagation_policy="Background")
    core.create_namespaced_event(other_namespace, event_about("cache", other_namespace))
    assert core.list_node().items
    assert core.list_namespace().items

    assert refused(operator, NEEDED, "kube-system") == []
    assert refused(operator, CLUSTER_READS) == []


def test_operator_account_cannot_escalate_or_run_code_itself(
    namespace: str, install_identity: Install
) -> None:
    operator = install_identity()
    core, rbac = client.CoreV1Api(operator), client.RbacAuthorizationV1Api(operator)
    # Dry runs: should a check ever fail open, nothing has happened.
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    assert forbidden(lambda: core.create_namespaced_pod(namespace, pod, dry_run="All"))
    assert forbidden(lambda: core.delete_node("cpu-pool-0", dry_run="All"))
    assert forbidden(lambda: core.list_namespaced_secret(namespace))
    everything = {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}
    role = {"metadata": {"name": "more"}, "rules": [everything]}
    assert forbidden(lambda: rbac.create_cluster_role(role, dry_run="All"))

    assert allowed(operator, NEVER_IN_NAMESPACE, namespace) == []
    assert allowed(operator, NEVER_IN_CLUSTER) == []


def test_watched_namespaces_confine_the_operator_account(
    cluster: ControlPlane, namespace: str, install_identity: Install, other_namespace: str
) -> None:
    operator = install_identity({"watchNamespaces": [namespace]})
    for where in (namespace, other_namespace):
        create_secret(cluster, where, "llm")

    core, batch = client.CoreV1Api(operator), client.BatchV1Api(operator)
    assert core.read_namespaced_secret("llm", namespace).data["key"]
    assert forbidden(lambda: core.read_namespaced_secret("llm", other_namespace))
    batch.create_namespaced_job(namespace, suspended_job("evaluate-1"))
    job = suspended_job("evaluate-1")
    assert forbidden(lambda: batch.create_namespaced_job(other_namespace, job, dry_run="All"))
    targets = client.CustomObjectsApi(operator)
    targets.list_namespaced_custom_object(*TARGETS, namespace, "optimizationtargets")
    assert forbidden(lambda: targets.list_cluster_custom_object(*TARGETS, "optimizationtargets"))
    assert forbidden(core.list_namespace)
    assert core.list_node().items

    assert refused(operator, NEEDED, namespace) == []
    assert allowed(operator, NEEDED, other_namespace) == []
    assert allowed(operator, NEEDED, "kube-system") == []
    assert allowed(operator, NEVER_IN_NAMESPACE, namespace) == []
    assert refused(operator, CLUSTER_READS) == []


def test_secret_names_restrict_which_secrets_the_operator_reads(
    cluster: ControlPlane, namespace: str, install_identity: Install
) -> None:
    operator = install_identity({"watchNamespaces": [namespace], "rbac": {"secretNames": ["llm"]}})
    for name in ("llm", "database"):
        create_secret(cluster, namespace, name)

    core = client.CoreV1Api(operator)
    assert core.read_namespaced_secret("llm", namespace).data["key"]
    assert forbidden(lambda: core.read_namespaced_secret("database", namespace))


def test_install_dry_run_against_the_api_server(cluster: ControlPlane, namespace: str) -> None:
    values = {"watchNamespaces": [namespace], "prometheus": {"url": "http://prometheus:9090"}}
    notes = install_dry_run(cluster.kubeconfig, values, namespace=namespace)
    assert f"OptimizationTargets in the namespaces {namespace}" in notes
    assert "No prometheus.url is set" not in notes
