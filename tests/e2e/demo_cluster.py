"""The continuous-tuning story on the test control plane, told as a timeline.

    python -m tests.e2e.demo_cluster          (make demo-cluster)

Starts the test control plane and Prometheus (as the test fixtures do), installs the
chart's identity, runs the operator as a real process, and plays the end-to-end scenes
(:mod:`tests.e2e.scenarios`) against examples/01's cache service under load: a target
tuned and promoted, retuned on an SLO violation and on new hardware; a target retuned
on a drifting profile; a rollout paused, aborted and promoted by hand; a canary whose
analysis fails; Prometheus stopped mid-canary; the operator killed at every canary step.
After each scene it prints what the operator did and why, from the target's Events. The
last line counts the outcomes: ``promotions=N rollbacks=M retunes=K``.

Needs what ``make test-e2e`` needs (``make testbin prometheus``); takes about 6 minutes on
2 cores. ``RETUNE_KEEP_TEST_DIRS=1`` keeps the logs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
    plane = ControlPlane(testbin_dir(), workdir / "cluster", CRD_DIRS)
    prometheus = PrometheusServer(find_prometheus(), workdir / "prometheus")
    try:
        print("starting the test control plane and Prometheus ...", flush=True)
        plane.start()
        prometheus.start()
        yield plane, prometheus
    finally:
        prometheus.stop()
        plane.stop()


def timeline(story: CacheStory, started: float) -> list[str]:
    """The target's Events (``!`` marks a warning) and what the scene did (``>``), one line
    each, timed from the start of the demo."""
    lines = []
    for entry in story.timeline():
        offset = max(0, int(entry.at.timestamp() - started))
        mark = {"Warning": "!", "Action": ">"}.get(entry.type, " ")
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
            if not env.operator.process.running:
                env.operator.start()
            env.prometheus.start()
        print("\n".join(timeline(story, started)))
        print(summary(status), flush=True)
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
            roles = [role for role, _, _ in SCENES]
            with environment(plane, prometheus, roles, workdir / "operator") as env:
                counts = play(env, started)
        ok = True
    finally:
        if ok and os.environ.get(KEEP_ENV) != "1":
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"\nlogs kept in {workdir}", file=sys.stderr)
    minutes, seconds = divmod(int(time.time() - started), 60)
    print(f"\nthe story took {minutes}m{seconds:02d}s")
    print("promotions={} rollbacks={} retunes={}".format(*counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
