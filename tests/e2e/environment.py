"""The end-to-end environment: the operator installed by the real helm from its own image,
a Pod on the real kubelet node under the chart's ServiceAccount; namespaces for the tests
(Pod Security ``restricted`` enforced); a profile exporter scraped by Prometheus.

Used by the pytest fixture (``tests/e2e/conftest.py``) and by the cluster demo
(``python -m tests.e2e.demo_cluster``), which starts the control plane and Prometheus
itself.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from retune.spec import GROUP, PLURAL, VERSION
from tests.cluster.controlplane import ControlPlane
from tests.cluster.exporter import MetricsExporter
from tests.cluster.processes import wait_until
from tests.cluster.prometheus import PrometheusServer
from tests.e2e.harness import PROFILE
from tests.e2e.monitoring import OperatorMonitoring
from tests.e2e.operator_pod import OperatorPod

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
"""Every test namespace enforces Pod Security ``restricted``: the API server's admission
refuses any evaluation, workload or operator pod that is not hardened."""


@dataclass
class E2E:
    """What the tests act on: the admin client, their namespaces, the operator, Prometheus."""

    cluster: ControlPlane
    api: client.ApiClient
    namespaces: dict[str, str]
    operator: OperatorPod
    prometheus: PrometheusServer
    exporter: MetricsExporter
    log_dir: Path
    monitoring: OperatorMonitoring
    """Prometheus scraping the operator and evaluating the chart's alerts."""


def _create_namespace(api: client.ApiClient, name: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name, "labels": dict(RESTRICTED)}})
    wait_until(lambda: core.read_namespaced_service_account("default", name), 30, f"{name}/default")


def _delete_targets(api: client.ApiClient, namespaces: list[str]) -> None:
    custom = client.CustomObjectsApi(api)
    for namespace in namespaces:
        for target in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)[
            "items"
        ]:
            custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, target["metadata"]["name"]
            )

    def gone() -> bool:
        return not any(
            custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
            for namespace in namespaces
        )

    wait_until(gone, 60, "the operator to let the targets go")


@contextlib.contextmanager
def environment(
    cluster: ControlPlane,
    prometheus: PrometheusServer,
    roles: Iterable[str],
    log_dir: Path,
    max_concurrent_searches: int = 2,
) -> Iterator[E2E]:
    """Namespaces for ``roles``, the operator serving them (installed by helm), and the
    example's profile exporter; Prometheus scraping the operator with the chart's alerts;
    everything is removed afterwards."""
    if cluster.real_node is None:
        raise RuntimeError(
            "the end-to-end tests run the operator and its pods on the real kubelet node, "
            "which needs root (and not RETUNE_REAL_NODE=0)"
        )
    api = cluster.api()
    suffix = uuid.uuid4().hex[:6]
    system = f"retune-system-{suffix}"
    namespaces = {role: f"e2e-{role}-{suffix}" for role in roles}
    for name in (system, *namespaces.values()):
        _create_namespace(api, name)
    exporter = MetricsExporter().start()
    for key, value in PROFILE.items():
        exporter.set(f"cache_profile_{key}", value)
    prometheus.start()
    prometheus.add_target("cache", exporter.address)
    prometheus.wait_for_query('max(cache_profile_key_space{job="cache"})', timeout=30)

    log_dir.mkdir(parents=True, exist_ok=True)
    operator = OperatorPod(
        cluster,
        system,
        namespaces.values(),
        prometheus.pod_url,
        max_concurrent_searches=max_concurrent_searches,
    )
    monitoring = OperatorMonitoring(cluster, prometheus, system, log_dir)
    try:
        operator.install()
        monitoring.start()
        yield E2E(cluster, api, namespaces, operator, prometheus, exporter, log_dir, monitoring)
    finally:
        try:
            (log_dir / "operator.log").write_text(operator.log(2000))
            if operator.installed and not operator.running:
                operator.start()
            prometheus.start()
            _delete_targets(api, list(namespaces.values()))
        finally:
            operator.uninstall()
            monitoring.stop()
            prometheus.remove_job("cache")
            exporter.stop()
            for name in (system, *namespaces.values()):
                client.CoreV1Api(api).delete_namespace(name)
