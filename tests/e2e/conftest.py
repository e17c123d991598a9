"""End-to-end fixtures: the operator as a real process, under the chart's ServiceAccount.

One operator serves the whole module (starting one takes seconds, and 2 cores are shared
with the control plane); each test has namespaces of its own. The chart is rendered with
the real helm and its ServiceAccount and RBAC applied, so the operator can do exactly what
the chart allows and no more.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client

from retune.spec import GROUP, PLURAL, VERSION
from tests.cluster.controlplane import ControlPlane
from tests.cluster.exporter import MetricsExporter
from tests.cluster.helm import apply_manifests, delete_manifests, find_manifest, render_chart
from tests.cluster.processes import wait_until
from tests.cluster.prometheus import PrometheusServer
from tests.e2e.harness import PROFILE, OperatorProcess

ROLES = ("story", "invalid", "signals")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: the operator end to end on the test control plane (make test-e2e)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker("e2e")


@dataclass
class E2E:
    """What the tests act on: the admin client, their namespaces, the operator, Prometheus."""

    cluster: ControlPlane
    api: client.ApiClient
    namespaces: dict[str, str]
    operator: OperatorProcess
    prometheus: PrometheusServer
    exporter: MetricsExporter


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


@pytest.fixture(scope="module")
def e2e(
    control_plane: ControlPlane,
    prometheus_server: PrometheusServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[E2E]:
    api = control_plane.api()
    suffix = uuid.uuid4().hex[:6]
    system = f"retune-system-{suffix}"
    namespaces = {role: f"e2e-{role}-{suffix}" for role in ROLES}
    for name in (system, *namespaces.values()):
        _create_namespace(api, name)
    docs = render_chart({"watchNamespaces": list(namespaces.values())}, namespace=system)
    applied = apply_manifests(api, docs)
    account = find_manifest(docs, "ServiceAccount")["metadata"]["name"]
    kubeconfig = control_plane.serviceaccount_kubeconfig(system, account)

    exporter = MetricsExporter().start()
    for key, value in PROFILE.items():
        exporter.set(f"cache_profile_{key}", value)
    prometheus_server.start()
    prometheus_server.add_target("cache", exporter.address)
    prometheus_server.wait_for_query('max(cache_profile_key_space{job="cache"})', timeout=30)

    log = tmp_path_factory.mktemp("operator") / "operator.log"
    operator = OperatorProcess(kubeconfig, namespaces.values(), prometheus_server.url, log)
    operator.start()
    try:
        yield E2E(control_plane, api, namespaces, operator, prometheus_server, exporter)
    finally:
        try:
            if not operator.process.running:
                operator.start()
            prometheus_server.start()
            _delete_targets(api, list(namespaces.values()))
        finally:
            operator.stop()
            prometheus_server.remove_job("cache")
            exporter.stop()
            delete_manifests(api, applied)
            for name in (system, *namespaces.values()):
                client.CoreV1Api(api).delete_namespace(name)
