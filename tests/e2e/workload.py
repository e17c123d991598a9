"""examples/01's cache service as the workload of the end-to-end tests, with its traffic.

- :func:`cache_service`: the Deployment of the real cache service from its own image
  (``ghcr.io/retune/cache``), on the real node, hardened for Pod Security ``restricted``,
  reading its eviction policy from the ConfigMap volume ``retune-policy``; :func:`service`,
  the Service in front of it (the canary's pods join it by their ``app`` label); and
  :func:`policy_config_map`, the policy it starts with;
- :class:`Traffic`: for one namespace, Prometheus scrapes the cache's pods through
  Kubernetes service discovery and the relabelling docs/install.md gives users, and the
  load generator (a process on the host, like a client outside the cluster that balances
  over the Service's endpoints) spreads its requests over the ready pods' IPs; it also
  serves the workload profile the load generator is asked for, and shifts the mix.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.utils import parse_quantity

from tests.cluster.controlplane import ControlPlane
from tests.cluster.exporter import MetricsExporter
from tests.cluster.node import REAL_NODE_TAINT
from tests.cluster.nodes import REAL_NODE
from tests.cluster.processes import ManagedProcess, wait_until
from tests.cluster.prometheus import PrometheusServer
from tests.e2e.harness import EXAMPLE, free_port
from tests.imports import import_file

WORKLOAD = EXAMPLE / "workload"
TRACK_LABEL = "retune.dev/track"
APP = {"app": "cache"}
CACHE_BYTES = 4 * 1024 * 1024
CACHE_IMAGE = "ghcr.io/retune/cache:0.1.0"
CACHE_PORT = 8080
ON_THE_REAL_NODE: dict[str, Any] = {
    "nodeSelector": {"retune.dev/pool": "cpu"},
    "tolerations": [{**REAL_NODE_TAINT, "operator": "Equal"}],
}
"""The CPU pool is the real node, tainted so that only pods asking for it land there;
evaluation pods inherit both from the workload."""
HARDENED = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
MIX: dict[str, float] = {
    **import_file(WORKLOAD / "loadgen.py", "retune_example_cache_loadgen").DEFAULT_MIX,
    "key_space": 5000,  # fewer keys than its default: the scenes' SLOs assume these
}
"""The traffic the load generator sends, which is also the workload profile (at the scale
one machine drives: the cache's own estimates of a day's distinct keys or an hour's hot-set
turnover do not settle within a test)."""
LRU = (
    "def priority(size, now, last_access, access_count, insert_time, evicted_count, "
    "last_evicted):\n    return last_access\n"
)


def policy_config_map(namespace: str, code: str = LRU) -> dict[str, Any]:
    """The policy the cache runs before retune rolls anything out (plain LRU)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cache-policy", "namespace": namespace},
        "data": {"policy.py": code},
    }


def cache_service(namespace: str, replicas: int = 1) -> dict[str, Any]:
    """The cache Deployment on the CPU pool (the real node), from the cache image."""
    command = [
        "python",
        "/app/examples/01-cache-eviction/workload/server.py",
        "--host=0.0.0.0",
        f"--port={CACHE_PORT}",
        f"--capacity-bytes={CACHE_BYTES}",
        "--policy=/etc/retune/policy/policy.py",
        "--policy-poll-seconds=1",
        "--stats-window=60",
        "--log-level=INFO",
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "cache", "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(APP)},
            "template": {
                "metadata": {"labels": dict(APP)},
                "spec": {
                    **ON_THE_REAL_NODE,
                    "terminationGracePeriodSeconds": 2,
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                    },
                    "containers": [
                        {
                            "name": "cache",
                            "image": CACHE_IMAGE,
                            "imagePullPolicy": "Never",
                            "command": command,
                            "ports": [{"name": "http", "containerPort": CACHE_PORT}],
                            "readinessProbe": {
                                "httpGet": {"path": "/metrics", "port": "http"},
                                "periodSeconds": 1,
                            },
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "96Mi"},
                                "limits": {"memory": "384Mi"},
                            },
                            "securityContext": dict(HARDENED),
                            "volumeMounts": [
                                {"name": "retune-policy", "mountPath": "/etc/retune/policy"},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "retune-policy", "configMap": {"name": "cache-policy"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
                    ],
                },
            },
        },
    }


