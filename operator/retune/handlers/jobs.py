"""What a worker runs: a search (the engine with evaluation pods and the checkpoint
ConfigMap) or a validation (the checkpoint's best against the stable policy).

Both build everything from the target and the cluster when they start, so a worker started
after an operator restart needs nothing from the process that came before it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from retune.controller import SearchOutcome, SearchProgress, ValidationOutcome
from retune.controller.spend import usd_budget
from retune.evaluate.contract import EvaluationContext, EvaluationOutcome, EvaluationTask, Executor
from retune.evaluate.kubernetes import KubernetesExecutor
from retune.evaluate.podspec import TARGET_LABEL, target_label
from retune.handlers.gather import read_seed, read_workload
from retune.handlers.kube import Cluster
from retune.handlers.metrics import OperatorMetrics
from retune.handlers.spend import (
    ROLE_SPEND,
    ConfigMapSpendJournal,
    SpendJournalError,
    SpendJournalUnreadable,
)
from retune.handlers.workers import WorkerHandle, WorkFailed
from retune.search.builder import (
    SearchBuilder,
    SearchSetup,
    validate_best,
    warm_limit,
    warm_programs,
)
from retune.search.config import EngineConfig, search_budget
from retune.search.engine import EngineError, SearchConfigError
from retune.search.ledger import Budget, Ledger
from retune.search.mutation import Mutator
from retune.search.state import EngineState, decode_state
from retune.spec import ApiKeySource, BudgetSpec, OptimizationTarget
from retune.store.kubernetes import (
    ROLE_CHECKPOINT,
    CheckpointConflict,
    CheckpointTooLarge,
    KubernetesStore,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobSettings:
    """What every job of this operator shares."""

    cluster: Cluster
    metrics: OperatorMetrics
    job_limiter: threading.BoundedSemaphore
    batch_size: int = 4
    poll_interval: float = 1.0


@dataclass(frozen=True)
class TargetInputs:
    """One target's side of a job."""

    target: OptimizationTarget
    owner: Mapping[str, Any]
    profile: dict[str, float]
    hardware: dict[str, str]

    @property
    def namespace(self) -> str:
        return self.target.metadata.namespace

    @property
    def name(self) -> str:
        return self.target.metadata.name

    def context(self) -> EvaluationContext:
        """What evaluators are told: the recorded profile and hardware, the params."""
        return EvaluationContext(
            workload=dict(self.profile),
            hardware=dict(self.hardware),
            params=dict(self.target.spec.evaluator.params),
            seed=0,
        )


@dataclass(frozen=True)
class SearchStart:
    """How a search starts: resumed or fresh, from which policy, warm or cold."""

    resume: bool
    """Continue the checkpoint if it belongs to this search's configuration."""
    seed_revision: str | None = None
    """Start from this policy revision's program instead of ``spec.policy.seed``."""
    seed_offset: int = 0
    """Added to ``spec.search.seed``."""
    warm_start: bool = False
    """Re-score the previous archive's elites first."""
    usd_allowance: float | None = None
    """At most this many USD, below the spec's budget (``spec.retune.spendLimit``)."""
    counted_usd: float = 0.0
    """What the status counted of the search before this one: its spend journal may hold
    more (calls settled after the status last took its progress)."""
    search_id: str = ""
    """The search's id, the same for each of its attempts: its spend journal's owner."""


@dataclass(frozen=True)
class RecallValidation:
    """A known context's winner to validate again, against the stable revision."""

    revision: str
    stable_revision: str | None
    """None: against ``spec.policy.seed``."""


class _GuardedStore:
    """The checkpoint store, refusing to write once the worker was asked to stop: a stopped
    search must not checkpoint the cancelled evaluations it is unwinding."""

    def __init__(self, store: KubernetesStore, handle: WorkerHandle) -> None:
        self.store, self.handle = store, handle

    def load(self) -> bytes | None:
        return self.store.load()

    def save(self, document: bytes) -> None:
        self.handle.check()
        self.store.save(document)


