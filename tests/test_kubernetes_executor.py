"""KubernetesExecutor without a cluster: manifests, status rules, batching and bounds.

The executor's I/O goes through ``EvaluationApi``; here a double stands in for it, and a
test plays the kubelet by giving a batch's pod a termination message. The same behaviour
against the real control plane is in ``tests/cluster/test_kubernetes_executor.py``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from retune.evaluate.contract import (
    EvaluationContext,
    EvaluationOutcome,
    EvaluationResult,
    EvaluationTask,
    FailureReason,
)
from retune.evaluate.entrypoint import EvaluationBatch, encode_outcomes
from retune.evaluate.kubernetes import KubernetesExecutor
from retune.evaluate.podspec import (
    PodPlacement,
    PodTemplate,
    batch_name,
    evaluation_selector,
    job_deadline,
    owner_reference,
    short_name,
    target_label,
)
from retune.evaluate.podstatus import judge
from retune.spec.evaluator import EvaluatorSpec

OWNER = {"apiVersion": "retune.dev/v1alpha1", "kind": "OptimizationTarget", "name": "cache", "uid": "u-1"}  # fmt: skip
GOOD = "def choose(x):\n    return 2 * x + 1\n"
GPU = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def spec(**fields: Any) -> EvaluatorSpec:
    values: dict[str, Any] = {"image": "ghcr.io/retune/evaluator-cache-eviction:0.1.0", **fields}
    return EvaluatorSpec(**values)


def template(**fields: Any) -> PodTemplate:
    values: dict[str, Any] = {
        "namespace": "shop",
        "target_name": "cache",
        "owner": OWNER,
        "evaluator": spec(),
        "placement": PodPlacement(),
        **fields,
    }
    return PodTemplate(**values)


def task(task_id: str, code: str = GOOD) -> EvaluationTask:
    return EvaluationTask(task_id=task_id, policy_code=code, context=EvaluationContext())


# -- manifests ----------------------------------------------------------------------------


def test_pod_is_hardened_and_sized_from_the_spec() -> None:
    evaluator = spec(resources={"cpu": "2", "memory": "1Gi"}, command=["retune-evaluate", "-v"])
    pod = template(evaluator=evaluator).pod_spec("cache-eval-0123456789")
    (container,) = pod["containers"]

    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # requests = limits; the harness's own memory comes on top of the candidate's 1 GiB
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert container["resources"]["limits"]["cpu"] == "2"
    assert container["resources"]["limits"]["memory"] == f"{1024 + 256}Mi"
    assert container["command"] == ["retune-evaluate", "-v"]
    assert container["terminationMessagePolicy"] == "File"
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["TMPDIR"] == "/tmp"
    assert env["RETUNE_BATCH"] == "/etc/retune/batch/batch.json"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/retune/batch"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"]["sizeLimit"] == "64Mi"
    assert volumes["batch"]["configMap"]["name"] == "cache-eval-0123456789"


def test_placement_is_the_workloads_unless_the_evaluator_overrides_it() -> None:
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    workload = PodPlacement.from_pod_spec({"nodeSelector": GPU, "tolerations": [toleration]})
    inherited = template(placement=workload.overridden_by(spec())).pod_spec("x")
    assert inherited["nodeSelector"] == GPU
    assert inherited["tolerations"] == [toleration]
    assert "affinity" not in inherited

    own = spec(node_selector={"retune.dev/pool": "cpu"}, tolerations=[])
    overridden = template(placement=workload.overridden_by(own)).pod_spec("x")
    assert overridden["nodeSelector"] == {"retune.dev/pool": "cpu"}
    assert "tolerations" not in overridden


def test_job_runs_once_with_a_deadline_and_everything_is_owned_by_the_target() -> None:
    pods = template(evaluator=spec(timeout_seconds=30), deadline_slack_seconds=120)
    job = pods.job("cache-eval-0123456789", tasks=4)
    config_map = pods.config_map("cache-eval-0123456789", "{}")
    policy = pods.network_policy()

    assert job["spec"]["backoffLimit"] == 0
    assert (
        job["spec"]["activeDeadlineSeconds"]
        == 30 * 4 + 120
        == job_deadline(spec(timeout_seconds=30), 4, 120)
    )
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["retune.dev/target"] == "cache" and labels["retune.dev/role"] == "evaluation"
    assert labels["retune.dev/batch"] == "cache-eval-0123456789"
    for manifest in (job, config_map, policy):
        (owner,) = manifest["metadata"]["ownerReferences"]
        assert owner == {**OWNER, "controller": True, "blockOwnerDeletion": False}
    assert config_map["immutable"] is True
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {"retune.dev/target": "cache", "retune.dev/role": "evaluation"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": [],
    }  # fmt: skip


def test_runtime_class_priority_pull_secrets_labels_and_annotations_come_from_the_spec() -> None:
    pods = template(
        evaluator=spec(
            runtimeClassName="gvisor",
            priorityClassName="batch-low",
            imagePullSecrets=[{"name": "regcred"}],
            podLabels={"team": "storage", "retune.dev/role": "mine"},
            podAnnotations={"sidecar.istio.io/inject": "false"},
        )
    )
    job = pods.job("cache-eval-0123456789", tasks=1)
    pod = job["spec"]["template"]
    assert pod["spec"]["runtimeClassName"] == "gvisor"
    assert pod["spec"]["priorityClassName"] == "batch-low"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["metadata"]["labels"]["team"] == "storage"
    # retune's own labels win: the NetworkPolicy and the executor select on them
    assert pod["metadata"]["labels"]["retune.dev/role"] == "evaluation"
    assert pod["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    plain = template().job("cache-eval-0123456789", tasks=1)["spec"]["template"]
    assert "runtimeClassName" not in plain["spec"] and "annotations" not in plain["metadata"]
    with pytest.raises(ValueError, match="not a label key"):
        spec(podLabels={"bad key": "x"})


def test_names_and_labels_fit_kubernetes_limits_for_long_dotted_target_names() -> None:
    long = "checkout.payments." + "x" * 200
    name = batch_name(long, "session", ["t1", "t2"])
    assert len(name) <= 63 and "." not in name and name[0].isalnum()
    assert name != batch_name(long, "session", ["t1", "t3"])
    assert name != batch_name(long, "other-session", ["t1", "t2"])
    assert len(target_label(long)) <= 63 and target_label("cache") == "cache"
    assert short_name("a.b") != short_name("a-b")
    assert evaluation_selector("cache") == "retune.dev/target=cache,retune.dev/role=evaluation"
    with pytest.raises(ValueError, match="uid"):
        owner_reference({**OWNER, "uid": ""})


def test_a_spec_without_an_image_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"spec\.evaluator\.image"):
        KubernetesExecutor(
            FakeApi(),
            namespace="shop",
            target_name="cache",
            owner=OWNER,
            evaluator=EvaluatorSpec(module="evaluator.py"),
            entrypoint="choose",
        )


# -- reading pods back --------------------------------------------------------------------


def pod(
    phase: str = "Running",
    *,
    terminated: dict[str, Any] | None = None,
    waiting: dict[str, Any] | None = None,
    reason: str = "",
    scheduled: dict[str, Any] | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if terminated is not None:
        state["terminated"] = terminated
    if waiting is not None:
        state["waiting"] = waiting
    status: dict[str, Any] = {
        "phase": phase,
        "containerStatuses": [{"name": "evaluate", "state": state}] if state else [],
        "conditions": [{"type": "PodScheduled", **scheduled}] if scheduled else [],
    }
    if reason:
        status["reason"], status["message"] = reason, f"{reason} happened"
    return {
        "metadata": {"name": "cache-eval-abc-x1", "labels": {"retune.dev/batch": "cache-eval-abc"}},
        "spec": {"nodeName": "cpu-pool-0", "containers": [{"image": "registry.example/e:1"}]},
        "status": status,
    }


JOB: dict[str, Any] = {"metadata": {"name": "cache-eval-abc"}, "status": {}}
IDS = ["a", "b"]


def verdict_of(job: dict[str, Any] | None, pods: list[dict[str, Any]], waited: float = 1.0):
    verdict = judge(
        job, pods, IDS, waited_seconds=waited, stuck_seconds=60, memory="1280Mi", deadline=240
    )
    return None if verdict is None else verdict.for_tasks(IDS)


def test_outcomes_come_from_the_termination_message() -> None:
    good = EvaluationOutcome(result=EvaluationResult(score=97.5, subscores={"full": 97.5}))
    bad = EvaluationOutcome.failed(FailureReason.EXCEPTION, "ValueError: no")
    message = encode_outcomes([("a", good), ("b", bad)])
    finished = pod(
        "Succeeded", terminated={"exitCode": 0, "reason": "Completed", "message": message}
    )

    outcomes = verdict_of(JOB, [finished])

    assert outcomes is not None
    assert outcomes["a"].result is not None and outcomes["a"].result.score == 97.5
    assert outcomes["b"].failure is FailureReason.EXCEPTION


def test_a_batch_the_pod_could_not_run_fails_every_task_with_its_error() -> None:
    message = json.dumps({"v": 1, "error": "cannot import evaluator '/opt/e.py'"})
    finished = pod("Failed", terminated={"exitCode": 2, "reason": "Error", "message": message})
    outcomes = verdict_of(JOB, [finished])
    assert outcomes is not None
    assert {o.failure for o in outcomes.values()} == {FailureReason.INFRASTRUCTURE}
    assert "cannot import evaluator" in outcomes["a"].detail


@pytest.mark.parametrize(
    ("job", "pods", "waited", "reason", "words"),
    [
        (JOB, [pod("Failed", terminated={"exitCode": 137, "reason": "OOMKilled"})], 1,
         FailureReason.MEMORY, ["OOMKilled", "1280Mi", "spec.evaluator.resources.memory"]),
        (JOB, [pod("Failed", reason="DeadlineExceeded")], 1,
         FailureReason.TIMEOUT, ["deadline of 240 s", "timeoutSeconds"]),
        ({**JOB, "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}},
         [], 1, FailureReason.TIMEOUT, ["deadline of 240 s"]),
        ({**JOB, "status": {"conditions": [{"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded"}]}},
         [pod("Running")], 1, FailureReason.TIMEOUT, ["deadline"]),
        ({**JOB, "status": {"conditions": [{"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded"}]}},
         [pod("Failed", terminated={"exitCode": 143, "reason": "Error"})], 1, FailureReason.TIMEOUT, ["deadline"]),
        ({**JOB, "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}},
         [], 1, FailureReason.INFRASTRUCTURE, ["BackoffLimitExceeded"]),
        (JOB, [pod("Failed", reason="Evicted")], 1,
         FailureReason.INFRASTRUCTURE, ["Evicted", "cpu-pool-0"]),
        (JOB, [pod("Failed", terminated={"exitCode": 1, "reason": "Error"})], 1,
         FailureReason.INFRASTRUCTURE, ["exited with code 1", "kubectl logs"]),
        (JOB, [pod("Pending", waiting={"reason": "ImagePullBackOff", "message": "not found"})], 61,
         FailureReason.INFRASTRUCTURE, ["registry.example/e:1", "ImagePullBackOff", "spec.evaluator.image"]),
        (JOB, [pod("Pending", waiting={"reason": "InvalidImageName"})], 1,
         FailureReason.INFRASTRUCTURE, ["InvalidImageName"]),
        (JOB, [pod("Pending", waiting={"reason": "CreateContainerError"})], 61,
         FailureReason.INFRASTRUCTURE, ["spec.evaluator.command"]),
        (JOB, [pod("Pending", scheduled={"status": "False", "reason": "Unschedulable",
                                          "message": "0/3 nodes are available"})], 61,
         FailureReason.INFRASTRUCTURE, ["no node could take", "0/3 nodes", "nodeSelector"]),
        (None, [], 1, FailureReason.INFRASTRUCTURE, ["deleted"]),
        (JOB, [], 61, FailureReason.INFRASTRUCTURE, ["no pod was created", "ResourceQuota"]),
    ],
)  # fmt: skip
def test_a_pod_that_ends_without_outcomes_fails_its_tasks_with_an_actionable_reason(
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    waited: float,
    reason: FailureReason,
    words: list[str],
) -> None:
    outcomes = verdict_of(job, pods, waited)
    assert outcomes is not None and set(outcomes) == set(IDS)
    for outcome in outcomes.values():
        assert outcome.failure is reason
        for word in words:
            assert word in outcome.detail


@pytest.mark.parametrize(
    "pods",
    [
        [],
        [pod("Pending", waiting={"reason": "ContainerCreating"})],
        [pod("Pending", waiting={"reason": "ImagePullBackOff"})],
        [pod("Pending", scheduled={"status": "False", "reason": "Unschedulable"})],
        [pod("Running")],
    ],
)
def test_a_pod_still_on_its_way_is_left_alone(pods: list[dict[str, Any]]) -> None:
    assert verdict_of(JOB, pods, waited=5) is None


# -- the executor, over a double of the API -----------------------------------------------


class FakeApi:
    """Records what the executor creates; a test finishes a batch by giving it a pod."""

    def __init__(self, create_error: Exception | None = None) -> None:
        self.lock = threading.Lock()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.config_maps: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.policies: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.created: list[str] = []
        self.peak_jobs = 0
        self.create_error = create_error

    def apply_network_policy(self, body: dict[str, Any]) -> None:
        self.policies.append(body)

    def create_config_map(self, body: dict[str, Any]) -> None:
        with self.lock:
            self.config_maps[body["metadata"]["name"]] = body

    def create_job(self, body: dict[str, Any]) -> None:
        if self.create_error is not None:
            raise self.create_error
        with self.lock:
            self.jobs[body["metadata"]["name"]] = body
            self.created.append(body["metadata"]["name"])
            self.peak_jobs = max(self.peak_jobs, len(self.jobs))

    def delete_job(self, name: str) -> None:
        with self.lock:
            self.jobs.pop(name, None)
            self.pods.pop(name, None)
            self.deleted.append(name)

    def delete_config_map(self, name: str) -> None:
        with self.lock:
            self.config_maps.pop(name, None)

    def list_jobs(self, selector: str) -> list[dict[str, Any]]:
        with self.lock:
            return [{"metadata": j["metadata"], "status": {}} for j in self.jobs.values()]

    def list_pods(self, selector: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.pods.values())

    def list_config_maps(self, selector: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.config_maps.values())

    # -- the test plays the kubelet --
    def batch(self, name: str) -> EvaluationBatch:
        return EvaluationBatch.model_validate_json(self.config_maps[name]["data"]["batch.json"])

    def finish(self, name: str, score: float = 1.0) -> None:
        ids = [t.task_id for t in self.batch(name).tasks]
        ok = EvaluationOutcome(result=EvaluationResult(score=score))
        message = encode_outcomes([(task_id, ok) for task_id in ids])
        finished = pod("Succeeded", terminated={"exitCode": 0, "message": message})
        finished["metadata"]["labels"]["retune.dev/batch"] = name
        with self.lock:
            self.pods[name] = finished

    def wait_for_jobs(self, count: int, timeout: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.jobs) >= count:
                    return sorted(self.jobs)
            time.sleep(0.01)
        raise AssertionError(f"{count} Jobs expected, have {sorted(self.jobs)}")


@pytest.fixture
def fake() -> FakeApi:
    return FakeApi()


@pytest.fixture
def executors() -> Iterator[list[KubernetesExecutor]]:
    made: list[KubernetesExecutor] = []
    yield made
    for executor in made:
        executor.close()


def start(api: FakeApi, made: list[KubernetesExecutor], **options: Any) -> KubernetesExecutor:
    settings: dict[str, Any] = {
        "namespace": "shop",
        "target_name": "cache",
        "owner": OWNER,
        "evaluator": spec(),
        "entrypoint": "choose",
        "poll_interval": 0.02,
        "linger_seconds": 0.05,
        **options,
    }
    executor = KubernetesExecutor(api, **settings)
    made.append(executor)
    return executor


def test_tasks_travel_in_batches_and_resolve_from_the_message(
    fake: FakeApi, executors: list[KubernetesExecutor]
) -> None:
    executor = start(fake, executors, batch_size=4, max_parallel_jobs=1)
    futures = [executor.submit(task(f"t{i}")) for i in range(6)]

    (first,) = fake.wait_for_jobs(1)
    assert [t.task_id for t in fake.batch(first).tasks] == ["t0", "t1", "t2", "t3"]
    assert fake.batch(first).evaluator == "/opt/retune/evaluator/evaluator.py"
    assert fake.batch(first).limits.wall_seconds == 60
    fake.finish(first, score=7.0)
    assert [f.result(timeout=5).result.score for f in futures[:4]] == [7.0] * 4  # type: ignore[union-attr]

    (second,) = fake.wait_for_jobs(1)
    assert second != first and [t.task_id for t in fake.batch(second).tasks] == ["t4", "t5"]
    fake.finish(second)
    assert all(f.result(timeout=5).ok for f in futures)
    assert first in fake.deleted and second in fake.deleted
    assert executor.capacity == 4


def test_idle_job_slots_take_smaller_batches(
    fake: FakeApi, executors: list[KubernetesExecutor]
) -> None:
    executor = start(fake, executors, batch_size=4, max_parallel_jobs=3)
    for i in range(6):
        executor.submit(task(f"t{i}"))
    names = fake.wait_for_jobs(3)
    assert sorted(len(fake.batch(name).tasks) for name in names) == [2, 2, 2]


def test_rejected_and_cancelled_candidates_never_reach_a_pod(
    fake: FakeApi, executors: list[KubernetesExecutor]
) -> None:
    executor = start(fake, executors, linger_seconds=0.3, max_parallel_jobs=1)
    rejected = executor.submit(task("bad", "import os\ndef choose(x):\n    return 1\n"))
    assert rejected.result(timeout=1).failure is FailureReason.REJECTED
    cancelled = executor.submit(task("gone"))
    assert cancelled.cancel()
    kept = executor.submit(task("kept"))
    (name,) = fake.wait_for_jobs(1)
    assert [t.task_id for t in fake.batch(name).tasks] == ["kept"]
    fake.finish(name)
    assert kept.result(timeout=5).ok


def test_jobs_in_flight_are_bounded_per_target_and_per_operator(
    fake: FakeApi, executors: list[KubernetesExecutor]
) -> None:
    limiter = threading.BoundedSemaphore(3)
    first = start(fake, executors, batch_size=1, max_parallel_jobs=2, operator_limiter=limiter)
    second = start(
        fake, executors, target_name="router", batch_size=1, max_parallel_jobs=2,
        operator_limiter=limiter,
    )  # fmt: skip
    futures = [
        ex.submit(task(f"{i}-{n}")) for i, ex in enumerate((first, second)) for n in range(4)
    ]
    done = 0
    while done < len(futures):
        names = fake.wait_for_jobs(1)
        time.sleep(0.1)  # let the dispatchers try to exceed the bounds
        assert len(fake.jobs) <= 3
        assert first.jobs_in_flight <= 2 and second.jobs_in_flight <= 2
        fake.finish(names[0])
        while names[0] in fake.jobs:
            time.sleep(0.01)
        time.sleep(0.05)  # the futures resolve just after the Job is deleted
        done = sum(f.done() for f in futures)
    assert fake.peak_jobs == 3
    assert all(f.result(timeout=5).ok for f in futures)


def test_close_cancels_queued_and_running_tasks_and_deletes_their_jobs(
    fake: FakeApi, executors: list[KubernetesExecutor]
) -> None:
    executor = start(fake, executors, batch_size=1, max_parallel_jobs=1)
    running = executor.submit(task("running"))
    (name,) = fake.wait_for_jobs(1)
    queued = executor.submit(task("queued"))

    executor.close()

    assert running.result(timeout=1).failure is FailureReason.CANCELLED
    assert queued.result(timeout=1).failure is FailureReason.CANCELLED
    assert name in fake.deleted and not fake.jobs and not fake.config_maps
    assert executor.submit(task("late")).result(timeout=1).failure is FailureReason.CANCELLED


def test_a_refused_job_fails_its_tasks_with_the_reason(
    executors: list[KubernetesExecutor],
) -> None:
    forbidden = ApiException(status=403, reason="Forbidden")
    forbidden.body = json.dumps({"message": 'jobs.batch is forbidden: User "x" cannot create'})
    fake = FakeApi(create_error=forbidden)
    executor = start(fake, executors)
    outcome = executor.submit(task("t")).result(timeout=5)
    assert outcome.failure is FailureReason.INFRASTRUCTURE
    assert "403" in outcome.detail and "RBAC" in outcome.detail
    assert not fake.config_maps  # the batch's ConfigMap is cleaned up too


def test_start_applies_the_network_policy_and_deletes_orphans_of_a_previous_run(
    fake: FakeApi, executors: list[KubernetesExecutor]
) -> None:
    leftover = template().job("cache-eval-fromlastrun", 1)
    fake.jobs["cache-eval-fromlastrun"] = leftover
    fake.config_maps["cache-eval-fromlastrun"] = template().config_map(
        "cache-eval-fromlastrun", "{}"
    )

    executor = start(fake, executors)

    assert executor.orphans_deleted == ["cache-eval-fromlastrun"]
    assert not fake.jobs and not fake.config_maps
    (policy,) = fake.policies
    assert policy["metadata"]["name"] == "cache-evaluation"


def test_scores_from_a_pod_that_did_not_exit_cleanly_are_not_trusted() -> None:
    from retune.evaluate.contract import EvaluationOutcome, EvaluationResult
    from retune.evaluate.entrypoint import encode_outcomes
    from retune.evaluate.podstatus import judge

    message = encode_outcomes(
        [
            ("a", EvaluationOutcome(result=EvaluationResult(score=99.0))),
            ("b", EvaluationOutcome.failed(FailureReason.EXCEPTION, "boom")),
        ]
    )

    def pod(exit_code: int) -> dict[str, object]:
        terminated = {"exitCode": exit_code, "message": message, "reason": "Error"}
        return {
            "metadata": {"name": "p"},
            "status": {
                "phase": "Failed" if exit_code else "Succeeded",
                "containerStatuses": [{"name": "evaluate", "state": {"terminated": terminated}}],
            },
        }

    clean = judge(
        None, [pod(0)], ["a", "b"], waited_seconds=1, stuck_seconds=60, memory="1Gi", deadline=60
    )
    assert clean is not None and clean.outcomes is not None
    assert clean.outcomes["a"].result is not None and clean.outcomes["a"].result.score == 99.0
    dirty = judge(
        None, [pod(1)], ["a", "b"], waited_seconds=1, stuck_seconds=60, memory="1Gi", deadline=60
    )
    assert dirty is not None and dirty.outcomes is not None
    assert dirty.outcomes["a"].result is None and "not trusted" in dirty.outcomes["a"].detail
    assert dirty.outcomes["b"].failure == FailureReason.EXCEPTION
