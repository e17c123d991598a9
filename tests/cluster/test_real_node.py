"""The real kubelet node: joined Ready with its hardware, pods from the repository's images
as real containers under Pod Security ``restricted``, Services through kube-proxy, an
evaluation pod over its memory limit OOMKilled, and a host put back as it was found."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from kubernetes import client, utils

from retune.evaluate.contract import EvaluationContext, EvaluationTask, FailureReason
from retune.evaluate.kubernetes import KubernetesExecutor
from retune.spec.evaluator import EvaluatorSpec
from tests.cluster.controlplane import ControlPlane
from tests.cluster.host import HostRecord, restore
from tests.cluster.node import HOST_FROM_PODS, REAL_NODE_TAINT, KubeletNode
from tests.cluster.nodes import REAL_NODE
from tests.cluster.processes import wait_until

pytestmark = pytest.mark.cluster

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "01-cache-eviction"
CACHE_IMAGE = "ghcr.io/retune/cache:0.1.0"
EVALUATOR_IMAGE = "ghcr.io/retune/evaluator-cache-eviction:0.1.0"
TEST_EVALUATOR_IMAGE = "ghcr.io/retune/evaluator-test:0.1.0"
ON_THE_NODE = {
    "nodeSelector": {"kubernetes.io/hostname": REAL_NODE},
    "tolerations": [{**REAL_NODE_TAINT, "operator": "Equal"}],
}
HARDENED = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.fixture
def real_node(cluster: ControlPlane) -> KubeletNode:
    if cluster.real_node is None:
        pytest.fail("no real node in this session: it needs root (and not RETUNE_REAL_NODE=0)")
    return cluster.real_node


@pytest.fixture
def restricted(cluster: ControlPlane, namespace: str) -> str:
    """The test's namespace, enforcing Pod Security ``restricted``."""
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    client.CoreV1Api(cluster.api()).patch_namespace(namespace, {"metadata": {"labels": labels}})
    return namespace


def test_the_node_joins_ready_with_its_hardware_labels_and_taint(
    cluster: ControlPlane, real_node: KubeletNode
) -> None:
    node = client.CoreV1Api(cluster.api()).read_node(REAL_NODE)
    ready = next(c for c in node.status.conditions if c.type == "Ready")
    assert ready.status == "True", ready.message
    info = node.status.node_info
    assert info.kubelet_version == "v1.36.3"
    assert info.container_runtime_version.startswith("containerd://")
    labels = node.metadata.labels
    assert labels["kubernetes.io/hostname"] == REAL_NODE
    assert labels["node.kubernetes.io/instance-type"] == "m6i.xlarge"
    assert labels["feature.node.kubernetes.io/cpu-model.vendor_id"] == "Intel"
    assert labels["retune.dev/pool"] == "cpu"
    assert any(t.key == REAL_NODE_TAINT["key"] for t in node.spec.taints or [])
    internal = [a.address for a in node.status.addresses if a.type == "InternalIP"]
    assert internal == [HOST_FROM_PODS]
    assert TEST_EVALUATOR_IMAGE in real_node.images and CACHE_IMAGE in real_node.images


def _cache_pod(name: str, **spec: object) -> dict[str, object]:
    command = [
        "python", "/app/examples/01-cache-eviction/workload/server.py", "--port=8080",
        "--capacity-bytes=1048576", "--policy=/etc/retune/policy/policy.py",
    ]  # fmt: skip
    return {
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            **ON_THE_NODE,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "cache",
                    "image": CACHE_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": command,
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/metrics", "port": "http"}, "periodSeconds": 1},
                    "securityContext": HARDENED,
                    "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                    "volumeMounts": [
                        {"name": "policy", "mountPath": "/etc/retune/policy"},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }
            ],
            "volumes": [
                {"name": "policy", "configMap": {"name": "policy"}},
                {"name": "tmp", "emptyDir": {}},
            ],
            **spec,
        },
    }  # fmt: skip