def service(namespace: str) -> dict[str, Any]:
    """The Service in front of the cache: stable and canary pods alike (by ``app``)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "cache", "namespace": namespace},
        "spec": {
            "selector": dict(APP),
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


def deploy_cache(api: client.ApiClient, namespace: str, replicas: int = 1) -> None:
    """The cache running LRU: its policy ConfigMap, Deployment and Service."""
    client.CoreV1Api(api).create_namespaced_config_map(namespace, policy_config_map(namespace))
    client.AppsV1Api(api).create_namespaced_deployment(
        namespace, cache_service(namespace, replicas)
    )
    client.CoreV1Api(api).create_namespaced_service(namespace, service(namespace))


POD_RELABEL_CONFIGS: list[dict[str, Any]] = [
    {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": "http", "action": "keep"},
    {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Running", "action": "keep"},
    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    {"source_labels": ["__meta_kubernetes_pod_label_retune_dev_track"], "target_label": "track"},
]  # fmt: skip
"""The relabelling a user gives Prometheus' Kubernetes pod discovery so that canary analysis
can tell the tracks apart (docs/rollout.md shows it; a test checks the page has these)."""


def scrape_config(sd_file: Path) -> dict[str, Any]:
    """How Prometheus finds and labels the cache's pods. Debian's Prometheus is built
    without Kubernetes service discovery, so :class:`Traffic` plays it: it writes the
    pods as ``kubernetes_sd`` would describe them (the same ``__meta_kubernetes_*``
    labels) to a file Prometheus watches, and Prometheus applies the user's relabelling."""
    return {"file_sd_configs": [{"files": [str(sd_file)]}], "relabel_configs": POD_RELABEL_CONFIGS}


def pod_targets(pods: list[Any]) -> list[dict[str, Any]]:
    """Pods as Kubernetes pod discovery describes them: one target per container port."""
    targets = []
    for pod in pods:
        if not pod.status.pod_ip:
            continue
        meta = {
            "__meta_kubernetes_namespace": pod.metadata.namespace,
            "__meta_kubernetes_pod_name": pod.metadata.name,
            "__meta_kubernetes_pod_phase": pod.status.phase or "",
            "__meta_kubernetes_pod_node_name": pod.spec.node_name or "",
        }
        for key, value in (pod.metadata.labels or {}).items():
            clean = "".join(c if c.isalnum() else "_" for c in key)
            meta[f"__meta_kubernetes_pod_label_{clean}"] = value
        for container in pod.spec.containers:
            for port in container.ports or []:
                labels = {**meta, "__meta_kubernetes_pod_container_name": container.name}
                labels["__meta_kubernetes_pod_container_port_name"] = port.name or ""
                address = f"{pod.status.pod_ip}:{port.container_port}"
                targets.append({"targets": [address], "labels": labels})
    return targets


def write_pod_targets(sd_file: Path, pods: list[Any]) -> None:
    """The pods as :func:`pod_targets`, in the file a ``file_sd_configs`` entry watches."""
    temporary = sd_file.with_suffix(".tmp")
    temporary.write_text(json.dumps(pod_targets(pods)))
    temporary.replace(sd_file)  # Prometheus must never read half a file


class LoadGenerator:
    """examples/01's load generator as a process, steered through its control port."""

    def __init__(self, log_path: Path, mix: dict[str, float]) -> None:
        self.port = free_port()
        argv = [
            sys.executable,
            str(WORKLOAD / "loadgen.py"),
            "--target=127.0.0.1:9",  # replaced by the discovery before any request counts
            "--control-host=127.0.0.1",
            f"--control-port={self.port}",
            "--concurrency=2",
            *(f"--{key.replace('_', '-')}={value}" for key, value in mix.items()),
        ]
        self.process = ManagedProcess("loadgen", argv, log_path)

    def start(self) -> None:
        self.process.start()
        wait_until(lambda: self._call("GET", "/mix"), 30, "the load generator to listen")

    def stop(self) -> None:
        self.process.stop(timeout=5)

    def targets(self, addresses: list[str]) -> None:
        self._call("POST", "/targets", addresses)

    def mix(self, changes: dict[str, float]) -> dict[str, Any]:
        return dict(self._call("POST", "/mix", changes))

    def _call(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method
        )
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.loads(answer.read() or b"null")


