"""KubernetesExecutor against the real control plane: Jobs, pods, GC, bounds.

The node agent runs the evaluation pod's ``retune-evaluate`` as a local process, so the
"image" is ignored and the evaluator is ``tests/fixtures/scoring_evaluator.py``, imported
as a module through ``PYTHONPATH`` (a file path would be remapped under the pod's root).
The agent enforces no securityContext, limit or NetworkPolicy: these tests check what the
executor *asks for*, read back from the API, and what the real controllers do with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from retune.evaluate.contract import (
    EvaluationContext,
    EvaluationOutcome,
    EvaluationTask,
    FailureReason,
)
from retune.evaluate.kubernetes import KubernetesExecutor
from retune.evaluate.local import LocalExecutor
from retune.evaluate.podspec import PodPlacement, evaluation_selector, sandbox_limits
from retune.spec.evaluator import EvaluatorSpec
from tests.cluster.controlplane import ControlPlane
from tests.cluster.processes import wait_until

pytestmark = pytest.mark.cluster

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GOOD = "def choose(x):\n    return 2 * x + 1\n"
CLOSE = "def choose(x):\n    return 2 * x\n"
RAISES = "def choose(x):\n    raise ValueError('no')\n"
LOOPS = "def choose(x):\n    while True:\n        x = x + 1\n"
REJECTED = "import os\n\ndef choose(x):\n    return 1\n"
GPU = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
# What the operator's Role needs for evaluation (docs/evaluation-pods.md).
EVALUATION_RULES = [
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "delete", "list"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "delete", "list"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["create", "patch"]},
]  # fmt: skip

MakeExecutor = Callable[..., KubernetesExecutor]


def task(task_id: str, code: str, subset: str = "full", **params: Any) -> EvaluationTask:
    context = EvaluationContext(params=params)
    return EvaluationTask(task_id=task_id, policy_code=code, context=context, subset=subset)


def evaluator_spec(**fields: Any) -> EvaluatorSpec:
    values: dict[str, Any] = {
        "image": "ghcr.io/retune/evaluator-test:0.1.0",
        "timeout_seconds": 5,
        "resources": {"cpu": "250m", "memory": "256Mi"},
        **fields,
    }
    return EvaluatorSpec(**values)


def create_target(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """A real OptimizationTarget, the owner of everything the executor creates."""
    body = {
        "apiVersion": "retune.dev/v1alpha1",
        "kind": "OptimizationTarget",
        "metadata": {"name": name},
        "spec": {
            "workloadRef": {"name": "app"},
            "policy": {"entrypoint": "choose", "signature": "choose(x)", "seed": {"inline": GOOD}},
            "evaluator": {"image": "ghcr.io/retune/evaluator-test:0.1.0"},
            "search": {"budget": {"maxEvaluations": 10}},
        },
    }
    created: dict[str, Any] = client.CustomObjectsApi(api).create_namespaced_custom_object(
        "retune.dev", "v1alpha1", namespace, "optimizationtargets", body
    )
    return created


def owner_of(target: dict[str, Any]) -> dict[str, str]:
    meta = target["metadata"]
    return {
        "apiVersion": target["apiVersion"],
        "kind": target["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
    }


@pytest.fixture
def make_executor(cluster: ControlPlane, namespace: str) -> Iterator[MakeExecutor]:
    made: list[KubernetesExecutor] = []

    def make(target: str = "cache", api: client.ApiClient | None = None, **options: Any):
        owner = owner_of(create_target(cluster.api(), namespace, target))
        settings: dict[str, Any] = {
            "namespace": namespace,
            "target_name": target,
            "owner": owner,
            "evaluator": evaluator_spec(),
            "evaluator_ref": "scoring_evaluator",
            "entrypoint": "choose",
            "env": {"PYTHONPATH": str(FIXTURES)},
            "poll_interval": 0.3,
            "linger_seconds": 0.3,
            **options,
        }
        executor = KubernetesExecutor(api or cluster.api(), **settings)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.close()


def outcomes(futures: dict[str, Future[EvaluationOutcome]], timeout: float = 60) -> dict:
    return {key: future.result(timeout=timeout) for key, future in futures.items()}


class PodRecorder:
    """Watches the namespace's pods and keeps the last version of each."""

    def __init__(self, core: client.CoreV1Api, namespace: str) -> None:
        self.pods: dict[str, client.V1Pod] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(core, namespace), daemon=True)
        self._thread.start()

    def _run(self, core: client.CoreV1Api, namespace: str) -> None:
        while not self._stop.is_set():
            for pod in core.list_namespaced_pod(namespace).items:
                self.pods[pod.metadata.name] = pod
            self._stop.wait(0.1)

    def stop(self) -> dict[str, client.V1Pod]:
        self._stop.set()
        self._thread.join()
        return self.pods


