"""The cache service of examples/01: an HTTP object cache that evicts by the tuned policy.

    python examples/01-cache-eviction/workload/server.py --port 8080 --capacity-bytes 64Mi

API (keys are the rest of the path, up to 250 bytes):

- ``GET /objects/<key>``: 200 with the object, or 404 on a miss. A read that belongs to a
  sequential scan carries the scan's id in ``X-Cache-Scan`` (the cache cannot tell a scan
  from its keys; a batch job's client library knows it is scanning).
- ``PUT /objects/<key>``: store the object (``X-Cache-Scan`` as above). 201 stored, 202
  not admitted (the policy evicted it at once), 413 larger than the whole cache. A
  read-through client PUTs what it fetched from the origin after a miss; the miss's bytes
  are counted as requested when that PUT arrives, since a miss does not know its size.
- ``GET /metrics`` (Prometheus), ``GET /healthz``, ``GET /policy`` (JSON: the active
  policy's hash, and the latest refused one with the reason).

The policy file (``--policy``, default ``/etc/retune/policy/policy.py``, the target's
``spec.policy.volume``; absolute paths are prefixed with ``$RETUNE_PATH_PREFIX`` as in
every retune process) is polled and reloaded when its content changes. Every series gets
a ``track`` label when ``--track`` / ``$RETUNE_TRACK`` is set (leave it unset where the
scrape configuration adds ``track`` from the pod's ``retune.dev/track`` label).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the example: cache_sim, ...
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cache_metrics import CacheMetrics, TrafficCollector, WithLabels
from object_cache import SampledPriorityCache
from policy_file import PolicyFile, PolicyLoadError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from traffic_stats import TrafficStats

DEFAULT_POLICY = "/etc/retune/policy/policy.py"
MAX_KEY_BYTES = 250
PENDING_MISS_SECONDS = 60.0  # a miss whose fill has not come by then is forgotten
MAX_PENDING_MISSES = 100_000
STATS_REFRESH_SECONDS = 5.0

log = logging.getLogger("cache")


class CacheService:
    """The cache, its policy file and its metrics, behind one lock."""

    def __init__(
        self,
        capacity_bytes: int,
        policy_path: str | Path,
        *,
        track: str | None = None,
        samples: int = 8,
        seed: int = 0,
        policy_poll_seconds: float = 2.0,
        stats: TrafficStats | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = PolicyFile(policy_path)
        self.cache = SampledPriorityCache(
            capacity_bytes, self.policy.active.priority, samples, seed
        )
        self.stats = stats or TrafficStats()
        self.policy_poll_seconds = policy_poll_seconds
        self.clock = clock
        self.started = clock()
        self.lock = threading.Lock()
        self._pending: dict[str, tuple[int, float]] = {}  # key -> (unfilled misses, last)
        self._estimates: dict[str, float | None] = {}
        self._warned = ""  # the policy hash whose failures were logged

        inner = CollectorRegistry()
        self.metrics = CacheMetrics(inner)
        inner.register(TrafficCollector(self.traffic_estimates))
        self.registry = inner
        if track:
            self.registry = CollectorRegistry()
            self.registry.register(WithLabels(inner, {"track": track}))
        self.metrics.policy.info({"hash": self.policy.active.hash})
        self.metrics.capacity.set(self.cache.capacity)
        self.metrics.used.set_function(lambda: self.cache.used)
        self.metrics.objects.set_function(lambda: len(self.cache))

    def now(self) -> float:
        """Seconds since the service started: the clock policies see, as in the traces."""
        return self.clock() - self.started

    def read(self, key: str, scan: str | None) -> bytes | None:
        access = "random" if scan is None else "sequential"
        with self.lock:
            now = self.now()
            self.stats.observe_read(key, scan, now)
            entry = self.cache.get(key, now)
            if entry is None:
                if self.cache.recently_evicted(key):
                    self.metrics.ghost_misses.inc()
                count, _ = self._pending.pop(key, (0, now))
                self._pending[key] = (count + 1, now)
                if len(self._pending) > MAX_PENDING_MISSES:
                    del self._pending[next(iter(self._pending))]
        m = self.metrics
        if entry is None:
            m.requests.labels(access, "miss").inc()
            return None
        m.requests.labels(access, "hit").inc()
        m.hit_bytes.inc(entry.size)
        m.requested_bytes.inc(entry.size)
        return entry.value

    def write(self, key: str, body: bytes, scan: str | None) -> str:
        """Store an object; returns ``stored``, ``not_admitted`` or ``too_large``."""
        size = len(body)
        with self.lock:
            now = self.now()
            count, when = self._pending.pop(key, (0, now))
            if count > 1:
                self._pending[key] = (count - 1, when)
            too_large = size > self.cache.capacity
            result = None if too_large else self.cache.put(key, size, now, body)
        m = self.metrics
        if count:
            m.requested_bytes.inc(size)  # the fill of a miss: now its size is known
        if scan is None:
            m.object_size.observe(size)
        if result is None:
            outcome = "too_large"
        else:
            outcome = "stored" if result.stored else "not_admitted"
            m.evictions.inc(result.evictions)
            if result.policy_errors:
                m.policy_errors.inc(result.policy_errors)
                self._warn_policy_error()
        m.writes.labels(outcome).inc()
        return outcome

    def _warn_policy_error(self) -> None:
        active = self.policy.active.hash
        if self._warned != active:  # once per policy: the counter has the rate
            self._warned = active
            why = "raised, or returned no finite number; LRU decided those evictions"
            log.warning("policy %s failed (%s): see cache_policy_errors_total", active, why)

    def traffic_estimates(self) -> dict[str, float | None]:
        with self.lock:
            return dict(self._estimates)

    def housekeeping(self, last_poll: float, last_refresh: float) -> tuple[float, float]:
        """One round of background work; returns when the policy and stats were last done."""
        now = self.now()
        if now - last_poll >= self.policy_poll_seconds:
            last_poll = now
            self.check_policy()
        with self.lock:
            scans = self.stats.finished_scans(now)
            while self._pending:  # oldest first: a key moves to the end at each miss
                key, (_, when) = next(iter(self._pending.items()))
                if now - when <= PENDING_MISS_SECONDS:
                    break
                del self._pending[key]
            if now - last_refresh >= STATS_REFRESH_SECONDS:
                last_refresh = now
                self.stats.refresh(now)
                self._estimates = {
                    "cache_keyspace_distinct_keys": self.stats.distinct_keys(now),
                    "cache_key_popularity_zipf_alpha": self.stats.zipf_alpha,
                    "cache_hot_set_turnover_ratio": self.stats.hot_set_turnover,
                }
        for length in scans:
            self.metrics.scan_objects.observe(length)
        return last_poll, last_refresh

    def check_policy(self) -> None:
        """Reload the policy file if it changed; a refused file keeps the running policy."""
        refused_before = self.policy.refused
        if self.policy.poll():
            with self.lock:
                self.cache.priority = self.policy.active.priority
            self.metrics.policy.info({"hash": self.policy.active.hash})
            self.metrics.policy_reloads.labels("loaded").inc()
        elif self.policy.refused is not refused_before:
            self.metrics.policy_reloads.labels("refused").inc()

    def policy_status(self) -> dict[str, Any]:
        refused = self.policy.refused
        return {
            "path": str(self.policy.path),
            "active": {"hash": self.policy.active.hash, "loaded_at": self.policy.active.loaded_at},
            "refused": None if refused is None else vars(refused),
        }

    def render_metrics(self) -> bytes:
        return generate_latest(self.registry)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse their connection
    disable_nagle_algorithm = True  # headers and body go out as two writes
    server: CacheHTTPServer

    def do_GET(self) -> None:
        service = self.server.service
        path = self.path.split("?", 1)[0]
        if path.startswith("/objects/"):
            key = self._key()
            if key is None:
                return
            started = time.perf_counter()
            value = service.read(key, self.headers.get("X-Cache-Scan"))
            if value is None:
                self._send(404, b"miss\n")
            else:
                self._send(200, value, "application/octet-stream")
            service.metrics.latency.labels("GET").observe(time.perf_counter() - started)
        elif path == "/metrics":
            self._send(200, service.render_metrics(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, f"ok policy={service.policy.active.hash}\n".encode())
        elif path == "/policy":
            self._send(200, json.dumps(service.policy_status()).encode(), "application/json")
        else:
            self._send(404, b"not found\n")

    def do_PUT(self) -> None:
        service = self.server.service
        if not self.path.startswith("/objects/"):
            self._send(404, b"not found\n")
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._send(411, b"Content-Length required\n")
            self.close_connection = True
            return
        body = self.rfile.read(int(length))
        key = self._key()
        if key is None:
            return
        started = time.perf_counter()
        outcome = service.write(key, body, self.headers.get("X-Cache-Scan"))
        status = {"stored": 201, "not_admitted": 202, "too_large": 413}[outcome]
        self._send(status, f"{outcome}\n".encode())
        service.metrics.latency.labels("PUT").observe(time.perf_counter() - started)

    def _key(self) -> str | None:
        key = self.path.split("?", 1)[0][len("/objects/") :]
        if not key or len(key.encode()) > MAX_KEY_BYTES:
            self._send(400, f"a key is 1 to {MAX_KEY_BYTES} bytes\n".encode())
            return None
        return key

    def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown the policy log


class CacheHTTPServer(ThreadingHTTPServer):
    """The HTTP front of a :class:`CacheService`, with its housekeeping thread."""

    daemon_threads = True

    def __init__(self, service: CacheService, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.service = service
        self._stop = threading.Event()
        self._housekeeper = threading.Thread(target=self._housekeep, name="housekeeping")

    @property
    def address(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"{host}:{port}"

    def start(self) -> CacheHTTPServer:
        """Serve from background threads (for tests and embedding)."""
        self._housekeeper.start()
        threading.Thread(
            target=self.serve_forever, args=(0.1,), name="cache-http", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.shutdown()
        self.server_close()
        if self._housekeeper.is_alive():
            self._housekeeper.join()

    def _housekeep(self) -> None:
        last_poll = last_refresh = 0.0
        while not self._stop.wait(0.5):
            try:
                last_poll, last_refresh = self.service.housekeeping(last_poll, last_refresh)
            except Exception:  # keep serving; the next round tries again
                log.exception("housekeeping failed")


# --- command line ----------------------------------------------------------------------

_QUANTITY = re.compile(r"^([0-9]+)([KMGT]i?)?$")
_UNITS = {None: 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}  # fmt: skip


def byte_quantity(text: str) -> int:
    """``67108864``, ``64Mi`` or ``1G``: a byte count, as Kubernetes writes quantities."""
    match = _QUANTITY.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a byte quantity (e.g. 64Mi)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def memory_limit_bytes() -> tuple[int, str]:
    """The container's memory limit (cgroup v2, then v1), else the machine's memory."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # "max" or a huge number: no limit
            return int(text), path
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory"


