"""One target's reconcile: gather the facts, let the controller decide, carry it out.

The loop keeps the status it last decided: it is the only writer of the status, so its
own copy is never stale, while the watched object may lag behind a patch by a moment. It
writes a decided status only when it is worth writing
(:func:`~retune.controller.status_worth_writing`): a check that saw nothing new is not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import kopf
from pydantic import ValidationError

from retune.controller import (
    Action,
    CanaryFailure,
    CanaryWrite,
    ClearAnnotations,
    Decision,
    Facts,
    ForgetWork,
    PromoteCanary,
    PublishRevision,
    RemoveCanary,
    ScaleCanary,
    SpecDigests,
    StartSearch,
    StartValidation,
    StopWork,
    WorkKind,
    decide,
    spec_digests,
    status_worth_writing,
)
from retune.evaluate.parameters import ParameterError, read_values
from retune.handlers.canary import deployments_of, read_canary, write_canary
from retune.handlers.claims import Claim, WorkloadKey, being_deleted, claim_problem
from retune.handlers.gather import (
    Workload,
    check_spec,
    model_key_problems,
    read_signals,
    read_watch,
    read_workload,
)
from retune.handlers.jobs import (
    JobSettings,
    RecallValidation,
    SearchStart,
    TargetInputs,
    run_search,
    run_validation,
)
from retune.handlers.kube import Cluster
from retune.handlers.metrics import Health, OperatorMetrics
from retune.handlers.workers import Key, Workers
from retune.rollout import (
    ABORT_ANNOTATION,
    APPROVE_ANNOTATION,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    RETUNE_ANNOTATION,
    UNDO_ANNOTATION,
    CanaryObservation,
)
from retune.rollout.apps import publish_revision
from retune.rollout.controls import is_set
from retune.rollout.revisions import revision_annotations, revision_manifest
from retune.signals.nodes import NodeInfo
from retune.spec import (
    API_VERSION,
    KIND,
    OptimizationTarget,
    Phase,
    Problem,
    TargetStatus,
    TargetValidationError,
    parse_target,
)

log = logging.getLogger(__name__)

_NO_DIGESTS = SpecDigests(signals="", search="", budget="")
CONTROL_ANNOTATIONS = (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    PAUSE_ANNOTATION,
    RETUNE_ANNOTATION,
    APPROVE_ANNOTATION,
    UNDO_ANNOTATION,
)
_MAX_PASSES = 4
# Phases that watch the retune triggers (a revision waiting for approval watches too).
_WATCHING = (Phase.STABLE, Phase.AWAITING_APPROVAL)
# Carried out before the status is written: a revision is recorded only once it exists, a
# rollout's step only once its Deployments are so, a new worker only after the old one
# stopped.
_BEFORE_STATUS = (StopWork, PublishRevision, ScaleCanary, PromoteCanary, RemoveCanary)


@dataclass
class OperatorContext:
    """What every handler of one operator process shares."""

    cluster: Cluster
    workers: Workers
    jobs: JobSettings
    metrics: OperatorMetrics
    health: Health
    prometheus_url: str | None
    wakeups: dict[Key, asyncio.Event] = field(default_factory=dict)
    controls_seen: dict[Key, frozenset[str]] = field(default_factory=dict)
    """The manual-control annotations last seen on each target (a change wakes it)."""

    def wake(self, key: Key) -> None:
        """Reconcile ``key`` now rather than at its next scheduled time."""
        self.wakeups.setdefault(key, asyncio.Event()).set()


def parse(body: Mapping[str, Any]) -> tuple[OptimizationTarget | None, list[Problem]]:
    """The target's spec as a model, or the problems that keep it from being one."""
    metadata = body.get("metadata") or {}
    data = {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body.get("kind", KIND),
        "metadata": {
            key: metadata[key]
            for key in ("name", "namespace", "uid", "generation", "labels", "annotations")
            if key in metadata
        },
        "spec": body.get("spec") or {},
    }
    source = f"{metadata.get('namespace')}/{metadata.get('name')}"
    try:
        return parse_target(data, source), []
    except TargetValidationError as error:
        return None, list(error.problems)


