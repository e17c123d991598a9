"""retune's LLM search against models that answer badly: the zoo of ``zoo.py``.

For every behaviour of the zoo (and ``none``, the well-behaved stand-in), it runs retune's
search on examples 01 and 02 and ``bench/problems/03-autoscaling`` with both tiers showing
that behaviour (``small:<behaviour>`` mutates, ``large:<behaviour>`` shifts paradigms, at
the stand-in's prices), at a fixed budget, and reports per behaviour:

* the usable call share: calls that produced an evaluable program (parsed, mended where
  safe, accepted by the sandbox's allowlist, not a known program) over all paid calls,
  repair rounds included (from retune's own audit log);
* the best score per problem at that budget.

    .venv/bin/python bench/model_zoo.py --quick   # $0.01 a run, at most 40 evaluations
    .venv/bin/python bench/model_zoo.py           # $0.03 a run, at most 120 evaluations

Last line: ``min_usable_call_share=<x>`` (the smallest share over behaviours).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peer_runs import PROBLEMS
from retune_search import SearchResult, load_setup, run_search
from server_process import MODELS, MutationServerProcess
from zoo import BEHAVIOURS

from retune.local.tiers import TierOption
from retune.search.llm.audit import NOT_CALLS, RESTED

WELL_BEHAVED = "none"


@dataclass
class Tally:
    """One behaviour's calls and best scores, over problems."""

    behaviour: str
    paid: int = 0
    usable: int = 0
    repairs: int = 0
    rests: int = 0  # rests a tier began (docs/llm.md, "A tier that keeps failing rests")
    usd: float = 0.0
    best: dict[str, float] = field(default_factory=dict)

    @property
    def share(self) -> float:
        return self.usable / self.paid if self.paid else 0.0

    def add(self, problem: str, result: SearchResult) -> None:
        calls = [line for line in result.audit if line["outcome"] not in NOT_CALLS]
        self.paid += len(calls)
        self.usable += sum(line["outcome"] == "ok" for line in calls)
        self.repairs += sum(bool(line.get("repair")) for line in calls)
        self.rests += sum(line["outcome"] == RESTED for line in result.audit)
        self.usd += result.usd
        self.best[problem] = result.best_score


def zoo_tiers(behaviour: str) -> list[TierOption]:
    """The stand-in's two models showing ``behaviour``, at their prices."""
    suffix = "" if behaviour == WELL_BEHAVED else f":{behaviour}"
    return [
        TierOption(role, f"{card.name}{suffix}", card.input_per_million, card.output_per_million)
        for role, card in (("mutate", MODELS["small"]), ("paradigm", MODELS["large"]))
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller budget per run")
    parser.add_argument("--behaviours", nargs="+", default=[WELL_BEHAVED, *BEHAVIOURS])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-usd", type=float, help="USD per run")
    parser.add_argument("--max-evaluations", type=int, help="evaluations per run")
    parser.add_argument(
        "--faults",
        default="",
        help='the stand-in\'s faults for every run, e.g. "garbage@small:1.0" (a model '
        "whose every answer is prose)",
    )
    args = parser.parse_args(argv)
    budget = args.budget_usd or (0.01 if args.quick else 0.03)
    evaluations = args.max_evaluations or (40 if args.quick else 120)
    tallies = []
    with (
        MutationServerProcess(seed=args.seed, faults=args.faults) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for behaviour in args.behaviours:
            tally = Tally(behaviour)
            for problem in args.problems:
                result = run_search(
                    load_setup(PROBLEMS[problem]),
                    Path(tmp) / behaviour / problem,
                    seed=args.seed,
                    max_evaluations=evaluations,
                    max_usd=budget,
                    llm_base_url=server.base_url,
                    tiers=zoo_tiers(behaviour),
                )
                tally.add(problem, result)
            tallies.append(tally)
            print(
                f"{behaviour}: usable {tally.usable}/{tally.paid} calls ({tally.share:.2f}), "
                f"{tally.repairs} repairs, {tally.rests} rests, ${tally.usd:.4f}",
                flush=True,
            )
    print()
    print(table(tallies, args.problems, budget, evaluations))
    print(f"min_usable_call_share={min(t.share for t in tallies):.2f}")


def table(tallies: list[Tally], problems: list[str], budget: float, evaluations: int) -> str:
    head = "| behaviour | paid calls | usable share | repairs | rests | " + " | ".join(
        f"best {p.split('-')[0]}" for p in problems
    )
    rows = [
        head + " |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(problems),
    ]
    for t in tallies:
        bests = " | ".join(f"{t.best[p]:.4f}" for p in problems)
        rows.append(
            f"| {t.behaviour} | {t.paid} | {t.share:.2f} | {t.repairs} | {t.rests} | {bests} |"
        )
    rows.append(f"\n(${budget} and at most {evaluations} evaluations per run)")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
