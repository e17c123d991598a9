"""A complete tuning run on one machine: load the target, search, validate, report."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from retune.evaluate.contract import EvaluationContext
from retune.evaluate.local import LocalExecutor
from retune.evaluate.podspec import sandbox_limits
from retune.local.progress import ProgressBar
from retune.local.report import render_report
from retune.search.archive import Archive
from retune.search.config import builtin_mutator, engine_config
from retune.search.engine import Engine
from retune.search.ledger import Budget, Ledger
from retune.search.mutation import Mutator
from retune.search.state import EngineState
from retune.search.validation import ValidationReport, validate
from retune.signals.hardware import HardwareFingerprint, hardware_context
from retune.signals.profile import read_profile as signals_read_profile
from retune.signals.providers import provider_for
from retune.spec import OptimizationTarget, TargetSpec
from retune.store.file import FileStore

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.retune"


class RunError(Exception):
    """A problem with the run's inputs, reported to the user without a traceback."""


@dataclass
class RunOptions:
    output: Path
    seed: int | None = None
    max_evaluations: int | None = None
    max_seconds: float | None = None
    max_usd: float | None = None
    resume: bool = False
    workers: int | None = None
    mutator: str | None = None  # overrides spec.search.mutator
    llm_base_url: str | None = None
    prometheus_url: str | None = None
    show_progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def read_seed_code(spec: TargetSpec, base: Path) -> str:
    source = spec.policy.seed
    if source.inline is not None:
        return source.inline
    if source.file is not None:
        path = base / source.file
        try:
            return path.read_text()
        except OSError as exc:
            raise RunError(f"spec.policy.seed.file: cannot read {path}: {exc.strerror}") from exc
    raise RunError(
        "spec.policy.seed.configMapRef is only available in a cluster; "
        "locally, give the seed as spec.policy.seed.file or spec.policy.seed.inline"
    )


def read_profile(
    spec: TargetSpec, base: Path, prometheus_url: str | None = None
) -> dict[str, float]:
    """The workload profile: from Prometheus if a URL is given, else the recorded file."""
    recorded: dict[str, object] | None = None
    if spec.profile.recorded is not None:
        path = base / spec.profile.recorded
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise RunError(f"spec.profile.recorded: cannot read {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise RunError(f"spec.profile.recorded: {path} is not JSON or YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise RunError(f"spec.profile.recorded: {path} must map query names to numbers")
        recorded = {str(k): v for k, v in data.items()}
    url = prometheus_url or spec.profile.prometheus_url
    try:
        provider = provider_for(url, recorded=recorded, queries=spec.profile.queries)
    except ValueError as exc:
        raise RunError(str(exc)) from exc
    queries = spec.profile.queries or {name: name for name in recorded or {}}
    reading = signals_read_profile(provider, queries)
    if not reading.complete:
        source = url or f"the recorded profile {spec.profile.recorded}"
        raise RunError(
            f"spec.profile: no usable value from {source}: {reading.describe_problems()}"
        )
    return reading.values


def read_hardware(spec: TargetSpec) -> dict[str, str]:
    """The hardware handed to the evaluator, from the recorded node labels."""
    if not spec.hardware.recorded:
        return {}
    fingerprint = HardwareFingerprint.from_labels(spec.hardware.recorded, spec.hardware.label_keys)
    return hardware_context(fingerprint)


def build_mutator(
    target: OptimizationTarget, options: RunOptions, ledger: Ledger, audit_path: Path
) -> Mutator:
    spec = target.spec
    fallback = builtin_mutator(spec.policy)
    if (options.mutator or spec.search.mutator) != "llm":
        return fallback
    from retune.search.llm import build_llm_mutator, tiers_for_base_url

    search = spec.search
    if options.llm_base_url:
        search = search.model_copy(
            update={"models": tiers_for_base_url(search.models, options.llm_base_url)}
        )
    return build_llm_mutator(
        search, spec.policy, ledger, fallback, audit_path, seed=options.seed or search.seed
    )


def run_target(target_path: Path, options: RunOptions) -> dict[str, Any]:
    """Run a local search for the target at ``target_path``; return result.json's content."""
    from retune.spec import load_target

    target = load_target(target_path)
    spec = target.spec
    base = target_path.parent
    if spec.evaluator.module is None:
        raise RunError("spec.evaluator.module: a local run needs the evaluator's Python file")
    evaluator_path = (base / spec.evaluator.module).resolve()
    if not evaluator_path.is_file():
        raise RunError(f"spec.evaluator.module: {evaluator_path} does not exist")
    seed_code = read_seed_code(spec, base)
    context = EvaluationContext(
        workload=read_profile(spec, base, options.prometheus_url),
        hardware=read_hardware(spec),
        params=dict(spec.evaluator.params),
        seed=0,
    )
    budget = Budget(
        max_evaluations=options.max_evaluations or spec.search.budget.max_evaluations,
        max_usd=options.max_usd if options.max_usd is not None else spec.search.budget.max_usd,
        max_wall_seconds=options.max_seconds or spec.search.budget.max_wall_seconds,
    )
    if (
        budget.max_evaluations is None
        and budget.max_wall_seconds is None
        and budget.max_usd is None
    ):
        raise RunError(
            "spec.search.budget: set maxEvaluations, maxWallTime or maxUSD (or pass --max-evaluations)"
        )
    config = engine_config(
        spec,
        context,
        seed_code=seed_code,
        evaluator_source=evaluator_path.read_text(),
        budget=budget,
        seed=options.seed,
    )
    if options.mutator:
        config.fingerprint += f"-{options.mutator}"
    output = options.output
    output.mkdir(parents=True, exist_ok=True)
    store = FileStore(output / CHECKPOINT)
    if store.load() is not None and not options.resume:
        raise RunError(
            f"{output} already holds a run; pass --resume to continue it, or choose another --output"
        )
    ledger = Ledger(budget)
    mutator = build_mutator(target, options, ledger, output / "llm-calls.jsonl")
    progress = ProgressBar() if options.show_progress else None
    executor = LocalExecutor(
        evaluator_path,
        spec.policy.entrypoint,
        sandbox_limits(spec.evaluator),
        workers=options.workers,
    )
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
    return _write_outputs(target, state, report, output)


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
        required_subsets=list(spec.evaluator.required_subsets),
        seeds=spec.evaluator.holdout_seeds,
    )


def _write_outputs(
    target: OptimizationTarget, state: EngineState, report: ValidationReport | None, output: Path
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
    }
    (output / "result.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    (output / "report.html").write_text(render_report(state, target.metadata.name, result))
    return result
