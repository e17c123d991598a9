"""How much of an evaluation's wall time the harness costs, on the local executor.

The evaluator used here is this file: ``evaluate()`` loads the policy through the
retune loader, then busy-loops for exactly ``busy_seconds`` of wall time. The harness
overhead is everything that is not that busy loop: queueing and JSON between executor and
worker, the static allowlist check, writing the policy file, fork, confinement (rlimits,
privilege drop, Landlock), compiling and loading the policy, serialising and validating
the result, process exit and reaping.

Definition (throughput): N evaluations of d seconds each on W workers take wall time T;
the work that was asked for is N * d, the capacity used is W * T, so

    overhead = 1 - (N * d) / (W * T)

Idle time (a worker waiting for its next task) counts against the harness. With W equal
to the number of cores, the harness's own CPU work can run while another worker's
candidate spins, so the table also shows W = 1, where every step is on the critical path:
there the figure equals per-evaluation latency minus d, over latency. The last line
reports the larger (more pessimistic) of the two at 100 ms.

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
    overhead = 1.0 - count * duration / (workers * wall)
    return {
        "wall": wall,
        "overhead": overhead,
        "harness_ms": (workers * wall - count * duration) / count * 1000,
    }


def main() -> None:
    """Print the overhead table and, last, ``overhead_at_100ms=<fraction>``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer evaluations")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    plan = [(0.01, 40, 400), (0.1, 20, 60), (1.0, 4, 8)]
    print(
        f"{'eval':>6} {'workers':>7} {'count':>5} {'wall s':>7} {'harness ms':>10} {'overhead':>8}"
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
                f"{row['harness_ms']:>10.2f} {row['overhead']:>8.4f}"
            )
    print(f"overhead_at_100ms={at_100ms:.4f}")


if __name__ == "__main__":
    main()
