"""How much of the local executor's capacity the harness costs, per evaluation length.

The evaluator used here is this file: ``evaluate()`` loads the policy through the retune
loader, calls it once, then busy-loops until ``busy_seconds`` of wall time have passed.

Definition. N evaluations run on W workers and take wall time T; each outcome reports
``evaluator_seconds``, the time spent inside ``evaluate()`` (measured in the candidate
process). The harness overhead is the share of worker capacity not spent inside
``evaluate()``:

    overhead = 1 - sum(evaluator_seconds) / (W * T)

It covers everything the harness adds: the executor queue and JSON between executor and
worker, the static allowlist check, writing the policy file, handing the task to the
(pre-forked, pre-confined) candidate process, the result frame, reaping, validation, and
idle time. Loading the policy happens inside ``evaluate()`` and so counts as evaluator
time, as would any time the evaluation itself was descheduled. The column "vs nominal"
uses the requested ``N * d`` instead of the measured sum: it also charges overshoot of
the busy loop (preemption by unrelated load on a shared machine) to the harness.

W = 1 puts every harness step on the critical path; W = the number of CPUs shows the
pool as used. The last line reports the larger of the two at 100 ms. Results depend on
other load on the machine: the table prints the load average it ran under.

Run: ``PYTHONPATH=operator .venv/bin/python bench/engine_overhead.py [--quick]``
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

POLICY = "def choose(x):\n    return 2 * x + 1\n"


def evaluate(policy_path: str, profile: dict[str, Any], subset: str) -> dict[str, Any]:
    """The synthetic evaluator: load the policy, call it once, spin for busy_seconds."""
    from retune.evaluate.loader import load_policy

    choose = load_policy(policy_path)
    started = time.perf_counter()
    value = choose(1.0)
    end = started + float(profile["params"]["busy_seconds"])
    while time.perf_counter() < end:
        pass
    return {"score": float(value)}


def measure(duration: float, count: int, workers: int) -> dict[str, float]:
    """Run ``count`` evaluations of ``duration`` seconds on ``workers`` workers."""
    from retune.evaluate.contract import EvaluationContext, EvaluationTask, SandboxLimits
    from retune.evaluate.local import LocalExecutor

    limits = SandboxLimits(wall_seconds=duration * 5 + 5, cpu_seconds=duration * 5 + 5)
    context = EvaluationContext(params={"busy_seconds": duration})
    tasks = [
        EvaluationTask(task_id=str(i), policy_code=POLICY, context=context) for i in range(count)
    ]
    with LocalExecutor(Path(__file__), "choose", limits, workers=workers) as executor:
        for future in [executor.submit(t) for t in tasks[: workers * 2]]:  # warm up
            future.result()
        started = time.perf_counter()
        outcomes = [f.result() for f in [executor.submit(t) for t in tasks]]
        wall = time.perf_counter() - started
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise SystemExit(f"{len(failed)} evaluations failed, e.g. {failed[0].detail}")
    inside = sum(o.evaluator_seconds for o in outcomes)
    return {
        "wall": wall,
        "harness_ms": (workers * wall - inside) / count * 1000,
        "overhead": 1.0 - inside / (workers * wall),
        "nominal": 1.0 - count * duration / (workers * wall),
    }


def main() -> None:
    """Print the overhead table and, last, ``overhead_at_100ms=<fraction>``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer evaluations")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    plan = [(0.01, 100, 500), (0.1, 20, 100), (1.0, 4, 8)]
    print(f"load average before: {os.getloadavg()[0]:.2f} on {cores} CPUs")
    print(
        f"{'eval':>6} {'workers':>7} {'count':>5} {'wall s':>7} {'harness ms':>10} "
        f"{'overhead':>8} {'vs nominal':>10}"
    )
    at_100ms = 0.0
    for duration, quick, full in plan:
        for workers in sorted({1, cores}):
            count = max(quick if args.quick else full, workers) // workers * workers
            row = measure(duration, count, workers)
            if duration == 0.1:
                at_100ms = max(at_100ms, row["overhead"])
            print(
                f"{duration * 1000:>4.0f}ms {workers:>7} {count:>5} {row['wall']:>7.2f} "
                f"{row['harness_ms']:>10.2f} {row['overhead']:>8.4f} {row['nominal']:>10.4f}"
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"overhead_at_100ms={at_100ms:.4f}")


if __name__ == "__main__":
    main()
