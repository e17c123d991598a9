"""KubernetesExecutor: evaluation in hardened pods, one Job per batch of candidates.

Submitted tasks wait a short *linger* so that they travel in batches; each batch becomes a
ConfigMap (``batch.json``) and a Job whose one pod runs the evaluator image's
``retune-evaluate`` on it and reports every outcome through its termination message.
A poller lists the target's Jobs and pods by label, resolves each batch's futures when
its pod ends (or fails them with a reason a user can act on when it cannot run), and
deletes the Job and the ConfigMap. Jobs in flight are bounded per target
(``max_parallel_jobs``) and, through a semaphore shared by every target, per operator.

Every object is owned by the OptimizationTarget, so deleting the target removes them all.
An operator restart does not re-adopt the Jobs of the previous run: the engine re-submits
its in-flight tasks on resume, so the executor deletes the target's leftover Jobs when it
starts, and nothing is paid for twice. See ``docs/evaluation-pods.md``.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

from retune.evaluate.contract import EvaluationOutcome, EvaluationTask, FailureReason
from retune.evaluate.entrypoint import EvaluationBatch
from retune.evaluate.kubeapi import (
    REQUEST_TIMEOUT,
    EvaluationApi,
    KubeEvaluationApi,
    describe_error,
    with_retries,
)
from retune.evaluate.podspec import (
    BATCH_LABEL,
    CONFIGMAP_LIMIT,
    HARNESS_MEMORY_MIB,
    PodPlacement,
    PodTemplate,
    batch_name,
    evaluation_selector,
    job_deadline,
    sandbox_limits,
)
from retune.evaluate.podstatus import Verdict, judge
from retune.evaluate.sandbox import precheck
from retune.spec.evaluator import EvaluatorSpec

log = logging.getLogger(__name__)

_SLOT_WAIT = 0.2  # how often a dispatcher waiting for an operator-wide slot checks for close


@dataclass
class _Queued:
    task: EvaluationTask
    future: Future[EvaluationOutcome]
    queued_at: float


@dataclass
class _Batch:
    name: str
    items: list[_Queued]
    deadline: int
    created_at: float | None = None  # monotonic, once its Job exists
    holds_operator_slot: bool = False
    task_ids: list[str] = field(default_factory=list)


class KubernetesExecutor:
    """Runs evaluation tasks as Jobs in the target's namespace; implements ``Executor``.

    ``api`` is a Kubernetes ``ApiClient`` (or an :class:`EvaluationApi`). ``owner`` is
    the OptimizationTarget's ``apiVersion``, ``kind``, ``name`` and ``uid``.
    ``evaluator_ref`` is what ``retune-evaluate`` imports inside the image: a file path
    or a dotted module name; by default ``spec.evaluator.path``.
    ``placement`` is the workload's; the evaluator spec's own nodeSelector, affinity and
    tolerations win over it. ``operator_limiter`` is shared by every target's executor.
    ``env`` adds variables to the evaluation container. A pod that stays unschedulable,
    or whose image cannot be pulled, for ``stuck_seconds`` fails its tasks.

    Starting applies the target's NetworkPolicy and deletes the target's Jobs left by a
    previous operator run (``orphans_deleted``); it raises the API's error if it cannot
    (e.g. a 403 when the operator's RBAC lacks a rule). Call :meth:`close` when done.
    """

    def __init__(
        self,
        api: client.ApiClient | EvaluationApi,
        *,
        namespace: str,
        target_name: str,
        owner: Mapping[str, Any],
        evaluator: EvaluatorSpec,
        evaluator_ref: str | None = None,
        entrypoint: str,
        placement: PodPlacement | None = None,
        batch_size: int = 4,
        linger_seconds: float = 0.5,
        max_parallel_jobs: int | None = None,
        operator_limiter: threading.BoundedSemaphore | None = None,
        poll_interval: float = 2.0,
        image_pull_policy: str = "IfNotPresent",
        env: Mapping[str, str] | None = None,
        stuck_seconds: float = 300.0,
        deadline_slack_seconds: int = 120,
        ttl_seconds_after_finished: int = 3600,
    ) -> None:
        if not 1 <= batch_size <= 16:
            raise ValueError("batch_size must be 1..16 (outcomes share a 4 KiB message)")
        if not evaluator.image:
            raise ValueError("spec.evaluator.image: evaluation pods need an evaluator image")
        if (max_parallel_jobs is not None and max_parallel_jobs < 1) or poll_interval <= 0:
            raise ValueError("max_parallel_jobs must be at least 1 and poll_interval positive")
        self._api: EvaluationApi = (
            KubeEvaluationApi(api, namespace) if isinstance(api, client.ApiClient) else api
        )
        self.namespace = namespace
        self.target_name = target_name
        self._evaluator = evaluator
        self._evaluator_ref = evaluator_ref or evaluator.path
        self._entrypoint = entrypoint
        self._template = PodTemplate(
            namespace=namespace,
            target_name=target_name,
            owner=dict(owner),
            evaluator=evaluator,
            placement=(placement or PodPlacement()).overridden_by(evaluator),
            image_pull_policy=image_pull_policy,
            env=dict(env or {}),
            ttl_seconds_after_finished=ttl_seconds_after_finished,
            deadline_slack_seconds=deadline_slack_seconds,
        )
        self._selector = evaluation_selector(target_name)
        self._memory = f"{evaluator.memory_mb_limit + HARNESS_MEMORY_MIB}Mi"
        self._batch_size = batch_size
        self._linger = linger_seconds
        self._max_jobs = max_parallel_jobs or evaluator.parallelism
        self._operator_limiter = operator_limiter
        self._poll_interval = poll_interval
        self._stuck_seconds = stuck_seconds
        self._session = secrets.token_hex(8)
        self._cond = threading.Condition()
        self._queue: deque[_Queued] = deque()
        self._inflight: dict[str, _Batch] = {}
        self._stopping = threading.Event()
        self._closed = False
        self._api.apply_network_policy(self._template.network_policy())
        self.orphans_deleted = self._delete_orphans()
        self._threads = [
            threading.Thread(target=self._dispatch_forever, name=f"retune-dispatch-{target_name}"),
            threading.Thread(target=self._poll_forever, name=f"retune-poll-{target_name}"),
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    # -- the Executor protocol ----------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Tasks that can be in flight at once: a full batch in every Job slot."""
        return self._max_jobs * self._batch_size

    @property
    def jobs_in_flight(self) -> int:
        with self._cond:
            return len(self._inflight)

    def submit(self, task: EvaluationTask) -> Future[EvaluationOutcome]:
        """Queue a candidate; the future resolves to its outcome, never to an exception.

        A candidate the allowlist refuses is failed at once, without a pod.
        """
        future: Future[EvaluationOutcome] = Future()
        if self._stopping.is_set():
            future.set_result(_cancelled())
            return future
        verdict = precheck(task.policy_code, self._entrypoint)
        if verdict is not None:
            future.set_result(verdict)
            return future
        with self._cond:
            if self._stopping.is_set():  # closed meanwhile: close() drains under this lock
                future.set_result(_cancelled())
                return future
            self._queue.append(_Queued(task, future, time.monotonic()))
            self._cond.notify_all()
        return future

    def close(self) -> None:
        """Stop dispatching and polling, cancel every task, delete the Jobs in flight."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=REQUEST_TIMEOUT * 3)
        with self._cond:
            queued, self._queue = list(self._queue), deque()
            batches = list(self._inflight.values())
            self._inflight.clear()
        for item in queued:
            if item.future.set_running_or_notify_cancel():
                item.future.set_result(_cancelled())
        for batch in batches:
            self._settle(batch, Verdict(failure=FailureReason.CANCELLED, detail="executor closed"))
            self._delete(batch.name)

    def __enter__(self) -> KubernetesExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- dispatching --------------------------------------------------------------------
    def _dispatch_forever(self) -> None:
        while True:
            with self._cond:
                while not self._stopping.is_set() and (
                    not self._queue or len(self._inflight) >= self._max_jobs
                ):
                    self._cond.wait()
                if self._stopping.is_set():
                    return
            if not self._acquire_operator_slot():
                return
            items = self._take_batch()
            if not items:
                self._release_operator_slot()
                if self._stopping.is_set():
                    return
                continue
            self._launch(items)

    def _acquire_operator_slot(self) -> bool:
        if self._operator_limiter is None:
            return True
        while not self._stopping.is_set():
            if self._operator_limiter.acquire(timeout=_SLOT_WAIT):
                return True
        return False

    def _release_operator_slot(self) -> None:
        if self._operator_limiter is not None:
            self._operator_limiter.release()

    def _take_batch(self) -> list[_Queued]:
        """Linger for a fuller batch, then take one, smaller when Job slots are idle."""
        with self._cond:
            if not self._queue:
                return []
            until = self._queue[0].queued_at + self._linger
            while (
                not self._stopping.is_set()
                and len(self._queue) < self._batch_size
                and (left := until - time.monotonic()) > 0
            ):
                self._cond.wait(left)
            if self._stopping.is_set():
                return []
            free = max(1, self._max_jobs - len(self._inflight))
            size = min(self._batch_size, max(1, math.ceil(len(self._queue) / free)))
            items: list[_Queued] = []
            while self._queue and len(items) < size:
                item = self._queue.popleft()
                if item.future.set_running_or_notify_cancel():  # skip what was cancelled
                    items.append(item)
            return items

    def _launch(self, items: list[_Queued]) -> None:
        task_ids = [item.task.task_id for item in items]
        name = batch_name(self.target_name, self._session, task_ids)
        deadline = job_deadline(self._evaluator, len(items), self._template.deadline_slack_seconds)
        batch = _Batch(name, items, deadline, holds_operator_slot=True, task_ids=task_ids)
        with self._cond:
            self._inflight[name] = batch
        document = EvaluationBatch(
            evaluator=self._evaluator_ref,
            entrypoint=self._entrypoint,
            limits=sandbox_limits(self._evaluator),
            tasks=[item.task for item in items],
        ).model_dump_json()
        if len(document) > CONFIGMAP_LIMIT:
            detail = (
                f"the batch is {len(document)} bytes, over the 1 MiB a ConfigMap holds; "
                "lower the batch size or shorten the policy"
            )
            self._finish(batch, Verdict(failure=FailureReason.INFRASTRUCTURE, detail=detail))
            return
        try:
            with_retries(
                lambda: self._api.create_config_map(self._template.config_map(name, document))
            )
            with_retries(lambda: self._api.create_job(self._template.job(name, len(items))))
        except Exception as exc:
            detail = f"cannot create evaluation Job {self.namespace}/{name}: {describe_error(exc)}"
            log.warning("%s", detail)
            self._delete(name)
            self._finish(batch, Verdict(failure=FailureReason.INFRASTRUCTURE, detail=detail))
            return
        log.info("evaluation Job %s/%s: %d task(s)", self.namespace, name, len(items))
        with self._cond:
            batch.created_at = time.monotonic()

    # -- polling ------------------------------------------------------------------------
    def _poll_forever(self) -> None:
        while not self._stopping.wait(self._poll_interval):
            try:
                self._poll_once()
            except Exception as exc:  # the API may be down for a while; keep trying
                log.warning("polling evaluation Jobs of %s failed: %s", self.target_name, exc)

    def _poll_once(self) -> None:
        with self._cond:
            batches = [b for b in self._inflight.values() if b.created_at is not None]
        if not batches:
            return
        listed_at = time.monotonic()
        jobs = {job["metadata"]["name"]: job for job in self._api.list_jobs(self._selector)}
        pods: dict[str, list[dict[str, Any]]] = {}
        for pod in self._api.list_pods(self._selector):
            label = (pod["metadata"].get("labels") or {}).get(BATCH_LABEL, "")
            pods.setdefault(label, []).append(pod)
        for batch in batches:
            assert batch.created_at is not None
            if batch.created_at > listed_at:  # created after the list was taken
                continue
            verdict = judge(
                jobs.get(batch.name),
                pods.get(batch.name, []),
                batch.task_ids,
                waited_seconds=time.monotonic() - batch.created_at,
                stuck_seconds=self._stuck_seconds,
                memory=self._memory,
                deadline=batch.deadline,
            )
            if verdict is not None:
                self._delete(batch.name)  # first: a Job slot is free once its Job is gone
                self._finish(batch, verdict)

    def _finish(self, batch: _Batch, verdict: Verdict) -> None:
        with self._cond:
            if self._inflight.pop(batch.name, None) is None:
                return  # close() settled it already
            self._cond.notify_all()
        self._settle(batch, verdict)
        failed = verdict.failure
        log.info(
            "evaluation Job %s/%s finished%s",
            self.namespace,
            batch.name,
            f": {failed} ({verdict.detail})" if failed else "",
        )

    def _settle(self, batch: _Batch, verdict: Verdict) -> None:
        outcomes = verdict.for_tasks(batch.task_ids)
        for item in batch.items:
            if not item.future.done():
                item.future.set_result(outcomes[item.task.task_id])
        if batch.holds_operator_slot:
            batch.holds_operator_slot = False
            self._release_operator_slot()

    def _delete(self, name: str) -> None:
        """Delete a batch's Job (its pod follows) and ConfigMap; the Job's TTL backs this up."""
        for delete in (self._api.delete_job, self._api.delete_config_map):
            try:
                delete(name)
            except Exception as exc:
                log.warning("cannot delete %s/%s: %s", self.namespace, name, describe_error(exc))

    def _delete_orphans(self) -> list[str]:
        """Delete the target's Jobs and ConfigMaps left by a previous operator run."""
        names = sorted(
            {job["metadata"]["name"] for job in self._api.list_jobs(self._selector)}
            | {cm["metadata"]["name"] for cm in self._api.list_config_maps(self._selector)}
        )
        for name in names:
            log.info("deleting orphaned evaluation Job %s/%s", self.namespace, name)
            self._delete(name)
        return names


def _cancelled() -> EvaluationOutcome:
    return EvaluationOutcome.failed(FailureReason.CANCELLED, "the executor was closed")
