"""The kopf operator: handlers for OptimizationTargets and nodes, and how it runs.

Thin adapters: a nodes index (the hardware fingerprint's input), a daemon per target that
runs its reconcile loop (:class:`~retune.handlers.reconcile.TargetLoop`), create, update
and resume handlers that wake that loop, and a delete handler that stops the target's
worker and removes what the operator made for it. kopf runs standalone (one replica, no
peering); its own state lives in annotations under ``retune.dev/``, not in the status.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from retune.handlers.claims import Claim, WorkloadKey, claim_of, rivals, workload_of
from retune.handlers.jobs import JobSettings
from retune.handlers.kube import Cluster, api_client, connection_info
from retune.handlers.metrics import Health, OperatorMetrics, serve
from retune.handlers.reconcile import OperatorContext, TargetLoop, controls_of
from retune.handlers.workers import Workers
from retune.signals.nodes import NodeInfo, node_info
from retune.spec import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)

FINALIZER = "retune.dev/finalizer"
_ERROR_RETRY = 10.0


@dataclass
class OperatorOptions:
    """How ``retune operator`` was started."""

    namespaces: list[str] = field(default_factory=list)
    """Namespaces to serve; empty means every namespace."""
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 8080
    prometheus_url: str | None = None
    max_concurrent_searches: int = 4
    max_evaluation_jobs: int = 16
    """Evaluation Jobs in flight over all targets."""
    kubeconfig: str | None = None


def _nodes(index: Any) -> list[NodeInfo]:
    return [info for store in index.values() for info in store]


def build_registry(context: OperatorContext, options: OperatorOptions) -> kopf.OperatorRegistry:
    """Every handler of the operator, in a registry of its own."""
    registry = kopf.OperatorRegistry()
    resource = (GROUP, VERSION, PLURAL)

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if options.kubeconfig is None:
            return kopf.login_via_client(**kwargs)
        return connection_info(context.cluster.api)

    @kopf.on.startup(id="startup", registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="retune.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="retune.dev", key="last-handled-configuration"
        )
        if options.namespaces and not any(set("*?[!") & set(ns) for ns in options.namespaces):
            # The namespaces are fixed: kopf need not list and watch every namespace (nor
            # CRDs: the chart installs the CRD before the operator starts).
            settings.scanning.disabled = True
        settings.posting.reporting_component = "retune-operator"
        settings.posting.level = logging.INFO
        # Reconcile loops, workers' stops and API reads all run in threads.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=32))
        memo["http"] = await serve(
            context.metrics, context.health, options.metrics_host, options.metrics_port
        )
        context.health.started = True
        log.info(
            "retune operator started; metrics on %s:%d", options.metrics_host, options.metrics_port
        )

    @kopf.on.cleanup(id="cleanup", registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        await asyncio.to_thread(context.workers.stop_all)
        runner = memo.get("http")
        if runner is not None:
            await runner.cleanup()

    @kopf.index("nodes", id="node_index", registry=registry)
    def node_index(name: str, body: kopf.Body, **_: Any) -> dict[str, NodeInfo]:
        return {name: node_info(body)}

    @kopf.index(*resource, id="workload_index", registry=registry)
    def workload_index(
        namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[WorkloadKey, Claim] | None:
        return claim_of(namespace or "", name, body)

    @kopf.on.create(*resource, id="wake", registry=registry)
    @kopf.on.update(*resource, id="wake", field="spec", registry=registry)
    @kopf.on.resume(*resource, id="wake", registry=registry)
    async def target_changed(
        *, namespace: str | None, name: str, old: Any = None, new: Any = None, **kwargs: Any
    ) -> None:
        namespace = namespace or ""
        context.wake((namespace, name))
        before = workload_of(old)
        if before is not None and before != workload_of(new):  # it let go of a workload
            for rival in rivals(namespace, name, before, kwargs["workload_index"]):
                context.wake((namespace, rival))

    # kopf leaves its own annotation prefix (retune.dev/) out of the diffs that drive
    # on.update and on.field, so the manual controls are watched as raw events.
    @kopf.on.event(*resource, id="controls", registry=registry)
    async def controls_set(*, body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
        key = (namespace or "", name)
        controls = controls_of(body)
        if context.controls_seen.get(key, frozenset()) != controls:
            context.controls_seen[key] = controls
            context.wake(key)

    @kopf.daemon(
        *resource,
        id="reconcile",
        registry=registry,
        cancellation_backoff=5,
        cancellation_timeout=60,
    )
    async def target_daemon(
        *,
        body: kopf.Body,
        namespace: str | None,
        name: str,
        stopped: kopf.DaemonStopped,
        **kwargs: Any,
    ) -> None:
        loop = TargetLoop(context, namespace or "", name)
        # kopf passes each index as a kwarg named after its function.
        await run_target_loop(
            context, loop, body, stopped, kwargs["node_index"], kwargs["workload_index"]
        )

    @kopf.on.delete(*resource, id="cleanup-target", registry=registry)
    async def target_deleted(
        *, namespace: str | None, name: str, spec: Any, logger: kopf.Logger, **kwargs: Any
    ) -> None:
        namespace = namespace or ""
        key = (namespace, name)
        # Its claim left the index when its deletion began: the next in line takes over.
        for rival in rivals(namespace, name, workload_of(spec), kwargs["workload_index"]):
            context.wake((namespace, rival))
        await asyncio.to_thread(context.workers.stop, key)
        try:
            deleted = await asyncio.to_thread(
                context.cluster.delete_target_objects, namespace, name
            )
        except ApiException as error:  # the garbage collector removes them anyway
            logger.warning("could not delete what %s/%s owns: %s", namespace, name, error)
            deleted = []
        context.metrics.forget_target(namespace, name)
        context.wakeups.pop(key, None)
        context.controls_seen.pop(key, None)
        logger.info("target deleted; removed %s", ", ".join(deleted) or "nothing")

    return registry


async def run_target_loop(
    context: OperatorContext,
    loop: TargetLoop,
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    nodes: Iterable[Any],
    claims: Mapping[WorkloadKey, Iterable[Claim]] | None = None,
) -> None:
    """Reconcile a target until kopf stops its daemon; then stop its worker (its checkpoint
    stays, so the next operator, or the next life of this target's daemon, resumes)."""
    wake = context.wakeups.setdefault(loop.key, asyncio.Event())
    try:
        while not stopped:
            started = time.monotonic()
            try:
                delay = await loop.reconcile(body, _nodes(nodes), claims)
                context.health.api_ok()
                result = "ok"
            except Exception as error:
                if isinstance(error, ApiException | OSError):
                    context.health.api_failed()
                log.exception(
                    "reconciling %s/%s failed; retrying in %.0fs", *loop.key, _ERROR_RETRY
                )
                delay, result = _ERROR_RETRY, "error"
            context.metrics.reconcile.labels(result).observe(time.monotonic() - started)
            context.metrics.workers(context.workers.running, context.workers.queued)
            await _sleep(delay, wake, stopped)
            wake.clear()
    finally:
        # kopf holds the finalizer until the daemon has exited: exit at once, and let the
        # worker stop in the background (the delete handler waits for it).
        context.workers.stop(loop.key, wait=False)


async def _sleep(delay: float, wake: asyncio.Event, stopped: kopf.DaemonStopped) -> None:
    """Until ``delay`` has passed, the target changed, or kopf stops the daemon."""
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def run_operator(options: OperatorOptions) -> None:
    """Run the operator until it is told to stop (SIGTERM, SIGINT)."""
    api = api_client(options.kubeconfig)
    metrics = OperatorMetrics()
    cluster = Cluster(api)
    context = OperatorContext(
        cluster=cluster,
        workers=Workers(options.max_concurrent_searches),
        jobs=JobSettings(
            cluster=cluster,
            metrics=metrics,
            job_limiter=threading.BoundedSemaphore(options.max_evaluation_jobs),
        ),
        metrics=metrics,
        health=Health(),
        prometheus_url=options.prometheus_url,
    )
    registry = build_registry(context, options)
    kopf.run(
        registry=registry,
        standalone=True,
        clusterwide=not options.namespaces,
        namespaces=options.namespaces,
        memo=kopf.Memo(),
    )
