"""pytest plugin: the real-cluster and real-Prometheus fixtures and their markers.

Loaded from ``tests/conftest.py`` with ``pytest_plugins = ["tests.cluster.plugin"]``.

Fixtures:
- ``control_plane`` (session): the started ``ControlPlane``.
- ``cluster``: the same object; after each test the nodes are reset to the defaults.
- ``namespace``: a fresh namespace (with its ``default`` ServiceAccount), deleted after.
- ``prometheus_server`` (session) / ``prometheus``: a running ``PrometheusServer``; after
  each test its targets are cleared and it is running again.
- ``metrics_exporter``: a started ``MetricsExporter``.

Missing binaries make the tests fail, with one line saying how to get them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.cluster.controlplane import REPO_ROOT, ControlPlane
from tests.cluster.exporter import MetricsExporter
from tests.cluster.processes import install_signal_handlers, wait_until
from tests.cluster.prometheus import PrometheusMissing, PrometheusServer, find_prometheus
from tests.cluster.testbin import TestbinMissing, testbin_dir

CRD_DIRS = [REPO_ROOT / "crds"]
# The real kubelet node (tests/cluster/node.py) joins the cluster when running as root;
# RETUNE_REAL_NODE=0 leaves it out (the end-to-end tests then refuse to run).
REAL_NODE_ENV = "RETUNE_REAL_NODE"


def want_real_node() -> bool:
    setting = os.environ.get(REAL_NODE_ENV)
    if setting is not None:
        return setting == "1"
    return os.geteuid() == 0


# Set RETUNE_KEEP_TEST_DIRS=1 to keep the work directories (logs, etcd data) after a run.
KEEP_ENV = "RETUNE_KEEP_TEST_DIRS"

# Started services, for failure reports; a failure anywhere keeps their directories.
_services: dict[str, ControlPlane | PrometheusServer] = {}
_failures = {"count": 0}

# Fixtures that need a service, and the marker a test using them gets automatically, so
# that `-m "not cluster"` never starts a control plane by accident.
_MARKER_BY_FIXTURE = {
    "control_plane": "cluster",
    "cluster": "cluster",
    "namespace": "cluster",
    "prometheus_server": "prometheus",
    "prometheus": "prometheus",
}


def _services_used(item: pytest.Item) -> set[str]:
    """The services (``cluster``, ``prometheus``) whose fixtures a test uses."""
    used = set(getattr(item, "fixturenames", ()))
    return {_MARKER_BY_FIXTURE[name] for name in used & set(_MARKER_BY_FIXTURE)}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cluster: needs the test Kubernetes control plane (built by tests/cluster/build-binaries)",
    )
    config.addinivalue_line(
        "markers",
        "prometheus: needs a Prometheus server (installed by tests/cluster/install-prometheus)",
    )
    install_signal_handlers()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for marker in sorted(_services_used(item)):
            item.add_marker(marker)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed:
        _failures["count"] += 1
        for key in sorted(_services_used(item)):
            if key in _services:
                report.sections.append((f"test {key} diagnostics", _services[key].diagnostics()))
    return report


def _start(
    start: Callable[[], None], stop: Callable[[], None], diagnostics: Callable[[], str], what: str
) -> str:
    """Start a service; on failure stop what did start and return the reason with the logs."""
    try:
        start()
    except Exception as error:
        stop()
        _failures["count"] += 1  # keep the logs
        return f"{what} did not start: {error}\n{diagnostics()}"
    return ""


def _keep_dirs() -> bool:
    return _failures["count"] > 0 or os.environ.get(KEEP_ENV) == "1"


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    try:
        bin_dir = testbin_dir()
    except TestbinMissing as missing:
        reason = str(missing)
    else:
        reason = ""
    if reason:
        pytest.fail(reason, pytrace=False)
    workdir = Path(tempfile.mkdtemp(prefix="retune-cluster-"))
    plane = ControlPlane(bin_dir, workdir, CRD_DIRS, real_node=want_real_node())
    problem = _start(plane.start, plane.stop, plane.diagnostics, "the test control plane")
    if problem:
        pytest.fail(problem, pytrace=False)
    _services["cluster"] = plane
    yield plane
    _services.pop("cluster", None)
    plane.stop()
    if _keep_dirs():
        print(f"\ntest cluster logs kept in {plane.logs_dir}")
    else:
        plane.remove_workdir()


@pytest.fixture
def cluster(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    yield control_plane
    control_plane.reset_nodes()


@pytest.fixture
def namespace(cluster: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    core = client.CoreV1Api(cluster.api())
    prefix = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    # Pods are refused until the controller-manager has made the default ServiceAccount.
    wait_until(
        lambda: core.read_namespaced_service_account("default", name),
        30,
        f"ServiceAccount {name}/default",
    )
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def prometheus_server() -> Iterator[PrometheusServer]:
    try:
        binary = find_prometheus()
    except PrometheusMissing as missing:
        reason = str(missing)
    else:
        reason = ""
    if reason:
        pytest.fail(reason, pytrace=False)
    workdir = Path(tempfile.mkdtemp(prefix="retune-prometheus-"))
    server = PrometheusServer(binary, workdir)
    problem = _start(server.start, server.stop, server.diagnostics, "prometheus")
    if problem:
        pytest.fail(problem, pytrace=False)
    _services["prometheus"] = server
    yield server
    _services.pop("prometheus", None)
    server.stop()
    if not _keep_dirs():
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def prometheus(prometheus_server: PrometheusServer) -> Iterator[PrometheusServer]:
    prometheus_server.start()
    yield prometheus_server
    prometheus_server.clear_targets()
    prometheus_server.start()


@pytest.fixture
def metrics_exporter() -> Iterator[MetricsExporter]:
    with MetricsExporter() as exporter:
        yield exporter
