"""What a local run needs before it starts, decided in one place.

:func:`prepare` reads and checks everything ``retune run`` needs -- the target, the
evaluator module, the seed policy (through the sandbox's allowlist), the workload profile,
the budget, the model tiers and their keys, the output directory -- and reports every
problem at once, each naming the field or option to change. ``retune check`` calls it with
the same options and stops there; ``retune run`` calls it and then searches.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from retune.evaluate import syntax
from retune.evaluate.contract import EvaluationContext
from retune.evaluate.parameters import seed_problem
from retune.evaluate.sandbox import precheck
from retune.local.tiers import EXAMPLE_TIER, TierOption, resolve_tiers
from retune.search.config import search_budget
from retune.search.ledger import Budget
from retune.signals.hardware import HardwareFingerprint, hardware_context
from retune.signals.profile import read_profile as signals_read_profile
from retune.signals.providers import provider_for
from retune.spec import ModelTier, OptimizationTarget, Problem, TargetSpec, TargetValidationError

CHECKPOINT = "checkpoint.retune"
SPEND_JOURNAL = "spend.jsonl"  # the ledger's write-ahead journal (search/journal.py)


class RunError(Exception):
    """A problem with the run's inputs, reported to the user without a traceback."""


@dataclass
class RunOptions:
    """The command line's settings of a local run; ``None`` means the spec's own."""

    output: Path
    seed: int | None = None
    max_evaluations: int | None = None
    max_seconds: float | None = None
    max_usd: float | None = None
    resume: bool = False
    workers: int | None = None
    mutator: str | None = None  # overrides spec.search.mutator
    llm_base_url: str | None = None
    models: list[TierOption] = field(default_factory=list)  # --model, by role
    free_start: int | None = None  # overrides spec.search.freeStart
    llm_api_key_env: str | None = None  # key of the --model tiers
    prometheus_url: str | None = None
    show_progress: bool = True

    @property
    def wants_llm(self) -> bool:
        """Whether the command line asks for the LLM tiers without naming a mutator."""
        return bool(self.llm_base_url or self.models)


@dataclass(frozen=True)
class RunInputs:
    """Everything a local run starts from, read and checked."""

    target: OptimizationTarget
    evaluator_path: Path
    seed_code: str
    context: EvaluationContext
    budget: Budget
    mutator: str  # "builtin" or "llm"
    models: list[ModelTier]  # the tiers the llm mutator uses (empty for builtin)


def prepare(target_path: Path, options: RunOptions) -> RunInputs:
    """Read and check everything a run of ``target_path`` with ``options`` needs.

    Raises :class:`TargetValidationError` listing every problem found, each with the field
    path or command-line option to change.
    """
    from retune.spec import load_target

    target = load_target(target_path)  # reports a broken file or spec on its own
    if options.free_start is not None:
        search = target.spec.search.model_copy(update={"free_start": options.free_start})
        spec = target.spec.model_copy(update={"search": search})
        target = target.model_copy(update={"spec": spec})
    spec, base = target.spec, target_path.parent
    problems: list[Problem] = []

    def attempt(step: Any, *args: Any) -> Any:
        try:
            return step(*args)
        except RunError as exc:
            problems.append(Problem("", str(exc)))
            return None

    evaluator_path = attempt(_evaluator_path, spec, base)
    seed_code = attempt(read_seed_code, spec, base)
    if seed_code is not None:
        problems += seed_problems(spec, seed_code)
    workload = attempt(read_profile, spec, base, options.prometheus_url)
    budget = search_budget(
        spec.search.budget,
        max_evaluations=options.max_evaluations,
        max_usd=options.max_usd,
        max_wall_seconds=options.max_seconds,
    )
    mutator, models, tier_problems = mutator_and_tiers(spec, options)
    problems += tier_problems
    problems += _output_problems(options)
    if problems:
        raise TargetValidationError(problems, str(target_path))
    assert evaluator_path is not None and seed_code is not None and workload is not None
    return RunInputs(
        target=target,
        evaluator_path=evaluator_path,
        seed_code=seed_code,
        context=evaluation_context(spec, workload),
        budget=budget,
        mutator=mutator,
        models=models,
    )