class _ObservedExecutor:
    """An executor whose every outcome is also counted in the operator's metrics."""

    def __init__(
        self, inner: KubernetesExecutor, record: Callable[[EvaluationTask, EvaluationOutcome], None]
    ) -> None:
        self.inner, self.record = inner, record

    @property
    def capacity(self) -> int:
        return self.inner.capacity

    def submit(self, task: EvaluationTask) -> Future[EvaluationOutcome]:
        future = self.inner.submit(task)

        def count(done: Future[EvaluationOutcome]) -> None:
            if not done.cancelled() and done.exception() is None:
                self.record(task, done.result())

        future.add_done_callback(count)
        return future

    def close(self) -> None:
        self.inner.close()


def target_store(
    settings: JobSettings, inputs: TargetInputs, role: str = ROLE_CHECKPOINT
) -> KubernetesStore:
    """The target's ConfigMap of ``role``: its checkpoint, or its spend journal's
    (``handlers/spend.py``)."""
    return KubernetesStore(
        settings.cluster.api,
        namespace=inputs.namespace,
        target=inputs.name,
        owner=inputs.owner,
        labels={TARGET_LABEL: target_label(inputs.name)},
        role=role,
    )


def _executor(settings: JobSettings, inputs: TargetInputs, handle: WorkerHandle) -> Executor:
    workload = read_workload(settings.cluster, inputs.target)
    if workload is None:
        raise WorkFailed(f"Deployment {inputs.target.spec.workload_ref.name!r} not found")
    spec = inputs.target.spec
    executor = KubernetesExecutor(
        settings.cluster.api,
        namespace=inputs.namespace,
        target_name=inputs.name,
        owner=inputs.owner,
        evaluator=spec.evaluator,
        evaluator_ref=spec.evaluator.path,
        entrypoint=spec.policy.entrypoint,
        placement=workload.placement,
        batch_size=settings.batch_size,
        max_parallel_jobs=spec.evaluator.parallelism,
        operator_limiter=settings.job_limiter,
        poll_interval=settings.poll_interval,
        env=spec.evaluator.env,
    )
    # Stopping the worker closes the executor: every evaluation in flight resolves as
    # cancelled at once, so the engine unwinds without waiting for its pods.
    handle.on_cancel.append(executor.close)

    def record(task: EvaluationTask, outcome: EvaluationOutcome) -> None:
        settings.metrics.evaluation(inputs.namespace, inputs.name, task, outcome)

    return _ObservedExecutor(executor, record)


def _mutator(
    settings: JobSettings, inputs: TargetInputs, builder: SearchBuilder, ledger: Ledger
) -> Mutator:
    """The search's mutator, its tiers' keys read from the target's Secrets (else the
    operator's environment)."""
    from retune.search.llm import LLMConfigError, env_api_key

    def resolve(source: ApiKeySource) -> str | None:
        ref = source.secret_key_ref
        if ref is not None:
            value = settings.cluster.secret_value(inputs.namespace, ref.name, ref.key)
            if value is not None:
                return value
        return env_api_key(source)

    try:
        return builder.mutator(ledger, resolve_api_key=resolve)
    except LLMConfigError as error:
        raise WorkFailed(str(error), path="spec.search.models", permanent=True) from None


def _evaluator_identity(inputs: TargetInputs) -> str:
    evaluator = inputs.target.spec.evaluator
    parts = [evaluator.image or "", evaluator.path, *evaluator.command]
    return "\0".join(parts + [f"{key}={value}" for key, value in sorted(evaluator.env.items())])


def _seed_code(settings: JobSettings, inputs: TargetInputs, start: SearchStart) -> str:
    """The program the search starts from: the stable revision's, for a retune; else the
    spec's seed."""
    if start.seed_revision is not None:
        code = _revision_code(settings, inputs, start.seed_revision)
        if code is not None:
            return code
        raise WorkFailed(
            f"the stable revision {start.seed_revision} (ConfigMap) is gone or has no key "
            f"{inputs.target.spec.policy.volume.file_name!r}; it is where a retune starts from"
        )
    seed_code, problem = read_seed(settings.cluster, inputs.target)
    if seed_code is None:
        raise WorkFailed(
            problem.message if problem else "no seed program",
            path=problem.path if problem else "spec.policy.seed",
            permanent=True,
        )
    return seed_code


