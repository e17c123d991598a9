"""End-to-end fixtures: the operator as a real process, under the chart's ServiceAccount.

One operator serves a whole test module (starting one takes seconds, and 2 cores are shared
with the control plane); each test has a namespace of its own, one per role named in the
module's ``E2E_ROLES``. The chart is rendered with the real helm and its ServiceAccount and
RBAC applied, so the operator can do exactly what the chart allows and no more.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.controlplane import ControlPlane
from tests.cluster.prometheus import PrometheusServer
from tests.e2e.environment import E2E, environment
from tests.e2e.story import CacheStory

DEFAULT_ROLES = ("story", "invalid", "signals")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: the operator end to end on the test control plane (make test-e2e)"
    )
    config.addinivalue_line("markers", "role(name): which of the module's namespaces a test uses")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker("e2e")


@pytest.fixture(scope="module")
def e2e(
    control_plane: ControlPlane,
    prometheus_server: PrometheusServer,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[E2E]:
    roles = getattr(request.module, "E2E_ROLES", DEFAULT_ROLES)
    log_dir = tmp_path_factory.mktemp("operator")
    with environment(control_plane, prometheus_server, roles, log_dir) as env:
        yield env


@pytest.fixture
def story(e2e: E2E, request: pytest.FixtureRequest) -> Iterator[CacheStory]:
    """The cache service deployed in the namespace of the test's ``role`` marker; after
    the test the nodes are the defaults again, and the operator and Prometheus are running."""
    role = request.node.get_closest_marker("role").args[0]
    cache = CacheStory(e2e, e2e.namespaces[role]).deploy()
    try:
        yield cache
    finally:
        cache.close()
        e2e.cluster.reset_nodes()
        if not e2e.operator.running:
            e2e.operator.start()
        e2e.prometheus.start()
