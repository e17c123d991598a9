"""Load generator for the cache service: the traffic the evaluator's traces describe.

    python examples/01-cache-eviction/workload/loadgen.py --target 127.0.0.1:8080

The mix is described by the fields of the workload profile (``cache_model.CacheWorkload``:
``request_rate``, ``key_space``, ``zipf_alpha``, ``scan_fraction``, ``scan_length_mean``,
``object_size_mean_bytes``, ``object_size_median_bytes``, ``hot_set_turnover``) plus
``scan_size_factor``, ``fill_on_miss`` and ``origin_latency_seconds``, so what the cache
measures can be compared with what was asked for. As in the evaluator's traces:

- regular keys are read with Zipf popularity over ``key_space`` keys, and the ranking
  slides (new keys enter at the top, the old hot keys cool down rank by rank) at
  ``hot_set_turnover`` hot sets (1% of the keys) per hour;
- ``scan_fraction`` of reads are sequential scans of ``scan_length_mean`` one-time
  objects, ``scan_size_factor`` times larger, marked with ``X-Cache-Scan``;
- object sizes are lognormal with the given mean and median; a key's size is a function
  of the key, so it is the same every time it is fetched.

With ``fill_on_miss`` a miss is followed, after ``origin_latency_seconds``, by a PUT of the
object, as a read-through client does. The mix changes at run time: ``GET /mix`` shows it,
``POST /mix`` with some of its fields (JSON) changes them; ``POST /targets`` (a JSON list
of ``host:port``) changes where requests go (one target per request, at random, like a
Service spreading over its pods). ``/metrics`` has what the client saw.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from statistics import NormalDist
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the example: cache_model

import numpy as np
from cache_model import CacheWorkload, lognormal_sigma
from cache_trace import MAX_SIZE, MIN_SIZE
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import ConfigDict, Field, ValidationError

MAX_LAG_SECONDS = 1.0  # requests later than this are skipped, not sent in a burst
log = logging.getLogger("loadgen")


class Mix(CacheWorkload):
    """The traffic to generate: the profile's fields, and how the client behaves."""

    model_config = ConfigDict(extra="forbid")  # a typo in POST /mix must not pass silently

    scan_size_factor: float = Field(2.0, gt=0.0, le=100.0)
    fill_on_miss: bool = True
    origin_latency_seconds: float = Field(0.0, ge=0.0, le=10.0)


# The profile's shape (examples/01's profile.json) at a scale one machine can drive.
DEFAULT_MIX: dict[str, Any] = {
    "request_rate": 100.0,
    "key_space": 20000,
    "zipf_alpha": 0.85,
    "scan_fraction": 0.15,
    "scan_length_mean": 150,
    "object_size_mean_bytes": 8192,
    "object_size_median_bytes": 3072,
    "hot_set_turnover": 0.6,
}


@dataclass(frozen=True)
class Request:
    key: str
    size: int
    scan: str | None  # the scan id of a sequential read