def test_the_cache_image_serves_behind_a_service_from_the_host_and_from_a_pod(
    cluster: ControlPlane, real_node: KubeletNode, restricted: str
) -> None:
    core = client.CoreV1Api(cluster.api())
    namespace = restricted
    # Given the cache as a hardened pod from its image, its policy from a ConfigMap volume
    core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {"name": "policy"},
            "data": {"policy.py": (EXAMPLE / "seed_policy.py").read_text()},
        },
    )
    core.create_namespaced_pod(namespace, _cache_pod("cache"))
    core.create_namespaced_service(
        namespace,
        {"metadata": {"name": "cache"},
         "spec": {"selector": {"app": "cache"}, "ports": [{"port": 80, "targetPort": "http"}]}},
    )  # fmt: skip

    def ready() -> bool:
        pod = core.read_namespaced_pod("cache", namespace)
        return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])

    def crashed() -> str | None:
        pod = core.read_namespaced_pod("cache", namespace)
        for status in pod.status.container_statuses or []:
            if status.restart_count:
                log = core.read_namespaced_pod_log("cache", namespace, previous=True)
                return f"the cache restarted: {status.last_state}\n{log}"
        return None

    wait_until(ready, 60, "the cache pod to be Ready", abort=crashed)
    pod = core.read_namespaced_pod("cache", namespace)
    assert pod.spec.node_name == REAL_NODE
    assert pod.status.pod_ip.startswith("10.244.0.")
    # Then the host reaches it at its pod IP and through the Service's ClusterIP
    cluster_ip = core.read_namespaced_service("cache", namespace).spec.cluster_ip

    def answers(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return b"cache_requests_total" in response.read()
        except OSError:
            return False

    assert answers(f"http://{pod.status.pod_ip}:8080/metrics")
    wait_until(lambda: answers(f"http://{cluster_ip}/metrics"), 30, "the ClusterIP to answer")
    # and another pod reaches it through the Service by its environment-free ClusterIP
    probe = (
        "import urllib.request, sys; "
        f"sys.exit(0 if b'cache_requests_total' in urllib.request.urlopen('http://{cluster_ip}/metrics', timeout=5).read() else 3)"
    )
    client_pod = _cache_pod("client", restartPolicy="Never")
    container = client_pod["spec"]["containers"][0]  # type: ignore[index]
    container.update(command=["python", "-c", probe], readinessProbe=None, ports=[])
    core.create_namespaced_pod(namespace, client_pod)

    def finished() -> str | None:
        phase = core.read_namespaced_pod("client", namespace).status.phase
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_until(finished, 60, "the client pod to finish")
    assert phase == "Succeeded", core.read_namespaced_pod_log("client", namespace)
    # and its log comes back through the API server from the kubelet
    assert "serving on" in core.read_namespaced_pod_log("cache", namespace)


def test_the_examples_manifest_runs_as_shipped_and_its_traffic_reaches_the_cache(
    cluster: ControlPlane, real_node: KubeletNode, restricted: str
) -> None:
    # examples/01-cache-eviction/kubernetes.yaml, as docs/install.md applies it, plus only
    # this node's placement (its taint keeps other pods off it)
    api, namespace = cluster.api(), restricted
    for document in yaml.safe_load_all((EXAMPLE / "kubernetes.yaml").read_text()):
        if document["kind"] == "Deployment":
            document["spec"]["template"]["spec"].update(copy.deepcopy(ON_THE_NODE))
        utils.create_from_dict(api, document, namespace=namespace)
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)

    def available() -> bool:
        names = ("cache", "cache-loadgen")
        found = [apps.read_namespaced_deployment(n, namespace).status for n in names]
        return all((status.available_replicas or 0) == 1 for status in found)

    def restarted() -> str | None:
        for pod in core.list_namespaced_pod(namespace).items:
            for status in pod.status.container_statuses or []:
                if status.restart_count:
                    log = core.read_namespaced_pod_log(pod.metadata.name, namespace, previous=True)
                    return f"{pod.metadata.name} restarted: {status.last_state}\n{log}"
        return None

    wait_until(available, 120, "the cache and its load generator to be available", abort=restarted)
    [cache] = core.list_namespaced_pod(namespace, label_selector="app=cache").items

    def served() -> float:
        url = f"http://{cache.status.pod_ip}:8080/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            lines = response.read().decode().splitlines()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in lines
            if line.startswith("cache_requests_total{")
        )

    # the load generator's requests arrive through the Service (its ClusterIP, from the
    # pod's environment), and the cache evicts by the policy of the manifest's ConfigMap
    wait_until(lambda: served() > 200, 90, "the load generator's requests to reach the cache")
    with urllib.request.urlopen(f"http://{cache.status.pod_ip}:8080/policy", timeout=2) as answer:
        policy = json.loads(answer.read())
    shipped = core.read_namespaced_config_map("cache-policy", namespace).data["policy.py"]
    expected = hashlib.sha256(shipped.encode()).hexdigest()[: len(policy["active"]["hash"])]
    assert (policy["active"]["hash"], policy["refused"]) == (expected, None)
    assert restarted() is None


