"""The test Prometheus scrapes test exporters, and can be taken down and brought back."""

from __future__ import annotations

import urllib.error

import pytest

from tests.cluster.exporter import MetricsExporter
from tests.cluster.prometheus import PrometheusServer

pytestmark = pytest.mark.prometheus


def test_query_returns_data_from_a_test_exporter(
    prometheus: PrometheusServer, metrics_exporter: MetricsExporter
) -> None:
    metrics_exporter.set("retune_test_cache_hit_ratio", 0.75, route="/api")
    prometheus.add_target("cache", metrics_exporter.address, labels={"tier": "test"})

    (sample,) = prometheus.wait_for_query('retune_test_cache_hit_ratio{route="/api"}', timeout=30)
    assert float(sample["value"][1]) == 0.75
    assert sample["metric"]["job"] == "cache" and sample["metric"]["tier"] == "test"


def test_prometheus_down_then_up_again(
    prometheus: PrometheusServer, metrics_exporter: MetricsExporter
) -> None:
    metrics_exporter.set("retune_test_up_marker", 1)
    prometheus.add_target("marker", metrics_exporter.address)
    prometheus.wait_for_query("retune_test_up_marker", timeout=30)

    prometheus.stop()
    with pytest.raises(urllib.error.URLError):
        prometheus.query("retune_test_up_marker")

    prometheus.start()
    assert prometheus.wait_for_query("retune_test_up_marker", timeout=30)
