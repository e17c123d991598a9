"""The end-to-end environment: the operator as a real process under the chart's
ServiceAccount, namespaces for the tests, a profile exporter scraped by Prometheus.

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
from tests.cluster.helm import apply_manifests, delete_manifests, find_manifest, render_chart
from tests.cluster.processes import wait_until
from tests.cluster.prometheus import PrometheusServer
from tests.e2e.harness import PROFILE, OperatorProcess


@dataclass
class E2E:
    """What the tests act on: the admin client, their namespaces, the operator, Prometheus."""

    cluster: ControlPlane
    api: client.ApiClient
    namespaces: dict[str, str]
    operator: OperatorProcess
    prometheus: PrometheusServer
    exporter: MetricsExporter
    log_dir: Path


def _create_namespace(api: client.ApiClient, name: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name}})
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
    """Namespaces for ``roles``, the chart's identity, the operator serving them, and the
    example's profile exporter; everything is removed afterwards."""
    api = cluster.api()
    suffix = uuid.uuid4().hex[:6]
    system = f"retune-system-{suffix}"
    namespaces = {role: f"e2e-{role}-{suffix}" for role in roles}
    for name in (system, *namespaces.values()):
        _create_namespace(api, name)
    docs = render_chart({"watchNamespaces": list(namespaces.values())}, namespace=system)
    applied = apply_manifests(api, docs)
    account = find_manifest(docs, "ServiceAccount")["metadata"]["name"]
    kubeconfig = cluster.serviceaccount_kubeconfig(system, account)

    exporter = MetricsExporter().start()
    for key, value in PROFILE.items():
        exporter.set(f"cache_profile_{key}", value)
    prometheus.start()
    prometheus.add_target("cache", exporter.address)
    prometheus.wait_for_query('max(cache_profile_key_space{job="cache"})', timeout=30)

    log_dir.mkdir(parents=True, exist_ok=True)
    operator = OperatorProcess(
        kubeconfig,
        namespaces.values(),
        prometheus.url,
        log_dir / "operator.log",
        max_concurrent_searches=max_concurrent_searches,
    )
    operator.start()
    try:
        yield E2E(cluster, api, namespaces, operator, prometheus, exporter, log_dir)
    finally:
        try:
            if not operator.process.running:
                operator.start()
            prometheus.start()
            _delete_targets(api, list(namespaces.values()))
        finally:
            operator.stop()
            prometheus.remove_job("cache")
            exporter.stop()
            delete_manifests(api, applied)
            for name in (system, *namespaces.values()):
                client.CoreV1Api(api).delete_namespace(name)
