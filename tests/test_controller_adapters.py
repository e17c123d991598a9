"""The operator's adapters where they need no cluster: reading an API object, reading the
profile (a Prometheus that is down), metrics, revisions, and the API calls one reconcile
of a Stable target makes."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest
import yaml
from kubernetes.client.rest import ApiException

from retune.controller import (
    CanaryFailure,
    HardwareReading,
    ScaleCanary,
    SignalsWaiting,
    spec_digests,
)
from retune.evaluate.contract import (
    EvaluationOutcome,
    EvaluationResult,
    EvaluationTask,
    FailureReason,
)
from retune.handlers import reconcile
from retune.handlers.gather import (
    StopAtOutage,
    hardware_under,
    model_key_problems,
    read_profile,
    read_watch,
    read_workload,
    spec_problems,
)
from retune.handlers.jobs import JobSettings
from retune.handlers.metrics import Health, OperatorMetrics
from retune.handlers.reconcile import OperatorContext, TargetLoop, controls_of, parse, status_of
from retune.handlers.workers import Workers
from retune.rollout import CanaryObservation, begin
from retune.rollout.revisions import revision_annotations, revision_manifest, revision_name
from retune.search.ledger import LedgerState, ModelUsage
from retune.signals.metrics import Sample, Unavailable
from retune.signals.nodes import NodeInfo, node_info
from retune.spec import OptimizationTarget, Phase, TargetStatus, WatchStatus
from retune.spec.status import SearchStatus
from tests.test_spec import MINIMAL_CLUSTER

# The router's seed: a parameters policy holding its parameters as module constants.
ROUTER_SEED = "alpha = 0.5\ndepth = 3\n\n\ndef route(request):\n    return 'a'\n"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api_object() -> dict[str, Any]:
    body = yaml.safe_load(MINIMAL_CLUSTER)
    body["metadata"].update(uid="1234", generation=3, managedFields=[{"manager": "kubectl"}])
    body["status"] = {"phase": "Searching", "kopf": {"progress": {}}}
    return dict(body)


def test_an_api_object_parses_and_unknown_metadata_and_status_keys_are_no_problem() -> None:
    target, problems = parse(api_object())
    assert problems == [] and target is not None
    assert target.metadata.uid == "1234" and target.metadata.generation == 3
    assert status_of(api_object()).phase is Phase.SEARCHING


def test_an_api_object_the_models_refuse_gives_problems_with_field_paths() -> None:
    body = api_object()
    body["spec"]["search"] = {"budget": {}}
    target, problems = parse(body)
    assert target is None
    assert [p.path for p in problems] == ["spec.search.budget"]
    assert status_of({"status": {"phase": "Bogus"}}).phase is Phase.IDLE


def test_prometheus_down_is_waiting_named_by_query_and_stops_at_the_first_refusal() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    values, waiting, problems = read_profile({"rps": "sum(rate(x[5m]))", "keys": "max(k)"}, url)
    assert values == {} and problems == []
    assert waiting is not None and waiting.reason == "PrometheusUnavailable"
    assert waiting.message.startswith("profile query rps (spec.profile.queries.rps): unavailable")
    assert "keys" not in waiting.message
    assert read_profile({}, None) == ({}, None, [])


def test_metrics_count_evaluations_failures_and_spending_once() -> None:
    metrics = OperatorMetrics()
    task = EvaluationTask(task_id="c1-quick", policy_code="x", context={}, stage="quick")
    ok = EvaluationOutcome(result=EvaluationResult(score=0.5))
    metrics.evaluation("shop", "router", task, ok)
    metrics.evaluation(
        "shop", "router", task, EvaluationOutcome.failed(FailureReason.TIMEOUT, "slow")
    )
    spent = LedgerState(
        models={"small": ModelUsage(prompt_tokens=100, completion_tokens=10, usd=0.5)}
    )
    metrics.ledger_baseline("shop", "router", spent)  # a resumed search's earlier spending
    more = LedgerState(
        models={"small": ModelUsage(prompt_tokens=150, completion_tokens=30, usd=0.75)}
    )
    metrics.ledger("shop", "router", more)
    metrics.target_state("shop", "router", TargetStatus(phase=Phase.SEARCHING, best_score=0.5))

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(
            name, {"target_namespace": "shop", "target": "router", **labels}
        )

    assert value("retune_evaluations_total", stage="quick", result="ok") == 1
    assert value("retune_evaluation_failures_total", reason="timeout") == 1
    assert value("retune_llm_tokens_total", model="small", kind="prompt") == 50
    assert value("retune_llm_tokens_total", model="small", kind="completion") == 20
    assert value("retune_llm_cost_usd_total", model="small") == 0.25
    assert value("retune_target_phase", phase="Searching") == 1
    assert value("retune_target_phase", phase="Idle") == 0
    assert value("retune_best_score") == 0.5
    metrics.outcomes("shop", "router", ["Promoted", "RolledBack"], "SLOViolation")
    assert value("retune_rollouts_total", outcome="Promoted") == 1
    assert value("retune_retunes_total", trigger="SLOViolation") == 1
    metrics.forget_target("shop", "router")
    assert value("retune_target_phase", phase="Searching") is None
    assert value("retune_rollouts_total", outcome="Promoted") is None


def test_readiness_waits_for_startup_and_tolerates_a_short_api_outage() -> None:
    health = Health()
    assert health.ready() == (False, "starting")
    health.started = True
    health.api_failed()
    assert health.ready()[0]
    assert not health.ready(grace=-1)[0]
    health.api_ok()
    assert health.ready(grace=-1)[0]


def test_a_revision_is_an_immutable_owned_config_map_named_by_its_content() -> None:
    code = "def route(request, *, alpha, depth):\n    return 'a'\n"
    name = revision_name("router", code)
    assert name == revision_name("router", code) != revision_name("router", code + "\n")
    assert len(revision_name("x" * 300, code)) <= 253
    owner = {
        "apiVersion": "retune.dev/v1alpha1",
        "kind": "OptimizationTarget",
        "name": "router",
        "uid": "1",
    }
    annotations = revision_annotations(
        candidate="c7", score=0.53, stable_score=0.47, validated_at=datetime(2025, 1, 1, tzinfo=UTC)
    )
    manifest = revision_manifest(
        name=name,
        namespace="shop",
        owner=owner,
        code=code,
        file_name="policy.py",
        annotations=annotations,
    )
    assert manifest["immutable"] is True and manifest["data"] == {"policy.py": code}
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == "1"
    assert manifest["metadata"]["labels"]["retune.dev/role"] == "policy-revision"
    assert manifest["metadata"]["annotations"]["retune.dev/holdout-score"] == "0.53"


# -- a Stable target's readings, and the manual controls ----------------------------------------
class _Cluster:
    """The reads a Stable target's readings make: its workload, the pods it runs, and the
    Secrets holding its models' API keys (``secrets``: name -> data; ``forbidden``: names
    the operator's RBAC does not cover). Every read of a Secret counts as ``secret``."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.statuses: list[dict[str, Any]] = []
        self.secrets: dict[str, dict[str, str]] = {}
        self.forbidden: set[str] = set()

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        self.calls["secret"] += 1
        if name in self.forbidden:
            raise ApiException(status=403, reason="Forbidden")
        data = self.secrets.get(name)
        return None if data is None else dict(data)

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        encoded = (self.secret_data(namespace, name) or {}).get(key)
        return None if encoded is None else base64.b64decode(encoded).decode()

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls["deployment"] += 1
        template = {"spec": {"nodeSelector": {"pool": "cpu"}}}
        return {"spec": {"selector": {"matchLabels": {"app": name}}, "template": template}}

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.calls["pods"] += 1
        return [{"spec": {"nodeName": "cpu-0"}}]

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls["config_map"] += 1
        return {"data": {"policy.py": ROUTER_SEED}}

    def replace_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.calls["replace_status"] += 1
        self.statuses.append(status)

    def remove_annotations(self, namespace: str, name: str, keys: tuple[str, ...]) -> None:
        self.calls["remove_annotations"] += 1


