"""The continuous-tuning story on the test control plane, told as a timeline.

    python -m tests.e2e.demo_cluster          (make demo-cluster)

Starts the test control plane with its real kubelet node and Prometheus (as the test
fixtures do), installs the chart with the real helm (the operator runs as a Pod from its
own image), and plays the end-to-end scenes
(:mod:`tests.e2e.scenarios`) against examples/01's cache service under load: a target
tuned and promoted, retuned on an SLO violation and on new hardware; a target retuned
on a drifting profile; a rollout paused, aborted and promoted by hand; a canary whose
analysis fails; Prometheus stopped mid-canary; the operator killed at every canary step.
After each scene it prints what the operator did and why, from the target's Events, and
the chart's alerts that Prometheus (scraping the operator) has active for it. The
last line counts the outcomes: ``promotions=N rollbacks=M retunes=K``, then
``real_node_pods=N operator=pod|process``: N is the number of the story's pods that ran
to completion or readiness on the kubelet node, as the kubelet reported them to the API
(a watch on every pod's status, not the demo's own count).

Needs what ``make test-e2e`` needs (``make testbin prometheus images``, root); takes about
8 minutes on 2 cores. ``RETUNE_KEEP_TEST_DIRS=1`` keeps the logs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client, watch

from tests.cluster.controlplane import ControlPlane
from tests.cluster.plugin import CRD_DIRS, KEEP_ENV
from tests.cluster.processes import install_signal_handlers
from tests.cluster.prometheus import PrometheusServer, find_prometheus
from tests.cluster.testbin import testbin_dir
from tests.e2e import scenarios
from tests.e2e.environment import E2E, environment
from tests.e2e.story import CacheStory

SCENES: list[tuple[str, str, Callable[[CacheStory, E2E], object]]] = [
    (
        "tuned",
        "a target is tuned and promoted, then retuned on an SLO violation and on new hardware",
        lambda story, env: scenarios.tuned(story),
    ),
    (
        "drift",
        "a tuned target is retuned when its workload profile drifts",
        lambda story, env: scenarios.drifting(story),
    ),
    (
        "manual",
        "a rollout is paused, aborted, and after a retune asked for, promoted by hand",
        lambda story, env: scenarios.steered(story),
    ),
    (
        "rollback",
        "a canary whose analysis fails is rolled back",
        lambda story, env: scenarios.failing_canary(story),
    ),
    (
        "blind",
        "Prometheus stops in the middle of a canary",
        lambda story, env: scenarios.blind_canary(story, env.prometheus),
    ),
    (
        "restarts",
        "the operator is killed at every canary step",
        lambda story, env: scenarios.killed_canary(story, env.operator),
    ),
]
WIDTH = 150


@contextmanager
def services(workdir: Path) -> Iterator[tuple[ControlPlane, PrometheusServer]]:
    """The test control plane and Prometheus, as the fixtures start them."""
    plane = ControlPlane(testbin_dir(), workdir / "cluster", CRD_DIRS, real_node=True)
    prometheus = PrometheusServer(find_prometheus(), workdir / "prometheus")
    try:
        print("starting the test control plane and Prometheus ...", flush=True)
        plane.start()
        prometheus.start()
        yield plane, prometheus
    finally:
        prometheus.stop()
        plane.stop()


class RealNodePods:
    """Every pod that ran to completion or readiness on the kubelet node, by uid, as the
    kubelet's status updates show them (a watch over all namespaces)."""

    def __init__(self, api: client.ApiClient, node: str) -> None:
        self.api, self.node = api, node
        self.seen: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> RealNodePods:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        core = client.CoreV1Api(self.api)
        while not self._stop.is_set():
            try:
                stream = watch.Watch().stream(
                    core.list_pod_for_all_namespaces,
                    field_selector=f"spec.nodeName={self.node}",
                    timeout_seconds=5,
                )
                for event in stream:
                    pod = event["object"]
                    ready = any(
                        c.type == "Ready" and c.status == "True"
                        for c in (pod.status.conditions or [])
                    )
                    if pod.status.phase == "Succeeded" or ready:
                        self.seen[pod.metadata.uid] = (
                            f"{pod.metadata.namespace}/{pod.metadata.name}"
                        )
            except Exception:  # re-opened; a pod seen once stays counted
                time.sleep(0.5)


