"""retune's local search, wired for benchmarks: one target, any profile, warm starts.

It is ``retune run`` (``retune.local.run``) without the report and the validation step,
plus what the benchmarks vary: the workload profile and the hardware handed to the
evaluator (to shift them), and ``warm_programs`` (to warm-start from a previous archive).
The engine, the mutators, the sandboxed local executor and the USD ledger are retune's
own, unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mutation_server import MODELS

from retune.evaluate.contract import EvaluationContext, SandboxLimits
from retune.evaluate.local import LocalExecutor
from retune.evaluate.podspec import sandbox_limits
from retune.local.inputs import RunError, evaluation_context, mutator_and_tiers
from retune.local.run import RunOptions, read_profile, read_seed_code
from retune.local.tiers import TierOption
from retune.search import builder
from retune.search.builder import SearchBuilder, SearchSetup
from retune.search.ledger import Budget
from retune.search.state import EngineState
from retune.spec import OptimizationTarget, load_target
from retune.store.file import FileStore

AUDIT_LOG = "llm-calls.jsonl"
# The stand-in server's two models at its own prices: small mutates, large shifts paradigms.
STAND_IN_TIERS = [
    TierOption(role, card.name, card.input_per_million, card.output_per_million)
    for role, card in (("mutate", MODELS["small"]), ("paradigm", MODELS["large"]))
]


@dataclass
class Setup:
    """A target made ready to search: its seed, evaluator, sandbox and context."""

    path: Path
    target: OptimizationTarget
    evaluator_path: Path
    seed_code: str
    context: EvaluationContext
    limits: SandboxLimits

    @property
    def entrypoint(self) -> str:
        return self.target.spec.policy.entrypoint


def load_setup(
    target_path: Path,
    *,
    workload: dict[str, float] | None = None,
    hardware_labels: dict[str, str] | None = None,
) -> Setup:
    """The target at ``target_path``, with its recorded profile unless ``workload`` is
    given and its recorded node labels unless ``hardware_labels`` is given."""
    target = load_target(target_path)
    spec = target.spec
    base = target_path.parent
    if hardware_labels is not None:
        hardware = spec.hardware.model_copy(update={"recorded": hardware_labels})
        spec = spec.model_copy(update={"hardware": hardware})
        target = target.model_copy(update={"spec": spec})
    assert spec.evaluator.module is not None, "benchmark targets name their evaluator module"
    context = evaluation_context(
        spec, workload if workload is not None else read_profile(spec, base)
    )
    return Setup(
        path=target_path,
        target=target,
        evaluator_path=(base / spec.evaluator.module).resolve(),
        seed_code=read_seed_code(spec, base),
        context=context,
        limits=sandbox_limits(spec.evaluator),
    )


@dataclass
class SearchResult:
    """What one search did: its final state and where its files are."""

    state: EngineState
    output: Path
    warm_count: int = 0  # candidates 1..warm_count were warm programs
    audit: list[dict[str, Any]] = field(default_factory=list)  # LLM calls, in order

    @property
    def wall_seconds(self) -> float:
        return self.state.ledger.wall_seconds

    @property
    def best_score(self) -> float:
        assert self.state.best is not None
        return self.state.best.score

    @property
    def seed_score(self) -> float:
        assert self.state.seed_elite is not None
        return self.state.seed_elite.score

    @property
    def usd(self) -> float:
        return self.state.ledger.usd_spent

    @property
    def evaluations(self) -> int:
        """Every evaluation, the free start's included."""
        return self.state.ledger.evaluations + self.state.ledger.free_evaluations

    def elites(self) -> list[str]:
        """The archive's programs, best first (what a warm start re-scores)."""
        return builder.warm_programs(self.state)


def run_search(
    setup: Setup,
    output: Path,
    *,
    seed: int,
    max_evaluations: int,
    max_usd: float | None = None,
    llm_base_url: str | None = None,
    warm_programs: list[str] | None = None,
    workers: int | None = None,
    tiers: list[TierOption] | None = None,
    max_output_tokens: dict[str, int] | None = None,
) -> SearchResult:
    """Search ``setup`` to its budget with the built-in mutator, or with the LLM tiers
    against ``llm_base_url``: ``tiers`` (by default the stand-in server's two models at
    its prices), with ``max_output_tokens`` per role where given."""
    spec = setup.target.spec
    options = RunOptions(
        output=output,
        seed=seed,
        mutator="llm" if llm_base_url else "builtin",
        llm_base_url=llm_base_url,
        models=(STAND_IN_TIERS if tiers is None else tiers) if llm_base_url else [],
        show_progress=False,
    )
    mutator_kind, models, problems = mutator_and_tiers(spec, options)
    if problems:
        raise RunError("; ".join(str(problem) for problem in problems))
    search = SearchBuilder(
        SearchSetup(
            spec,
            setup.context,
            seed_code=setup.seed_code,
            evaluator_identity=setup.evaluator_path.read_text(),
            budget=Budget(max_evaluations=max_evaluations, max_usd=max_usd),
            seed=seed,
            mutator=mutator_kind,
            models=models,
        )
    )
    output.mkdir(parents=True, exist_ok=True)
    ledger = search.ledger()
    mutator = search.mutator(ledger, audit_path=output / AUDIT_LOG)
    for tier in getattr(mutator, "tiers", []):
        tier.max_output_tokens = (max_output_tokens or {}).get(tier.role, tier.max_output_tokens)
    with LocalExecutor(
        setup.evaluator_path, setup.entrypoint, setup.limits, workers=workers
    ) as executor:
        state = (
            search.build(
                executor=executor,
                store=FileStore(output / "checkpoint.retune"),
                ledger=ledger,
                mutator=mutator,
                warm_programs=warm_programs,
            )
            .run()
            .state
        )
    audit_path = output / AUDIT_LOG
    audit = (
        [json.loads(line) for line in audit_path.read_text().splitlines() if line.strip()]
        if audit_path.exists()
        else []
    )
    return SearchResult(state, output, warm_count=len(warm_programs or []), audit=audit)


def usd_when_written(result: SearchResult) -> list[tuple[float, float, float]]:
    """(USD spent when the program was written, the same without wasted calls, its full
    score) for every scored candidate.

    The spend is the sum of every LLM call the audit log records up to and including the
    last call for that candidate, in the order the calls finished -- so calls for later
    candidates that finished first count too, as they had been paid for by then. Wasted
    calls are those whose answer the mutator could not use (no program, a duplicate).
    The seed and warm programs were written for free, and so were the free start's
    programs (``spec.search.freeStart``), scored before the models' search began.
    """
    cumulative: dict[int, tuple[float, float]] = {}
    spent = net = 0.0
    for entry in result.audit:
        usd = float(entry.get("usd", 0.0))
        spent += usd
        net += usd if entry.get("outcome") == "ok" else 0.0
        cumulative[int(entry["candidate_index"])] = (spent, net)
    free = result.state.free_start
    points = [(0.0, 0.0, p.score) for p in free.history if p.score is not None] if free else []
    for point in result.state.history:
        if point.score is None:
            continue
        if point.index <= result.warm_count:
            written = (0.0, 0.0)
        else:
            # A candidate with no call on record (the built-in mutator wrote it) was
            # written by the time it was applied: the ledger's spend then bounds it.
            written = cumulative.get(point.index, (point.usd, point.usd))
        points.append((*written, point.score))
    return points