def test_batches_run_in_hardened_pods_on_the_workload_hardware_and_score_as_locally(
    cluster: ControlPlane, namespace: str, make_executor: MakeExecutor
) -> None:
    api = cluster.api()
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    # Given an operator ServiceAccount with only the documented evaluation rules
    rbac = client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "retune"}})
    rbac.create_namespaced_role(
        namespace, {"metadata": {"name": "retune"}, "rules": EVALUATION_RULES}
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "retune"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "retune"},
            "subjects": [{"kind": "ServiceAccount", "name": "retune", "namespace": namespace}],
        },
    )
    as_operator = cluster.api(cluster.serviceaccount_kubeconfig(namespace, "retune"))
    # and a workload on the GPU pool
    recorder = PodRecorder(core, namespace)
    executor = make_executor(
        api=as_operator, placement=PodPlacement(node_selector=GPU), batch_size=2
    )
    tasks = [
        task("good", GOOD),
        task("close", CLOSE),
        task("quick", CLOSE, subset="quick"),
    ]

    # When three candidates are submitted
    futures = {t.task_id: executor.submit(t) for t in tasks}
    remote = outcomes(futures)

    # Then each outcome equals a local evaluation of the same task
    spec = evaluator_spec()
    with LocalExecutor(
        FIXTURES / "scoring_evaluator.py", "choose", sandbox_limits(spec), 1
    ) as local:
        expected = {t.task_id: local.submit(t).result(timeout=60) for t in tasks}
    for task_id, outcome in remote.items():
        assert outcome.ok, outcome
        assert expected[task_id].result is not None and outcome.result is not None
        assert outcome.result.score == pytest.approx(expected[task_id].result.score, rel=1e-5)
        assert outcome.result.subscores == pytest.approx(expected[task_id].result.subscores)
        assert outcome.result.feedback == expected[task_id].result.feedback
    assert remote["good"].result is not None and remote["good"].result.score == 100.0

    # and they ran as two Jobs (batches of at most two), on the GPU node, hardened
    pods = list(recorder.stop().values())
    assert len(pods) == 2
    for pod in pods:
        assert core.read_node(pod.spec.node_name).metadata.labels["retune.dev/pool"] == "gpu"
        assert pod.spec.node_selector == GPU
        assert pod.spec.automount_service_account_token is False
        assert pod.spec.restart_policy == "Never"
        assert pod.spec.security_context.run_as_non_root is True
        assert pod.spec.security_context.seccomp_profile.type == "RuntimeDefault"
        (container,) = pod.spec.containers
        hardening = container.security_context
        assert hardening.run_as_user == 65532 and hardening.run_as_non_root is True
        assert hardening.read_only_root_filesystem is True
        assert hardening.allow_privilege_escalation is False
        assert hardening.capabilities.drop == ["ALL"]
        assert hardening.seccomp_profile.type == "RuntimeDefault"
        assert container.resources.requests == container.resources.limits
        assert container.resources.limits["cpu"] == "250m"
        assert container.termination_message_policy == "File"
        assert container.command == ["retune-evaluate"]
        mounts = {m.mount_path: m for m in container.volume_mounts}
        assert mounts["/etc/retune/batch"].read_only is True and "/tmp" in mounts
        env = {e.name: e.value for e in container.env}
        assert env["TMPDIR"] == "/tmp"
        assert pod.metadata.labels["retune.dev/role"] == "evaluation"
        assert pod.metadata.labels["retune.dev/target"] == "cache"

    # and the deny-all NetworkPolicy selects them
    policy = client.NetworkingV1Api(api).read_namespaced_network_policy(
        "cache-evaluation", namespace
    )
    assert policy.spec.pod_selector.match_labels == {
        "retune.dev/target": "cache",
        "retune.dev/role": "evaluation",
    }
    assert sorted(policy.spec.policy_types) == ["Egress", "Ingress"]
    assert not policy.spec.ingress and not policy.spec.egress
    assert policy.metadata.owner_references[0].kind == "OptimizationTarget"

    # and the finished Jobs and ConfigMaps are gone
    selector = evaluation_selector("cache")
    wait_until(
        lambda: (
            not batch.list_namespaced_job(namespace, label_selector=selector).items
            and not core.list_namespaced_config_map(namespace, label_selector=selector).items
        ),
        30,
        "the finished Jobs and ConfigMaps to be deleted",
    )


