"""Gathering the facts of a reconcile: what is wrong with the spec in this cluster, the
signals (the workload profile from Prometheus, the hardware under the workload), and what
a Stable target's retune triggers observe (its SLOs, its profile, its hardware).

Spec problems name the field to change and make the target Degraded; a signal that cannot
be read yet (Prometheus down, a query without data, no node) makes it wait, saying which
query and what error. The workload Deployment is read once per reconcile
(:func:`check_spec`) and handed to the readings that need it; so is each Secret holding a
model's API key (:func:`model_key_problems`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes.client.rest import ApiException

from retune.controller import (
    HardwareReading,
    Signals,
    SignalsReading,
    SignalsWaiting,
    WatchReading,
)
from retune.evaluate.parameters import seed_problem
from retune.evaluate.podspec import PodPlacement
from retune.evaluate.sandbox import precheck
from retune.handlers.kube import Cluster, selector_of
from retune.handlers.prometheus_auth import PrometheusAuth, connect
from retune.signals.hardware import HardwareFingerprint, hardware_context
from retune.signals.metrics import (
    BadQuery,
    MetricsProvider,
    Sample,
    Unavailable,
    Value,
    safe_query,
)
from retune.signals.nodes import NodeInfo, nodes_for_workload
from retune.signals.slo import BurnRateVerdict, evaluate_burn_rate
from retune.spec import OptimizationTarget, Problem, TargetStatus, cluster_problems
from retune.spec.events import EventReason

_WAITING_REASONS = {
    "unavailable": EventReason.PROMETHEUS_UNAVAILABLE,
    "nodata": EventReason.PROFILE_NO_DATA,
    "invalid": EventReason.PROFILE_INVALID,
}


@dataclass(frozen=True)
class Workload:
    """What retune needs of the workload's Deployment."""

    pod_spec: dict[str, Any]
    selector: str

    @property
    def placement(self) -> PodPlacement:
        """Where its pods may run, which is where evaluation pods run."""
        return PodPlacement.from_pod_spec(self.pod_spec)


def read_workload(cluster: Cluster, target: OptimizationTarget) -> Workload | None:
    """The workload Deployment, or None when it does not exist."""
    deployment = cluster.deployment(target.metadata.namespace, target.spec.workload_ref.name)
    if deployment is None:
        return None
    spec = deployment.get("spec") or {}
    match_labels = (spec.get("selector") or {}).get("matchLabels") or {}
    pod_spec = ((spec.get("template") or {}).get("spec")) or {}
    return Workload(pod_spec=pod_spec, selector=selector_of(match_labels))


def read_seed(cluster: Cluster, target: OptimizationTarget) -> tuple[str | None, Problem | None]:
    """The seed program (inline or from its ConfigMap), or the problem with it."""
    seed = target.spec.policy.seed
    if seed.inline is not None:
        return seed.inline, None
    if seed.config_map_ref is None:
        return None, None  # a file: cluster_problems reports it
    ref, namespace = seed.config_map_ref, target.metadata.namespace
    config_map = cluster.config_map(namespace, ref.name)
    if config_map is None:
        message = f"ConfigMap {ref.name!r} not found in namespace {namespace!r}"
        return None, Problem("spec.policy.seed.configMapRef.name", message)
    data = config_map.get("data") or {}
    if ref.key not in data:
        keys = ", ".join(sorted(data)) or "none"
        message = f"ConfigMap {ref.name!r} has no key {ref.key!r} (its keys: {keys})"
        return None, Problem("spec.policy.seed.configMapRef.key", message)
    return str(data[ref.key]), None


def check_spec(
    cluster: Cluster,
    target: OptimizationTarget,
    *,
    prometheus_url: str | None,
    model_keys: bool = True,
) -> tuple[Workload | None, list[Problem]]:
    """The workload Deployment (None when it does not exist), and everything about the
    spec that cannot work in this cluster. The reconcile's readings use this one read of
    the Deployment rather than reading it again. Without ``model_keys``, the models' API
    keys are left out (the caller checks them with :func:`model_key_problems` if a search
    is about to start)."""
    workload = read_workload(cluster, target)
    problems = spec_problems(cluster, target, workload, prometheus_url=prometheus_url)
    if model_keys:
        problems += model_key_problems(cluster, target)
    return workload, problems