def _output_problems(options: RunOptions) -> list[Problem]:
    """``--output`` must hold a run exactly when ``--resume`` asks to continue one."""
    output = options.output
    if output is None:
        return []
    held = (output / CHECKPOINT).exists() or (output / SPEND_JOURNAL).exists()
    if held and not options.resume:
        message = (
            f"{output} already holds a run; pass --resume to continue it, "
            "or choose another --output"
        )
        return [Problem("--output", message)]
    if options.resume and not held:
        message = f"{output} holds no run to resume; start without --resume"
        return [Problem("--resume", message)]
    return []


def evaluation_context(spec: TargetSpec, workload: dict[str, float]) -> EvaluationContext:
    """What the evaluator is told: ``workload``, the recorded hardware, the evaluator's
    params, and seed 0 (held-out validation passes other seeds)."""
    return EvaluationContext(
        workload=workload, hardware=read_hardware(spec), params=dict(spec.evaluator.params)
    )


def mutator_and_tiers(
    spec: TargetSpec, options: RunOptions
) -> tuple[str, list[ModelTier], list[Problem]]:
    """The mutator a run uses (``builtin`` or ``llm``), its model tiers, and what keeps
    them from working. ``--llm-base-url`` or ``--model`` without ``--mutator`` means llm."""
    mutator = options.mutator or ("llm" if options.wants_llm else spec.search.mutator)
    if mutator != "llm":
        return mutator, [], []
    models, problems = resolve_tiers(
        spec.search.models,
        options.models,
        base_url=options.llm_base_url,
        api_key_env=options.llm_api_key_env,
    )
    return mutator, models, problems + _llm_problems(models, spec, options.llm_base_url)


def _evaluator_path(spec: TargetSpec, base: Path) -> Path:
    if spec.evaluator.module is None:
        raise RunError(
            "spec.evaluator.module: a local run needs the evaluator's Python file "
            "(relative to the target file); image is only used in a cluster"
        )
    path = (base / spec.evaluator.module).resolve()
    try:
        tree = syntax.parse(read_utf8(path, "spec.evaluator.module"), filename=str(path))
    except RecursionError as exc:
        raise RunError(f"spec.evaluator.module: {path} is nested too deeply to read") from exc
    except SyntaxError as exc:
        raise RunError(
            f"spec.evaluator.module: {path} line {exc.lineno}: syntax error: {exc.msg}"
        ) from exc
    if not _defines_evaluate(tree):
        raise RunError(
            f"spec.evaluator.module: {path} must define evaluate(policy_path, profile, stage) "
            "at its top level (see docs/evaluator.md)"
        )
    return path


