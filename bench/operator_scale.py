"""The operator at scale: 10 and 100 OptimizationTargets in steady monitoring.

On the real test control plane (``tests/cluster``) with a real Prometheus serving
examples/01's recorded workload profile, ``retune operator`` runs as a process under the
Helm chart's ServiceAccount. Each target is examples/01's (as the e2e tests make it) with
a status recorded as if its search had finished without beating the seed: phase
``Stable``, digests of its own spec, the profile and hardware it reads now, and a search
that ended just now (so the 30m cooldown defers any retune trigger). That is the cheapest
state that is still steady monitoring: every check reads the hardware under the workload
(its Deployment and pods), the SLOs and the profile when due, and writes the status when
it saw something new (or its check time is 5 minutes old) -- but nothing searches.

Per count it measures, with the targets settled (every target reconciled once by this
operator process, as its ``/metrics`` says):

- RSS of the operator process (mean and max over the window, from /proc);
- CPU share: the process's CPU seconds over the window's wall seconds;
- API requests per second: the delta of the API server's ``apiserver_request_total`` over
  the window minus the same delta over an equal window just before, without the operator
  (the metric has no user label; the baseline is the control plane's own traffic);
- reconcile latency after a spec change: ``spec.retune.cooldown`` patched on every target,
  time from each patch until ``status.observedGeneration`` reaches the new generation.

    .venv/bin/python bench/operator_scale.py [--quick] [--counts 10,100] [--window 60]

The last line is ``rss_mb_at_100=<x> reconcile_p95_s=<y>`` (at the largest count).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

from kubernetes import client, watch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "operator")]

from retune.controller import spec_digests  # noqa: E402
from retune.handlers.gather import hardware_under, read_workload  # noqa: E402
from retune.handlers.kube import Cluster  # noqa: E402
from retune.handlers.reconcile import parse  # noqa: E402
from retune.signals.nodes import node_info  # noqa: E402
from retune.spec import GROUP, PLURAL, VERSION, Phase, TargetStatus  # noqa: E402
from retune.spec.status import SearchStatus, WatchStatus  # noqa: E402
from tests.cluster.controlplane import ControlPlane  # noqa: E402
from tests.cluster.exporter import MetricsExporter  # noqa: E402
from tests.cluster.helm import apply_manifests, find_manifest, render_chart  # noqa: E402
from tests.cluster.processes import wait_until  # noqa: E402
from tests.cluster.prometheus import PrometheusServer, find_prometheus  # noqa: E402
from tests.cluster.testbin import testbin_dir  # noqa: E402
from tests.e2e.harness import PROFILE, OperatorProcess, cache_target  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Measurement:
    """One count's numbers."""

    targets: int
    rss_mb_mean: float
    rss_mb_max: float
    cpu_share: float
    api_rps: float
    api_rps_baseline: float
    reconcile_p50_s: float
    reconcile_p95_s: float
    reconcile_max_s: float
    reconcile_work_s: float
    """Mean time of one reconcile as the operator measures it, over the spec change."""
    settle_s: float
    load: str


