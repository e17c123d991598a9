"""A complete tuning run on one machine: load the target, search, validate, report."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from retune.evaluate.confine import missing_layers
from retune.evaluate.contract import EvaluationContext
from retune.evaluate.loader import EvaluatorLoadError
from retune.evaluate.local import LocalExecutor
from retune.evaluate.podspec import sandbox_limits
from retune.local.inputs import (
    CHECKPOINT,
    SPEND_JOURNAL,
    RunError,
    RunOptions,
    mutator_and_tiers,
    prepare,
    read_profile,
    read_seed_code,
)
from retune.local.progress import ProgressBar
from retune.local.report import render_report
from retune.search.archive import Archive
from retune.search.config import builtin_mutator, engine_config
from retune.search.engine import Engine
from retune.search.journal import SpendJournal
from retune.search.ledger import Ledger
from retune.search.mutation import Mutator
from retune.search.state import EngineState
from retune.search.validation import ValidationReport, validate
from retune.spec import OptimizationTarget, TargetSpec
from retune.store.file import FileStore

__all__ = [
    "RunError",
    "RunOptions",
    "build_mutator",
    "read_profile",
    "read_seed_code",
    "run_target",
]

log = logging.getLogger(__name__)


def build_mutator(
    target: OptimizationTarget,
    options: RunOptions,
    ledger: Ledger,
    audit_path: Path,
) -> Mutator:
    """The run's mutator: the built-in one, or the LLM tiers the spec and ``options``
    give (``RunError`` naming what to set if they cannot be used)."""
    spec = target.spec
    fallback = builtin_mutator(spec.policy)
    mutator, models, problems = mutator_and_tiers(spec, options)
    if problems:
        raise RunError("; ".join(str(problem) for problem in problems))
    if mutator != "llm":
        return fallback
    from retune.search.llm import build_llm_mutator

    search = spec.search.model_copy(update={"models": models})
    return build_llm_mutator(
        search, spec.policy, ledger, fallback, audit_path, seed=options.seed or search.seed
    )


def run_target(target_path: Path, options: RunOptions) -> dict[str, Any]:
    """Run a local search for the target at ``target_path``; return result.json's content."""
    inputs = prepare(target_path, options)
    target, spec = inputs.target, inputs.target.spec
    seed_code, context, budget = inputs.seed_code, inputs.context, inputs.budget
    config = engine_config(
        spec,
        context,
        seed_code=seed_code,
        evaluator_source=inputs.evaluator_path.read_text(),
        budget=budget,
        seed=options.seed,
    )
    if options.mutator or options.wants_llm:
        config.fingerprint += f"-{inputs.mutator}"
    output = options.output
    output.mkdir(parents=True, exist_ok=True)
    store = FileStore(output / CHECKPOINT)
    ledger = Ledger(budget, journal=SpendJournal(output / SPEND_JOURNAL))
    mutator = build_mutator(target, options, ledger, output / "llm-calls.jsonl")
    progress = ProgressBar() if options.show_progress else None
    try:
        executor = LocalExecutor(
            inputs.evaluator_path,
            spec.policy.entrypoint,
            sandbox_limits(spec.evaluator),
            workers=options.workers,
        )
    except EvaluatorLoadError as exc:
        raise RunError(f"spec.evaluator.module: {exc}") from None
    isolation = executor.isolation  # measured by a probe in the workers, not assumed
    for layer in missing_layers(isolation):
        print(f"retune: warning: sandbox layer missing: {layer}", file=sys.stderr)
    try:
        engine = Engine(
            config,
            seed_code=seed_code,
            mutator=mutator,
            executor=executor,
            store=store,
            ledger=ledger,
            on_progress=progress,
            resume=options.resume,
        )
        state = engine.run()
        if progress:
            progress.close()
        report = _validate(state, spec, executor, context)
    finally:
        executor.close()
    return _write_outputs(target, state, report, output, isolation, max_usd=budget.max_usd)


def _validate(
    state: EngineState, spec: TargetSpec, executor: LocalExecutor, context: EvaluationContext
) -> ValidationReport | None:
    if state.best is None or state.seed_elite is None or state.best.index == state.seed_elite.index:
        return None
    return validate(
        executor,
        context,
        candidate_code=state.best.code,
        stable_code=state.seed_elite.code,
        min_improvement=spec.evaluator.min_improvement,
        required_subscores=list(spec.evaluator.required_subscores),
        seeds=spec.evaluator.holdout_seeds,
    )


def _write_outputs(
    target: OptimizationTarget,
    state: EngineState,
    report: ValidationReport | None,
    output: Path,
    isolation: dict[str, Any],
    *,
    max_usd: float | None,
) -> dict[str, Any]:
    assert state.best is not None and state.seed_elite is not None
    best_path = output / "best_policy.py"
    best_path.write_text(state.best.code)
    ledger = state.ledger
    result: dict[str, Any] = {
        "target": target.metadata.name,
        "seed_score": state.seed_elite.score,
        "best_score": state.best.score,
        "improvement": (state.best.score - state.seed_elite.score)
        / max(abs(state.seed_elite.score), 1e-12),
        "evaluations": ledger.evaluations,
        "failed_evaluations": ledger.failed_evaluations,
        "cascade_stopped": ledger.quick_evaluations,
        "duplicates_skipped": ledger.duplicates_skipped,
        "failed_mutations": ledger.failed_mutations,
        "cost_usd": round(ledger.usd_spent, 10),
        "over_reported_usd": round(ledger.over_reported_usd, 10),
        # What the strong tiers spent (included in cost_usd) against the share of the USD
        # budget they may take (no cap without a USD budget).
        "strong_usd": round(ledger.strong_usd, 10),
        "strong_share": target.spec.search.tiering.strong_share,
        "strong_cap_usd": None
        if max_usd is None
        else round(target.spec.search.tiering.strong_share * max_usd, 10),
        "calls_charged_at_reservation": sum(
            u.charged_at_reservation for u in ledger.models.values()
        ),
        "wall_seconds": round(ledger.wall_seconds, 3),
        "archive_coverage": round(Archive(state.archive).coverage, 4),
        "stop_reason": state.stop_reason,
        "best_policy_path": best_path.name,
        "best_candidate": state.best.index,
        "tokens": {
            model: {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens}
            for model, u in sorted(ledger.models.items())
            if u.prompt_tokens or u.completion_tokens
        },
        "calls": {model: u.calls for model, u in sorted(ledger.models.items())},
        "validation": report.model_dump(mode="json") if report else None,
        # Which confinement layers the candidates got, and the ones they did not.
        "isolation": isolation,
        "isolation_missing": [layer.split(":")[0] for layer in missing_layers(isolation)],
    }
    (output / "result.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    (output / "report.html").write_text(render_report(state, target.metadata.name, result))
    return result
