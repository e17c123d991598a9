"""One target's reconcile: gather the facts, let the controller decide, carry it out.

The loop keeps the status it last wrote: it is the only writer of the status, so its own
copy is never stale, while the watched object may lag behind a patch by a moment.
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
    Decision,
    Facts,
    ForgetWork,
    PublishRevision,
    SpecDigests,
    StartSearch,
    StartValidation,
    StopWork,
    WorkKind,
    candidate_id,
    decide,
    spec_digests,
)
from retune.handlers.gather import read_signals, spec_problems
from retune.handlers.jobs import JobSettings, TargetInputs, run_search, run_validation
from retune.handlers.kube import Cluster
from retune.handlers.metrics import Health, OperatorMetrics
from retune.handlers.workers import Key, Workers
from retune.rollout.revisions import publish_revision, revision_annotations, revision_manifest
from retune.signals.nodes import NodeInfo
from retune.spec import (
    API_VERSION,
    KIND,
    OptimizationTarget,
    Problem,
    TargetStatus,
    TargetValidationError,
    parse_target,
)

log = logging.getLogger(__name__)

_NO_DIGESTS = SpecDigests(signals="", search="", budget="")


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

    async def reconcile(self, body: Mapping[str, Any], nodes: Iterable[NodeInfo]) -> float:
        """One round; returns the seconds until the next."""
        context, (namespace, name) = self.context, self.key
        status = self.status if self.status is not None else status_of(body)
        target, problems = parse(body)
        paused = bool(((body.get("spec") or {}).get("retune") or {}).get("paused", False))
        if target is not None and not paused:
            problems += await asyncio.to_thread(
                spec_problems, context.cluster, target, prometheus_url=context.prometheus_url
            )
        facts = Facts(
            target=name,
            generation=int((body.get("metadata") or {}).get("generation") or 0),
            paused=paused,
            digests=spec_digests(target.spec) if target is not None else _NO_DIGESTS,
            problems=tuple(problems),
            work=context.workers.report(self.key),
            max_concurrent_searches=context.workers.limit,
        )
        now = datetime.now(UTC)
        decision = decide(status, facts, now)
        if decision.needs_signals and target is not None:
            reading, rejected = await asyncio.to_thread(
                read_signals,
                context.cluster,
                target,
                list(nodes),
                prometheus_url=context.prometheus_url,
            )
            facts = replace(facts, signals=reading, problems=facts.problems + tuple(rejected))
            decision = decide(status, facts, now)
        await self._carry_out(decision, status, body, target)
        context.metrics.target_state(
            namespace, name, decision.status.phase, decision.status.best_score
        )
        return max(0.5, decision.requeue_after)

    async def _carry_out(
        self,
        decision: Decision,
        status: TargetStatus,
        body: Mapping[str, Any],
        target: OptimizationTarget | None,
    ) -> None:
        """Actions that must precede the status first, then the status, then the rest:
        a revision is recorded only once it exists, a worker starts only once the status
        says what it works on, and a report is dropped only once it is in the status."""
        first = [a for a in decision.actions if isinstance(a, (StopWork, PublishRevision))]
        then = [a for a in decision.actions if not isinstance(a, (StopWork, PublishRevision))]
        for step in first:
            await self._act(step, body, target)
        if decision.status != status:
            document = decision.status.model_dump(mode="json", by_alias=True, exclude_none=True)
            await asyncio.to_thread(self.context.cluster.replace_status, *self.key, document)
        self.status = decision.status
        for event in decision.events:
            kopf.event(
                cast(kopf.Body, body), type=event.type, reason=event.reason, message=event.message
            )
        for action in then:
            await self._act(action, body, target)

    async def _act(
        self, action: Action, body: Mapping[str, Any], target: OptimizationTarget | None
    ) -> None:
        context = self.context
        if isinstance(action, StopWork):
            log.info("stopping the worker of %s/%s: %s", *self.key, action.reason)
            await asyncio.to_thread(context.workers.stop, self.key)
        elif isinstance(action, ForgetWork):
            context.workers.forget(self.key)
        elif target is None:
            raise RuntimeError(f"{action} needs a valid target")
        elif isinstance(action, StartSearch):
            inputs = self._inputs(body, target, action.profile, action.hardware)
            job = partial(run_search, context.jobs, inputs, action.resume)
            context.workers.start(self.key, WorkKind.SEARCH, job)
        elif isinstance(action, StartValidation):
            inputs = self._inputs(body, target, action.profile, action.hardware)
            context.workers.start(
                self.key, WorkKind.VALIDATION, partial(run_validation, context.jobs, inputs)
            )
        elif isinstance(action, PublishRevision):
            manifest = revision_manifest(
                name=action.name,
                namespace=self.key[0],
                owner=owner_of(body),
                code=action.code,
                file_name=target.spec.policy.volume.file_name,
                annotations=revision_annotations(
                    candidate=candidate_id(action.candidate) or "",
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


def owner_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """The owner-reference fields of a target."""
    metadata = body.get("metadata") or {}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": metadata["name"],
        "uid": metadata["uid"],
    }
