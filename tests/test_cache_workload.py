"""The cache workload of examples/01: the live cache agrees with the evaluator's simulator,
the service exports every metric the target's queries use, reloads its policy safely, and
the load generator produces the mix it is asked for and changes it at run time."""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from retune.evaluate.loader import load_policy
from retune.rollout.revisions import revision_hash
from tests.imports import import_file

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "01-cache-eviction"
WORKLOAD = EXAMPLE / "workload"
SEED_POLICY = EXAMPLE / "seed_policy.py"
HYBRID_POLICY = EXAMPLE / "baselines" / "scan_resistant.py"
REFUSED_POLICY = "import os\n\ndef priority(*args):\n    return float(os.getpid())\n"
NAN_POLICY = (
    "def priority(size, now, last_access, access_count, insert_time, evicted_count, "
    "last_evicted):\n    return float('nan')\n"
)
ESTIMATES = (
    "cache_keyspace_distinct_keys",
    "cache_key_popularity_zipf_alpha",
    "cache_hot_set_turnover_ratio",
)
FREQUENCY_POLICY = (
    "def priority(size, now, last_access, access_count, insert_time, evicted_count, "
    "last_evicted):\n    return last_access + 300.0 * access_count\n"
)


server = import_file(WORKLOAD / "server.py", "retune_example_cache_server")
loadgen = import_file(WORKLOAD / "loadgen.py", "retune_example_cache_loadgen")
import cache_model  # noqa: E402  (made importable by the two modules above)
import cache_sim  # noqa: E402
import cache_trace  # noqa: E402
from object_cache import SampledPriorityCache  # noqa: E402
from traffic_stats import HyperLogLog, TrafficStats, zipf_exponent  # noqa: E402


def _metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)], parsed by the Prometheus client's own parser."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def _http(address: str, method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, **kwargs)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _force_housekeeping(service: Any) -> None:
    """What the housekeeping thread does, now: poll the policy, close scans, re-estimate."""
    service.housekeeping(-math.inf, -math.inf)


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    path = tmp_path / "policy.py"
    path.write_text(SEED_POLICY.read_text())
    return path


@pytest.fixture
def cache_server(policy_path: Path) -> Iterator[Any]:
    service = server.CacheService(2_000_000, policy_path, policy_poll_seconds=3600)
    http_server = server.CacheHTTPServer(service).start()
    yield http_server
    http_server.stop()


# -- the live cache is the simulator's cache ---------------------------------------------


@pytest.mark.parametrize("policy", [SEED_POLICY, HYBRID_POLICY], ids=["lru", "hybrid"])
@pytest.mark.parametrize("phase", ["scan", "shift"])
def test_the_live_cache_evicts_exactly_as_the_evaluator_simulates(policy: Path, phase: str) -> None:
    recorded = json.loads((EXAMPLE / "profile.json").read_text())
    workload = cache_model.CacheWorkload.model_validate(recorded)
    params = cache_model.CacheParams(sim_keys=2000)
    trace = cache_trace.generate(workload, params, phase, 12000, [0, 0, 1])
    capacity = trace.working_set_bytes // 8
    priority = load_policy(policy, "priority")
    expected = cache_sim.simulate_priority(trace, capacity, priority, 8, seed=7)

    cache = SampledPriorityCache(capacity, priority, samples=8, seed=7)
    names = ("hits", "hit_bytes", "requested_bytes", "evictions", "rejected", "ghost_misses")
    seen = dict.fromkeys(names, 0)
    for i, (k, t) in enumerate(zip(trace.keys, trace.times, strict=True)):
        key, size, scored = str(k), trace.sizes[k], i >= trace.measured_from
        seen["requested_bytes"] += size * scored
        if cache.get(key, t) is not None:
            seen["hits"] += scored
            seen["hit_bytes"] += size * scored
            continue
        if size > cache.capacity:
            continue
        seen["ghost_misses"] += cache.recently_evicted(key) and scored
        result = cache.put(key, size, t)
        assert result.policy_errors == 0
        seen["evictions"] += result.evictions * scored
        seen["rejected"] += (not result.stored) * scored

    assert expected.evictions > 500, "the trace must exercise eviction"
    assert {name: getattr(expected, name) for name in names} == seen