class RequestPlan:
    """The stream of reads a mix describes; one seed gives the same stream."""

    def __init__(self, mix: Mix, seed: int = 0, run: str = "") -> None:
        self._rng = np.random.default_rng(seed)
        self._run = run  # keeps scan keys one-time across runs against the same cache
        self._offset = 0.0  # how far the popularity ranking has slid, in ranks
        self._last: float | None = None
        self._scan: tuple[str, int, int] | None = None  # id, next index, length
        self._scans = 0
        self.set_mix(mix)

    def set_mix(self, mix: Mix) -> None:
        self.mix = mix
        self._keys = int(mix.key_space)
        ranks = np.arange(1, self._keys + 1, dtype=np.float64)
        self._cdf = np.cumsum(ranks**-mix.zipf_alpha)
        self._cdf /= self._cdf[-1]
        self._sizes = self._size_quantiles(1.0)
        self._scan_sizes = self._size_quantiles(mix.scan_size_factor)

    def _size_quantiles(self, factor: float) -> tuple[float, float]:
        mean = self.mix.object_size_mean_bytes * factor
        median = self.mix.object_size_median_bytes * factor
        sigma = lognormal_sigma(mean, median)
        return (math.log(median) if sigma > 0 else math.log(mean)), sigma

    def next(self, now: float) -> Request:
        """The read at time ``now`` (seconds, increasing)."""
        mix = self.mix
        if self._last is not None:  # the ranking slides with time, at the current rate
            hot_set = max(1, self._keys // 100)
            self._offset += mix.hot_set_turnover * hot_set * (now - self._last) / 3600.0
        self._last = now
        if self._scan is None and mix.scan_fraction > 0:
            # Start a scan with the probability that makes scan reads scan_fraction of all.
            length = max(1, round(mix.scan_length_mean))
            f = mix.scan_fraction
            if self._rng.random() < f / (length * (1 - f) + f):
                self._scans += 1
                self._scan = (f"{self._run}{self._scans}", 0, length)
        if self._scan is not None:
            scan, index, length = self._scan
            self._scan = (scan, index + 1, length) if index + 1 < length else None
            key = f"scan/{scan}/{index}"
            return Request(key, self._size(key, self._scan_sizes), scan)
        rank = min(
            int(np.searchsorted(self._cdf, self._rng.random(), side="right")), self._keys - 1
        )
        key = f"obj/{(rank - int(self._offset)) % self._keys}"
        return Request(key, self._size(key, self._sizes), None)

    @staticmethod
    def _size(key: str, shape: tuple[float, float]) -> int:
        mu, sigma = shape
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        u = (int.from_bytes(digest, "big") + 0.5) / 2.0**64  # uniform in (0, 1), per key
        size = math.exp(mu + sigma * NormalDist().inv_cdf(u)) if sigma > 0 else math.exp(mu)
        return int(min(max(size, MIN_SIZE), MAX_SIZE))


class LoadMetrics:
    """What the client saw, on the load generator's own ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "loadgen_requests", "Reads by result.", ("result",), registry=self.registry
        )
        self.late = Counter(
            "loadgen_skipped", "Reads skipped: the workers fell behind.", registry=self.registry
        )
        self.latency = Histogram(
            "loadgen_read_duration_seconds",
            "A read as the client sees it: a miss includes the origin fetch and the fill.",
            ("result",),
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )


class LoadGenerator:
    """Worker threads that send the plan's reads to the targets at the mix's rate."""

    def __init__(
        self, targets: Sequence[str], mix: Mix, *, seed: int = 0, concurrency: int = 4
    ) -> None:
        if not targets:
            raise ValueError("at least one target (host:port) is needed")
        self.targets = list(targets)
        self.plan = RequestPlan(mix, seed, run=f"{int(time.time()):x}-")
        self.metrics = LoadMetrics()
        self.concurrency = concurrency
        self._pick = np.random.default_rng(seed + 1)  # which target serves a read
        self._lock = threading.Lock()
        self._next = 0.0
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._body = bytes(0)

    @property
    def mix(self) -> Mix:
        return self.plan.mix

    def update_mix(self, changes: dict[str, Any]) -> Mix:
        """Change some fields of the mix; raises ``ValidationError`` naming a bad one."""
        with self._lock:
            mix = Mix.model_validate({**self.plan.mix.model_dump(), **changes})
            self.plan.set_mix(mix)
        log.info("mix: %s", mix.model_dump_json())
        return mix

    def set_targets(self, targets: Sequence[str]) -> None:
        if not targets or not all(isinstance(t, str) and ":" in t for t in targets):
            raise ValueError("targets: a non-empty list of 'host:port'")
        with self._lock:
            self.targets = list(targets)
        log.info("targets: %s", ", ".join(targets))

    def start(self) -> LoadGenerator:
        self._next = time.monotonic()
        for index in range(self.concurrency):
            thread = threading.Thread(target=self._work, name=f"loadgen-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _claim(self) -> tuple[float, Request, str]:
        """The next read: when to send it, what, and to which target."""
        with self._lock:
            now = time.monotonic()
            if self._next < now - MAX_LAG_SECONDS:
                skipped = int((now - MAX_LAG_SECONDS - self._next) * self.plan.mix.request_rate)
                self.metrics.late.inc(skipped)
                self._next = now - MAX_LAG_SECONDS
            when = self._next
            self._next += 1.0 / self.plan.mix.request_rate
            request = self.plan.next(when - self._started)
            target = self.targets[int(self._pick.integers(len(self.targets)))]
            return when, request, target

    def _work(self) -> None:
        connections: dict[str, http.client.HTTPConnection] = {}
        while not self._stop.is_set():
            when, request, target = self._claim()
            delay = when - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            if target not in connections:
                host, port = target.rsplit(":", 1)
                connections[target] = http.client.HTTPConnection(host, int(port), timeout=10)
            try:
                self._read(connections[target], request)
            except (OSError, http.client.HTTPException) as error:
                self.metrics.requests.labels("error").inc()
                log.debug("%s: %s", target, error)
                connections.pop(target).close()  # reconnect on the next read
        for connection in connections.values():
            connection.close()

    def _read(self, connection: http.client.HTTPConnection, request: Request) -> None:
        started = time.perf_counter()
        headers = {"X-Cache-Scan": request.scan} if request.scan else {}
        connection.request("GET", f"/objects/{request.key}", headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status == 200:
            result = "hit"
        elif response.status == 404:
            result = "miss"
            mix = self.plan.mix
            if mix.fill_on_miss:
                if mix.origin_latency_seconds:
                    time.sleep(mix.origin_latency_seconds)
                body = self._payload(request.size)
                connection.request("PUT", f"/objects/{request.key}", body=body, headers=headers)
                connection.getresponse().read()
        else:
            result = "error"
        self.metrics.requests.labels(result).inc()
        self.metrics.latency.labels(result).observe(time.perf_counter() - started)

    def _payload(self, size: int) -> memoryview:
        if len(self._body) < size:  # one shared buffer, grown to the largest object so far
            self._body = b"x" * max(size, 2 * len(self._body))
        return memoryview(self._body)[:size]


class _ControlHandler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True
    server: ControlServer

    def do_GET(self) -> None:
        generator = self.server.generator
        if self.path == "/mix":
            self._send(200, generator.mix.model_dump_json().encode(), "application/json")
        elif self.path == "/metrics":
            self._send(200, generate_latest(generator.metrics.registry), CONTENT_TYPE_LATEST)
        elif self.path == "/healthz":
            self._send(200, b"ok\n")
        else:
            self._send(404, b"not found\n")

    def do_POST(self) -> None:
        generator = self.server.generator
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            if self.path == "/mix":
                if not isinstance(body, dict):
                    raise ValueError("POST /mix takes a JSON object of mix fields")
                answer = generator.update_mix(body).model_dump_json()
            elif self.path == "/targets":
                generator.set_targets(body)
                answer = json.dumps(generator.targets)
            else:
                self._send(404, b"not found\n")
                return
        except ValidationError as error:
            self._send(422, error.json().encode(), "application/json")
            return
        except ValueError as error:  # JSONDecodeError included
            self._send(400, json.dumps({"error": str(error)}).encode(), "application/json")
            return
        self._send(200, answer.encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ControlServer(ThreadingHTTPServer):
    """``/mix``, ``/targets``, ``/metrics`` and ``/healthz`` of a load generator."""

    daemon_threads = True

    def __init__(self, generator: LoadGenerator, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _ControlHandler)
        self.generator = generator

    @property
    def address(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"{host}:{port}"

    def start(self) -> ControlServer:
        threading.Thread(
            target=self.serve_forever, args=(0.1,), name="loadgen-control", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--target", action="append", required=True, help="host:port of a cache (repeatable)"
    )
    parser.add_argument("--control-host", default="0.0.0.0")
    parser.add_argument("--control-port", type=int, default=8090)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    for name, field in Mix.model_fields.items():  # --request-rate, --zipf-alpha, ...
        default = DEFAULT_MIX.get(name, field.default)
        kind = (lambda t: t.lower() in ("1", "true", "yes")) if field.annotation is bool else float
        parser.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=default, help=f"(default {default})"
        )
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        mix = Mix.model_validate({name: getattr(args, name) for name in Mix.model_fields})
    except ValidationError as error:
        log.error("invalid mix: %s", error)
        return 2
    generator = LoadGenerator(args.target, mix, seed=args.seed, concurrency=args.concurrency)
    control = ControlServer(generator, args.control_host, args.control_port).start()
    generator.start()
    targets = ", ".join(args.target)
    log.info(
        "sending to %s; control on %s; mix %s", targets, control.address, mix.model_dump_json()
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    generator.stop()
    control.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
