"""Print the baseline table of this problem's README.

    .venv/bin/python bench/problems/04-spot-scheduling/baselines.py

Every row is scored by ``evaluator.evaluate`` -- the same function the search calls,
policies loaded through the same sandboxed loader -- on the recorded profile and evaluator
parameters of ``target.yaml``. ``full`` uses the search's job seeds, ``holdout`` the
held-out seed the validation step uses first.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
from retune.evaluate.loader import load_evaluator  # noqa: E402

evaluator = load_evaluator(HERE / "evaluator.py")

# (row label, policy file relative to this directory)
BASELINES: tuple[tuple[str, str], ...] = (
    ("on-demand only", "baselines/on_demand.py"),
    ("greedy: spot until the slack runs out (seed)", "seed_policy.py"),
    ("uniform progress", "baselines/uniform_progress.py"),
    ("greedy with a slack buffer", "baselines/slack_buffer.py"),
)


def recorded_context(seed: int = 0) -> dict[str, Any]:
    """The evaluation context ``retune run`` builds from target.yaml."""
    spec = yaml.safe_load((HERE / "target.yaml").read_text())["spec"]
    return {
        "workload": json.loads((HERE / spec["profile"]["recorded"]).read_text()),
        "hardware": dict(spec["hardware"]["recorded"]),
        "params": dict(spec["evaluator"].get("params") or {}),
        "seed": seed,
    }


def baseline_table() -> dict[str, dict[str, Any]]:
    """Row label -> full result, with the held-out score added."""
    rows = {}
    for label, policy_file in BASELINES:
        path = str(HERE / policy_file)
        result = evaluator.evaluate(path, recorded_context(), "full")
        result["holdout"] = evaluator.evaluate(path, recorded_context(1), "holdout")["score"]
        rows[label] = result
    return rows


def best_baseline(rows: dict[str, dict[str, Any]]) -> str:
    """The label of the row with the best ``full`` score."""
    return max(rows, key=lambda label: rows[label]["score"])


def format_rows(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The table's rows, as Markdown."""
    lines = []
    for label, result in rows.items():
        sub, metrics = result["subscores"], result["metrics"]
        missed = sum(metrics[f"{regime}_missed"] for regime in sub)
        lines.append(
            f"| {label} | {result['score']:.4f} | {sub['calm']:.4f} | {sub['volatile']:.4f} "
            f"| {sub['drought']:.4f} | {result['holdout']:.4f} | {missed:.0f} |"
        )
    return lines


def main() -> int:
    rows = baseline_table()
    print("| policy | full | calm | volatile | drought | holdout | missed (full) |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(format_rows(rows)))
    print(f"\nbest baseline: {best_baseline(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
