"""The operator as users run it: installed by the real helm from its own image, a Pod of the
chart's Deployment on the real kubelet node, under the chart's ServiceAccount.

:class:`OperatorPod` offers what the end-to-end tests do to an operator: wait until it is
ready, kill it (``kubectl delete pod --force --grace-period=0``: the Deployment brings a new
one), stop it (scale to zero) and start it again, read its HTTP endpoints at the pod's IP
and its log through the kubelet.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.cluster.controlplane import ControlPlane
from tests.cluster.helm import install_chart, uninstall_chart
from tests.cluster.node import REAL_NODE_TAINT
from tests.cluster.processes import wait_until

RELEASE = "retune"
METRICS_PORT = 8080
READY_TIMEOUT = 120.0


def chart_values(
    namespaces: Iterable[str], prometheus_url: str, max_concurrent_searches: int
) -> dict[str, Any]:
    """The chart's values for the test cluster: the operator on the real node (the CPU pool
    is tainted for it), its image never pulled (there is no registry)."""
    return {
        "image": {"pullPolicy": "Never"},
        "watchNamespaces": list(namespaces),
        "prometheus": {"url": prometheus_url},
        "metrics": {"port": METRICS_PORT},
        "extraArgs": [f"--max-concurrent-searches={max_concurrent_searches}"],
        "nodeSelector": {"retune.dev/pool": "cpu"},
        "tolerations": [{**REAL_NODE_TAINT, "operator": "Equal"}],
        # two shared cores: a request the node can always grant
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
    }


class OperatorPod:
    """``retune operator`` as the chart's Deployment runs it."""

    def __init__(
        self,
        cluster: ControlPlane,
        namespace: str,
        namespaces: Iterable[str],
        prometheus_url: str,
        max_concurrent_searches: int = 2,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.values = chart_values(namespaces, prometheus_url, max_concurrent_searches)
        self.core = client.CoreV1Api(cluster.api())
        self.apps = client.AppsV1Api(cluster.api())
        self.deployment = RELEASE  # the chart's fullname for release "retune"
        self.installed = False
        self.restarts_seen: list[str] = []
        """Names of every operator pod seen Ready, in order."""

    # -- lifecycle -----------------------------------------------------------------------
    def install(self) -> None:
        install_chart(
            self.cluster.kubeconfig, self.values, release=RELEASE, namespace=self.namespace
        )
        self.installed = True
        self.start()

    def uninstall(self) -> None:
        if self.installed:
            uninstall_chart(self.cluster.kubeconfig, release=RELEASE, namespace=self.namespace)
            self.installed = False

    @property
    def running(self) -> bool:
        return self._ready_pod() is not None

    def start(self) -> None:
        """One replica, and wait until its pod is Ready (``/readyz`` answers)."""
        self._scale(1)
        wait_until(
            lambda: self._ready_pod() is not None,
            READY_TIMEOUT,
            "the operator pod to be Ready",
            abort=self._failed,
        )
        pod = self._ready_pod()
        assert pod is not None
        if not self.restarts_seen or self.restarts_seen[-1] != pod.metadata.name:
            self.restarts_seen.append(pod.metadata.name)

    def kill(self) -> None:
        """``kubectl delete pod --force --grace-period=0``: gone from the API at once, its
        container killed by the kubelet; the Deployment makes a new pod."""
        pods = self._pods()
        for pod in pods:
            self.core.delete_namespaced_pod(
                pod.metadata.name, self.namespace, grace_period_seconds=0
            )
        names = {pod.metadata.name for pod in pods}
        wait_until(
            lambda: not names & {p.metadata.name for p in self._pods()},
            30,
            "the operator pod to be gone",
        )

    def stop(self) -> None:
        """Scale to zero and wait until no operator pod is left."""
        self._scale(0)
        wait_until(lambda: not self._pods(), 60, "the operator pods to end")

    # -- reading -------------------------------------------------------------------------
    def get(self, path: str) -> tuple[int, str]:
        pod = self._ready_pod()
        if pod is None:
            return 0, "no ready operator pod"
        url = f"http://{pod.status.pod_ip}:{METRICS_PORT}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return answer.status, answer.read().decode()
        except OSError as error:
            return getattr(error, "code", 0) or 0, str(error)

    def log(self, lines: int = 60) -> str:
        pods = self._pods()
        if not pods:
            return "(no operator pod)"
        try:
            return str(
                self.core.read_namespaced_pod_log(
                    pods[-1].metadata.name, self.namespace, tail_lines=lines
                )
            )
        except ApiException as error:
            return f"(no log: {error.reason})"

    def pod(self) -> client.V1Pod | None:
        return self._ready_pod()

    # -- helpers -------------------------------------------------------------------------
    def _pods(self) -> list[client.V1Pod]:
        selector = f"app.kubernetes.io/instance={RELEASE}"
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        return sorted(
            (p for p in pods if p.metadata.deletion_timestamp is None),
            key=lambda p: p.metadata.creation_timestamp,
        )

    def _ready_pod(self) -> client.V1Pod | None:
        for pod in reversed(self._pods()):
            conditions = {c.type: c.status for c in (pod.status.conditions or [])}
            if conditions.get("Ready") == "True":
                return pod
        return None

    def _scale(self, replicas: int) -> None:
        self.apps.patch_namespaced_deployment_scale(
            self.deployment, self.namespace, {"spec": {"replicas": replicas}}
        )

    def _failed(self) -> str | None:
        """A pod that cannot start says why at once (image missing, crash loop)."""
        for pod in self._pods():
            for status in pod.status.container_statuses or []:
                waiting = status.state.waiting if status.state else None
                if waiting and waiting.reason in (
                    "ErrImageNeverPull",
                    "CrashLoopBackOff",
                    "CreateContainerError",
                    "InvalidImageName",
                ):
                    return f"operator pod {pod.metadata.name}: {waiting.reason}: {waiting.message}\n{self.log()}"
        return None
