"""The runs ``vs_peers.py`` compares: one framework searching one problem from one seed.

Every run gets a fresh stand-in server (``mutation_server.py``: ``small`` and ``large`` at
fixed prices, ``--fresh-repeats``), the same USD budget and the same evaluator, scored in
retune's sandbox. This module holds what every run shares -- the problems, the plan, the
record of a run -- and retune's own run: in-process, with the target's own search
settings and its LLM tiers (``small`` mutates, ``large`` makes initial-population
rewrites and paradigm shifts), its spend and scores read from its engine state and LLM
audit log. The peers' runs are in ``peer_frameworks.py``.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retune_search import Setup, run_search, usd_when_written
from server_process import MutationServerProcess, usd_of_stats

from retune.search.llm.audit import NOT_CALLS

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PROBLEMS = {
    "01-cache-eviction": REPO / "examples" / "01-cache-eviction" / "target.yaml",
    "02-request-routing": REPO / "examples" / "02-request-routing" / "target.yaml",
    "03-autoscaling": BENCH / "problems" / "03-autoscaling" / "target.yaml",
    "04-spot-scheduling": BENCH / "problems" / "04-spot-scheduling" / "target.yaml",
}
"""The benchmark's problems, by name: every benchmark takes them from here."""
SCORE_TOLERANCE = 1e-9  # evaluators round scores to 6 digits


@dataclass(frozen=True)
class Plan:
    """How much each run may do. USD binds; the other limits are wall-time guards."""

    seeds: list[int]
    budget_usd: float  # every framework's budget (a peer may end a little above: the
    # answers in flight when it stops still count)
    retune_max_evaluations: int
    openevolve_max_iterations: int
    peer_max_evaluations: int  # LEVI's and GEPA's


@dataclass
class Run:
    """One framework's search on one problem with one seed."""

    framework: str
    problem: str
    seed: int
    seed_score: float
    best_score: float
    usd: float  # what the server served, at its prices
    own_usd: float | None  # what the framework's own accounting says it spent
    tokens: dict[str, dict[str, int]]
    calls: int
    no_program_calls: int  # answers that gave the search nothing new to evaluate
    no_program_usd: float
    evaluations: int
    failed_evaluations: int  # rejected by the sandbox, raised or timed out
    wall_seconds: float
    stop: str
    # (USD spent when the program was written, the same without no-program calls, its
    # score), one per scored program
    points: list[tuple[float, float, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return sum(u["prompt_tokens"] + u["completion_tokens"] for u in self.tokens.values())

    def usd_to_reach(self, score: float, net: bool = False) -> float | None:
        return usd_to_reach(self.points, score, net)


def usd_to_reach(
    points: list[tuple[float, float, float]], score: float, net: bool = False
) -> float | None:
    """The spend when the first program scoring at least ``score`` was written, from a
    run's (USD, USD without no-program calls, score) points; with ``net``, not counting
    those calls. None if no program scored that much."""
    reached = [
        net_usd if net else usd for usd, net_usd, s in points if s >= score - SCORE_TOLERANCE
    ]
    return min(reached) if reached else None


# -- retune ----------------------------------------------------------------------------------
def with_search(setup: Setup, patch: dict[str, Any]) -> Setup:
    """``setup`` with ``spec.search`` patched (a variant of retune's defaults): its
    settings by field name, ``tiering`` as a patch of its own."""
    if not patch:
        return setup
    spec = setup.target.spec
    updates = dict(patch)
    if "tiering" in updates:
        updates["tiering"] = spec.search.tiering.model_copy(update=updates["tiering"])
    search = spec.search.model_copy(update=updates)
    target = setup.target.model_copy(update={"spec": spec.model_copy(update={"search": search})})
    return replace(setup, target=target)


def run_retune(
    variant: str,
    patch: dict[str, Any],
    problem: str,
    setup: Setup,
    seed: int,
    plan: Plan,
    work: Path,
) -> Run:
    output = work / problem / f"{variant}-seed{seed}"
    shutil.rmtree(output, ignore_errors=True)
    with MutationServerProcess(seed=0, fresh_repeats=True) as server:
        started = time.monotonic()
        result = run_search(
            with_search(setup, patch),
            output,
            seed=seed,
            max_evaluations=plan.retune_max_evaluations,
            max_usd=plan.budget_usd,
            llm_base_url=server.base_url,
        )
        wall = time.monotonic() - started
        stats, calls = server.stats(), server.calls()
    notes = []
    served = usd_of_stats(stats)
    if abs(served - result.usd) > 1e-9:
        notes.append(f"retune's ledger says ${result.usd:.6f}, the server ${served:.6f}")
    # Calls answered with nothing to evaluate; a call the ledger refused, or a tier's
    # rest, made none.
    unusable = [e for e in result.audit if e.get("outcome") not in NOT_CALLS | {"ok"}]
    return Run(
        framework=variant,
        problem=problem,
        seed=seed,
        seed_score=result.seed_score,
        best_score=result.best_score,
        usd=served,
        own_usd=round(result.usd, 6),
        tokens=stats,
        calls=len(calls),
        no_program_calls=len(unusable),
        no_program_usd=round(sum(float(entry.get("usd", 0.0)) for entry in unusable), 6),
        evaluations=result.evaluations,
        failed_evaluations=failed_evaluations(result.state.history),
        wall_seconds=round(wall, 1),
        stop=result.state.stop_reason or "",
        points=usd_when_written(result),
        notes=notes,
    )


SCORED_FAILURES = (None, "cascade", "no-op")
"""History failures of candidates that were scored (the quick stage) and not kept."""


def failed_evaluations(history: list[Any]) -> int:
    """Evaluated candidates that produced no score (a cascade rejection is a score, too
    low to go on, and a no-op scored exactly as its parent: neither is a failure)."""
    failed, evaluations = 0, 0
    for point in history:
        evaluated = point.evaluations > evaluations
        evaluations = point.evaluations
        if evaluated and point.score is None and point.failure not in SCORED_FAILURES:
            failed += 1
    return failed