def timeline(story: CacheStory, started: float) -> list[str]:
    """The target's Events (``!`` marks a warning) and the scene's steps (``#`` given,
    ``>`` when, ``=`` then, once its expectations held), one line each, timed from the
    start of the demo."""
    lines = []
    for entry in story.timeline():
        offset = max(0, int(entry.at.timestamp() - started))
        mark = {"Warning": "!", "Action": ">", "Given": "#", "Then": "="}.get(entry.type, " ")
        head = f"  {offset // 60:2d}:{offset % 60:02d} {mark} {entry.reason:<18} "
        message = textwrap.shorten(entry.message, WIDTH - len(head), placeholder=" ...")
        lines.append(head + message)
    return lines


def summary(status: dict[str, Any]) -> str:
    """Where the target ended, in one line."""
    history = status.get("history", [])
    outcomes = ", ".join(f"{r['revision']} {r['outcome']}" for r in history) or "none"
    return (
        f"  => {status.get('phase')}; stable policy {status.get('stableRevision') or 'the seed'}; "
        f"rollouts: {outcomes}; retunes: {status.get('retunes', 0)}"
    )


def alerts(env: E2E, namespace: str) -> str:
    """The chart's alerts active for the scene's targets (pending or firing), as the real
    Prometheus that scrapes the operator evaluates them."""
    time.sleep(3)  # a scrape and a rule evaluation (each every second) after the scene's end
    active = env.monitoring.alerts(namespace)
    named = [f"{name} ({', '.join(sorted(t for t in targets if t)) or 'operator'})"
             for name, targets in sorted(active.items())]  # fmt: skip
    return f"  => the chart's alerts: {'; '.join(named) or 'none'}"


def play(env: E2E, started: float) -> tuple[int, int, int]:
    """Every scene, each in its namespace; the counts of promotions, rollbacks, retunes."""
    promotions = rollbacks = retunes = 0
    for role, title, scene in SCENES:
        print(f"\n== {role}: {title}", flush=True)
        story = CacheStory(env, env.namespaces[role]).deploy()
        try:
            scene(story, env)
            status = story.status()
        finally:
            story.close()
            env.cluster.reset_nodes()
            if not env.operator.running:
                env.operator.start()
            env.prometheus.start()
        print("\n".join(timeline(story, started)))
        print(summary(status))
        print(alerts(env, story.namespace), flush=True)
        outcomes = [record["outcome"] for record in status.get("history", [])]
        promotions += outcomes.count("Promoted")
        rollbacks += len(outcomes) - outcomes.count("Promoted")
        retunes += int(status.get("retunes", 0))
    return promotions, rollbacks, retunes


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    install_signal_handlers()
    workdir = Path(tempfile.mkdtemp(prefix="retune-demo-cluster-"))
    started = time.time()
    ok = False
    try:
        with services(workdir) as (plane, prometheus):
            assert plane.real_node is not None
            pods = RealNodePods(plane.api(), plane.real_node.name).start()
            roles = [role for role, _, _ in SCENES]
            with environment(plane, prometheus, roles, workdir / "operator") as env:
                counts = play(env, started)
                operator = env.operator.pod()
                where = (
                    "pod"
                    if operator is not None and operator.spec.node_name == plane.real_node.name
                    else "process"
                )
            pods.stop()
        ok = True
    finally:
        if ok and os.environ.get(KEEP_ENV) != "1":
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"\nlogs kept in {workdir}", file=sys.stderr)
    minutes, seconds = divmod(int(time.time() - started), 60)
    print(f"\nthe story took {minutes}m{seconds:02d}s")
    print(
        "promotions={} rollbacks={} retunes={} real_node_pods={} operator={}".format(
            *counts, len(pods.seen), where
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
