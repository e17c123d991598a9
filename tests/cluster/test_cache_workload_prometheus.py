"""The real Prometheus scrapes the cache workload of examples/01, and the target's own
profile queries, as written, read one number each from it; shifting the load generator's
mix moves them.

The profile's windows (``[5m]``, ``[30m]``, ``[1h]``) need not be full: ``rate()`` answers
once its window holds two samples, and ``avg_over_time()`` once it holds one. A ratio of
two rates over the same window (``scan_fraction``, the means) is right at once; a plain
``rate()`` (``request_rate``) is the increase divided by the whole window, so it reads low
until the window has filled (a minute of data in a ``[5m]`` window reads a fifth).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from retune.signals import read_profile
from retune.signals.prometheus import PrometheusProvider
from tests.cluster.prometheus import PrometheusServer

pytestmark = pytest.mark.prometheus

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "01-cache-eviction"
WORKLOAD = EXAMPLE / "workload"
WARM_UP_TIMEOUT = 240.0
SHIFT_TIMEOUT = 120.0
# A small key space, so the hot set is told apart from noise within a minute or two.
MIX = {"request_rate": 200, "key_space": 2000, "scan_length_mean": 40}


class Started:
    """A workload process with its log file; ``address`` is what it printed it listens on."""

    def __init__(self, name: str, command: list[str], log: Path, pattern: str) -> None:
        self.log = log
        env = {**os.environ, "RETUNE_TRACK": "stable"}
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            match = re.search(pattern, log.read_text())
            if match:
                self.address = match.group(1)
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"{name} did not start:\n{log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def workload(tmp_path: Path) -> Iterator[tuple[Started, Started]]:
    policy = tmp_path / "policy.py"
    policy.write_text((EXAMPLE / "seed_policy.py").read_text())
    server = [sys.executable, str(WORKLOAD / "server.py"), "--host", "127.0.0.1", "--port", "0"]
    server += ["--capacity-bytes", "4Mi", "--policy", str(policy)]
    cache = Started("cache", server, tmp_path / "cache.log", r"serving on (\S+),")
    loadgen = [sys.executable, str(WORKLOAD / "loadgen.py"), "--target", cache.address]
    loadgen += ["--control-host", "127.0.0.1", "--control-port", "0", "--concurrency", "3"]
    loadgen += [f"--{name.replace('_', '-')}={value}" for name, value in MIX.items()]
    try:
        load = Started("loadgen", loadgen, tmp_path / "loadgen.log", r"control on (\S+);")
    except BaseException:
        cache.stop()
        raise
    yield cache, load
    load.stop()
    cache.stop()


def _queries() -> tuple[dict[str, str], str]:
    spec = yaml.safe_load((EXAMPLE / "target.yaml").read_text())["spec"]
    (analysis,) = spec["rollout"]["analysis"]
    return spec["profile"]["queries"], analysis["query"].replace("{{track}}", "stable")


def _post_mix(control: str, changes: dict[str, float]) -> None:
    request = urllib.request.Request(
        f"http://{control}/mix", data=json.dumps(changes).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_every_profile_query_reads_one_number_and_follows_the_mix(
    prometheus: PrometheusServer, workload: tuple[Started, Started]
) -> None:
    cache, load = workload
    queries, hit_ratio_query = _queries()
    prometheus.add_target("cache", cache.address)
    provider = PrometheusProvider(prometheus.url)
    started = time.monotonic()

    # Given the cache under its load generator's default mix
    reading = read_profile(provider, queries)
    while not reading.complete and time.monotonic() - started < WARM_UP_TIMEOUT:
        time.sleep(5)
        reading = read_profile(provider, queries)
    warm_up = time.monotonic() - started
    assert reading.complete, f"after {warm_up:.0f}s: {reading.describe_problems()}"
    print(f"\nwarm-up {warm_up:.0f}s; profile {json.dumps(reading.values)}")

    # Then each query says what the load generator is doing
    before = reading.values
    (total,) = prometheus.query('sum(cache_requests_total{job="cache"})')
    reads = float(total["value"][1])
    assert reads / (time.monotonic() - started) == pytest.approx(MIX["request_rate"], rel=0.35)
    assert before["request_rate"] == pytest.approx(reads / 300, rel=0.25)  # [5m], not yet full
    assert 1000 < before["key_space"] <= 2000 * 1.05
    assert before["zipf_alpha"] == pytest.approx(0.85, abs=0.15)
    assert before["scan_fraction"] == pytest.approx(0.15, abs=0.08)
    assert before["scan_length_mean"] == pytest.approx(40)
    assert before["object_size_mean_bytes"] == pytest.approx(8192, rel=0.3)
    assert before["object_size_median_bytes"] == pytest.approx(3072, rel=0.5)  # 2x buckets
    assert before["hot_set_turnover"] >= 0.0
    hit_ratio = provider.query(hit_ratio_query)
    assert 0.0 < getattr(hit_ratio, "value", -1.0) < 1.0, hit_ratio

    # When the mix shifts to more, longer scans of larger objects over a more skewed key space
    shift = {"scan_fraction": 0.6, "scan_length_mean": 80, "zipf_alpha": 1.2}
    shift |= {"object_size_mean_bytes": 32768, "object_size_median_bytes": 12288}
    _post_mix(load.address, shift)
    shifted = time.monotonic()

    # Then the profile follows
    def moved(values: dict[str, float]) -> bool:
        return (
            values["scan_fraction"] > before["scan_fraction"] + 0.1
            and values["scan_length_mean"] > before["scan_length_mean"] + 5
            and values["object_size_mean_bytes"] > before["object_size_mean_bytes"] * 1.5
            and values["zipf_alpha"] > before["zipf_alpha"] + 0.05
        )

    after = read_profile(provider, queries)
    while not (after.complete and moved(after.values)):
        assert time.monotonic() - shifted < SHIFT_TIMEOUT, (
            f"the profile did not follow the mix: before {before}, now {after.values} "
            f"{after.describe_problems()}"
        )
        time.sleep(5)
        after = read_profile(provider, queries)
    print(f"moved after {time.monotonic() - shifted:.0f}s: {json.dumps(after.values)}")