def spec_problems(
    cluster: Cluster,
    target: OptimizationTarget,
    workload: Workload | None,
    *,
    prometheus_url: str | None,
) -> list[Problem]:
    """Everything about the spec that cannot work in this cluster, each with its field,
    but the models' API keys (:func:`model_key_problems`); ``workload`` is the workload
    Deployment as just read."""
    spec, namespace = target.spec, target.metadata.namespace
    problems = list(cluster_problems(target))
    code, problem = read_seed(cluster, target)
    if problem is not None:
        problems.append(problem)
    elif code is not None:
        verdict = precheck(code, spec.policy.entrypoint)
        where = "inline" if spec.policy.seed.inline is not None else "configMapRef"
        if verdict is not None:
            message = f"the seed program is refused: {verdict.detail}"
            problems.append(Problem(f"spec.policy.seed.{where}", message))
        elif (unheld := seed_problem(spec.policy, code)) is not None:
            problems.append(Problem(f"spec.policy.seed.{where}", unheld))
    if workload is None:
        message = f"Deployment {spec.workload_ref.name!r} not found in namespace {namespace!r}"
        problems.append(Problem("spec.workloadRef.name", message))
    needs_prometheus = [
        what
        for what, queries in (
            ("the profile", spec.profile.queries),
            ("the SLOs", spec.slos),
            ("the canary analysis", spec.rollout.analysis),
        )
        if queries
    ]
    if needs_prometheus and not (spec.profile.prometheus_url or prometheus_url):
        message = (
            f"no Prometheus to read {' and '.join(needs_prometheus)} from: set it, or start "
            "the operator with --prometheus-url"
        )
        problems.append(Problem("spec.profile.prometheusUrl", message))
    return problems


def model_key_problems(cluster: Cluster, target: OptimizationTarget) -> list[Problem]:
    """The LLM model tiers' API keys the operator cannot have (none unless the mutator is
    ``llm``): a Secret or key missing, a Secret it may not read, an environment variable
    it lacks. Each Secret is read once, however many tiers name it."""
    if target.spec.search.mutator != "llm":
        return []
    namespace = target.metadata.namespace
    # One GET returns every key of a Secret: tiers naming the same Secret share the read.
    secrets: dict[str, Mapping[str, str] | None] = {}
    forbidden: set[str] = set()
    problems = []
    for index, tier in enumerate(target.spec.search.models):
        source = tier.api_key
        if source is None:
            continue
        path = f"spec.search.models[{index}].apiKey"
        ref = source.secret_key_ref
        if ref is not None:
            if ref.name not in secrets and ref.name not in forbidden:
                try:
                    secrets[ref.name] = cluster.secret_data(namespace, ref.name)
                except ApiException as error:
                    if error.status != 403:
                        raise
                    forbidden.add(ref.name)
            if ref.name in forbidden:
                message = (
                    f"the operator may not read Secret {ref.name!r}: its RBAC needs get on it "
                    "(the chart's rbac.secretNames)"
                )
                problems.append(Problem(f"{path}.secretKeyRef.name", message))
                continue
            if ref.key not in (secrets[ref.name] or {}):
                message = (
                    f"Secret {ref.name!r} with key {ref.key!r} not found in namespace {namespace!r}"
                )
                problems.append(Problem(f"{path}.secretKeyRef", message))
        elif source.env is not None and source.env not in os.environ:
            message = f"the operator has no environment variable {source.env!r}"
            problems.append(Problem(f"{path}.env", message))
    return problems


def read_signals(
    cluster: Cluster,
    target: OptimizationTarget,
    workload: Workload | None,
    nodes: Iterable[NodeInfo],
    *,
    prometheus_url: str | None,
) -> tuple[SignalsReading, list[Problem]]:
    """The hardware under the workload and its profile; or why the target must wait; and
    the queries Prometheus rejected (spec problems)."""
    spec = target.spec
    fingerprint = hardware_under(cluster, target, workload, nodes)
    if isinstance(fingerprint, SignalsWaiting):
        return fingerprint, []
    profile, waiting, problems = read_profile(
        spec.profile.queries,
        spec.profile.prometheus_url or prometheus_url,
        auth=operator_auth(target),
    )
    if waiting is not None or problems:
        return waiting or SignalsWaiting(
            EventReason.INVALID_QUERY, "a profile query is invalid"
        ), problems
    return (
        Signals(
            profile=profile,
            hardware=hardware_context(fingerprint),
            fingerprint=fingerprint.fingerprint,
            summary=fingerprint.summary,
        ),
        [],
    )


def hardware_under(
    cluster: Cluster,
    target: OptimizationTarget,
    workload: Workload | None,
    nodes: Iterable[NodeInfo],
) -> HardwareFingerprint | SignalsWaiting:
    """The hardware class of the nodes the workload (its Deployment as read, None when
    there is none) runs on, or may run on: the nodes its pods are bound to, else its
    placement; or why it cannot be told.

    The pods are listed every time: a pod moved to another node shows in nothing else
    this reads (the nodes come from the operator's watch of them)."""
    spec = target.spec
    if workload is None:
        message = f"Deployment {spec.workload_ref.name!r} not found"
        return SignalsWaiting(EventReason.WORKLOAD_NOT_FOUND, message)
    bound = [
        str((pod.get("spec") or {}).get("nodeName") or "")
        for pod in cluster.pods(target.metadata.namespace, workload.selector)
        if workload.selector
    ]
    placement = workload.placement
    under = nodes_for_workload(
        nodes,
        node_selector=placement.node_selector,
        affinity=placement.affinity,
        tolerations=placement.tolerations,
        pod_node_names=bound,
    )
    try:
        return HardwareFingerprint.from_nodes(under, spec.hardware.label_keys)
    except ValueError as error:
        return SignalsWaiting(EventReason.NO_MATCHING_NODES, str(error))