def test_a_failing_policy_falls_back_to_lru_and_is_counted() -> None:
    def broken(*args: float) -> float:
        raise ZeroDivisionError("division by zero")

    cache = SampledPriorityCache(1000, broken, samples=8, seed=0)
    for i in range(10):
        result = cache.put(f"k{i}", 300, float(i))
    assert result.stored and result.policy_errors == 9  # the new object and 8 samples
    assert cache.used <= 1000 and "k0" not in cache  # LRU chose: the oldest went first


# -- the service --------------------------------------------------------------------------


def test_get_put_and_the_http_answers(cache_server: Any) -> None:
    address = cache_server.address
    assert _http(address, "GET", "/objects/a")[0] == 404
    assert _http(address, "PUT", "/objects/a", body=b"x" * 1000)[0] == 201
    assert _http(address, "GET", "/objects/a") == (200, b"x" * 1000)
    assert _http(address, "PUT", "/objects/huge", body=b"x" * 2_000_001)[0] == 413
    assert _http(address, "GET", "/objects/")[0] == 400
    status, body = _http(address, "GET", "/healthz")
    assert status == 200 and revision_hash(SEED_POLICY.read_text()) in body.decode()

    # A request is timed once its answer is sent (the duration includes sending it), so the
    # last one's observation may land a moment after the client has its answer.
    def counts() -> dict[str, float]:
        latency = _metrics(_http(address, "GET", "/metrics")[1].decode())
        return {s["method"]: v for s, v in latency["cache_request_duration_seconds_count"]}

    expected = {"GET": 2, "PUT": 2}  # a bad key is refused before it is timed
    deadline = time.monotonic() + 10
    while counts() != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counts() == expected


def test_every_metric_the_target_queries_is_exported(policy_path: Path) -> None:
    clock = [0.0]
    service = server.CacheService(2_000_000, policy_path, clock=lambda: clock[0])
    # Two simulated minutes of the default mix at 200 reads/s, with the housekeeping
    # thread's work every 5 s, so every estimate has the data it needs.
    plan = loadgen.RequestPlan(_mix(scan_length_mean=40))
    for i in range(120 * 200):
        clock[0] = i / 200
        request = plan.next(clock[0])
        if service.read(request.key, request.scan) is None:
            service.write(request.key, b"y" * request.size, request.scan)
        if i % 1000 == 0:
            service.housekeeping(clock[0] - 5, clock[0] - 5)
    clock[0] += 5
    service.housekeeping(clock[0], -math.inf)
    exported = _metrics(service.render_metrics().decode())

    target = yaml.safe_load((EXAMPLE / "target.yaml").read_text())["spec"]
    queries = [*target["profile"]["queries"].values()]
    queries += [analysis["query"] for analysis in target["rollout"]["analysis"]]
    used = {name for query in queries for name in re.findall(r"\bcache_[a-z_]+", query)}
    assert used <= set(exported), f"not exported: {sorted(used - set(exported))}"

    def value(name: str, **labels: str) -> float:
        return sum(v for s, v in exported[name] if labels.items() <= s.items())

    assert value("cache_requests_total") == 120 * 200
    scans = value("cache_requests_total", access="sequential")
    assert scans / (120 * 200) == pytest.approx(0.15, abs=0.03)
    assert value("cache_scan_objects_sum") / value("cache_scan_objects_count") == 40
    assert value("cache_key_popularity_zipf_alpha") == pytest.approx(0.85, abs=0.08)
    assert value("cache_hot_set_turnover_ratio") < 3.0  # 0.6 asked; 2 minutes is noisy
    assert 5000 < value("cache_keyspace_distinct_keys") <= 20000
    sizes = value("cache_object_size_bytes_sum") / value("cache_object_size_bytes_count")
    assert sizes == pytest.approx(8192, rel=0.2)  # scan objects (2x larger) left out
    assert value("cache_policy_info", hash=revision_hash(SEED_POLICY.read_text())) == 1
    assert 0 < value("cache_hit_bytes_total") < value("cache_requested_bytes_total")


