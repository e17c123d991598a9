"""The test control plane behaves like a real cluster, node agent included."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.cluster.controlplane import ControlPlane
from tests.cluster.processes import wait_until

pytestmark = pytest.mark.cluster


def _job_pods(core: client.CoreV1Api, namespace: str, job: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items


def _python_container(name: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "python:3.11-slim", "command": ["python", "-c", code], **extra}


def _optimization_target(name: str, max_evaluations: int) -> dict[str, Any]:
    return {
        "apiVersion": "retune.dev/v1alpha1",
        "kind": "OptimizationTarget",
        "metadata": {"name": name},
        "spec": {
            "workloadRef": {"name": "cache"},
            "policy": {
                "entrypoint": "evict",
                "signature": "evict(cache, request)",
                "seed": {"inline": "def evict(cache, request):\n    return 0\n"},
            },
            "evaluator": {"module": "examples.cache.evaluator"},
            "search": {"budget": {"maxEvaluations": max_evaluations}},
        },
    }


def test_optimization_target_with_an_invalid_field_is_rejected_naming_the_field(
    cluster: ControlPlane, namespace: str
) -> None:
    objects = client.CustomObjectsApi(cluster.api())
    where = ("retune.dev", "v1alpha1", namespace, "optimizationtargets")

    with pytest.raises(ApiException) as rejected:
        objects.create_namespaced_custom_object(*where, _optimization_target("no-budget", 0))
    assert rejected.value.status == 422
    assert "spec.search.budget.maxEvaluations" in rejected.value.body

    objects.create_namespaced_custom_object(*where, _optimization_target("cache", 10))
    created = objects.get_namespaced_custom_object(*where, "cache")
    assert created["spec"]["search"]["budget"]["maxEvaluations"] == 10


@pytest.mark.parametrize("example", ["01-cache-eviction", "02-request-routing"])
def test_retune_manifest_prints_what_the_api_server_takes_as_written(
    cluster: ControlPlane, namespace: str, example: str
) -> None:
    from retune.spec import cluster_problems, parse_target
    from retune.spec.manifest import cluster_manifest
    from tests.llm_server import REPO

    printed = yaml.safe_load(
        cluster_manifest(REPO / "examples" / example / "target.yaml", namespace=namespace)
    )
    objects = client.CustomObjectsApi(cluster.api())
    where = ("retune.dev", "v1alpha1", namespace, "optimizationtargets")
    objects.create_namespaced_custom_object(*where, printed)
    stored = objects.get_namespaced_custom_object(*where, printed["metadata"]["name"])
    # the schema kept every field (none pruned) and the operator would take it
    assert stored["spec"]["policy"]["seed"] == printed["spec"]["policy"]["seed"]
    assert stored["spec"]["evaluator"]["image"] == printed["spec"]["evaluator"]["image"]
    assert stored["spec"]["profile"]["queries"] == printed["spec"]["profile"]["queries"]
    assert cluster_problems(parse_target(stored, "stored")) == []


def test_gpu_job_runs_on_a_gpu_node_and_its_termination_message_is_read_back(
    cluster: ControlPlane, namespace: str
) -> None:
    core, batch = client.CoreV1Api(cluster.api()), client.BatchV1Api(cluster.api())
    core.create_namespaced_config_map(
        namespace,
        {"metadata": {"name": "batch"}, "data": {"candidates.json": json.dumps([1, 2, 3])}},
    )
    # Reads the mounted ConfigMap and reports through the termination message, as an
    # evaluation pod does; both paths go through RETUNE_PATH_PREFIX.
    code = (
        "import json, os\n"
        "root = os.environ['RETUNE_PATH_PREFIX']\n"
        "values = json.load(open(root + '/etc/retune/batch/candidates.json'))\n"
        "result = {'sum': sum(values), 'gpu': os.environ['GPU_PRODUCT']}\n"
        "open(root + '/dev/termination-log', 'w').write(json.dumps(result))\n"
    )
    container = _python_container(
        "evaluate",
        code,
        env=[{"name": "GPU_PRODUCT", "value": "NVIDIA-H100-80GB-HBM3"}],
        resources={"limits": {"nvidia.com/gpu": "1"}},
        volumeMounts=[{"name": "batch", "mountPath": "/etc/retune/batch", "readOnly": True}],
    )
    job = {
        "metadata": {"name": "evaluate"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "activeDeadlineSeconds": 120,
                    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                    "containers": [container],
                    "volumes": [{"name": "batch", "configMap": {"name": "batch"}}],
                }
            },
        },
    }
    batch.create_namespaced_job(namespace, job)

    def complete() -> bool:
        status = batch.read_namespaced_job_status("evaluate", namespace).status
        assert not status.failed, f"job failed: {status.conditions}"
        return bool(status.succeeded)

    wait_until(complete, 60, "the GPU job to complete")
    (pod,) = _job_pods(core, namespace, "evaluate")
    node = core.read_node(pod.spec.node_name)
    assert node.metadata.labels["retune.dev/pool"] == "gpu"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0 and terminated.reason == "Completed"
    assert json.loads(terminated.message) == {"sum": 6, "gpu": "NVIDIA-H100-80GB-HBM3"}
    assert pod.status.pod_ip == "127.0.0.1"


def test_deployment_pods_are_created_by_the_controller_manager_and_bound_by_the_scheduler(
    cluster: ControlPlane, namespace: str
) -> None:
    apps, core = client.AppsV1Api(cluster.api()), client.CoreV1Api(cluster.api())
    labels = {"app": "cache"}
    deployment = {
        "metadata": {"name": "cache"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    # the simulated nodes' pool (the real node takes only pods that ask)
                    "nodeSelector": {"retune.dev/pool": "gpu"},
                    "containers": [
                        {
                            "name": "cache",
                            "image": "registry.example/cache:1",
                            "resources": {"requests": {"cpu": "100m"}},
                        }
                    ],
                },
            },
        },
    }
    apps.create_namespaced_deployment(namespace, deployment)
    wait_until(
        lambda: (
            apps.read_namespaced_deployment_status("cache", namespace).status.ready_replicas == 3
        ),
        60,
        "3 ready replicas",
    )
    pods = core.list_namespaced_pod(namespace, label_selector="app=cache").items
    assert len(pods) == 3
    for pod in pods:
        assert pod.metadata.owner_references[0].kind == "ReplicaSet"
        assert pod.spec.node_name in cluster.default_nodes
        scheduled = next(c for c in pod.status.conditions if c.type == "PodScheduled")
        assert scheduled.status == "True"

    # The scheduler records a Scheduled event per binding (written asynchronously).
    def scheduled_pods() -> set[str]:
        events = core.list_namespaced_event(namespace, field_selector="reason=Scheduled").items
        return {event.involved_object.name for event in events}

    wait_until(lambda: scheduled_pods() == {p.metadata.name for p in pods}, 10, "Scheduled events")


def test_serviceaccount_is_denied_without_a_role_and_allowed_with_one(
    cluster: ControlPlane, namespace: str
) -> None:
    core, rbac = client.CoreV1Api(cluster.api()), client.RbacAuthorizationV1Api(cluster.api())
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    as_reader = client.CoreV1Api(
        cluster.api(cluster.serviceaccount_kubeconfig(namespace, "reader"))
    )

    with pytest.raises(ApiException) as denied:
        as_reader.list_namespaced_config_map(namespace)
    assert denied.value.status == 403
    assert f"system:serviceaccount:{namespace}:reader" in denied.value.body

    rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "reader"}, "rules": [rule]})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    wait_until(
        lambda: as_reader.list_namespaced_config_map(namespace) is not None,
        10,
        "the RoleBinding to apply",
    )
    with pytest.raises(ApiException) as still_denied:
        as_reader.delete_namespaced_config_map("kube-root-ca.crt", namespace)
    assert still_denied.value.status == 403


def test_relabelling_a_node_is_seen_by_a_watch(cluster: ControlPlane) -> None:
    core = client.CoreV1Api(cluster.api())
    version = core.list_node().metadata.resource_version
    cluster.relabel_node(
        "gpu-pool-0",
        {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.memory": None},
    )

    # Other writers (the node-lifecycle controller) modify nodes too: find our change.
    seen = None
    for event in watch.Watch().stream(core.list_node, resource_version=version, timeout_seconds=10):
        node = event["object"]
        relabelled = node.metadata.labels.get("nvidia.com/gpu.product") == "NVIDIA-A100-SXM4-80GB"
        if event["type"] == "MODIFIED" and node.metadata.name == "gpu-pool-0" and relabelled:
            seen = node.metadata.labels
            break
    assert seen is not None, "the watch saw no relabelling of gpu-pool-0"
    assert "nvidia.com/gpu.memory" not in seen


def test_pods_land_on_an_added_node(cluster: ControlPlane, namespace: str) -> None:
    core = client.CoreV1Api(cluster.api())
    cluster.add_node(
        "gpu-pool-9",
        "gpu",
        labels={"nvidia.com/gpu.product": "NVIDIA-L4", "nvidia.com/gpu.memory": "23034"},
    )
    pod = {
        "metadata": {"name": "on-l4"},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"},
            "containers": [
                _python_container(
                    "main", "print('hello from', __import__('os').environ['HOSTNAME'])"
                )
            ],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    wait_until(
        lambda: core.read_namespaced_pod("on-l4", namespace).status.phase == "Succeeded",
        30,
        "the pod to succeed",
    )
    assert core.read_namespaced_pod("on-l4", namespace).spec.node_name == "gpu-pool-9"
    assert cluster.pod_log(namespace, "on-l4") == "hello from on-l4\n"


def test_reset_nodes_restores_the_default_pool(cluster: ControlPlane) -> None:
    core = client.CoreV1Api(cluster.api())
    defaults = set(cluster.node_names)
    cluster.add_node("cpu-pool-7", "cpu")
    cluster.add_node("gpu-pool-8", "gpu")
    cluster.remove_node("gpu-pool-0")
    cluster.relabel_node(
        "cpu-pool-0", {"node.kubernetes.io/instance-type": "m7i.xlarge", "retune.dev/extra": "y"}
    )
    cluster.reset_nodes()
    cluster.relabel_node(
        "gpu-pool-0", {"nvidia.com/gpu.product": "NVIDIA-L4", "retune.dev/extra": "x"}
    )

    cluster.reset_nodes()

    assert {node.metadata.name for node in core.list_node().items} == defaults
    labels = core.read_node("gpu-pool-0").metadata.labels
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert "retune.dev/extra" not in labels
    cpu = core.read_node("cpu-pool-0").metadata.labels  # the real node when there is one
    assert cpu["node.kubernetes.io/instance-type"] == "m6i.xlarge" and "retune.dev/extra" not in cpu


def test_active_deadline_fails_the_pod_and_kills_its_process(
    cluster: ControlPlane, namespace: str
) -> None:
    core = client.CoreV1Api(cluster.api())
    pod = {
        "metadata": {"name": "too-slow"},
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": 2,
            "containers": [_python_container("main", "import time; time.sleep(120)")],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    wait_until(
        lambda: core.read_namespaced_pod("too-slow", namespace).status.phase == "Failed",
        30,
        "the deadline",
    )
    status = core.read_namespaced_pod("too-slow", namespace).status
    assert status.reason == "DeadlineExceeded"
    assert status.container_statuses[0].state.terminated.exit_code in (137, 143)


def test_deleting_a_running_pod_kills_its_process_and_removes_the_pod(
    cluster: ControlPlane, namespace: str
) -> None:
    core = client.CoreV1Api(cluster.api())
    pod = {
        "metadata": {"name": "server"},
        "spec": {"containers": [_python_container("main", "import time; time.sleep(300)")]},
    }
    core.create_namespaced_pod(namespace, pod)

    def running_pid() -> int | None:
        statuses = core.read_namespaced_pod("server", namespace).status.container_statuses or []
        if statuses and statuses[0].state.running:
            return int(statuses[0].container_id.rsplit("/", 1)[1])
        return None

    pid = wait_until(running_pid, 30, "the pod to run")
    core.delete_namespaced_pod("server", namespace)  # default grace period, as kubectl delete

    def gone() -> bool:
        try:
            core.read_namespaced_pod("server", namespace)
            return False
        except ApiException as error:
            return error.status == 404

    wait_until(gone, 30, "the pod to be removed")
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)  # type: ignore[call-overload]


def test_a_finished_pod_deleted_keeps_the_agents_watch_alive(
    cluster: ControlPlane, namespace: str
) -> None:
    (agent,) = [p for p in cluster.processes if p.name == "node-agent"]
    logged = agent.log_path.stat().st_size
    core = client.CoreV1Api(cluster.api())
    pod = {
        "metadata": {"name": "done"},
        "spec": {"restartPolicy": "Never", "containers": [_python_container("main", "pass")]},
    }
    core.create_namespaced_pod(namespace, pod)
    wait_until(
        lambda: core.read_namespaced_pod("done", namespace).status.phase == "Succeeded",
        30,
        "the pod to finish",
    )
    time.sleep(1)  # its runner thread ends after the last status write
    core.delete_namespaced_pod("done", namespace, grace_period_seconds=0)
    wait_until(lambda: not core.list_namespaced_pod(namespace).items, 30, "the pod to go")
    time.sleep(1)
    with open(agent.log_path, "rb") as log:
        log.seek(logged)
        assert b"watch broken" not in log.read()


def test_on_failure_restarts_the_container_and_keeps_its_empty_dir(
    cluster: ControlPlane, namespace: str
) -> None:
    core = client.CoreV1Api(cluster.api())
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cret"}}
    )
    # Fails on its first run, succeeds on the second: the emptyDir remembers the attempt.
    code = (
        "import os, sys\n"
        "marker = os.environ['RETUNE_PATH_PREFIX'] + '/scratch/attempted'\n"
        "if not os.path.exists(marker):\n"
        "    open(marker, 'w').close()\n"
        "    sys.exit(3)\n"
        "print(sys.argv[1])\n"
    )
    container = _python_container(
        "main",
        code,
        args=["token=$(TOKEN)"],
        env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}],
        volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}],
    )
    pod = {
        "metadata": {"name": "flaky"},
        "spec": {
            "restartPolicy": "OnFailure",
            "containers": [container],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    wait_until(
        lambda: core.read_namespaced_pod("flaky", namespace).status.phase == "Succeeded",
        30,
        "the pod to succeed on its second run",
    )
    (status,) = core.read_namespaced_pod("flaky", namespace).status.container_statuses
    assert status.restart_count == 1
    assert status.last_state.terminated.exit_code == 3
    assert status.state.terminated.exit_code == 0
    assert cluster.pod_log(namespace, "flaky", "main") == "token=s3cret\n"