def test_job_manifest_read_back_carries_deadline_owner_and_batch(
    cluster: ControlPlane, namespace: str, make_executor: MakeExecutor
) -> None:
    batch_api, core = client.BatchV1Api(cluster.api()), client.CoreV1Api(cluster.api())
    executor = make_executor(batch_size=3, max_parallel_jobs=1, deadline_slack_seconds=30)
    futures = {t: executor.submit(task(t, GOOD, mode="sleep", seconds=1)) for t in "abc"}

    def created() -> client.V1Job | None:
        jobs = batch_api.list_namespaced_job(namespace).items
        return jobs[0] if jobs else None

    job = wait_until(created, 30, "the Job")
    assert job.spec.backoff_limit == 0
    assert job.spec.active_deadline_seconds == 3 * 5 + 30
    assert job.spec.ttl_seconds_after_finished == 3600
    assert job.metadata.owner_references[0].kind == "OptimizationTarget"
    assert job.metadata.name.startswith("cache-eval-")
    config_map = core.read_namespaced_config_map(job.metadata.name, namespace)
    assert config_map.metadata.owner_references[0].name == "cache"
    assert '"scoring_evaluator"' in config_map.data["batch.json"]
    assert all(outcome.ok for outcome in outcomes(futures).values())


def test_failing_candidates_are_failed_outcomes_and_the_batch_survives_them(
    make_executor: MakeExecutor, cluster: ControlPlane, namespace: str
) -> None:
    executor = make_executor(evaluator=evaluator_spec(timeout_seconds=2), batch_size=4)
    futures = {
        "raises": executor.submit(task("raises", RAISES)),
        "loops": executor.submit(task("loops", LOOPS)),
        "evaluator-raises": executor.submit(task("evaluator-raises", GOOD, mode="raise")),
        "good": executor.submit(task("good", GOOD)),
        "rejected": executor.submit(task("rejected", REJECTED)),
    }
    # The allowlist's verdict needs no pod.
    assert futures["rejected"].done()
    result = outcomes(futures)

    assert result["raises"].failure is FailureReason.EXCEPTION
    assert "ValueError" in result["raises"].detail
    assert result["loops"].failure in (FailureReason.TIMEOUT, FailureReason.CPU)
    assert result["evaluator-raises"].failure is FailureReason.EXCEPTION
    assert result["rejected"].failure is FailureReason.REJECTED
    assert result["good"].ok
    pods = client.CoreV1Api(cluster.api()).list_namespaced_pod(namespace).items
    assert len({p.metadata.labels["retune.dev/batch"] for p in pods}) <= 1


def test_a_pod_past_its_deadline_fails_its_tasks_as_timeout(
    make_executor: MakeExecutor, tmp_path: Path
) -> None:
    # An evaluator whose import hangs: the harness never starts, the Job's deadline ends it.
    (tmp_path / "hanging_evaluator.py").write_text(
        "import time\ntime.sleep(120)\n\ndef evaluate(policy_path, profile, subset):\n"
        "    return {'score': 0.0}\n"
    )
    executor = make_executor(
        evaluator=evaluator_spec(timeout_seconds=1),
        evaluator_ref="hanging_evaluator",
        env={"PYTHONPATH": str(tmp_path)},
        deadline_slack_seconds=2,
    )
    started = time.monotonic()
    outcome = executor.submit(task("t", GOOD)).result(timeout=60)

    assert outcome.failure is FailureReason.TIMEOUT
    assert "deadline of 3 s" in outcome.detail and "timeoutSeconds" in outcome.detail
    assert time.monotonic() - started < 30


def test_an_unschedulable_pod_fails_its_tasks_naming_the_placement(
    make_executor: MakeExecutor,
) -> None:
    # The evaluator's own nodeSelector wins over the workload's (GPU) placement.
    executor = make_executor(
        evaluator=evaluator_spec(node_selector={"retune.dev/pool": "tpu"}),
        placement=PodPlacement(node_selector=GPU),
        stuck_seconds=2,
    )
    outcome = executor.submit(task("t", GOOD)).result(timeout=60)

    assert outcome.failure is FailureReason.INFRASTRUCTURE
    assert "no node could take" in outcome.detail
    assert "nodeSelector" in outcome.detail