def test_requested_bytes_count_hits_and_filled_misses(cache_server: Any) -> None:
    address = cache_server.address
    for key, size in (("a", 100), ("b", 200), ("a", 100)):
        if _http(address, "GET", f"/objects/{key}")[0] == 404:
            _http(address, "PUT", f"/objects/{key}", body=b"x" * size)
    _http(address, "GET", "/objects/c")  # a miss never filled: its size is never known
    _http(address, "PUT", "/objects/d", body=b"x" * 50)  # a write without a miss
    exported = _metrics(cache_server.service.render_metrics().decode())
    assert exported["cache_hit_bytes_total"][0][1] == 100
    assert exported["cache_requested_bytes_total"][0][1] == 100 + 200 + 100


def test_estimates_are_absent_until_there_is_data(cache_server: Any) -> None:
    _force_housekeeping(cache_server.service)
    exported = _metrics(cache_server.service.render_metrics().decode())
    for name in ESTIMATES:
        assert name not in exported, "no data must not be exported as a number"


def test_the_track_label_is_on_every_series(policy_path: Path) -> None:
    service = server.CacheService(10_000, policy_path, track="canary")
    service.read("k", None)
    service.write("k", b"z" * 10, None)
    exported = _metrics(service.render_metrics().decode())
    assert exported["cache_hit_bytes_total"] == [({"track": "canary"}, 0.0)]
    labels = [labels for series in exported.values() for labels, _ in series]
    assert all(label.get("track") == "canary" for label in labels)


# -- the policy file ----------------------------------------------------------------------


def test_a_changed_policy_file_is_loaded_and_reported(cache_server: Any, policy_path: Path) -> None:
    service = cache_server.service
    policy_path.write_text(FREQUENCY_POLICY)
    service.check_policy()
    status = json.loads(_http(cache_server.address, "GET", "/policy")[1])
    assert status["active"]["hash"] == revision_hash(FREQUENCY_POLICY)
    assert service.cache.priority(100, 10.0, 5.0, 2, 1.0, 0, -1.0) == 605.0
    exported = _metrics(service.render_metrics().decode())
    assert exported["cache_policy_info"] == [({"hash": revision_hash(FREQUENCY_POLICY)}, 1.0)]
    assert exported["cache_policy_reloads_total"] == [({"outcome": "loaded"}, 1.0)]


@pytest.mark.parametrize(
    "bad", [REFUSED_POLICY, NAN_POLICY, "def priority(:\n"], ids=["allowlist", "nan", "syntax"]
)
def test_a_refused_policy_keeps_the_running_one_and_says_why(
    cache_server: Any, policy_path: Path, bad: str
) -> None:
    service = cache_server.service
    running = service.cache.priority
    policy_path.write_text(bad)
    service.check_policy()
    service.check_policy()  # the same refused content is not retried or counted twice
    assert service.cache.priority is running
    status = json.loads(_http(cache_server.address, "GET", "/policy")[1])
    assert status["active"]["hash"] == revision_hash(SEED_POLICY.read_text())
    assert status["refused"]["hash"] == revision_hash(bad)
    assert status["refused"]["reason"]
    exported = _metrics(service.render_metrics().decode())
    assert exported["cache_policy_reloads_total"] == [({"outcome": "refused"}, 1.0)]
    seed_hash = revision_hash(SEED_POLICY.read_text())
    assert exported["cache_policy_info"] == [({"hash": seed_hash}, 1.0)]

    policy_path.write_text(FREQUENCY_POLICY)  # a good file after a bad one is loaded
    service.check_policy()
    assert service.policy.active.hash == revision_hash(FREQUENCY_POLICY)


def test_a_vanished_policy_file_keeps_the_running_one(cache_server: Any, policy_path: Path) -> None:
    service = cache_server.service
    policy_path.unlink()
    service.check_policy()
    assert service.policy.active.hash == revision_hash(SEED_POLICY.read_text())
    policy_path.write_text(SEED_POLICY.read_text())  # back, unchanged: nothing to reload
    service.check_policy()
    assert "cache_policy_reloads_total" not in _metrics(service.render_metrics().decode())


