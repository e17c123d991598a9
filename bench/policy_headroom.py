"""How far a priority function goes on the staying-tuned season: its headroom over S3-FIFO.

``staying_tuned.py`` compares continuous tuning with the best static policy, S3-FIFO.
Continuous tuning searches priority functions (examples/01's policy contract: the cache
samples residents and evicts the lowest priority), and S3-FIFO is not one: it keeps
queues. This benchmark asks how much a search of priority functions could gain at best.
It scores, on every phase of the season with the same held-out seeds:

- the example's static baselines (``baselines/``);
- hand-written probes (``bench/headroom/``): FIFO-ordered probation, request-rate
  estimates, inter-access gaps, log frequency, size-dependent probation;
- a grid of the hand-written hybrid's two constants (the probation offset and the bonus
  per access).

Per phase it takes the best of all of them: an *oracle* that switches, at no cost and with
no delay, to the best of these policies at every change. Its season score over S3-FIFO's
is what a continuous tuner that finds policies as good as these, instantly, would reach.
``--samples`` repeats it with more residents sampled per eviction (Redis's
``maxmemory-samples``), where a priority function orders the cache more exactly.

    .venv/bin/python bench/policy_headroom.py [--quick] [--samples 8 16 32]

Writes ``bench/results/policy_headroom.{json,md}``; the last line is
``oracle_vs_s3fifo=<ratio at the first --samples> best_single_vs_s3fifo=<ratio>``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from staying_tuned import EXAMPLE, FULL, PHASES, QUICK, RESULTS, Plan, Scorer, phase_setups
from staying_tuned import season_score as weighted

PROBES = Path(__file__).resolve().parent / "headroom"
OFFSETS = (500, 1500, 4000)
BONUSES = (0, 100, 300)


def policies() -> dict[str, str]:
    """Every policy scored, by name."""
    found = {
        f"baseline {path.stem}": path.read_text()
        for path in sorted((EXAMPLE / "baselines").glob("*.py"))
    }
    found |= {f"probe {path.stem}": path.read_text() for path in sorted(PROBES.glob("*.py"))}
    for offset in OFFSETS:
        for bonus in BONUSES:
            found[f"hybrid offset {offset} bonus {bonus}"] = (
                "def priority(size, now, last_access, access_count, insert_time, "
                "evicted_count, last_evicted):\n"
                f"    proven = 0.0 if access_count == 1 and evicted_count == 0 else {offset}.0\n"
                f"    return last_access + proven + {bonus}.0 * min(access_count, 8)\n"
            )
    return found


def sampled(plan: Plan, samples: int) -> Scorer:
    setups = [
        replace(
            setup,
            context=setup.context.model_copy(
                update={"params": {**setup.context.params, "eviction_samples": samples}}
            ),
        )
        for setup in phase_setups(plan)
    ]
    return Scorer(setups, plan.holdout_seeds)


def measure(plan: Plan, samples: int, programs: dict[str, str]) -> dict[str, Any]:
    scorer = sampled(plan, samples)
    reference = [scorer.score(programs["baseline lru"], i, "s3fifo") for i in range(len(PHASES))]
    scores = {
        name: [scorer.score(code, i) for i in range(len(PHASES))] for name, code in programs.items()
    }
    oracle = [max(column) for column in zip(*scores.values(), strict=True)]
    best_single = max(scores, key=lambda name: weighted(scores[name]))
    return {
        "samples": samples,
        "s3fifo": reference,
        "scores": scores,
        "oracle": oracle,
        "oracle_policies": [
            max(scores, key=lambda name: scores[name][phase]) for phase in range(len(PHASES))
        ],
        "best_single": best_single,
        "oracle_vs_s3fifo": weighted(oracle) / weighted(reference),
        "best_single_vs_s3fifo": weighted(scores[best_single]) / weighted(reference),
        "evaluations": scorer.evaluations,
    }


def markdown(result: dict[str, Any]) -> str:
    names = [phase.name for phase in PHASES]
    lines = [
        f"# Priority-function headroom over S3-FIFO ({'--quick' if result['quick'] else 'full'})",
        "",
        f"{result['date']} on {result['machine']}; {len(result['policies'])} policies; "
        f"{result['seconds']} s.",
    ]
    for run in result["runs"]:
        lines += [
            "",
            f"## {run['samples']} residents sampled per eviction",
            "",
            "| policy | " + " | ".join(names) + " | season |",
            "|---" * (len(names) + 2) + "|",
        ]
        rows = {
            "S3-FIFO (built-in reference)": run["s3fifo"],
            "oracle (best per phase)": run["oracle"],
            f"best single: {run['best_single']}": run["scores"][run["best_single"]],
        }
        for name, scores in rows.items():
            cells = " | ".join(f"{s:.4f}" for s in scores)
            lines.append(f"| {name} | {cells} | {weighted(scores):.4f} |")
        lines += [
            "",
            "Best per phase: " + "; ".join(run["oracle_policies"]) + ".",
            f"oracle / S3-FIFO {run['oracle_vs_s3fifo']:.4f}, best single / S3-FIFO "
            f"{run['best_single_vs_s3fifo']:.4f}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="staying_tuned's --quick traces")
    parser.add_argument(
        "--samples", type=int, nargs="+", default=[8], help="residents sampled per eviction"
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if any(not 1 <= n <= 64 for n in args.samples):
        parser.error("--samples: each between 1 and 64, as the example's eviction_samples")
    plan = QUICK if args.quick else FULL
    programs = policies()
    started = time.monotonic()
    runs = []
    for samples in args.samples:
        runs.append(measure(plan, samples, programs))
        print(
            f"{samples} samples: oracle/S3-FIFO {runs[-1]['oracle_vs_s3fifo']:.4f} "
            f"({runs[-1]['evaluations']} evaluations, {time.monotonic() - started:.0f} s)",
            flush=True,
        )
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "quick": args.quick,
        "policies": sorted(programs),
        "phases": [phase.name for phase in PHASES],
        "runs": runs,
        "seconds": round(time.monotonic() - started, 1),
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (args.results_dir / f"policy_headroom{suffix}.json").write_text(json.dumps(result, indent=2))
    (args.results_dir / f"policy_headroom{suffix}.md").write_text(markdown(result))
    print(markdown(result))
    first = runs[0]
    print(
        f"oracle_vs_s3fifo={first['oracle_vs_s3fifo']:.4f} "
        f"best_single_vs_s3fifo={first['best_single_vs_s3fifo']:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
