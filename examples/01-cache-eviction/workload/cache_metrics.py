"""The cache service's Prometheus metrics (see the table in README.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, Summary
from prometheus_client.core import GaugeMetricFamily, Metric

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
SIZE_BUCKETS = tuple(float(2**k) for k in range(6, 27))  # 64 B .. 64 MiB, doubling


class CacheMetrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        self.requests = counter("cache_requests", "Reads served.", ("access", "result"))
        self.hit_bytes = counter("cache_hit_bytes", "Bytes of reads served from the cache.")
        self.requested_bytes = counter(
            "cache_requested_bytes", "Bytes of reads: hits, and misses once filled."
        )
        self.writes = counter("cache_writes", "PUTs by outcome.", ("outcome",))
        self.evictions = counter("cache_evictions", "Objects evicted (not admitted included).")
        self.ghost_misses = counter("cache_ghost_misses", "Misses on keys evicted shortly before.")
        self.policy_errors = counter(
            "cache_policy_errors", "priority() calls that failed; LRU decided instead."
        )
        self.policy_reloads = counter("cache_policy_reloads", "Policy file changes.", ("outcome",))
        self.policy = Info("cache_policy", "The active policy's content hash.", registry=registry)
        self.latency = Histogram(
            "cache_request_duration_seconds",
            "Time to serve a request.",
            ("method",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.object_size = Histogram(
            "cache_object_size_bytes",
            "Sizes of objects written (scan objects left out).",
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.scan_objects = Summary(
            "cache_scan_objects", "Objects read per sequential scan.", registry=registry
        )
        self.used = Gauge("cache_stored_bytes", "Bytes of objects held.", registry=registry)
        self.capacity = Gauge("cache_capacity_bytes", "The cache's capacity.", registry=registry)
        self.objects = Gauge("cache_objects", "Objects held.", registry=registry)


class TrafficCollector:
    """Exports the traffic estimates only once they exist: no data is not a zero."""

    def __init__(self, estimates: Callable[[], dict[str, float | None]]) -> None:
        self.estimates = estimates

    def collect(self) -> Iterator[Metric]:
        values = self.estimates()
        for name, doc in (
            ("cache_keyspace_distinct_keys", "Distinct regular keys read in the last day."),
            ("cache_key_popularity_zipf_alpha", "Zipf exponent of key popularity (5 min)."),
            ("cache_hot_set_turnover_ratio", "Share of the hottest 1% of keys replaced per hour."),
        ):
            if values.get(name) is not None:
                yield GaugeMetricFamily(name, doc, value=values[name])


class WithLabels:
    """Adds constant labels to every sample of a registry, as a scrape relabelling would."""

    def __init__(self, inner: CollectorRegistry, labels: dict[str, str]) -> None:
        self.inner, self.labels = inner, labels

    def collect(self) -> Iterator[Metric]:
        for family in self.inner.collect():
            family.samples = [
                s._replace(labels={**s.labels, **self.labels}) for s in family.samples
            ]
            yield family