def test_the_service_process_reads_its_policy_under_the_path_prefix(tmp_path: Path) -> None:
    mounted = tmp_path / "etc" / "retune" / "policy"
    mounted.mkdir(parents=True)
    (mounted / "policy.py").write_text(SEED_POLICY.read_text())
    env = {**os.environ, "RETUNE_PATH_PREFIX": str(tmp_path), "RETUNE_TRACK": "stable"}
    command = [sys.executable, str(WORKLOAD / "server.py"), "--host", "127.0.0.1", "--port", "0"]
    command += ["--capacity-bytes", "1Mi", "--policy-poll-seconds", "0.2"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        lines = [process.stderr.readline(), process.stderr.readline()]
        address = re.search(r"serving on (\S+),", lines[1])
        assert address, lines
        seed_hash = revision_hash(SEED_POLICY.read_text())
        body = _http(address.group(1), "GET", "/metrics")[1].decode()
        assert f'cache_policy_info{{hash="{seed_hash}",track="stable"}} 1.0' in body

        (mounted / "policy.py").write_text(REFUSED_POLICY)
        refused = process.stderr.readline()
        assert "refused" in refused and "import of 'os' is not allowed" in refused
        assert "keeping policy " + revision_hash(SEED_POLICY.read_text()) in refused
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_the_service_does_not_start_on_a_refused_policy(tmp_path: Path) -> None:
    (tmp_path / "policy.py").write_text(REFUSED_POLICY)
    command = [sys.executable, str(WORKLOAD / "server.py"), "--port", "0"]
    command += ["--policy", str(tmp_path / "policy.py"), "--capacity-bytes", "1Mi"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cannot start" in result.stderr and "import of 'os' is not allowed" in result.stderr


# -- the traffic estimates ----------------------------------------------------------------


def test_the_distinct_key_count_is_within_a_few_percent() -> None:
    sketch = HyperLogLog()
    for i in range(50_000):
        sketch.add(f"obj/{i}")
    assert HyperLogLog.count([sketch]) == pytest.approx(50_000, rel=0.05)
    small = HyperLogLog()
    for i in range(300):
        small.add(f"k{i}")
    assert HyperLogLog.count([small, sketch]) == pytest.approx(50_300, rel=0.05)


@pytest.mark.parametrize("alpha", [0.6, 0.85, 1.1])
def test_the_zipf_exponent_is_recovered(alpha: float) -> None:
    plan = loadgen.RequestPlan(_mix(zipf_alpha=alpha, scan_fraction=0.0, hot_set_turnover=0.0))
    counts = Counter(plan.next(i * 0.01).key for i in range(60_000))
    assert zipf_exponent(counts) == pytest.approx(alpha, abs=0.06)


def test_hot_set_turnover_is_zero_for_a_fixed_hot_set_and_tracks_a_moving_one() -> None:
    def measure(turnover: float) -> float | None:
        mix = _mix(key_space=2000, scan_fraction=0.0, hot_set_turnover=turnover)
        plan = loadgen.RequestPlan(mix)
        stats = TrafficStats(window=120.0)  # turnover resolves well below 3600/120 per hour
        for i in range(240 * 200):  # 200 reads/s for 4 minutes
            now = i / 200
            stats.observe_read(plan.next(now).key, None, now)
            if i % 1000 == 0:
                stats.refresh(now)
        return stats.hot_set_turnover

    assert measure(0.0) == 0.0
    assert measure(6.0) == pytest.approx(6.0, rel=0.35)


# -- the load generator -------------------------------------------------------------------


def _mix(**changes: Any) -> Any:
    return loadgen.Mix.model_validate({**loadgen.DEFAULT_MIX, **changes})


def test_the_plan_has_the_mix_it_was_given() -> None:
    plan = loadgen.RequestPlan(_mix(scan_fraction=0.3, scan_length_mean=50), seed=3)
    requests = [plan.next(i * 0.01) for i in range(40_000)]
    scans = Counter(r.scan for r in requests if r.scan)
    assert sum(scans.values()) / len(requests) == pytest.approx(0.3, abs=0.03)
    assert set(list(scans.values())[:-1]) == {50}  # every finished scan is 50 reads long
    sizes_of: dict[str, set[int]] = {}
    for r in requests:
        if r.scan is None:
            sizes_of.setdefault(r.key, set()).add(r.size)
    assert all(len(sizes) == 1 for sizes in sizes_of.values()), "a key always has one size"
    sizes = sorted(size for (size,) in sizes_of.values())
    assert sum(sizes) / len(sizes) == pytest.approx(8192, rel=0.15)
    assert sizes[len(sizes) // 2] == pytest.approx(3072, rel=0.1)
    again = loadgen.RequestPlan(_mix(scan_fraction=0.3, scan_length_mean=50), seed=3)
    assert [again.next(i * 0.01).key for i in range(1000)] == [r.key for r in requests[:1000]]


def test_the_hot_set_slides_at_the_turnover_rate() -> None:
    plan = loadgen.RequestPlan(_mix(key_space=10_000, scan_fraction=0.0, hot_set_turnover=6.0))
    early = Counter(plan.next(i * 0.0001).key for i in range(20_000))  # the first 2 s
    # An hour later 6 hot sets of 100 keys have slid by: the hottest key is 600 keys back.
    late = Counter(plan.next(3600.0 + i * 0.0001).key for i in range(20_000))
    assert early.most_common(1)[0][0] == "obj/0"
    assert late.most_common(1)[0][0] == "obj/9400"


def test_the_mix_and_targets_change_at_run_time_and_bad_changes_are_refused() -> None:
    generator = loadgen.LoadGenerator(["127.0.0.1:1"], _mix())
    control = loadgen.ControlServer(generator).start()
    try:
        status, body = _http(control.address, "POST", "/mix", body=b'{"scan_fraction": 0.5}')
        assert status == 200 and json.loads(body)["scan_fraction"] == 0.5
        assert generator.plan.mix.scan_fraction == 0.5
        status, body = _http(control.address, "POST", "/mix", body=b'{"scan_fractoin": 0.5}')
        assert status == 422 and b"scan_fractoin" in body
        assert _http(control.address, "POST", "/mix", body=b'{"zipf_alpha": 9}')[0] == 422
        assert _http(control.address, "POST", "/mix", body=b"[1]")[0] == 400
        assert json.loads(_http(control.address, "GET", "/mix")[1])["scan_fraction"] == 0.5
        targets = b'["127.0.0.1:2", "127.0.0.1:3"]'
        status, _ = _http(control.address, "POST", "/targets", body=targets)
        assert status == 200 and generator.targets == ["127.0.0.1:2", "127.0.0.1:3"]
        assert _http(control.address, "POST", "/targets", body=b"[]")[0] == 400
    finally:
        control.stop()


def test_the_load_generator_drives_the_service_and_a_mix_shift_shows(cache_server: Any) -> None:
    generator = loadgen.LoadGenerator(
        [cache_server.address], _mix(request_rate=300, scan_fraction=0.0), concurrency=3
    ).start()
    try:
        time.sleep(2.0)
        generator.update_mix({"scan_fraction": 0.6, "scan_length_mean": 20})
        before = _metrics(cache_server.service.render_metrics().decode())
        time.sleep(2.0)
    finally:
        generator.stop()
    after = _metrics(cache_server.service.render_metrics().decode())
    client = _metrics(loadgen.generate_latest(generator.metrics.registry).decode())

    def reads(samples: dict[str, Any], access: str) -> float:
        return sum(v for s, v in samples["cache_requests_total"] if s["access"] == access)

    assert reads(before, "random") > 300 and reads(before, "sequential") < 25
    new_scans = reads(after, "sequential") - reads(before, "sequential")
    new_total = new_scans + reads(after, "random") - reads(before, "random")
    assert new_scans / new_total == pytest.approx(0.6, abs=0.15)
    by_result = {s["result"]: v for s, v in client["loadgen_requests_total"]}
    assert by_result.get("error", 0) == 0
    served = sum(v for _, v in after["cache_requests_total"])
    assert by_result["hit"] + by_result["miss"] == served
    assert after["cache_writes_total"][0][1] >= by_result["miss"] - 3  # in-flight fills


def test_the_service_links_of_a_service_named_cache_do_not_break_the_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Kubernetes puts CACHE_PORT=tcp://<ip>:<port> (and CACHE_SERVICE_HOST...) in every pod
    # of a namespace with a Service named "cache": the server crashed on it at start.
    monkeypatch.setenv("CACHE_PORT", "tcp://10.0.0.191:80")
    monkeypatch.setenv("CACHE_SERVICE_HOST", "10.0.0.191")
    assert server.parse_args(["--port=8080"]).port == 8080
    assert server.parse_args([]).port == 8080
    monkeypatch.setenv("CACHE_LISTEN_PORT", "9090")
    assert server.parse_args([]).port == 9090
