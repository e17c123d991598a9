"""examples/01's cache service as the workload of the end-to-end tests, with its traffic.

- :func:`cache_service`: the Deployment of the real cache service (its pods are run by the
  node agent as local processes), reading its eviction policy from the ConfigMap volume
  ``retune-policy``, and :func:`policy_config_map`, the policy it starts with;
- :class:`Traffic`: what a Service, kube-proxy and Prometheus' Kubernetes discovery do in a
  real cluster, for one namespace: it finds the cache's running pods, has Prometheus scrape
  each (labelled with its namespace, pod and ``retune.dev/track``), and spreads the load
  generator's requests over them; it also serves the workload profile the load generator
  is asked for, and shifts the mix at run time.

The node agent gives every pod the IP 127.0.0.1, so each cache listens on a port of its
own (``--port 0``) and says which in its log; the discovery reads it there.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.cluster.controlplane import ControlPlane
from tests.cluster.exporter import MetricsExporter
from tests.cluster.processes import ManagedProcess, wait_until
from tests.cluster.prometheus import PrometheusServer
from tests.e2e.harness import EXAMPLE, free_port
from tests.imports import import_file

WORKLOAD = EXAMPLE / "workload"
TRACK_LABEL = "retune.dev/track"
APP = {"app": "cache"}
CACHE_BYTES = 4 * 1024 * 1024
NODE_MEMORY_BYTES = 15 * 1024**3  # the CPU pool's allocatable memory
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
_SERVING = re.compile(r"serving on (\S+:\d+)")


def policy_config_map(namespace: str, code: str = LRU) -> dict[str, Any]:
    """The policy the cache runs before retune rolls anything out (plain LRU)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cache-policy", "namespace": namespace},
        "data": {"policy.py": code},
    }


def cache_service(namespace: str, replicas: int = 1) -> dict[str, Any]:
    """The cache Deployment on the CPU pool."""
    command = [
        sys.executable,
        str(WORKLOAD / "server.py"),
        "--host=127.0.0.1",
        "--port=0",
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
                    "nodeSelector": {"retune.dev/pool": "cpu"},
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "cache",
                            "image": "ghcr.io/retune/cache:demo",
                            "command": command,
                            "volumeMounts": [
                                {"name": "retune-policy", "mountPath": "/etc/retune/policy"}
                            ],
                        }
                    ],
                    "volumes": [{"name": "retune-policy", "configMap": {"name": "cache-policy"}}],
                },
            },
        },
    }


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
        self.current_mix = dict(MIX)
        self.loadgen = LoadGenerator(log_dir / f"loadgen-{namespace}.log", self.current_mix)
        self.pods: dict[str, tuple[str, str | None]] = {}
        """Pod name -> (address, track) of the pods being scraped."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"traffic-{namespace}", daemon=True)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> Traffic:
        self._profile(self.current_mix)
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
                found = {}
                for pod in pods:
                    if pod.status.phase != "Running" or pod.metadata.deletion_timestamp:
                        continue
                    address = self._address(pod.metadata.name)
                    if address is not None:
                        track = (pod.metadata.labels or {}).get(TRACK_LABEL)
                        found[pod.metadata.name] = (address, track)
                if found != self.pods:
                    self._apply(found)
            except Exception:  # the API server or a pod going away: look again
                time.sleep(0.5)

    def _address(self, pod: str) -> str | None:
        try:
            log = self.cluster.pod_log(self.namespace, pod, "cache")
        except FileNotFoundError:
            return None
        match = _SERVING.search(log)
        return match.group(1) if match else None

    def _apply(self, found: dict[str, tuple[str, str | None]]) -> None:
        self.prometheus.remove_job(self.job)
        for pod, (address, track) in sorted(found.items()):
            labels = {"namespace": self.namespace, "pod": pod}
            if track:
                labels["track"] = track
            self.prometheus.add_target(self.job, address, labels)
        if found:
            self.loadgen.targets([address for address, _ in found.values()])
        self.pods = found


def evaluator_memory_fraction() -> float:
    """The share of the node's memory that is the cache's size, for the evaluator."""
    return CACHE_BYTES / NODE_MEMORY_BYTES