def _defines_evaluate(tree: ast.Module) -> bool:
    """Whether the module binds ``evaluate`` at its top level; a function of fewer than
    three positional parameters does not count (it could not be called)."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "evaluate":
            arguments = node.args
            positional = len(arguments.posonlyargs) + len(arguments.args)
            return positional >= 3 or arguments.vararg is not None
        if isinstance(node, ast.Import | ast.ImportFrom) and any(
            (alias.asname or alias.name) == "evaluate" for alias in node.names
        ):
            return True
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "evaluate" for t in targets):
                return True
    return False


def seed_problems(spec: TargetSpec, seed_code: str) -> list[Problem]:
    """The seed policy as the sandbox's allowlist sees it (it must be allowed to run), and
    for a parameters policy, holding its parameters as the search will move them."""
    seed = spec.policy.seed
    where = "file" if seed.file is not None else "inline" if seed.inline is not None else ""
    path = f"spec.policy.seed.{where}".rstrip(".")
    verdict = precheck(seed_code, spec.policy.entrypoint)
    if verdict is not None:
        message = (
            f"the seed program is refused by the sandbox's allowlist: {verdict.detail}; "
            "every candidate starts from the seed, so it must be pure computation "
            "(see docs/sandbox.md for what is allowed)"
        )
        return [Problem(path, message)]
    unheld = seed_problem(spec.policy, seed_code)
    return [Problem(path, unheld)] if unheld is not None else []


def _llm_problems(models: list[ModelTier], spec: TargetSpec, base_url: str | None) -> list[Problem]:
    problems = []
    names = [tier.name for tier in models]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(Problem("--model", f"two tiers are named {name!r}; rename one in the spec"))
    if models and not any(tier.role == "mutate" for tier in models):
        problems.append(
            Problem(
                "--model",
                "the llm mutator needs a tier for ordinary mutations: pass "
                "--model cheap=NAME@IN/OUT or set a spec.search.models tier with role mutate",
            )
        )
    if not models and base_url:
        # Never a guessed model or price: a made-up price would make maxUsd meaningless.
        problems.append(
            Problem(
                "--llm-base-url",
                "no model tier is configured, so there is no model name or price to use at "
                f"this endpoint; pass --model {EXAMPLE_TIER} (US dollars per million "
                "prompt/completion tokens; a self-hosted model has a price too), optionally "
                "--model strong=NAME@IN/OUT, or set spec.search.models",
            )
        )
    elif not models:
        problems.append(
            Problem(
                "spec.search.models",
                "the llm mutator needs model tiers: set spec.search.models, or pass "
                f"--llm-base-url URL --model {EXAMPLE_TIER}",
            )
        )
    configured = {tier.name: index for index, tier in enumerate(spec.search.models)}
    for tier in models:
        env = tier.api_key.env if tier.api_key is not None else None
        if env and not os.environ.get(env):
            where = (
                f"spec.search.models[{configured[tier.name]}].apiKey"
                if tier.name in configured
                else "--llm-api-key-env"
            )
            problems.append(
                Problem(where, f"no API key for tier {tier.name!r}: set the variable {env}")
            )
    return problems


def read_utf8(path: Path, field: str) -> str:
    """The text of ``path``; a :class:`RunError` naming ``field`` if it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RunError(f"{field}: cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise RunError(
            f"{field}: {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from exc


def read_seed_code(spec: TargetSpec, base: Path) -> str:
    """The seed policy's source, from the file or inline text the spec gives."""
    source = spec.policy.seed
    if source.inline is not None:
        return source.inline
    if source.file is not None:
        path = base / source.file
        return read_utf8(path, "spec.policy.seed.file")
    raise RunError(
        "spec.policy.seed.configMapRef is only available in a cluster; "
        "locally, give the seed as spec.policy.seed.file or spec.policy.seed.inline"
    )


def read_profile(
    spec: TargetSpec, base: Path, prometheus_url: str | None = None
) -> dict[str, float]:
    """The workload profile: from Prometheus if a URL is given, else the recorded file.

    A target with no profile queries and no recorded profile has an empty profile; one
    with queries needs somewhere to read them.
    """
    recorded: dict[str, object] | None = None
    if spec.profile.recorded is not None:
        path = base / spec.profile.recorded
        try:
            data = yaml.safe_load(read_utf8(path, "spec.profile.recorded"))
        except yaml.YAMLError as exc:
            raise RunError(f"spec.profile.recorded: {path} is not JSON or YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise RunError(f"spec.profile.recorded: {path} must map query names to numbers")
        recorded = {str(k): v for k, v in data.items()}
    url = prometheus_url or spec.profile.prometheus_url
    if not url and recorded is None:
        if not spec.profile.queries:
            return {}
        raise RunError(
            "spec.profile: the evaluator's profile comes from spec.profile.queries, but a "
            "local run has nowhere to read them: pass --prometheus-url URL, set "
            "spec.profile.prometheusUrl, or record the values (name: number) in a JSON or "
            "YAML file named by spec.profile.recorded"
        )
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