def test_pod_security_restricted_refuses_a_pod_that_is_not_hardened(
    cluster: ControlPlane, real_node: KubeletNode, restricted: str
) -> None:
    core = client.CoreV1Api(cluster.api())
    pod = _cache_pod("root-cache")
    pod["spec"]["containers"][0]["securityContext"] = {}  # type: ignore[index]
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod(restricted, pod)
    assert refused.value.status == 403 and "restricted" in str(refused.value.body)


def _owner(cluster: ControlPlane, namespace: str) -> dict[str, str]:
    """A ConfigMap standing in for the target that owns what the executor creates."""
    made = client.CoreV1Api(cluster.api()).create_namespaced_config_map(
        namespace, {"metadata": {"name": "owner"}}
    )
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": made.metadata.uid}


def _executor(
    cluster: ControlPlane,
    namespace: str,
    image: str,
    memory: str,
    entrypoint: str,
    **options: object,
) -> KubernetesExecutor:
    evaluator = EvaluatorSpec(
        image=image, timeout_seconds=60, resources={"cpu": "500m", "memory": memory}
    )
    return KubernetesExecutor(
        cluster.api(),
        namespace=namespace,
        target_name="owner",
        owner=_owner(cluster, namespace),
        evaluator=evaluator,
        entrypoint=entrypoint,
        image_pull_policy="Never",
        poll_interval=0.3,
        linger_seconds=0.2,
        **options,  # type: ignore[arg-type]
    )


def test_an_evaluation_pod_runs_the_evaluator_image_hardened_and_scores_as_locally(
    cluster: ControlPlane, real_node: KubeletNode, restricted: str
) -> None:
    from retune.evaluate.podspec import PodPlacement

    executor = _executor(cluster, restricted, EVALUATOR_IMAGE, "256Mi", "priority",
                         placement=PodPlacement(node_selector=ON_THE_NODE["nodeSelector"],
                                                tolerations=ON_THE_NODE["tolerations"]))  # fmt: skip
    seed = (EXAMPLE / "seed_policy.py").read_text()
    params = {"sim_keys": 2000, "requests_full": 3000, "requests_quick": 1000,
              "eviction_samples": 8, "cache_memory_fraction": 0.5}  # fmt: skip
    context = EvaluationContext(
        params=params, workload=json.loads((EXAMPLE / "profile.json").read_text())
    )
    try:
        future = executor.submit(
            EvaluationTask(task_id="seed", policy_code=seed, context=context, subset="quick")
        )
        outcome = future.result(timeout=120)
    finally:
        executor.close()
    assert outcome.ok and outcome.result is not None, outcome
    assert 0 < outcome.result.score < 1
    pods = client.CoreV1Api(cluster.api()).list_namespaced_pod(restricted).items
    assert pods and all(p.spec.node_name == REAL_NODE for p in pods)
    terminated = pods[0].status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0 and terminated.message  # the result came back this way
    # The harness says which isolation layers took inside the hardened pod (docs/sandbox.md)
    log = client.CoreV1Api(cluster.api()).read_namespaced_pod_log(pods[0].metadata.name, restricted)
    line = next(x for x in log.splitlines() if x.startswith("retune-evaluate: isolation "))
    isolation = json.loads(line.removeprefix("retune-evaluate: isolation "))
    assert "error" not in isolation, isolation
    print(f"isolation in the evaluation pod: {isolation}")
    # RuntimeDefault seccomp refuses unshare without CAP_SYS_ADMIN: no namespace of its own
    assert isolation.get("network") == "none", isolation