def _revision_code(settings: JobSettings, inputs: TargetInputs, revision: str) -> str | None:
    """The policy a revision ConfigMap holds, if it is there."""
    config_map = settings.cluster.config_map(inputs.namespace, revision)
    code = ((config_map or {}).get("data") or {}).get(inputs.target.spec.policy.volume.file_name)
    return str(code) if code is not None else None


def uncounted_usd(abandoned: Mapping[str, float], replaced: float, counted: float) -> float:
    """What the search whose spend journal this one replaced spent that its status never
    counted: calls sent and never settled (``abandoned``, at their worst case), and what
    its settled calls (``replaced``) add up to beyond what the status took of its progress
    (``counted``): calls settled after that, before it was stopped for this one."""
    late = replaced - counted
    return round(sum(abandoned.values()) + (late if late > 1e-9 else 0.0), 9)


def allowed_budget(
    budget: BudgetSpec, allowance: float | None, unsettled: float = 0.0
) -> Budget | None:
    """The spec's budget with its USD limit lowered to ``allowance`` (what
    ``spec.retune.spendLimit`` left the search), less ``unsettled`` (calls an earlier
    search left unsettled, counted against the limit too); None (the spec's own) without
    an allowance."""
    if allowance is None:
        return None
    left = max(0.0, allowance - unsettled)
    return search_budget(budget, max_usd=usd_budget(budget.max_usd, left))


def run_search(
    settings: JobSettings, inputs: TargetInputs, start: SearchStart, handle: WorkerHandle
) -> SearchOutcome:
    """Run (or resume) the target's search to its budget."""
    seed_code = _seed_code(settings, inputs, start)
    builder = SearchBuilder(
        SearchSetup(
            inputs.target.spec,
            inputs.context(),
            seed_code=seed_code,
            evaluator_identity=_evaluator_identity(inputs),
            seed_offset=start.seed_offset,
            budget=allowed_budget(inputs.target.spec.search.budget, start.usd_allowance),
        )
    )
    config = builder.config
    store = target_store(settings, inputs)
    document = store.load()
    resumable = _resumable(document, config, start.resume, handle)
    warm: list[str] = []
    if resumable is None and start.warm_start:
        previous = _decoded(document)
        warm = warm_programs(previous, warm_limit(config)) if previous is not None else []
        handle.note(warm_programs=len(warm))
    journal = ConfigMapSpendJournal(target_store(settings, inputs, ROLE_SPEND))
    try:
        abandoned = journal.start(
            config.fingerprint,
            resume=start.resume,
            carried=resumable.ledger if resumable else None,
            owner=start.search_id,
        )
    except SpendJournalError as error:
        unreadable = isinstance(error, SpendJournalUnreadable)
        raise WorkFailed(str(error), permanent=unreadable) from None
    if journal.carried_usd > 0:
        handle.note(carried_usd=round(journal.carried_usd, 9))
    unsettled = uncounted_usd(abandoned, journal.replaced_usd, start.counted_usd)
    if unsettled > 0:
        handle.note(abandoned_usd=unsettled)
        lowered = allowed_budget(inputs.target.spec.search.budget, start.usd_allowance, unsettled)
        config.budget = lowered or config.budget  # the spend limit counts them too
    for model, usd in abandoned.items():
        settings.metrics.abandoned_usd(inputs.namespace, inputs.name, model, usd)
        log.warning(
            "%s/%s: an earlier search left a call to %s unsettled; counted at its worst "
            "case, $%.6f",
            inputs.namespace,
            inputs.name,
            model,
            usd,
        )
    ledger = builder.ledger(journal)  # its money is the journal's, unsettled calls charged
    settings.metrics.ledger_baseline(inputs.namespace, inputs.name, ledger.snapshot())
    if inputs.target.spec.search.mutator == "llm":
        tiers = [tier.name for tier in inputs.target.spec.search.models]
        settings.metrics.search_tiers(inputs.namespace, inputs.name, tiers)
    mutator = _mutator(settings, inputs, builder, ledger)
    handle.check()
    executor = _executor(settings, inputs, handle)

    def report(_: object) -> None:
        progress = SearchProgress.of(search.state, config.budget.max_evaluations)
        handle.progress(progress)
        settings.metrics.ledger(inputs.namespace, inputs.name, progress.ledger)

    try:
        search = builder.build(
            executor=executor,
            store=_GuardedStore(store, handle),
            ledger=ledger,
            mutator=mutator,
            warm_programs=warm,
            resume=resumable is not None,
            on_progress=report,
        )
        result = search.run()
    except SearchConfigError as error:
        handle.check()
        raise WorkFailed(str(error), path=error.path, permanent=True) from None
    except EngineError as error:
        handle.check()
        raise WorkFailed(str(error), path="spec.policy.seed", permanent=True) from None
    except CheckpointConflict as error:
        raise WorkFailed(str(error)) from None
    except CheckpointTooLarge as error:
        raise WorkFailed(str(error), path="spec.search", permanent=True) from None
    finally:
        executor.close()
    handle.check()
    return SearchOutcome(
        stop_reason=result.stop_reason.value,
        progress=SearchProgress.of(result.state, config.budget.max_evaluations),
    )