class Traffic:
    """The cache's pods of one namespace, scraped by Prometheus and sent the load."""

    def __init__(
        self,
        cluster: ControlPlane,
        prometheus: PrometheusServer,
        exporter: MetricsExporter,
        namespace: str,
        log_dir: Path,
    ) -> None:
        self.cluster, self.prometheus, self.exporter = cluster, prometheus, exporter
        self.namespace = namespace
        self.job = f"cache-{namespace}"
        self.sd_file = log_dir / f"pods-{namespace}.json"
        self.current_mix = dict(MIX)
        self.loadgen = LoadGenerator(log_dir / f"loadgen-{namespace}.log", self.current_mix)
        self.pods: dict[str, tuple[str, str | None]] = {}
        """Pod name -> (address, track) of the pods being scraped."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"traffic-{namespace}", daemon=True)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> Traffic:
        self._profile(self.current_mix)
        self._discover([])
        self.prometheus.add_job(self.job, scrape_config(self.sd_file))
        self.loadgen.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.loadgen.stop()
        self.prometheus.remove_job(self.job)
        for key in MIX:
            self.exporter.remove(f"cache_profile_{key}", namespace=self.namespace)

    # -- what a test does ------------------------------------------------------------------
    def shift(self, **changes: float) -> None:
        """Change the load generator's mix, and the profile with it."""
        self.current_mix.update(changes)
        self.loadgen.mix(changes)
        self._profile(self.current_mix)

    def wait_for_pods(self, tracks: set[str | None], timeout: float = 60) -> None:
        """Until the scraped pods have exactly these tracks (None: no track label)."""
        wait_until(
            lambda: {track for _, track in self.pods.values()} == tracks,
            timeout,
            f"cache pods with tracks {tracks} in {self.namespace}",
        )

    def hit_ratio(self, window: str = "10s", track: str | None = None) -> float | None:
        """The byte hit ratio Prometheus sees, over all pods or one track."""
        where = f'namespace="{self.namespace}"' + (f',track="{track}"' if track else "")
        query = (
            f"sum(rate(cache_hit_bytes_total{{{where}}}[{window}])) / "
            f"sum(rate(cache_requested_bytes_total{{{where}}}[{window}]))"
        )
        result = self.prometheus.query(query)
        return float(result[0]["value"][1]) if result else None

    # -- the discovery ---------------------------------------------------------------------
    def _profile(self, mix: dict[str, float]) -> None:
        for key in MIX:
            self.exporter.set(f"cache_profile_{key}", mix[key], namespace=self.namespace)

    def _run(self) -> None:
        core = client.CoreV1Api(self.cluster.api())
        selector = ",".join(f"{k}={v}" for k, v in APP.items())
        while not self._stop.wait(1.0):
            try:
                pods = core.list_namespaced_pod(self.namespace, label_selector=selector).items
                self._discover(pods)
                found = {}
                for pod in pods:
                    conditions = {c.type: c.status for c in (pod.status.conditions or [])}
                    if pod.metadata.deletion_timestamp or conditions.get("Ready") != "True":
                        continue
                    track = (pod.metadata.labels or {}).get(TRACK_LABEL)
                    found[pod.metadata.name] = (f"{pod.status.pod_ip}:{CACHE_PORT}", track)
                if found != self.pods:
                    if found:
                        self.loadgen.targets([address for address, _ in found.values()])
                    self.pods = found
            except Exception:  # the API server or a pod going away: look again
                time.sleep(0.5)

    def _discover(self, pods: list[Any]) -> None:
        write_pod_targets(self.sd_file, pods)


def evaluator_memory_fraction(cluster: ControlPlane) -> float:
    """The share of the CPU pool's memory that is the cache's size, for the evaluator
    (which sizes its simulated cache as that share of the node's allocatable memory)."""
    node = client.CoreV1Api(cluster.api()).read_node(REAL_NODE)
    return CACHE_BYTES / float(parse_quantity(node.status.allocatable["memory"]))