def test_an_evaluation_pod_over_its_memory_limit_is_oomkilled_and_its_candidates_fail_so(
    cluster: ControlPlane, real_node: KubeletNode, restricted: str
) -> None:
    from retune.evaluate.podspec import PodPlacement

    # Given an evaluator that loads 600 MB before it evaluates anything, and a memory
    # setting that leaves it far less
    executor = _executor(
        cluster, restricted, TEST_EVALUATOR_IMAGE, "64Mi", "choose",
        placement=PodPlacement(node_selector=ON_THE_NODE["nodeSelector"], tolerations=ON_THE_NODE["tolerations"]),
        evaluator_ref="scoring_evaluator",
        env={"RETUNE_TEST_BALLAST_MB": "600"},
    )  # fmt: skip
    task = EvaluationTask(task_id="c0", policy_code="def choose(x):\n    return 2 * x + 1\n",
                          context=EvaluationContext(params={}), subset="full")  # fmt: skip
    try:
        outcome = executor.submit(task).result(timeout=120)
    finally:
        executor.close()
    # Then the kubelet ends the pod OOMKilled, and the candidate fails with that reason
    assert not outcome.ok
    assert outcome.failure == FailureReason.MEMORY, outcome
    assert "OOMKilled" in outcome.detail
    pods = client.CoreV1Api(cluster.api()).list_namespaced_pod(restricted).items
    terminated = pods[0].status.container_statuses[0].state.terminated
    assert terminated.reason == "OOMKilled" and terminated.exit_code == 137


@pytest.mark.skipif(os.geteuid() != 0, reason="changes the host; needs root")
def test_a_host_record_undoes_what_a_node_changes() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="retune-host-test-"))
    record = HostRecord.take(workdir, "rt-test-br", workdir / "containerd.sock")
    sysctl = Path("/proc/sys/kernel/panic_on_oops")
    before = sysctl.read_text().strip()
    # When a node changes a sysctl, adds a link, a chain, a host directory, a mount and a
    # process of its own
    sysctl.write_text("0" if before == "1" else "1")
    subprocess.run(
        ["ip", "link", "add", "rt-test0", "type", "veth", "peer", "name", "rt-test1"], check=True
    )
    subprocess.run(["iptables", "-w", "-t", "filter", "-N", "KUBE-RETUNE-TEST"], check=True)
    created_path = "/opt/cni"
    assert not os.path.exists(created_path), "the test needs /opt/cni absent"
    os.makedirs(f"{created_path}/bin")
    (workdir / "mnt").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(workdir / "mnt")], check=True)
    sleeper = subprocess.Popen(["sleep", "600", str(workdir)])
    # and a pod's network namespace, which a killed node leaves bind-mounted under
    # /run/netns (also seen as /var/run/netns)
    subprocess.run(["ip", "netns", "add", "rt-test-ns"], check=True)
    # Then the restore undoes each
    try:
        problems = restore(record)
    finally:
        sleeper.poll()
    assert problems == []
    assert sysctl.read_text().strip() == before
    assert not Path("/sys/class/net/rt-test0").exists()
    chains = subprocess.run(
        ["iptables-save", "-t", "filter"], capture_output=True, text=True
    ).stdout
    assert "KUBE-RETUNE-TEST" not in chains
    assert not os.path.exists(created_path)
    assert not os.path.ismount(workdir / "mnt") and not workdir.exists()
    assert not os.path.exists("/run/netns/rt-test-ns")
    time.sleep(0.2)
    assert sleeper.poll() is not None


def test_a_second_session_cannot_take_the_node_while_this_one_holds_it(
    real_node: KubeletNode,
) -> None:
    # Another test run on this host would try the same lock before touching the host.
    from tests.cluster.node import LOCK_FILE

    probe = (
        "import fcntl, sys\n"
        f"lock = open({str(LOCK_FILE)!r}, 'a')\n"
        "try:\n"
        "    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except BlockingIOError:\n"
        "    sys.exit(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], check=False)
    assert result.returncode == 3, "the node lock is free while a node runs"
