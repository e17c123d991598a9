"""A complete tuning run on one machine: load the target, search, validate, report."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from retune.evaluate.confine import missing_layers
from retune.evaluate.loader import EvaluatorLoadError
from retune.evaluate.local import LocalExecutor
from retune.evaluate.podspec import sandbox_limits
from retune.local.inputs import (
    CHECKPOINT,
    SPEND_JOURNAL,
    RunError,
    RunOptions,
    prepare,
    read_profile,
    read_seed_code,
)
from retune.local.progress import ProgressBar
from retune.local.references import read_baselines
from retune.local.report import render_report
from retune.search.archive import Archive
from retune.search.builder import SearchBuilder, SearchResult, SearchSetup, validate_best
from retune.search.journal import SpendJournal
from retune.search.state import StopReason
from retune.search.validation import ValidationReport
from retune.spec import OptimizationTarget
from retune.store.file import FileStore

__all__ = [
    "RunError",
    "RunOptions",
    "RunResult",
    "read_profile",
    "read_seed_code",
    "run_target",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """What a local run did: the content of its result.json, in the report's order."""

    target: str
    seed_score: float
    best_score: float
    improvement: float  # relative to |seed score|
    evaluations: int
    failed_evaluations: int
    cascade_stopped: int
    duplicates_skipped: int
    failed_mutations: int
    cost_usd: float
    over_reported_usd: float
    # What the strong tiers spent (included in cost_usd) against the share of the USD
    # budget they may take (no cap without a USD budget).
    strong_usd: float
    strong_share: float
    strong_cap_usd: float | None
    # Evaluations of the free start (the built-in mutator's search before the models'),
    # on top of ``evaluations``; and whether its best is the run's.
    free_start_evaluations: int
    best_from_free_start: bool
    calls_charged_at_reservation: int
    wall_seconds: float
    archive_coverage: float
    stop_reason: StopReason
    best_policy_path: str
    best_candidate: int
    tokens: dict[str, dict[str, int]]
    calls: dict[str, int]
    validation: ValidationReport | None  # None: no candidate beat the seed
    # Which confinement layers the candidates got, and the ones they did not.
    isolation: dict[str, Any]
    isolation_missing: list[str]

    def to_json(self) -> dict[str, Any]:
        """result.json's document."""
        document = {f.name: getattr(self, f.name) for f in fields(self)}
        document["validation"] = (
            self.validation.model_dump(mode="json") if self.validation else None
        )
        return document


def run_target(target_path: Path, options: RunOptions) -> RunResult:
    """Run a local search for the target at ``target_path``; write result.json, the
    report and the best policy to ``options.output``, and return what result.json says."""
    inputs = prepare(target_path, options)
    target, spec = inputs.target, inputs.target.spec
    overridden = options.mutator is not None or options.wants_llm
    builder = SearchBuilder(
        SearchSetup(
            spec,
            inputs.context,
            seed_code=inputs.seed_code,
            evaluator_identity=inputs.evaluator_path.read_text(),
            budget=inputs.budget,
            seed=options.seed,
            mutator=inputs.mutator if overridden else None,
            models=inputs.models,
        )
    )
    output = options.output
    output.mkdir(parents=True, exist_ok=True)
    ledger = builder.ledger(SpendJournal(output / SPEND_JOURNAL))
    mutator = builder.mutator(ledger, audit_path=output / "llm-calls.jsonl")
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
        search = builder.build(
            executor=executor,
            store=FileStore(output / CHECKPOINT),
            ledger=ledger,
            mutator=mutator,
            on_progress=progress,
            resume=options.resume,
        )
        result = search.run()
        report = (
            validate_best(
                executor,
                spec.evaluator,
                inputs.context,
                candidate_code=result.best.code,
                stable_code=result.seed_elite.code,
            )
            if result.improved
            else None
        )
    finally:
        if progress:
            progress.close()  # on Ctrl-C too: the live line hands the terminal back
        executor.close()
    outcome = _write_outputs(target, result, report, output, isolation)
    page = render_report(
        result.state,
        target.metadata.name,
        outcome.to_json(),
        references=read_baselines(target_path.parent, inputs.context),
        min_improvement=spec.evaluator.min_improvement,
    )
    (output / "report.html").write_text(page)
    return outcome


def _write_outputs(
    target: OptimizationTarget,
    search: SearchResult,
    report: ValidationReport | None,
    output: Path,
    isolation: dict[str, Any],
) -> RunResult:
    state, best, seed = search.state, search.best, search.seed_elite
    best_path = output / "best_policy.py"
    best_path.write_text(best.code)
    ledger = search.ledger
    max_usd = search.config.budget.max_usd
    strong_share = target.spec.search.tiering.strong_share
    result = RunResult(
        target=target.metadata.name,
        seed_score=seed.score,
        best_score=best.score,
        improvement=(best.score - seed.score) / max(abs(seed.score), 1e-12),
        evaluations=ledger.evaluations,
        failed_evaluations=ledger.failed_evaluations,
        cascade_stopped=ledger.quick_evaluations,
        duplicates_skipped=ledger.duplicates_skipped,
        failed_mutations=ledger.failed_mutations,
        cost_usd=round(ledger.usd_spent, 10),
        over_reported_usd=round(ledger.over_reported_usd, 10),
        strong_usd=round(ledger.strong_usd, 10),
        strong_share=strong_share,
        strong_cap_usd=None if max_usd is None else round(strong_share * max_usd, 10),
        free_start_evaluations=ledger.free_evaluations,
        best_from_free_start=state.best_from_free_start,
        calls_charged_at_reservation=sum(u.charged_at_reservation for u in ledger.models.values()),
        wall_seconds=round(ledger.wall_seconds, 3),
        archive_coverage=round(Archive(state.archive).coverage, 4),
        stop_reason=search.stop_reason,
        best_policy_path=best_path.name,
        best_candidate=best.index,
        tokens={
            model: {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens}
            for model, u in sorted(ledger.models.items())
            if u.prompt_tokens or u.completion_tokens
        },
        calls={model: u.calls for model, u in sorted(ledger.models.items())},
        validation=report,
        isolation=isolation,
        isolation_missing=[layer.split(":")[0] for layer in missing_layers(isolation)],
    )
    document = json.dumps(result.to_json(), indent=2, sort_keys=True)
    (output / "result.json").write_text(document + "\n")
    return result
