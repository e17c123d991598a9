"""The Prometheus backend against a real Prometheus server scraping a test exporter."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from retune.signals import (
    BadQuery,
    Invalid,
    NoData,
    SLOTracker,
    Unavailable,
    Value,
    analyse,
    evaluate_burn_rate,
    read_profile,
)
from retune.signals.prometheus import PrometheusProvider
from retune.spec import SLO, AnalysisQuery
from tests.cluster.exporter import MetricsExporter
from tests.cluster.prometheus import PrometheusServer, find_prometheus

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

JOB = "signals"


class Counters:
    """Counters that grow steadily while the test runs: 10 requests/s, 1 error/s."""

    def __init__(self, exporter: MetricsExporter) -> None:
        self.exporter = exporter
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="counters", daemon=True)

    def _run(self) -> None:
        requests = errors = 0.0
        while not self._stop.wait(0.1):
            requests += 1.0
            errors += 0.1
            self.exporter.set("retune_signals_requests_total", requests)
            self.exporter.set("retune_signals_errors_total", errors)

    def __enter__(self) -> Counters:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def exporter() -> Iterator[MetricsExporter]:
    with MetricsExporter() as exporter:
        exporter.set("retune_signals_queue_depth", 7)
        exporter.set("retune_signals_latency_seconds", 0.1, pod="a")
        exporter.set("retune_signals_latency_seconds", 0.3, pod="b")
        exporter.set("retune_signals_hit_ratio", 0.9, track="canary")
        exporter.set("retune_signals_hit_ratio", 0.7, track="stable")
        with Counters(exporter):
            yield exporter


@pytest.fixture(scope="module")
def prometheus(
    prometheus_server: PrometheusServer, exporter: MetricsExporter
) -> Iterator[PrometheusServer]:
    """The session's Prometheus, scraping this module's exporter under job ``signals``."""
    prometheus_server.start()
    prometheus_server.add_target(JOB, exporter.address)
    try:
        prometheus_server.wait_for_query(f'retune_signals_queue_depth{{job="{JOB}"}}')
        yield prometheus_server
    finally:
        prometheus_server.remove_job(JOB)


@pytest.fixture(scope="module")
def provider(prometheus: PrometheusServer) -> Iterator[PrometheusProvider]:
    provider = PrometheusProvider(prometheus.url, timeout=5)
    yield provider
    provider.close()


def test_one_series_is_a_value(provider: PrometheusProvider) -> None:
    assert provider.query(f'retune_signals_queue_depth{{job="{JOB}"}}') == Value(7.0)


def test_a_fractional_timeout_is_accepted(prometheus: PrometheusServer) -> None:
    provider = PrometheusProvider(prometheus.url, timeout=0.75)
    assert provider.query("vector(1)") == Value(1.0)
    provider.close()


def test_an_aggregated_query_is_a_value(provider: PrometheusProvider) -> None:
    sample = provider.query("sum(retune_signals_latency_seconds)")
    assert isinstance(sample, Value) and sample.value == pytest.approx(0.4)


def test_a_scalar_is_a_value(provider: PrometheusProvider) -> None:
    assert provider.query("scalar(retune_signals_queue_depth) * 2") == Value(14.0)


def test_an_empty_selector_is_no_data(provider: PrometheusProvider) -> None:
    sample = provider.query('retune_signals_queue_depth{job="nowhere"}')
    assert isinstance(sample, NoData)


def test_several_series_are_invalid(provider: PrometheusProvider) -> None:
    sample = provider.query("retune_signals_latency_seconds")
    assert isinstance(sample, Invalid)
    assert "2 series" in sample.reason and 'pod="a"' in sample.reason


def test_zero_divided_by_zero_is_invalid(provider: PrometheusProvider) -> None:
    sample = provider.query("0/0")
    assert isinstance(sample, Invalid) and "NaN" in sample.reason
    infinite = provider.query("sum(retune_signals_queue_depth) / 0")
    assert isinstance(infinite, Invalid) and "+Inf" in infinite.reason


def test_a_range_vector_is_invalid(provider: PrometheusProvider) -> None:
    sample = provider.query("retune_signals_queue_depth[1m]")
    assert isinstance(sample, Invalid) and "range vector" in sample.reason


def test_a_string_is_invalid(provider: PrometheusProvider) -> None:
    assert isinstance(provider.query('"hello"'), Invalid)


def test_a_syntax_error_is_a_bad_query(provider: PrometheusProvider) -> None:
    sample = provider.query("sum(retune_signals_queue_depth")
    assert isinstance(sample, BadQuery)
    assert "bad_data" in sample.reason and "parse error" in sample.reason


def test_an_execution_error_is_a_bad_query(provider: PrometheusProvider) -> None:
    sample = provider.query("retune_signals_latency_seconds + on() retune_signals_latency_seconds")
    assert isinstance(sample, BadQuery)
    assert "many-to-many" in sample.reason


def test_a_stopped_prometheus_is_unavailable(tmp_path: Path) -> None:
    # A server of its own: stopping the shared one would disturb the other tests.
    server = PrometheusServer(find_prometheus(), tmp_path)
    server.start()
    provider = PrometheusProvider(server.url, timeout=2, retries=0)
    try:
        assert isinstance(provider.query("vector(1)"), Value)
    finally:
        server.stop()
    sample = provider.query("vector(1)")
    assert isinstance(sample, Unavailable)
    assert "connection refused" in sample.reason and server.url in sample.reason
    provider.close()


def test_a_profile_names_its_problems(provider: PrometheusProvider) -> None:
    reading = read_profile(
        provider,
        {
            "queue_depth": f'max(retune_signals_queue_depth{{job="{JOB}"}})',
            "latency": "retune_signals_latency_seconds",
            "missing": "retune_signals_nothing_here",
        },
    )
    assert reading.values == {"queue_depth": 7.0}
    assert isinstance(reading.problems["latency"], Invalid)
    assert isinstance(reading.problems["missing"], NoData)


def test_a_threshold_slo(provider: PrometheusProvider) -> None:
    slo = SLO(name="queue", query="max(retune_signals_queue_depth)", threshold=5, for_seconds=60)
    tracker = SLOTracker(slo)
    assert tracker.evaluate(provider, at=0).status == "pending"
    verdict = tracker.evaluate(provider, at=60)
    assert verdict.violated and verdict.value == 7.0


def test_a_burn_rate_slo_on_real_counters(
    prometheus: PrometheusServer, provider: PrometheusProvider
) -> None:
    # 10 % of requests fail: against a 99 % objective that burns the budget 10x.
    prometheus.wait_for_query("rate(retune_signals_errors_total[1m]) > 0")
    slo = SLO.model_validate(
        {
            "name": "availability",
            "errorQuery": "sum(rate(retune_signals_errors_total[{{window}}]))",
            "totalQuery": "sum(rate(retune_signals_requests_total[{{window}}]))",
            "objective": 0.99,
            "burnRateWindows": [
                {"longWindow": "2m", "shortWindow": "1m", "burnRate": 5},
                {"longWindow": "10m", "shortWindow": "2m", "burnRate": 20},
            ],
        }
    )
    verdict = evaluate_burn_rate(slo, provider)
    assert verdict.ratios["1m"] == pytest.approx(0.1, rel=0.1)
    fast, slow = verdict.pairs
    assert fast.firing and not slow.firing
    assert verdict.status == "violated"


def test_canary_analysis_by_track(provider: PrometheusProvider) -> None:
    hit_ratio = AnalysisQuery(
        name="hit-ratio",
        query='avg(retune_signals_hit_ratio{job="{{namespace}}",track="{{track}}"})',
        threshold=0.8,
        comparison="above",
    )
    report = analyse([hit_ratio], provider, namespace=JOB, target="cache")
    assert report.outcome == "pass"
    (result,) = report.results
    assert result.canary == Value(0.9) and result.stable == Value(0.7)