def _node(name: str, instance_type: str) -> NodeInfo:
    labels = {
        "pool": "cpu",
        "node.kubernetes.io/instance-type": instance_type,
        "kubernetes.io/arch": "amd64",
    }
    return node_info(
        {"metadata": {"name": name, "labels": labels}, "status": {"allocatable": {"cpu": "4"}}}
    )


def _stable_target() -> OptimizationTarget:
    body = api_object()
    body["spec"]["profile"] = {"queries": {"rps": "sum(rate(x[5m]))"}, "interval": "30s"}
    body["spec"]["slos"] = [{"name": "p99", "query": "p99", "threshold": 0.2, "for": "1m"}]
    target, problems = parse(body)
    assert target is not None and problems == []
    return target


def test_a_stable_target_reads_slos_profile_and_hardware_and_prometheus_down_is_no_data() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    target, cluster = _stable_target(), _Cluster()
    nodes = [_node("cpu-0", "m7i.xlarge"), _node("gpu-0", "p5.48xlarge")]
    now = datetime(2025, 1, 1, tzinfo=UTC)
    workload = read_workload(cluster, target)  # type: ignore[arg-type]
    reading = read_watch(cluster, target, workload, nodes, TargetStatus(), now, prometheus_url=url)  # type: ignore[arg-type]
    assert isinstance(reading.slo_samples["p99"], Unavailable)
    assert isinstance(reading.profile, SignalsWaiting)
    assert reading.profile.reason == "PrometheusUnavailable"
    assert isinstance(reading.hardware, HardwareReading)
    assert reading.hardware.summary.startswith("m7i.xlarge")  # the node its pod runs on

    # the profile is read again only once its interval has passed
    watch = WatchStatus(profile_read_at=now)
    later = TargetStatus(watch=watch)
    soon = read_watch(
        cluster, target, workload, nodes, later, now + timedelta(seconds=10), prometheus_url=url
    )  # type: ignore[arg-type]
    assert soon.profile is None
    due = read_watch(
        cluster, target, workload, nodes, later, now + timedelta(seconds=30), prometheus_url=url
    )  # type: ignore[arg-type]
    assert due.profile is not None