class StopAtOutage:
    """A metrics provider that, once Prometheus could not be reached, answers every
    further query of this round with that outage instead of waiting for it again."""

    def __init__(self, inner: MetricsProvider) -> None:
        self.inner = inner
        self.outage: Unavailable | None = None

    def query(self, promql: str) -> Sample:
        if self.outage is not None:
            return self.outage
        sample = safe_query(self.inner, promql)
        if isinstance(sample, Unavailable):
            self.outage = sample
        return sample

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


class NoPrometheus:
    """The provider of a target without Prometheus (spec problems say so): no data."""

    def query(self, promql: str) -> Sample:
        return Unavailable("no Prometheus URL: set spec.profile.prometheusUrl or --prometheus-url")


def operator_auth(target: OptimizationTarget) -> PrometheusAuth | None:
    """The operator's Prometheus credentials, for a target that uses the operator's
    Prometheus; None for a target that names its own (it never gets them)."""
    return None if target.spec.profile.prometheus_url else PrometheusAuth.from_env()


def metrics_provider(target: OptimizationTarget, prometheus_url: str | None) -> StopAtOutage:
    """The target's Prometheus (its own, or the operator's with the operator's credentials)."""
    url = target.spec.profile.prometheus_url or prometheus_url
    if not url:
        return StopAtOutage(NoPrometheus())
    return StopAtOutage(connect(url, operator_auth(target)))


def read_watch(
    cluster: Cluster,
    target: OptimizationTarget,
    workload: Workload | None,
    nodes: Iterable[NodeInfo],
    status: TargetStatus,
    now: datetime,
    *,
    prometheus_url: str | None,
) -> WatchReading:
    """What a Stable target's retune triggers observe now: each SLO, the profile when it
    is due (every ``spec.profile.interval`` after ``status.watch.profileReadAt``), the
    hardware under the workload (``workload``, its Deployment as read)."""
    spec = target.spec
    fingerprint = hardware_under(cluster, target, workload, nodes)
    hardware = (
        fingerprint
        if isinstance(fingerprint, SignalsWaiting)
        else HardwareReading(fingerprint.fingerprint, fingerprint.summary)
    )
    samples: dict[str, Sample] = {}
    burn_rates: dict[str, BurnRateVerdict] = {}
    provider = metrics_provider(target, prometheus_url)
    try:
        for slo in spec.slos:
            if slo.kind == "threshold" and slo.query is not None:
                samples[slo.name] = provider.query(slo.query)
            else:
                burn_rates[slo.name] = evaluate_burn_rate(slo, provider)
    finally:
        provider.close()
    watch = status.watch
    read_at = watch.profile_read_at if watch is not None else None
    due = read_at is None or (now - read_at).total_seconds() >= spec.profile.interval_seconds
    profile: dict[str, float] | SignalsWaiting | None = None
    if spec.profile.queries and due:
        url = spec.profile.prometheus_url or prometheus_url
        values, waiting, problems = read_profile(
            spec.profile.queries, url, auth=operator_auth(target)
        )
        if problems:
            message = "; ".join(str(problem) for problem in problems)
            waiting = SignalsWaiting(EventReason.PROFILE_INVALID, message)
        profile = waiting if waiting is not None else values
    return WatchReading(
        slo_samples=samples, burn_rates=burn_rates, profile=profile, hardware=hardware
    )


def read_profile(
    queries: Mapping[str, str], url: str | None, *, auth: PrometheusAuth | None = None
) -> tuple[dict[str, float], SignalsWaiting | None, list[Problem]]:
    """Query each profile value once; stop at the first Prometheus outage (the rest would
    fail the same way, each after its timeout)."""
    if not queries:
        return {}, None, []
    provider = connect(url, auth)
    values: dict[str, float] = {}
    waiting: list[tuple[str, str]] = []
    problems: list[Problem] = []
    try:
        for name, promql in queries.items():
            sample = safe_query(provider, promql)
            if isinstance(sample, Value):
                values[name] = sample.value
            elif isinstance(sample, BadQuery):
                message = f"Prometheus rejected the query: {sample.reason}"
                problems.append(Problem(f"spec.profile.queries.{name}", message))
            else:
                where = f"profile query {name} (spec.profile.queries.{name})"
                waiting.append((sample.kind, f"{where}: {sample.describe()}"))
                if isinstance(sample, Unavailable):
                    break
    finally:
        close = getattr(provider, "close", None)
        if close is not None:
            close()
    if not waiting:
        return values, None, problems
    kind = waiting[0][0]
    reason = _WAITING_REASONS.get(kind, EventReason.PROFILE_UNAVAILABLE)
    return values, SignalsWaiting(reason, "; ".join(text for _, text in waiting)), problems
