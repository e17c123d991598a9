"""The small fixture layer the operator's end-to-end tests read through.

- :class:`OperatorProcess`: ``retune operator`` as a local process, with a kubeconfig of the
  chart's ServiceAccount (the benchmarks' way; the end-to-end tests run it as a Pod, see
  ``tests/e2e/operator_pod.py``);
- :class:`EvaluationRecorder`: watches a namespace's evaluation ConfigMaps and pods and
  remembers every batch's task ids and every pod's node, even after the executor has
  deleted them;
- :func:`cache_target`: examples/01's target, made ready for this cluster;
- small readers: the status, the checkpoint, the Events.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from retune.search.state import EngineState, decode_state
from retune.spec import GROUP, PLURAL, VERSION
from tests.cluster.controlplane import REPO_ROOT
from tests.cluster.processes import ManagedProcess, signal_group, wait_until

EXAMPLE = REPO_ROOT / "examples" / "01-cache-eviction"
RETUNE = Path(sys.executable).parent / "retune"
EVALUATION = "retune.dev/role=evaluation"

# The cache's workload profile (examples/01's recorded one), served as one gauge each; the
# e2e copy of the target reads them with simple queries.
PROFILE = json.loads((EXAMPLE / "profile.json").read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    """``retune operator`` serving ``namespaces``, authenticated by ``kubeconfig``."""

    def __init__(
        self,
        kubeconfig: Path,
        namespaces: Iterable[str],
        prometheus_url: str,
        log_path: Path,
        max_concurrent_searches: int = 2,
    ) -> None:
        self.port = free_port()
        argv = [
            str(RETUNE),
            "operator",
            *(f"--namespace={namespace}" for namespace in namespaces),
            f"--kubeconfig={kubeconfig}",
            f"--prometheus-url={prometheus_url}",
            "--metrics-host=127.0.0.1",
            f"--metrics-port={self.port}",
            f"--max-concurrent-searches={max_concurrent_searches}",
        ]
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")
        }
        self.process = ManagedProcess("retune-operator", argv, log_path, env=env)

    def start(self) -> None:
        """Start and wait until ``/readyz`` says ready."""
        self.process.start()
        wait_until(
            lambda: self.get("/readyz")[0] == 200,
            60,
            "the operator to be ready",
            abort=lambda: None if self.process.running else self.process.describe_exit(),
        )

    def kill(self) -> None:
        """``kill -9``: no shutdown handler runs."""
        assert self.process.pid is not None
        signal_group(self.process.pid, signal.SIGKILL)
        wait_until(lambda: not self.process.running, 10, "the operator to die")

    def stop(self) -> None:
        self.process.stop(timeout=30)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as answer:
                return answer.status, answer.read().decode()
        except OSError as error:
            return getattr(error, "code", 0) or 0, str(error)

    def log(self, lines: int = 60) -> str:
        return self.process.log_tail(lines)


@dataclass(frozen=True)
class RecordedTask:
    """One evaluation as its batch described it."""

    at: float
    task_id: str
    code: str
    hardware: dict[str, str]


@dataclass
class EvaluationRecorder:
    """Every evaluation batch (task ids, when) and pod (node) of one namespace."""

    api: client.ApiClient
    namespace: str
    batches: dict[str, tuple[float, list[str]]] = field(default_factory=dict)
    pod_nodes: dict[str, str] = field(default_factory=dict)
    tasks: list[RecordedTask] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> EvaluationRecorder:
        core = client.CoreV1Api(self.api)
        for method, record in (
            (core.list_namespaced_config_map, self._batch),
            (core.list_namespaced_pod, self._pod),
        ):
            thread = threading.Thread(target=self._watch, args=(method, record), daemon=True)
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def tasks_since(self, since: float = 0.0) -> list[str]:
        """Task ids of the batches created after ``since`` (time.time())."""
        return [t for at, tasks in self.batches.values() if at >= since for t in tasks]

    def _watch(self, method: Callable[..., Any], record: Callable[[Any], None]) -> None:
        while not self._stop.is_set():
            try:
                for event in watch.Watch().stream(
                    method, self.namespace, label_selector=EVALUATION, timeout_seconds=5
                ):
                    record(event["object"])
            except Exception:  # the watch is re-opened; the test reports what it saw
                time.sleep(0.2)

    def _batch(self, config_map: Any) -> None:
        name = config_map.metadata.name
        document = (config_map.data or {}).get("batch.json")
        if document and name not in self.batches:
            now, tasks = time.time(), json.loads(document)["tasks"]
            self.batches[name] = (now, [task["task_id"] for task in tasks])
            self.tasks += [
                RecordedTask(now, task["task_id"], task["policy_code"], task["context"]["hardware"])
                for task in tasks
            ]

    def _pod(self, pod: Any) -> None:
        if pod.spec.node_name:
            self.pod_nodes[pod.metadata.name] = pod.spec.node_name


EVALUATOR_RESOURCES = {"cpu": "400m", "memory": "512Mi"}
"""Two evaluation pods of two targets at once fit the real node's two cores beside the
operator and the caches (requests are limits for evaluation pods)."""


def cache_target(namespace: str, name: str = "cache-eviction", budget: int = 24) -> dict[str, Any]:
    """examples/01's target for this cluster: the seed inline, the example's evaluator image
    (evaluation pods run it on the real node), queries over the exporter's gauges, a small
    budget and shorter traces so the test is quick."""
    target = yaml.safe_load((EXAMPLE / "target.yaml").read_text())
    target["metadata"] = {"name": name, "namespace": namespace}
    spec = target["spec"]
    spec["policy"]["seed"] = {"inline": (EXAMPLE / "seed_policy.py").read_text()}
    evaluator = spec["evaluator"]
    del evaluator["module"]
    evaluator["resources"] = dict(EVALUATOR_RESOURCES)
    evaluator["params"].update(requests_full=30000, requests_quick=8000)
    evaluator["minImprovement"] = 0.01
    spec["profile"] = {
        "queries": {key: f'max(cache_profile_{key}{{job="cache"}})' for key in PROFILE}
    }
    del spec["hardware"]["recorded"]
    spec["search"]["budget"] = {"maxEvaluations": budget}
    return dict(target)


# -- readers --------------------------------------------------------------------------------
def custom(api: client.ApiClient) -> Any:
    return client.CustomObjectsApi(api)


def apply_target(api: client.ApiClient, target: dict[str, Any]) -> dict[str, Any]:
    namespace = target["metadata"]["namespace"]
    return dict(
        custom(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, target)
    )


def read_target(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return dict(
            custom(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def status_of(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return dict((read_target(api, namespace, name) or {}).get("status") or {})


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def wait_for_status(
    api: client.ApiClient,
    namespace: str,
    name: str,
    check: Callable[[dict[str, Any]], bool],
    timeout: float,
    what: str,
    operator: OperatorProcess | None = None,
) -> dict[str, Any]:
    """Poll the target's status until ``check`` holds; fail with the status and the log."""
    seen: dict[str, Any] = {}

    def holds() -> bool:
        seen.clear()
        seen.update(status_of(api, namespace, name))
        return check(seen)

    try:
        wait_until(holds, timeout, what, interval=0.5)
    except TimeoutError as error:
        log = f"\noperator log:\n{operator.log()}" if operator else ""
        raise AssertionError(f"{error}\nstatus: {json.dumps(seen, indent=1)}{log}") from None
    return dict(seen)


def checkpoint(api: client.ApiClient, namespace: str, name: str) -> EngineState | None:
    """The engine state in the target's checkpoint ConfigMap."""
    try:
        config_map = client.CoreV1Api(api).read_namespaced_config_map(
            f"{name}-checkpoint", namespace
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return decode_state(base64.b64decode(config_map.binary_data["checkpoint"]))


def event_reasons(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    return [event.reason for event in events.items]


def owned_objects(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    """The Jobs, pods and ConfigMaps labelled as the target's."""
    selector = f"retune.dev/target={name}"
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    found = [
        f"Job {j.metadata.name}"
        for j in batch.list_namespaced_job(namespace, label_selector=selector).items
    ]
    found += [
        f"Pod {p.metadata.name}"
        for p in core.list_namespaced_pod(namespace, label_selector=selector).items
    ]
    found += [
        f"ConfigMap {c.metadata.name}"
        for c in core.list_namespaced_config_map(namespace, label_selector=selector).items
    ]
    return found