def _decoded(document: bytes | None) -> EngineState | None:
    if document is None:
        return None
    try:
        return decode_state(document)
    except ValueError:
        return None


def _resumable(
    document: bytes | None, config: EngineConfig, resume: bool, handle: WorkerHandle
) -> EngineState | None:
    """The checkpointed state to resume, if there is one of this configuration."""
    if document is None or not resume:
        return None
    try:
        state = decode_state(document)
    except ValueError as error:
        handle.note(discarded=f"its checkpoint could not be read ({error})")
        return None
    if state.fingerprint != config.fingerprint:
        handle.note(discarded="its checkpoint was made under another configuration")
        return None
    handle.note(resumed_from=state.ledger.evaluations)
    return state


def run_validation(
    settings: JobSettings,
    inputs: TargetInputs,
    handle: WorkerHandle,
    recall: RecallValidation | None = None,
) -> ValidationOutcome:
    """Re-score the checkpoint's best candidate and the seed side by side on held-out seeds;
    with ``recall``, a known context's winner and the stable revision instead."""
    candidate: str | None
    if recall is not None:
        candidate = None
        candidate_code = _revision_code(settings, inputs, recall.revision)
        if candidate_code is None:
            raise WorkFailed(
                f"the recalled revision {recall.revision} (ConfigMap) is gone", permanent=True
            )
        stable_code = _seed_code(
            settings, inputs, SearchStart(resume=False, seed_revision=recall.stable_revision)
        )
    else:
        store = target_store(settings, inputs)
        document = store.load()
        state = decode_state(document) if document is not None else None
        if state is None or state.best is None or state.seed_elite is None:
            raise WorkFailed(
                f"the search's checkpoint ({store.where}) is gone or holds no result",
                permanent=True,
            )
        candidate, candidate_code = state.best_name, state.best.code
        stable_code = state.seed_elite.code
    evaluator = inputs.target.spec.evaluator
    if recall is not None:
        # A recalled winner passed the full bar in its context before: it need only be no
        # worse than the stable policy on the current profile.
        evaluator = evaluator.model_copy(update={"min_improvement": 0.0})
    executor = _executor(settings, inputs, handle)
    try:
        report = validate_best(
            executor,
            evaluator,
            inputs.context(),
            candidate_code=candidate_code,
            stable_code=stable_code,
        )
    finally:
        executor.close()
    handle.check()
    return ValidationOutcome(candidate=candidate, candidate_code=candidate_code, report=report)