def test_one_outage_answers_every_further_query_of_the_round() -> None:
    calls: list[str] = []

    class Down:
        def query(self, promql: str) -> Sample:
            calls.append(promql)
            return Unavailable("connection refused")

    provider = StopAtOutage(Down())
    assert isinstance(provider.query("a"), Unavailable)
    assert isinstance(provider.query("b"), Unavailable)
    assert calls == ["a"]


def test_only_the_manual_controls_that_are_on_count() -> None:
    body = api_object()
    body["metadata"]["annotations"] = {
        "retune.dev/retune": "true",
        "retune.dev/abort": "false",
        "retune.dev/pause": "",
        "retune.dev/kopf-managed": "yes",
    }
    assert controls_of(body) == frozenset({"retune.dev/retune"})


def test_slos_and_canary_analysis_without_prometheus_are_a_spec_problem() -> None:
    target = _stable_target()

    cluster = _Cluster()
    workload = read_workload(cluster, target)  # type: ignore[arg-type]
    problems = spec_problems(cluster, target, workload, prometheus_url=None)  # type: ignore[arg-type]
    (problem,) = [p for p in problems if p.path == "spec.profile.prometheusUrl"]
    assert "the profile and the SLOs" in problem.message


# -- the models' API keys: each Secret read once, and only when a search needs it -------------
_KEY = base64.b64encode(b"sk-test").decode()