# -- the process ---------------------------------------------------------------------------
def _group_pids(pgid: int) -> list[int]:
    """Every process of the operator's process group (the operator is its leader)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def rss_bytes(pgid: int) -> int:
    """Resident memory of the process group, from /proc/<pid>/statm."""
    total = 0
    for pid in _group_pids(pgid):
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    return total


def cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the process group."""
    total = 0
    for pid in _group_pids(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- the API server ------------------------------------------------------------------------
def api_requests(api: client.ApiClient) -> float:
    """The sum of ``apiserver_request_total`` over all its series."""
    response = api.call_api("GET", f"{api.configuration.host}/metrics")
    total = 0.0
    for line in (response.read() or b"").decode().splitlines():
        if line.startswith("apiserver_request_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- targets -------------------------------------------------------------------------------
def custom(api: client.ApiClient) -> Any:
    return client.CustomObjectsApi(api)


def steady_status(body: dict[str, Any], fingerprint: Any, now: dt.datetime) -> dict[str, Any]:
    """A status as if the target's search had just finished without beating the seed."""
    target, problems = parse(body)
    assert target is not None, problems
    digests = spec_digests(target.spec)
    hour_ago = now - dt.timedelta(hours=1)
    status = TargetStatus(
        phase=Phase.STABLE,
        observed_generation=int(body["metadata"]["generation"]),
        hardware_fingerprint=fingerprint.fingerprint,
        profile=dict(PROFILE),
        profile_time=now,
        best_score=1.0,
        seed_score=1.0,
        search=SearchStatus(
            started_at=hour_ago,
            generation=int(body["metadata"]["generation"]),
            signals_digest=digests.signals,
            search_digest=digests.search,
            budget_digest=digests.budget,
            finished_at=now,
            stop_reason="evaluation budget reached",
            trigger="Created",
        ),
        last_retune_time=hour_ago,
        last_retune_reason="the target was created",
        last_retune_trigger="Created",
        last_search_end_time=now,
        watch=WatchStatus(
            since=now,
            profile_read_at=now,
            current_profile=dict(PROFILE),
            hardware_fingerprint=fingerprint.fingerprint,
            hardware_summary=fingerprint.summary,
        ),
    )
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def idle_deployment(namespace: str, name: str) -> dict[str, Any]:
    """A target's workload: one pod on the CPU pool, which the node agent runs as an idle
    process (one target per workload, so each target has its own)."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"retune.dev/pool": "cpu"},
                    "containers": [{"name": "cache", "image": "ghcr.io/retune/cache:demo"}],
                },
            },
        },
    }


def create_workloads(api: client.ApiClient, namespace: str, first: int, last: int) -> None:
    """Deployments ``cache-<first>`` .. ``cache-<last - 1>``, until each has a bound pod."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    names = {f"cache-{index:03d}" for index in range(first, last)}
    for name in sorted(names):
        apps.create_namespaced_deployment(namespace, cast(Any, idle_deployment(namespace, name)))

    def bound() -> bool:
        pods = core.list_namespaced_pod(namespace).items
        return names <= {(p.metadata.labels or {}).get("app") for p in pods if p.spec.node_name}

    wait_until(bound, 120, f"the pods of {len(names)} workloads to be bound")


def create_steady_targets(
    api: client.ApiClient, namespace: str, first: int, last: int
) -> list[str]:
    """Targets ``t-<first>`` .. ``t-<last - 1>``, each on its own workload (``cache-<n>``)
    with a steady status."""
    create_workloads(api, namespace, first, last)
    cluster = Cluster(api)
    nodes = [
        node_info(api.sanitize_for_serialization(node))
        for node in client.CoreV1Api(api).list_node().items
    ]
    names = []
    for index in range(first, last):
        name = f"t-{index:03d}"
        target = cache_target(namespace, name)
        target["spec"]["workloadRef"]["name"] = f"cache-{index:03d}"
        body = custom(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, target
        )
        target, problems = parse(body)
        assert target is not None, problems
        fingerprint = hardware_under(cluster, target, read_workload(cluster, target), nodes)
        assert hasattr(fingerprint, "fingerprint"), fingerprint
        status = steady_status(body, fingerprint, dt.datetime.now(dt.UTC))
        custom(api).patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status}
        )
        names.append(name)
    return names


def phases(api: client.ApiClient, namespace: str) -> dict[str, str]:
    items = custom(api).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    return {t["metadata"]["name"]: (t.get("status") or {}).get("phase", "") for t in items}


def wait_reconciled(operator: OperatorProcess, count: int, timeout: float) -> None:
    """Until the operator has reconciled every target once: each has its
    ``retune_target_phase`` series (the status is not written by a check that saw nothing
    new, so ``status.watch.checkedAt`` cannot tell)."""

    def reconciled() -> bool:
        code, text = operator.get("/metrics")
        if code != 200:
            return False
        targets = {
            line.split('target="', 1)[1].split('"', 1)[0]
            for line in text.splitlines()
            if line.startswith("retune_target_phase{") and line.endswith(" 1.0")
        }
        return len(targets) >= count

    wait_until(reconciled, timeout, f"{count} targets reconciled by the operator", interval=1.0)


