"""Print the baseline table of this example's README.

    .venv/bin/python examples/01-cache-eviction/baselines.py
    .venv/bin/python examples/01-cache-eviction/baselines.py --hardware node.kubernetes.io/instance-type=r6i.2xlarge
    .venv/bin/python examples/01-cache-eviction/baselines.py --json > examples/01-cache-eviction/baselines.json

Every row is scored by ``evaluator.evaluate`` -- the same function the search calls,
policies loaded through the same sandboxed loader -- on the recorded profile, hardware
and evaluator parameters of ``target.yaml``. The ``full`` columns use the search's trace
seeds, ``holdout`` the held-out seed the validation step uses first. ``--json`` prints
the ``full`` scores with the context they were measured in: ``baselines.json``, which a
run's report draws as reference lines when the run evaluates in that same context.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from cache_model import parse_inputs  # noqa: E402  (needs HERE on sys.path)

from retune.evaluate.loader import load_evaluator  # noqa: E402

evaluator = load_evaluator(HERE / "evaluator.py")

# (row label, policy file in baselines/, built-in reference or None)
BASELINES: tuple[tuple[str, str, str | None], ...] = (
    (SEED_ROW := "LRU (seed)", "lru.py", None),
    ("LFU", "lfu.py", None),
    ("LRU + 300 s per access", "lru_frequency.py", None),
    ("scan-resistant hybrid", "scan_resistant.py", None),
    ("S3-FIFO (built-in reference)", "lru.py", "s3fifo"),
)


def recorded_context(hardware: dict[str, str] | None = None) -> dict[str, Any]:
    """The evaluation context ``retune run`` builds from target.yaml (seed 0)."""
    spec = yaml.safe_load((HERE / "target.yaml").read_text())["spec"]
    return {
        "workload": json.loads((HERE / spec["profile"]["recorded"]).read_text()),
        "hardware": {**spec["hardware"]["recorded"], **(hardware or {})},
        "params": dict(spec["evaluator"].get("params") or {}),
        "seed": 0,
    }


def score_baseline(
    policy_file: str, reference: str | None, stage: str, context: dict[str, Any]
) -> dict[str, Any]:
    """Score one baseline row with the evaluator."""
    if reference is not None:
        context = {**context, "params": {**context["params"], "reference": reference}}
    return evaluator.evaluate(str(HERE / "baselines" / policy_file), context, stage)


def baseline_table(hardware: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per baseline: full score and phase subscores, and the held-out score."""
    context = recorded_context(hardware)
    holdout = {**context, "seed": context["seed"] + 1}
    rows = []
    for label, policy_file, reference in BASELINES:
        full = score_baseline(policy_file, reference, "full", context)
        rows.append(
            {
                "policy": label,
                "score": full["score"],
                **full["subscores"],
                "holdout": score_baseline(policy_file, reference, "holdout", holdout)["score"],
            }
        )
    return rows


def table_lines(hardware: dict[str, str] | None = None) -> list[str]:
    """The table as printed (and as pasted into the README)."""
    context = recorded_context(hardware)
    workload, params, _ = parse_inputs(context)
    cache = evaluator.cache_capacity(workload, params, context["hardware"])
    lines = [
        f"hardware {context['hardware']}: {cache['cache_bytes'] / 2**30:.1f} GiB of cache "
        f"({cache['memory_source']}), {cache['cache_share']:.1%} of the working set",
        "",
        "| policy | full | steady | scan | shift | holdout |",
        "|---|---|---|---|---|---|",
    ]
    return lines + format_rows(baseline_table(hardware))


def format_rows(rows: list[dict[str, Any]]) -> list[str]:
    """The table's rows, as Markdown."""
    return [
        f"| {row['policy']} | {row['score']:.4f} | {row['steady']:.4f} | {row['scan']:.4f} "
        f"| {row['shift']:.4f} | {row['holdout']:.4f} |"
        for row in rows
    ]


def baseline_document(table: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``baselines.json`` from ``table`` (default: measured now): the rows other than the
    seed (a run draws its own seed), with the context they were scored in."""
    rows = [row for row in table or baseline_table() if row["policy"] != SEED_ROW]
    return {
        "stage": "full",
        "context": recorded_context(),
        "baselines": [
            {
                "policy": row["policy"],
                "score": row["score"],
                "subscores": {k: row[k] for k in ("steady", "scan", "shift")},
            }
            for row in rows
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--hardware",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recorded hardware label, e.g. node.kubernetes.io/instance-type=r6i.2xlarge",
    )
    parser.add_argument(
        "--json", action="store_true", help="print baselines.json (the recorded context only)"
    )
    args = parser.parse_args(argv)
    if args.json:
        print(json.dumps(baseline_document(), indent=2, sort_keys=True))
        return 0
    print("\n".join(table_lines(dict(item.split("=", 1) for item in args.hardware))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