def _llm_search(*tiers: tuple[str, str]) -> dict[str, Any]:
    """spec.search with the llm mutator and one tier per (Secret, key) holding its API key."""
    models = [
        {
            "name": f"tier{index}",
            "baseUrl": "https://llm.example.com/v1",
            "model": "coder",
            "apiKey": {"secretKeyRef": {"name": name, "key": key}},
            "pricing": {"inputPerMillion": 0.1, "outputPerMillion": 0.4},
        }
        for index, (name, key) in enumerate(tiers)
    ]
    return {"mutator": "llm", "models": models}


def _key_problems(cluster: _Cluster, search: dict[str, Any]) -> list[tuple[str, str]]:
    body = api_object()
    body["spec"]["search"] = search
    target, problems = parse(body)
    assert target is not None and problems == []
    found = model_key_problems(cluster, target)  # type: ignore[arg-type]
    return [(p.path, p.message) for p in found if p.path.startswith("spec.search.models")]


def test_tiers_naming_one_secret_read_it_once_and_a_missing_secret_or_key_is_named() -> None:
    cluster = _Cluster()
    cluster.secrets["llm"] = {"openai": _KEY}
    tiers = [("llm", "openai"), ("llm", "anthropic"), ("llm", "openai"), ("gone", "openai")]
    problems = _key_problems(cluster, _llm_search(*tiers))
    assert cluster.calls["secret"] == 2  # "llm" once for three tiers, "gone" once
    assert problems == [
        (
            "spec.search.models[1].apiKey.secretKeyRef",
            "Secret 'llm' with key 'anthropic' not found in namespace 'shop'",
        ),
        (
            "spec.search.models[3].apiKey.secretKeyRef",
            "Secret 'gone' with key 'openai' not found in namespace 'shop'",
        ),
    ]


def test_a_secret_the_operator_may_not_read_is_asked_once_and_named_for_each_tier() -> None:
    cluster = _Cluster()
    cluster.forbidden.add("llm")
    problems = _key_problems(cluster, _llm_search(("llm", "openai"), ("llm", "anthropic")))
    assert cluster.calls["secret"] == 1
    message = (
        "the operator may not read Secret 'llm': its RBAC needs get on it "
        "(the chart's rbac.secretNames)"
    )
    assert problems == [
        ("spec.search.models[0].apiKey.secretKeyRef.name", message),
        ("spec.search.models[1].apiKey.secretKeyRef.name", message),
    ]


def _operator_context(cluster: _Cluster) -> OperatorContext:
    metrics = OperatorMetrics()
    return OperatorContext(
        cluster=cluster,  # type: ignore[arg-type]
        workers=Workers(4),
        jobs=JobSettings(cluster, metrics, threading.BoundedSemaphore(1)),  # type: ignore[arg-type]
        metrics=metrics,
        health=Health(),
        prometheus_url=f"http://127.0.0.1:{closed_port()}",
    )


def test_a_stable_check_reads_no_secret_and_one_before_a_search_reads_each_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[str] = []
    monkeypatch.setattr(kopf, "event", lambda *args, **kwargs: events.append(kwargs["reason"]))
    cluster = _Cluster()
    cluster.secrets["llm"] = {"openai": _KEY}
    nodes = [_node("cpu-0", "m7i.xlarge")]
    search = _llm_search(("llm", "openai"), ("llm", "openai"))
    body = _steady_body(cluster, nodes, search)
    cluster.calls.clear()
    loop = TargetLoop(_operator_context(cluster), "shop", "router")

    asyncio.run(loop.reconcile(body, nodes))  # a steady check: no search needs the key
    assert cluster.calls["secret"] == 0
    assert cluster.statuses[-1]["phase"] == "Stable"

    # The Secret is deleted while Stable; when a retune is about to search, it is read
    # once for both tiers and the target is Degraded, naming each tier's field.
    del cluster.secrets["llm"]
    body["metadata"]["annotations"] = {"retune.dev/retune": "true"}
    asyncio.run(loop.reconcile(body, nodes))
    assert cluster.calls["secret"] == 1
    status = TargetStatus.model_validate(cluster.statuses[-1])
    degraded = status.condition("Degraded")
    assert status.phase is Phase.DEGRADED and degraded is not None
    assert degraded.reason == "InvalidSpec"
    for index in (0, 1):
        assert (
            f"spec.search.models[{index}].apiKey.secretKeyRef: Secret 'llm' with key 'openai' "
            "not found in namespace 'shop'"
        ) in degraded.message
    assert "InvalidSpec" in events and "SignalsRead" not in events

    # Degraded, it checks the keys each time (one read): it stays so, without recovering.
    events.clear()
    asyncio.run(loop.reconcile(body, nodes))
    assert cluster.calls["secret"] == 2
    assert loop.status is not None and loop.status.phase is Phase.DEGRADED
    assert "Recovered" not in events

    # Given the Secret back, it recovers and the retune goes on, the Secret read once.
    cluster.secrets["llm"] = {"openai": _KEY}
    asyncio.run(loop.reconcile(body, nodes))
    assert cluster.calls["secret"] == 3
    assert loop.status is not None and loop.status.phase is Phase.PROFILING
    assert "Recovered" in events