def test_deleting_the_target_garbage_collects_its_jobs_configmaps_and_network_policy(
    cluster: ControlPlane, namespace: str, make_executor: MakeExecutor
) -> None:
    api = cluster.api()
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    executor = make_executor(evaluator=evaluator_spec(timeout_seconds=60))
    future = executor.submit(task("slow", GOOD, mode="sleep", seconds=50))
    selector = evaluation_selector("cache")
    wait_until(
        lambda: any(
            p.status.phase == "Running"
            for p in core.list_namespaced_pod(namespace, label_selector=selector).items
        ),
        30,
        "the evaluation pod to run",
    )

    client.CustomObjectsApi(api).delete_namespaced_custom_object(
        "retune.dev", "v1alpha1", namespace, "optimizationtargets", "cache"
    )

    def collected() -> bool:
        return not (
            batch.list_namespaced_job(namespace, label_selector=selector).items
            or core.list_namespaced_config_map(namespace, label_selector=selector).items
            or core.list_namespaced_pod(namespace, label_selector=selector).items
            or client.NetworkingV1Api(api).list_namespaced_network_policy(namespace).items
        )

    wait_until(collected, 60, "the garbage collector to remove the target's objects")
    outcome = future.result(timeout=30)
    assert outcome.failure is FailureReason.INFRASTRUCTURE
    assert "deleted" in outcome.detail


def test_a_restarted_executor_deletes_the_jobs_its_predecessor_left(
    cluster: ControlPlane, namespace: str, make_executor: MakeExecutor
) -> None:
    batch = client.BatchV1Api(cluster.api())
    before = make_executor(evaluator=evaluator_spec(timeout_seconds=60))
    abandoned = before.submit(task("slow", GOOD, mode="sleep", seconds=50))
    selector = evaluation_selector("cache")
    job = wait_until(
        lambda: next(
            iter(batch.list_namespaced_job(namespace, label_selector=selector).items), None
        ),
        30,
        "the first executor's Job",
    )

    # The operator restarts: a new executor for the same target, the old one never closed.
    owner = {**owner_of(create_target_view(cluster, namespace, "cache"))}
    after = KubernetesExecutor(
        cluster.api(),
        namespace=namespace,
        target_name="cache",
        owner=owner,
        evaluator=evaluator_spec(),
        entrypoint="choose",
    )
    try:
        assert after.orphans_deleted == [job.metadata.name]

        def job_gone() -> bool:
            try:
                batch.read_namespaced_job(job.metadata.name, namespace)
                return False
            except ApiException as error:
                return error.status == 404

        wait_until(job_gone, 30, "the orphaned Job to be deleted")
    finally:
        after.close()
    before.close()
    assert abandoned.result(timeout=10).failure in (
        FailureReason.CANCELLED,
        FailureReason.INFRASTRUCTURE,
    )


def create_target_view(cluster: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = client.CustomObjectsApi(cluster.api()).get_namespaced_custom_object(
        "retune.dev", "v1alpha1", namespace, "optimizationtargets", name
    )
    return found


def test_jobs_in_flight_stay_within_the_target_and_operator_bounds(
    cluster: ControlPlane, namespace: str, make_executor: MakeExecutor
) -> None:
    batch = client.BatchV1Api(cluster.api())
    limiter = threading.BoundedSemaphore(3)
    executors = {
        name: make_executor(name, batch_size=1, max_parallel_jobs=2, operator_limiter=limiter)
        for name in ("cache", "router")
    }
    peaks = {"cache": 0, "router": 0, "total": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            jobs = batch.list_namespaced_job(namespace).items
            counts = {name: 0 for name in executors}
            for job in jobs:
                counts[job.metadata.labels["retune.dev/target"]] += 1
            for name, count in counts.items():
                peaks[name] = max(peaks[name], count)
            peaks["total"] = max(peaks["total"], len(jobs))
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    futures = {
        f"{name}-{i}": executor.submit(task(f"{name}-{i}", GOOD, mode="sleep", seconds=1))
        for name, executor in executors.items()
        for i in range(4)
    }
    result = outcomes(futures, timeout=120)
    stop.set()
    sampler.join()

    assert all(outcome.ok for outcome in result.values()), result
    assert peaks["cache"] <= 2 and peaks["router"] <= 2
    assert peaks["total"] == 3