def remap(path: str) -> str:
    """Prefix an absolute path with ``$RETUNE_PATH_PREFIX`` (as ``retune-evaluate`` does)."""
    prefix = os.environ.get("RETUNE_PATH_PREFIX", "")
    return prefix.rstrip("/") + path if prefix and os.path.isabs(path) else path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Not CACHE_PORT / CACHE_HOST: Kubernetes sets CACHE_PORT=tcp://... in every pod of a
    # namespace with a Service named "cache" (service links). A string default is only
    # converted by `type` when the flag is absent.
    parser.add_argument("--host", default=env("CACHE_LISTEN_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=env("CACHE_LISTEN_PORT", "8080"))
    parser.add_argument(
        "--capacity-bytes",
        type=byte_quantity,
        default=env("CACHE_CAPACITY_BYTES"),
        help="cache size (e.g. 64Mi); default: --memory-fraction of the memory limit",
    )
    parser.add_argument("--memory-fraction", type=float, default=0.5)
    parser.add_argument("--policy", default=env("CACHE_POLICY_FILE", DEFAULT_POLICY))
    parser.add_argument("--policy-poll-seconds", type=float, default=2.0)
    parser.add_argument("--eviction-samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seeds the eviction sampling")
    parser.add_argument("--track", default=env("RETUNE_TRACK") or None)
    parser.add_argument("--stats-window", type=float, default=300.0, help="seconds")
    parser.add_argument("--log-level", default=env("CACHE_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    if isinstance(args.capacity_bytes, str):  # from the environment
        args.capacity_bytes = byte_quantity(args.capacity_bytes)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    capacity = args.capacity_bytes
    if capacity is None:
        memory, source = memory_limit_bytes()
        capacity = int(memory * args.memory_fraction)
        log.info("capacity %d bytes: %.2f of %s", capacity, args.memory_fraction, source)
    try:
        service = CacheService(
            capacity,
            remap(args.policy),
            track=args.track,
            samples=args.eviction_samples,
            seed=args.seed,
            policy_poll_seconds=args.policy_poll_seconds,
            stats=TrafficStats(window=args.stats_window),
        )
    except PolicyLoadError as error:
        log.error("cannot start: %s", error)
        return 2
    server = CacheHTTPServer(service, args.host, args.port).start()
    log.info("serving on %s, capacity %d bytes, track %s", server.address, capacity, args.track)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