class GenerationWatch:
    """When each target's ``status.observedGeneration`` first reached a wanted value."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.wanted: dict[str, int] = {}
        self.reached: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> GenerationWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        method = custom(self.api).list_namespaced_custom_object
        while not self._stop.is_set():
            try:
                stream = watch.Watch().stream(
                    method, GROUP, VERSION, self.namespace, PLURAL, timeout_seconds=5
                )
                for event in stream:
                    self._see(event["object"])
            except Exception:  # re-opened; the wait below reports what never arrived
                time.sleep(0.2)

    def _see(self, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        observed = (body.get("status") or {}).get("observedGeneration") or 0
        wanted = self.wanted.get(name)
        if wanted is not None and name not in self.reached and observed >= wanted:
            self.reached[name] = time.monotonic()


def reconcile_latencies(
    api: client.ApiClient, namespace: str, names: list[str], round_: int, timeout: float
) -> list[float]:
    """Patch ``spec.retune.cooldown`` on every target; seconds until each is observed."""
    watcher = GenerationWatch(api, namespace).start()
    time.sleep(1.0)  # the watch is open before the first patch
    patched: dict[str, float] = {}
    for name in names:
        started = time.monotonic()
        body = custom(api).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"spec": {"retune": {"cooldown": 1800 + round_}}},
        )
        watcher.wanted[name] = int(body["metadata"]["generation"])
        patched[name] = started
    try:
        wait_until(
            lambda: len(watcher.reached) >= len(names),
            timeout,
            "every change observed",
            interval=0.2,
        )
    finally:
        watcher.stop()
    return [watcher.reached[name] - patched[name] for name in names]


def reconcile_seconds(operator: OperatorProcess) -> tuple[float, float]:
    """The operator's own ``retune_reconcile_duration_seconds``: (sum, count)."""
    code, text = operator.get("/metrics")
    if code != 200:
        return 0.0, 0.0
    found = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for part in found:
            if line.startswith(f"retune_reconcile_duration_seconds_{part}{{"):
                found[part] += float(line.rsplit(" ", 1)[1])
    return found["sum"], found["count"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# -- one count -----------------------------------------------------------------------------
def measure(
    plane: ControlPlane,
    operator: OperatorProcess,
    namespace: str,
    names: list[str],
    window: float,
    settle: float,
    round_: int,
) -> Measurement:
    api = plane.api()
    before = api_requests(api)
    time.sleep(window)
    baseline = (api_requests(api) - before) / window

    started = time.monotonic()
    operator.start()
    wait_reconciled(operator, len(names), timeout=300)
    settled = time.monotonic() - started
    time.sleep(settle)

    pid = operator.process.pid
    assert pid is not None
    rss: list[int] = []
    cpu0, requests0, wall0 = cpu_seconds(pid), api_requests(api), time.monotonic()
    while time.monotonic() - wall0 < window:
        rss.append(rss_bytes(pid))
        time.sleep(1.0)
    wall = time.monotonic() - wall0
    cpu = cpu_seconds(pid) - cpu0
    rps = (api_requests(api) - requests0) / wall - baseline
    load = load_average()

    work0 = reconcile_seconds(operator)
    latencies = reconcile_latencies(api, namespace, names, round_, timeout=300)
    work1 = reconcile_seconds(operator)
    reconciles = work1[1] - work0[1]
    not_stable = {n: p for n, p in phases(api, namespace).items() if p != Phase.STABLE}
    if not_stable:
        print(f"warning: not Stable after the run: {not_stable}", file=sys.stderr)
    mb = 1024 * 1024
    return Measurement(
        targets=len(names),
        rss_mb_mean=statistics.fmean(rss) / mb,
        rss_mb_max=max(rss) / mb,
        cpu_share=cpu / wall,
        api_rps=rps,
        api_rps_baseline=baseline,
        reconcile_p50_s=percentile(latencies, 0.5),
        reconcile_p95_s=percentile(latencies, 0.95),
        reconcile_max_s=max(latencies),
        reconcile_work_s=(work1[0] - work0[0]) / reconciles if reconciles else float("nan"),
        settle_s=settled,
        load=load,
    )


def table(results: list[Measurement]) -> str:
    header = (
        "| targets | RSS MB (mean / max) | CPU share | API req/s (operator) | API req/s "
        "(baseline) | reconcile p50 s | p95 s | max s | one reconcile s | settle s "
        "| load (1/5/15m) |"
    )
    rows = [header, "|" + "---|" * 11]
    for m in results:
        rows.append(
            f"| {m.targets} | {m.rss_mb_mean:.1f} / {m.rss_mb_max:.1f} | {m.cpu_share:.1%} "
            f"| {m.api_rps:.2f} | {m.api_rps_baseline:.2f} | {m.reconcile_p50_s:.2f} "
            f"| {m.reconcile_p95_s:.2f} | {m.reconcile_max_s:.2f} | {m.reconcile_work_s:.3f} "
            f"| {m.settle_s:.0f} | {m.load} |"
        )
    return "\n".join(rows)


def run(counts: list[int], window: float, settle: float) -> list[Measurement]:
    workdir = Path(tempfile.mkdtemp(prefix="retune-operator-scale-"))
    plane = ControlPlane(testbin_dir(), workdir / "cluster", [REPO / "crds"])
    prometheus = PrometheusServer(find_prometheus(), workdir / "prometheus")
    exporter = MetricsExporter()
    operator: OperatorProcess | None = None
    try:
        print("starting the control plane and Prometheus...", flush=True)
        plane.start()
        prometheus.start()
        exporter.start()
        for key, value in PROFILE.items():
            exporter.set(f"cache_profile_{key}", value)
        prometheus.add_target("cache", exporter.address)
        prometheus.wait_for_query('max(cache_profile_key_space{job="cache"})', timeout=60)

        api = plane.api()
        suffix = uuid.uuid4().hex[:6]
        system, namespace = f"retune-system-{suffix}", f"scale-{suffix}"
        core = client.CoreV1Api(api)
        for name in (system, namespace):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
            wait_until(partial(core.read_namespaced_service_account, "default", name), 30, name)
        docs = render_chart({"watchNamespaces": [namespace]}, namespace=system)
        apply_manifests(api, docs)
        account = find_manifest(docs, "ServiceAccount")["metadata"]["name"]
        kubeconfig = plane.serviceaccount_kubeconfig(system, account)

        results: list[Measurement] = []
        names: list[str] = []
        for round_, count in enumerate(sorted(counts)):
            # The operator is stopped while targets are added: a target it saw before its
            # steady status was written would start a search.
            names += create_steady_targets(api, namespace, len(names), count)
            log = workdir / f"operator-{count}.log"
            operator = OperatorProcess(kubeconfig, [namespace], prometheus.url, log)
            print(f"measuring {count} targets...", flush=True)
            result = measure(plane, operator, namespace, names, window, settle, round_)
            operator.stop()
            operator = None
            results.append(result)
            print(table([result]).splitlines()[-1], flush=True)
        return results
    finally:
        if operator is not None:
            operator.stop()
        exporter.stop()
        prometheus.stop()
        plane.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # A Stable target is checked every 30 s at most (WATCH_INTERVAL): a window shorter
    # than that can fall between two rounds of checks and see none.
    parser.add_argument("--quick", action="store_true", help="30 s windows, 5 s settle")
    parser.add_argument("--counts", default="10,100", help="target counts (default 10,100)")
    parser.add_argument("--window", type=float, default=60.0, help="measurement window, s")
    parser.add_argument("--settle", type=float, default=15.0, help="wait after settling, s")
    args = parser.parse_args(argv)
    window, settle = (30.0, 5.0) if args.quick else (args.window, args.settle)
    counts = [int(c) for c in args.counts.split(",")]
    results = run(counts, window, settle)
    print()
    print(
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores; window {window:.0f} s"
    )
    print(table(results))
    last = results[-1]
    print(
        f"rss_mb_at_{last.targets}={last.rss_mb_max:.1f} reconcile_p95_s={last.reconcile_p95_s:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
