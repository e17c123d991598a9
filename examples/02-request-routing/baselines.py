"""Print the baseline tables of this example's README: the same policies, two GPU pools.

    .venv/bin/python examples/02-request-routing/baselines.py
    .venv/bin/python examples/02-request-routing/baselines.py --gpu NVIDIA-A10G --gpu NVIDIA-A100-SXM4-80GB

Every cell is scored by ``evaluator.evaluate`` -- the same function the search calls,
policies loaded through the same sandboxed loader -- on the recorded profile and evaluator
parameters of ``target.yaml``, with only the ``nvidia.com/gpu.product`` label changed.
The pool is sized for each GPU (``params.replicas: auto``), as an autoscaler would.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
from retune.evaluate.loader import load_evaluator  # noqa: E402

evaluator = load_evaluator(HERE / "evaluator.py")

GPU_LABEL = "nvidia.com/gpu.product"
DEFAULT_GPUS = ("NVIDIA-H100-80GB-HBM3", "NVIDIA-L4")

# (row label, policy file in baselines/)
BASELINES: tuple[tuple[str, str], ...] = (
    ("least queue (seed)", "least_queue.py"),
    ("prefix affinity, bounded", "prefix_affinity.py"),
    ("cache-aware TTFT", "cache_aware.py"),
    ("KV-slot balance", "kv_balance.py"),
    ("hybrid: cache-aware + KV-slot penalty", "hybrid.py"),
)
HAND_PICKED = BASELINES[:4]  # the four single-idea rules; the hybrid combines two of them


def recorded_context(gpu: str | None = None) -> dict[str, Any]:
    """The evaluation context ``retune run`` builds from target.yaml (seed 0)."""
    spec = yaml.safe_load((HERE / "target.yaml").read_text())["spec"]
    hardware = dict(spec["hardware"]["recorded"])
    if gpu is not None and gpu != hardware.get(GPU_LABEL):
        # Another node pool: drop the recorded node's instance type and GPU labels.
        hardware = {
            key: value
            for key, value in hardware.items()
            if not key.startswith(("node.kubernetes.io/", "nvidia.com/"))
        }
        hardware[GPU_LABEL] = gpu
    return {
        "workload": json.loads((HERE / spec["profile"]["recorded"]).read_text()),
        "hardware": hardware,
        "params": dict(spec["evaluator"].get("params") or {}),
        "seed": 0,
    }


def score(policy_file: str, gpu: str, stage: str = "full", seed: int = 0) -> dict[str, Any]:
    """Score one baseline on one GPU pool."""
    context = {**recorded_context(gpu), "seed": seed}
    return evaluator.evaluate(str(HERE / "baselines" / policy_file), context, stage)


def baseline_table(gpus: tuple[str, ...] = DEFAULT_GPUS) -> dict[str, dict[str, dict]]:
    """gpu -> row label -> full result (with the held-out score added)."""
    table: dict[str, dict[str, dict]] = {}
    for gpu in gpus:
        table[gpu] = {}
        for label, policy_file in BASELINES:
            result = score(policy_file, gpu)
            result["holdout"] = score(policy_file, gpu, "holdout", seed=1)["score"]
            table[gpu][label] = result
    return table


def best_single_idea(rows: dict[str, dict]) -> str:
    """The best of the four single-idea rules (the hybrid left out)."""
    return max((label for label, _ in HAND_PICKED), key=lambda label: rows[label]["score"])


def table_lines(gpus: tuple[str, ...] = DEFAULT_GPUS) -> list[str]:
    """The tables as printed (and as pasted into the README)."""
    table = baseline_table(gpus)
    lines: list[str] = []
    for gpu in gpus:
        pool = next(iter(table[gpu].values()))["metrics"]
        lines += [
            f"{gpu}: {pool['replicas']:.0f} replicas, each with a "
            f"{pool['prefix_cache_tokens'] / 1000:.0f}k-token prefix cache and "
            f"{pool['max_running']:.0f} decode slots",
            "",
            "| policy | full | low | medium | high | holdout | p99 TTFT at high load |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += format_rows(table[gpu])
        lines += ["", f"best single-idea rule: {best_single_idea(table[gpu])}", ""]
    return lines


def format_rows(rows: dict[str, dict]) -> list[str]:
    """One GPU's table rows, as Markdown."""
    lines = []
    for label, result in rows.items():
        sub = result["subscores"]
        lines.append(
            f"| {label} | {result['score']:.4f} | {sub['low']:.4f} | {sub['medium']:.4f} "
            f"| {sub['high']:.4f} | {result['holdout']:.4f} "
            f"| {result['metrics']['high_p99_ttft_s']:.2f} s |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--gpu", action="append", metavar="PRODUCT", help=f"a {GPU_LABEL} value (repeatable)"
    )
    args = parser.parse_args(argv)
    print("\n".join(table_lines(tuple(args.gpu or DEFAULT_GPUS))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