def annotations_of(body: Mapping[str, Any]) -> dict[str, str]:
    """The target's annotations."""
    return dict((body.get("metadata") or {}).get("annotations") or {})


def controls_of(body: Mapping[str, Any]) -> frozenset[str]:
    """The manual-control annotations set on the target."""
    annotations = annotations_of(body)
    return frozenset(key for key in CONTROL_ANNOTATIONS if is_set(annotations, key))


def approval_of(body: Mapping[str, Any], key: str = APPROVE_ANNOTATION) -> str | None:
    """The revision ``retune.dev/approve`` (or another control, ``key``) names, if the
    annotation is set."""
    annotations = annotations_of(body)
    if not is_set(annotations, key):
        return None
    return str(annotations[key]).strip()


def status_of(body: Mapping[str, Any]) -> TargetStatus:
    """The status as the API has it (an unreadable one counts as none)."""
    try:
        return TargetStatus.model_validate(body.get("status") or {})
    except ValidationError:
        log.warning("ignoring an unreadable status of %s", (body.get("metadata") or {}).get("name"))
        return TargetStatus()


class TargetLoop:
    """The reconcile of one target, run by its kopf daemon."""

    def __init__(self, context: OperatorContext, namespace: str, name: str) -> None:
        self.context = context
        self.key: Key = (namespace, name)
        self.status: TargetStatus | None = None
        """The status as last decided."""
        self.written: TargetStatus | None = None
        """The status as last written (or as the API had it when the loop started)."""

    async def reconcile(
        self,
        body: Mapping[str, Any],
        nodes: Iterable[NodeInfo],
        claims: Mapping[WorkloadKey, Iterable[Claim]] | None = None,
    ) -> float:
        """One round; returns the seconds until the next. ``claims``: every watched
        target's workload (:mod:`retune.handlers.claims`); None checks none."""
        context, (namespace, name) = self.context, self.key
        if self.status is None:
            self.status = self.written = status_of(body)
        status = self.status
        target, problems = parse(body)
        paused = bool(((body.get("spec") or {}).get("retune") or {}).get("paused", False))
        # A Stable target's steady check leaves the models' API keys (Secret reads) until a
        # search is about to start: nothing before that uses them. Any other phase checks
        # them with the rest of the spec, so that a target Degraded by a missing key stays
        # so (rather than recovering to Stable until its next retune) and a running search
        # or rollout sees a deleted Secret as before.
        keys_deferred = target is not None and not paused and status.phase in _WATCHING
        # The workload Deployment, read once for the spec check and the readings after it.
        workload: Workload | None = None
        if target is not None and not paused:
            workload, found = await asyncio.to_thread(
                check_spec,
                context.cluster,
                target,
                prometheus_url=context.prometheus_url,
                model_keys=not keys_deferred,
            )
            problems += found
            # A target being deleted has let go of its workload (its claim left the index).
            if claims is not None and not being_deleted(body):
                taken = claim_problem(namespace, name, target.spec.workload_ref.name, claims)
                problems += [taken] if taken is not None else []
        facts = Facts(
            target=name,
            generation=int((body.get("metadata") or {}).get("generation") or 0),
            paused=paused,
            digests=spec_digests(target.spec) if target is not None else _NO_DIGESTS,
            problems=tuple(problems),
            work=context.workers.report(self.key),
            max_concurrent_searches=context.workers.limit,
            controls=controls_of(body),
            approve=approval_of(body),
            undo=approval_of(body, UNDO_ANNOTATION),
        )
        if target is not None:
            spec = target.spec
            facts = replace(
                facts,
                retune=spec.retune,
                calls_models=spec.search.mutator == "llm",
                max_usd=spec.search.budget.max_usd,
                rollout=spec.rollout,
                slos=tuple(spec.slos),
                profile_interval=float(spec.profile.interval_seconds),
            )
        now = datetime.now(UTC)
        decision = decide(status, facts, now)
        for _ in range(_MAX_PASSES):
            # From Stable, a search starts only through Profiling, which asks for the signals
            # first: the keys are checked before those are read, at most once a reconcile.
            if keys_deferred and target is not None and _heads_to_search(decision):
                keys_deferred = False
                found = await asyncio.to_thread(model_key_problems, context.cluster, target)
                if found:
                    facts = replace(facts, problems=facts.problems + tuple(found))
                    decision = decide(status, facts, now)
                    continue
            more = await self._gather(decision, facts, target, workload, body, list(nodes), now)
            if more is None:
                break
            facts = more
            decision = decide(status, facts, now)
        failed = await self._carry_out(decision, body, target, facts)
        if failed is not None:  # the step's writes failed: decided again, knowing it
            facts = replace(facts, canary=failed)
            decision = decide(status, facts, now)
            await self._carry_out(decision, body, target, facts)
        new = decision.status
        target_spec = target.spec if target is not None else None
        context.metrics.target_state(
            namespace,
            name,
            new,
            target_spec.search.budget if target_spec is not None else None,
            target_spec.retune.spend_limit if target_spec is not None else None,
            now,
        )
        context.metrics.decision_events(namespace, name, decision.events)
        retuned = new.retunes > status.retunes
        context.metrics.outcomes(
            namespace,
            name,
            [r.outcome for r in new.history if r not in status.history],
            new.last_retune_trigger if retuned else None,
        )
        return max(0.5, decision.requeue_after)

    async def _gather(
        self,
        decision: Decision,
        facts: Facts,
        target: OptimizationTarget | None,
        workload: Workload | None,
        body: Mapping[str, Any],
        nodes: list[NodeInfo],
        now: datetime,
    ) -> Facts | None:
        """The facts with what ``decision`` asked for, or None when it asked for nothing
        more. ``workload`` is the Deployment as this reconcile read it (None: missing, or
        not read, for a paused target). Nothing here writes."""
        context = self.context
        if target is None:
            return None
        url = context.prometheus_url
        needs_workload = decision.needs_signals or decision.needs_watch
        if needs_workload and workload is None and facts.paused:  # not read above
            workload = await asyncio.to_thread(read_workload, context.cluster, target)
        if decision.needs_signals and facts.signals is None:
            reading, rejected = await asyncio.to_thread(
                read_signals, context.cluster, target, workload, nodes, prometheus_url=url
            )
            return replace(facts, signals=reading, problems=facts.problems + tuple(rejected))
        if decision.needs_watch and facts.watch is None:
            watched = await asyncio.to_thread(
                read_watch,
                context.cluster,
                target,
                workload,
                nodes,
                decision.status,
                now,
                prometheus_url=url,
            )
            return replace(facts, watch=watched)
        rollout = decision.status.rollout
        if decision.needs_canary and facts.canary is None and rollout is not None:
            observed = await asyncio.to_thread(
                read_canary,
                deployments_of(context.cluster, target, owner_of(body)),
                target,
                rollout,
                now,
                annotations=annotations_of(body),
                prometheus_url=url,
            )
            return replace(facts, canary=observed)
        return None

    async def _carry_out(
        self,
        decision: Decision,
        body: Mapping[str, Any],
        target: OptimizationTarget | None,
        facts: Facts,
    ) -> CanaryFailure | None:
        """Actions that must precede the status first, then the status, then the rest:
        a revision is recorded only once it exists, a worker starts only once the status
        says what it works on, and a report is dropped only once it is in the status.

        A canary step's write that fails stops here, nothing written: the failure is
        returned, for the controller to decide the step again knowing it."""
        first = [a for a in decision.actions if isinstance(a, _BEFORE_STATUS)]
        then = [a for a in decision.actions if not isinstance(a, _BEFORE_STATUS)]
        stepped = isinstance(facts.canary, CanaryObservation)
        for step in first:
            if isinstance(step, CanaryWrite) and target is not None:
                failure = await self._write_canary(step, body, target)
                if failure is None:
                    continue
                if stepped:
                    return failure
                if not failure.permanent:
                    raise RuntimeError(
                        f"the canary of {self.key[0]}/{self.key[1]}: {failure.message}"
                    )
                log.warning("the canary of %s/%s: %s", *self.key, failure.message)
                continue
            await self._act(step, body, target)
        if self.written is None or status_worth_writing(self.written, decision.status):
            document = decision.status.model_dump(mode="json", by_alias=True, exclude_none=True)
            await asyncio.to_thread(self.context.cluster.replace_status, *self.key, document)
            self.written = decision.status
        self.status = decision.status
        for event in decision.events:
            kopf.event(
                cast(kopf.Body, body), type=event.type, reason=event.reason, message=event.message
            )
        for action in then:
            await self._act(action, body, target)
        return None

    async def _write_canary(
        self, action: CanaryWrite, body: Mapping[str, Any], target: OptimizationTarget
    ) -> CanaryFailure | None:
        log.info("%s/%s: %s", *self.key, action)
        deployments = deployments_of(self.context.cluster, target, owner_of(body))
        return await asyncio.to_thread(write_canary, deployments, action)

    async def _act(
        self, action: Action, body: Mapping[str, Any], target: OptimizationTarget | None
    ) -> None:
        context = self.context
        if isinstance(action, StopWork):
            log.info("stopping the worker of %s/%s: %s", *self.key, action.reason)
            await asyncio.to_thread(context.workers.stop, self.key)
        elif isinstance(action, ForgetWork):
            context.workers.forget(self.key)
        elif isinstance(action, ClearAnnotations):
            await asyncio.to_thread(context.cluster.remove_annotations, *self.key, action.keys)
        elif isinstance(action, CanaryWrite) and target is None:
            log.warning("the canary of %s/%s stays: the target cannot be read", *self.key)
        elif target is None:
            raise RuntimeError(f"{action} needs a valid target")
        elif isinstance(action, StartSearch):
            inputs = self._inputs(body, target, action.profile, action.hardware)
            start = SearchStart(
                resume=action.resume,
                seed_revision=action.seed_revision,
                seed_offset=action.seed_offset,
                warm_start=action.warm_start,
                usd_allowance=action.usd_allowance,
                counted_usd=action.counted_usd,
                search_id=action.search_id,
            )
            job = partial(run_search, context.jobs, inputs, start)
            context.workers.start(self.key, WorkKind.SEARCH, job)
        elif isinstance(action, StartValidation):
            inputs = self._inputs(body, target, action.profile, action.hardware)
            recall = (
                RecallValidation(action.revision, action.stable_revision)
                if action.revision is not None
                else None
            )
            validation = partial(run_validation, context.jobs, inputs, recall=recall)
            context.workers.start(self.key, WorkKind.VALIDATION, validation)
        elif isinstance(action, PublishRevision):
            manifest = revision_manifest(
                name=action.name,
                namespace=self.key[0],
                owner=owner_of(body),
                code=action.code,
                file_name=target.spec.policy.volume.file_name,
                values=_parameter_values(target, action.code),
                annotations=revision_annotations(
                    candidate=action.candidate or "",
                    score=action.score,
                    stable_score=action.stable_score,
                    validated_at=datetime.now(UTC),
                ),
            )
            await asyncio.to_thread(publish_revision, context.cluster.api, manifest)

    @staticmethod
    def _inputs(
        body: Mapping[str, Any],
        target: OptimizationTarget,
        profile: dict[str, float],
        hardware: dict[str, str],
    ) -> TargetInputs:
        return TargetInputs(target=target, owner=owner_of(body), profile=profile, hardware=hardware)


def _heads_to_search(decision: Decision) -> bool:
    """Whether ``decision`` starts a search, or asks for the signals one starts on."""
    return decision.needs_signals or any(isinstance(a, StartSearch) for a in decision.actions)


def _parameter_values(target: OptimizationTarget, code: str) -> dict[str, int | float] | None:
    """A parameters policy's values, for its revision's JSON file; None for a code policy.
    Every candidate was held to the parameters' contract, so a program that breaks it is
    published without the file, and the break logged."""
    policy = target.spec.policy
    if policy.kind != "parameters":
        return None
    try:
        return read_values(code, policy.parameters)
    except ParameterError as error:
        log.error("%s: the revision's values cannot be read (%s)", target.metadata.name, error)
        return None


def owner_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """The owner-reference fields of a target."""
    metadata = body.get("metadata") or {}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": metadata["name"],
        "uid": metadata["uid"],
    }
