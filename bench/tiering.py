"""Two tiers against the cheap tier alone, at the same budget: does the strong tier pay?

For each problem (examples 01 and 02, ``bench/problems/03-autoscaling``) and seed, retune
searches twice on a fresh stand-in server: with both tiers (``small`` mutates, ``large``
diversifies the initial population and shifts paradigms, within
``spec.search.tiering.strongShare`` of the USD budget, 0.3 by default) and with ``small``
alone. Reported per run: best score, USD, the strong tier's USD and its share.

    .venv/bin/python bench/tiering.py [--seeds 3] [--budget-usd 0.06] [--max-evaluations 80]

The strong tier's output limit is ``--strong-max-output-tokens`` (384): a call reserves
its worst case (prompt bytes plus that limit at the large model's prices) against the
strong tier's share, and at these budgets a 2048-token limit would not fit the share at
all. Last line: ``two_tier_at_least_cheap=<k>/<n> max_strong_share=<x>`` (runs where two
tiers reached at least the cheap tier's best, out of all; the largest strong share).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peer_runs import PROBLEMS
from retune_search import STAND_IN_TIERS, SearchResult, load_setup, run_search
from server_process import MutationServerProcess

CONFIGS = {"two-tier": STAND_IN_TIERS, "cheap-only": STAND_IN_TIERS[:1]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS))
    parser.add_argument("--budget-usd", type=float, default=0.06)
    parser.add_argument("--max-evaluations", type=int, default=80)
    parser.add_argument("--strong-max-output-tokens", type=int, default=384)
    args = parser.parse_args(argv)
    rows = [
        "| problem | seed | cheap-only best | two-tier best | Δ | two-tier USD | strong USD | strong share |"
    ]
    rows.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    wins = total = 0
    max_share = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for problem in args.problems:
            for seed in range(args.seeds):
                results: dict[str, SearchResult] = {}
                for name, tiers in CONFIGS.items():
                    with MutationServerProcess(seed=seed) as server:
                        results[name] = run_search(
                            load_setup(PROBLEMS[problem]),
                            Path(tmp) / problem / str(seed) / name,
                            seed=seed,
                            max_evaluations=args.max_evaluations,
                            max_usd=args.budget_usd,
                            llm_base_url=server.base_url,
                            tiers=tiers,
                            max_output_tokens={"paradigm": args.strong_max_output_tokens},
                        )
                two, cheap = results["two-tier"], results["cheap-only"]
                strong = two.state.ledger.strong_usd
                share = strong / args.budget_usd
                max_share = max(max_share, share)
                total += 1
                wins += two.best_score >= cheap.best_score - 1e-9
                line = (
                    f"| {problem} | {seed} | {cheap.best_score:.4f} | {two.best_score:.4f} | "
                    f"{two.best_score - cheap.best_score:+.4f} | {two.usd:.4f} | {strong:.4f} | "
                    f"{share:.2f} |"
                )
                rows.append(line)
                print(line, flush=True)
    print()
    print("\n".join(rows))
    print(f"two_tier_at_least_cheap={wins}/{total} max_strong_share={max_share:.2f}")


if __name__ == "__main__":
    main()