def _steady_body(
    cluster: _Cluster, nodes: list[NodeInfo], search: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A Stable target whose search just ended (so the cooldown defers any trigger), its
    profile read just now, on the hardware it reads now; ``search`` is its spec.search."""
    body = api_object()
    body["spec"]["profile"] = {"queries": {"rps": "sum(rate(x[5m]))"}, "interval": "5m"}
    body["spec"]["slos"] = [{"name": "p99", "query": "p99", "threshold": 0.2, "for": "1m"}]
    if search is not None:
        body["spec"]["search"] = search
    target, problems = parse(body)
    assert target is not None and problems == []
    fingerprint = hardware_under(cluster, target, read_workload(cluster, target), nodes)  # type: ignore[arg-type]
    assert not isinstance(fingerprint, SignalsWaiting)
    digests, now = spec_digests(target.spec), datetime.now(UTC)
    status = TargetStatus(
        phase=Phase.STABLE,
        observed_generation=3,
        hardware_fingerprint=fingerprint.fingerprint,
        profile={"rps": 100.0},
        best_score=1.0,
        seed_score=1.0,
        search=SearchStatus(
            started_at=now - timedelta(hours=1),
            generation=3,
            signals_digest=digests.signals,
            search_digest=digests.search,
            budget_digest=digests.budget,
            finished_at=now,
        ),
        last_search_end_time=now,
        watch=WatchStatus(since=now, profile_read_at=now, current_profile={"rps": 100.0}),
    )
    body["status"] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return body


def test_a_stable_check_reads_the_workload_once_and_writes_only_what_is_new(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kopf, "event", lambda *args, **kwargs: None)
    cluster = _Cluster()
    nodes = [_node("cpu-0", "m7i.xlarge")]
    body = _steady_body(cluster, nodes)
    cluster.calls.clear()
    loop = TargetLoop(_operator_context(cluster), "shop", "router")

    asyncio.run(loop.reconcile(body, nodes))  # the first check adds the watch's conditions
    assert cluster.calls == {"config_map": 1, "deployment": 1, "pods": 1, "replace_status": 1}
    assert cluster.statuses[-1]["phase"] == "Stable"
    asyncio.run(loop.reconcile(body, nodes))  # nothing new: nothing written
    assert cluster.calls == {"config_map": 2, "deployment": 2, "pods": 2, "replace_status": 1}
    written = TargetStatus.model_validate(cluster.statuses[-1]).watch
    assert loop.status is not None and loop.status.watch is not None and written is not None
    assert loop.status.watch.checked_at is not None and written.checked_at is not None
    assert loop.status.watch.checked_at > written.checked_at  # checked, not written

    # a spec change is written at once, with the generation it reflects
    body["metadata"]["generation"] = 4
    asyncio.run(loop.reconcile(body, nodes))
    assert cluster.calls["replace_status"] == 2
    assert cluster.statuses[-1]["observedGeneration"] == 4


# -- bad input: a Degraded condition naming the field, never a crashed handler -----------------
_BAD_SEEDS = {
    # Parsing it runs the compiler out of memory: the check reports it, nothing hashes it.
    "nested deeply enough to exhaust memory": (
        {"inline": "def route(request, *, alpha, depth):\n    return " + "-" * 30000 + "1\n"},
        "spec.policy.seed.inline",
        "nested too deeply",
    ),
    "longer than the sandbox allows": (
        {"inline": "def route(request, *, alpha, depth):\n    return 1\n" + "#" * 70000},
        "spec.policy.seed.inline",
        "characters long",
    ),
    "not a program": (
        {"inline": "def route(request:\n"},
        "spec.policy.seed.inline",
        "syntax error",
    ),
    "from a key the ConfigMap does not have": (
        {"configMapRef": {"name": "router-seed", "key": "seed.bin"}},
        "spec.policy.seed.configMapRef.key",
        "has no key 'seed.bin'",
    ),
}


@pytest.mark.parametrize("case", sorted(_BAD_SEEDS))
def test_a_bad_seed_degrades_the_target_naming_the_field(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kopf, "event", lambda *args, **kwargs: None)
    seed, field, words = _BAD_SEEDS[case]
    cluster = _Cluster()
    body = api_object()
    body["spec"]["policy"]["seed"] = seed
    loop = TargetLoop(_operator_context(cluster), "shop", "router")
    asyncio.run(loop.reconcile(body, [_node("cpu-0", "m7i.xlarge")]))
    status = TargetStatus.model_validate(cluster.statuses[-1])
    degraded = status.condition("Degraded")
    assert status.phase is Phase.DEGRADED and degraded is not None, status
    assert degraded.reason == "InvalidSpec"
    assert f"{field}: " in degraded.message and words in degraded.message, degraded.message


def test_a_canary_write_that_fails_is_decided_again_and_nothing_else_is_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reconcile reads the rollout, the controller asks for the canary at its share;
    the API server refuses the write (a passing failure): the step is decided again knowing
    it, so the status keeps the rollout where it was and says why."""
    events: list[str] = []
    monkeypatch.setattr(kopf, "event", lambda *args, **kwargs: events.append(kwargs["reason"]))
    cluster = _Cluster()
    nodes = [_node("cpu-0", "m7i.xlarge")]
    body = _steady_body(cluster, nodes)
    rollout = begin("router-policy-abc")
    canary = TargetStatus.model_validate(body["status"]).model_copy(
        update={"phase": Phase.CANARY, "rollout": rollout, "canary_revision": rollout.revision}
    )
    body["status"] = canary.model_dump(mode="json", by_alias=True, exclude_none=True)
    reading = CanaryObservation(
        revision=rollout.revision,
        stable_revision="router-seed",
        stable_replicas=4,
        canary_replicas=None,
        canary_current=False,
    )
    writes: list[object] = []

    def refused(deployments: object, action: object) -> CanaryFailure:
        writes.append(action)
        return CanaryFailure("500 Internal Server Error: etcd timeout", permanent=False)

    monkeypatch.setattr(reconcile, "deployments_of", lambda *args: None)
    monkeypatch.setattr(reconcile, "read_canary", lambda *args, **kwargs: reading)
    monkeypatch.setattr(reconcile, "write_canary", refused)
    loop = TargetLoop(_operator_context(cluster), "shop", "router")
    delay = asyncio.run(loop.reconcile(body, nodes))

    assert writes == [ScaleCanary(rollout.revision, 10)]  # tried once, not again
    status = TargetStatus.model_validate(cluster.statuses[-1])
    assert status.phase is Phase.CANARY and status.rollout == rollout  # the step not taken
    progressing = status.condition("CanaryProgressing")
    assert progressing is not None and progressing.reason == "Interrupted"
    assert "etcd timeout" in progressing.message
    assert events == ["CanaryInterrupted"] and delay == 10.0
