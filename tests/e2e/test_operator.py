"""The operator end to end: a real control plane, a real Prometheus, the operator installed
by helm as a Pod on the real kubelet node under the chart's ServiceAccount, its evaluation
pods and the cache as real containers there."""

from __future__ import annotations

import base64
import json
import math
import time
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from retune.evaluate.parameters import read_values, values_only_problem
from retune.search.archive import Archive
from retune.search.state import EngineState
from retune.spec import GROUP, PLURAL, VERSION
from tests.cluster.node import HOST_FROM_PODS
from tests.cluster.nodes import REAL_NODE
from tests.cluster.processes import wait_until
from tests.e2e.environment import E2E
from tests.e2e.harness import (
    EvaluationRecorder,
    apply_target,
    cache_target,
    checkpoint,
    condition,
    custom,
    event_reasons,
    owned_objects,
    read_target,
    wait_for_status,
)
from tests.e2e.monitoring import dashboard_queries, variable_queries
from tests.e2e.workload import deploy_cache
from tests.llm_server import MODELS, running_mutation_server
from tests.test_parameters_policy import WEIGHTED_SEED, WEIGHTS

CPU_NODES = {REAL_NODE}
E2E_ROLES = ("story", "invalid", "signals", "llm", "parameters")
API_KEY = "sk-test-retune-e2e"


def llm_target(
    namespace: str, name: str, base_url: str, secret: str, budget: int = 8
) -> dict[str, Any]:
    """examples/01's target searching with the stand-in models, its key in a Secret."""
    target = cache_target(namespace, name, budget=budget)
    key = {"secretKeyRef": {"name": secret, "key": "openai"}}
    target["spec"]["search"]["mutator"] = "llm"
    target["spec"]["search"]["budget"]["maxUsd"] = 0.05
    target["spec"]["search"]["models"] = [
        {
            "name": model,
            "role": role,
            "baseUrl": base_url,
            "model": model,
            "apiKey": key,
            "pricing": {
                "inputPerMillion": card.input_per_million,
                "outputPerMillion": card.output_per_million,
            },
        }
        for model, role in (("small", "mutate"), ("large", "paradigm"))
        for card in [MODELS[model]]
    ]
    return target


def _applied_task_ids(state: EngineState) -> set[str]:
    """The evaluations whose results the checkpoint holds: never to be run again."""
    done = {f"c{point.index}-{subset}" for point in state.history for subset in ("quick", "full")}
    for candidate in state.pending.values():
        if candidate.quick is not None:
            done.add(f"c{candidate.index}-quick")
        if candidate.full is not None:
            done.add(f"c{candidate.index}-full")
    return done


def test_a_target_is_tuned_resumed_after_a_kill_validated_and_cleaned_up(e2e: E2E) -> None:
    api, namespace, operator = e2e.api, e2e.namespaces["story"], e2e.operator
    name = "cache-eviction"
    recorder = EvaluationRecorder(api, namespace).start()

    # Given the cache on the CPU pool, when examples/01's target is applied
    deploy_cache(api, namespace)
    apply_target(api, cache_target(namespace, name))

    # then it reads its profile and hardware and searches, with pods on the CPU pool
    searching = wait_for_status(
        api, namespace, name, lambda s: s.get("phase") == "Searching", 60, "a search", operator
    )
    assert searching["hardwareFingerprint"].startswith("hw-")
    assert searching["hardware"]["node.kubernetes.io/instance-type"] == "m6i.xlarge"
    assert searching["profile"]["key_space"] == 2000000

    # When the operator is killed -9 in the middle of the search
    wait_until(
        lambda: (state := checkpoint(api, namespace, name)) and state.applied >= 8,
        120,
        "8 applied candidates",
    )
    operator.kill()
    killed_at = time.time()
    before = checkpoint(api, namespace, name)
    assert before is not None and before.stop_reason is None

    # and started again
    operator.start()

    # then the search resumes where it was, and goes on to a validated revision
    ready = wait_for_status(
        api,
        namespace,
        name,
        lambda s: s.get("phase") in ("Ready", "Stable"),
        240,
        "the end",
        operator,
    )
    after = checkpoint(api, namespace, name)
    assert after is not None and after.stop_reason == "evaluation budget reached"
    assert after.history[: len(before.history)] == before.history  # the ledger is continuous
    assert [p.index for p in after.history] == list(range(len(after.history)))
    assert after.ledger.evaluations >= before.ledger.evaluations
    assert after.ledger.wall_seconds >= before.ledger.wall_seconds
    assert ready["ledger"]["evaluations"] == after.ledger.evaluations <= 24
    assert ready["search"]["resumes"] >= 1

    rerun = set(recorder.tasks_since(killed_at)) & _applied_task_ids(before)
    assert not rerun, f"evaluations repeated after the restart: {sorted(rerun)}"
    searched = [t for t in recorder.tasks_since() if not t.startswith("validate-")]
    assert {int(t[1:].split("-")[0]) for t in searched} <= {p.index for p in after.history}
    # Only work in flight at the kill (its results were lost with the process) ran twice.
    in_flight = {f"c{i}-{s}" for i in before.pending for s in ("quick", "full")}
    assert {t for t in searched if searched.count(t) > 1} <= in_flight

    assert recorder.pod_nodes, "no evaluation pod was seen"
    assert set(recorder.pod_nodes.values()) <= CPU_NODES, recorder.pod_nodes

    assert ready["phase"] == "Ready", ready["conditions"]
    assert ready["bestScore"] > ready["seedScore"]
    assert ready["validation"]["passed"]
    assert ready["validation"]["candidateScore"] > ready["validation"]["stableScore"]
    revision = ready["validatedRevision"]
    assert revision.startswith(f"{name}-policy-")
    config_map = client.CoreV1Api(api).read_namespaced_config_map(revision, namespace)
    assert config_map.immutable is True
    assert after.best is not None and config_map.data == {"policy.py": after.best.code}
    assert config_map.metadata.owner_references[0].name == name
    assert condition(ready, "Ready")["reason"] == "RevisionValidated"
    reasons = event_reasons(api, namespace, name)
    for reason in (
        "SignalsRead",
        "SearchStarted",
        "SearchResumed",
        "SearchFinished",
        "ValidationPassed",
        "RevisionPublished",
    ):
        assert reason in reasons, reasons

    assert operator.get("/healthz")[0] == 200 and operator.get("/readyz")[0] == 200
    status, metrics = operator.get("/metrics")
    assert status == 200
    assert (
        f'retune_target_phase{{phase="Ready",target="{name}",target_namespace="{namespace}"}} 1.0'
        in metrics
    )
    assert "retune_evaluations_total" in metrics and "retune_reconcile_duration_seconds" in metrics

    # When the target is deleted, then its Jobs, pods and ConfigMaps go with it
    recorder.stop()
    client.CustomObjectsApi(api).delete_namespaced_custom_object(
        "retune.dev", "v1alpha1", namespace, "optimizationtargets", name
    )
    wait_until(lambda: read_target(api, namespace, name) is None, 60, "the target to go")
    wait_until(lambda: not owned_objects(api, namespace, name), 60, "its objects to go")


def test_an_invalid_target_is_refused_or_degraded_naming_the_field(e2e: E2E) -> None:
    api, namespace, operator = e2e.api, e2e.namespaces["invalid"], e2e.operator
    deploy_cache(api, namespace)

    # A target the schema can refuse is refused by the API server, naming the field
    refused = cache_target(namespace, "refused")
    refused["spec"]["search"]["budget"] = {"maxEvaluations": 0}
    with pytest.raises(ApiException) as rejected:
        apply_target(api, refused)
    assert rejected.value.status == 422
    assert "spec.search.budget.maxEvaluations" in str(rejected.value.body)

    # A seed ConfigMap that does not exist, and a seed file (local mode only)
    missing = cache_target(namespace, "missing-seed")
    missing["spec"]["policy"]["seed"] = {"configMapRef": {"name": "cache-seed", "key": "policy.py"}}
    apply_target(api, missing)
    local = cache_target(namespace, "local-seed")
    local["spec"]["policy"]["seed"] = {"file": "seed_policy.py"}
    apply_target(api, local)

    def degraded(field: str) -> Any:
        def check(status: dict[str, Any]) -> bool:
            found = condition(status, "Degraded")
            return status.get("phase") == "Degraded" and field in found.get("message", "")

        return check

    seedless = wait_for_status(
        api,
        namespace,
        "missing-seed",
        degraded("spec.policy.seed.configMapRef.name"),
        60,
        "Degraded naming the seed ConfigMap",
        operator,
    )
    assert condition(seedless, "Degraded")["reason"] == "InvalidSpec"
    assert "ConfigMap 'cache-seed' not found" in condition(seedless, "Degraded")["message"]
    wait_for_status(
        api, namespace, "local-seed", degraded("spec.policy.seed.file"), 60, "Degraded", operator
    )
    assert "InvalidSpec" in event_reasons(api, namespace, "missing-seed")
    # (both tune the cache, created within a second or so: the first by name holds it)
    custom(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "local-seed")
    wait_until(lambda: read_target(api, namespace, "local-seed") is None, 60, "it to go")

    # When the ConfigMap appears, the target recovers by itself
    seed = cache_target(namespace)["spec"]["policy"]["seed"]["inline"]
    client.CoreV1Api(api).create_namespaced_config_map(
        namespace, {"metadata": {"name": "cache-seed"}, "data": {"policy.py": seed}}
    )
    recovered = wait_for_status(
        api,
        namespace,
        "missing-seed",
        lambda s: (
            condition(s, "Degraded").get("status") == "False" and s.get("phase") == "Searching"
        ),
        60,
        "the target to recover",
        operator,
    )
    assert condition(recovered, "Degraded")["reason"] == "Recovered"

    # A second target of the same Deployment is Degraded, naming the one that tunes it,
    # and takes over once that one is deleted (one target per workload)
    apply_target(api, cache_target(namespace, "second"))
    second = wait_for_status(
        api,
        namespace,
        "second",
        degraded("spec.workloadRef.name"),
        60,
        "the second target of the cache to be Degraded",
        operator,
    )
    assert "tuned by OptimizationTarget missing-seed" in condition(second, "Degraded")["message"]
    custom(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "missing-seed")
    wait_for_status(
        api,
        namespace,
        "second",
        lambda s: s.get("phase") not in (None, "Degraded"),
        60,
        "the second target to take over the cache",
        operator,
    )


def test_prometheus_down_makes_the_target_wait_and_it_recovers(e2e: E2E) -> None:
    api, namespace, operator = e2e.api, e2e.namespaces["signals"], e2e.operator
    deploy_cache(api, namespace)

    # Given Prometheus is down, when a target is applied, then it waits and says why
    e2e.prometheus.stop()
    try:
        apply_target(api, cache_target(namespace))
        waiting = wait_for_status(
            api,
            namespace,
            "cache-eviction",
            lambda s: condition(s, "SignalsReady").get("reason") == "PrometheusUnavailable",
            60,
            "the target to wait for Prometheus",
            operator,
        )
    finally:
        e2e.prometheus.start()
    assert waiting["phase"] == "Profiling"
    message = condition(waiting, "SignalsReady")["message"]
    assert "spec.profile.queries." in message
    assert "cannot connect to Prometheus" in message
    assert condition(waiting, "Ready")["reason"] == "WaitingForSignals"
    assert "PrometheusUnavailable" in event_reasons(api, namespace, "cache-eviction")

    # When Prometheus is back, then the target reads its profile and searches
    searching = wait_for_status(
        api,
        namespace,
        "cache-eviction",
        lambda s: s.get("phase") == "Searching",
        60,
        "the search to start",
        operator,
    )
    assert condition(searching, "SignalsReady")["status"] == "True"
    assert searching["profile"]["zipf_alpha"] == 0.85


def test_an_llm_target_reads_its_key_from_a_secret_and_accounts_every_token(e2e: E2E) -> None:
    api, namespace, operator = e2e.api, e2e.namespaces["llm"], e2e.operator
    started = time.time()
    deploy_cache(api, namespace)
    client.CoreV1Api(api).create_namespaced_secret(
        namespace, {"metadata": {"name": "llm-keys"}, "stringData": {"openai": API_KEY}}
    )

    def search_finished(name: str, what: str) -> dict[str, Any]:
        def finished(status: dict[str, Any]) -> bool:
            return (status.get("search") or {}).get("finishedAt") is not None

        return wait_for_status(api, namespace, name, finished, 240, what, operator)

    def delete(name: str) -> None:
        """The target and what it owns gone: the next one tunes the same Deployment (one
        target per workload)."""
        custom(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        wait_until(lambda: read_target(api, namespace, name) is None, 60, f"{name} to go")

    # (the stand-in models answer only with the key: 401 otherwise)
    # (it listens where the operator's pod reaches it: the host's address on the pods' bridge)
    with running_mutation_server(seed=5, api_key=API_KEY, host="0.0.0.0") as server:
        base_url = f"http://{HOST_FROM_PODS}:{server.port}/v1"
        # A tier naming a Secret that does not exist: Degraded, naming the field
        # (on a Deployment of its own, which does not exist: the cache's next targets are
        # not held up by it, one target per workload)
        keyless_target = llm_target(namespace, "keyless", base_url, "no-such-secret")
        keyless_target["spec"]["workloadRef"]["name"] = "cache-keyless"
        apply_target(api, keyless_target)
        keyless = wait_for_status(
            api,
            namespace,
            "keyless",
            lambda s: (
                "spec.search.models[0].apiKey.secretKeyRef"
                in condition(s, "Degraded").get("message", "")
            ),
            60,
            "Degraded naming the Secret",
            operator,
        )
        assert keyless["phase"] == "Degraded"

        # Given the key in a Secret, when the target is applied, then it searches with the
        # models, and its ledger holds exactly the tokens the server served
        apply_target(api, llm_target(namespace, "llm-tuned", base_url, "llm-keys"))
        done = search_finished("llm-tuned", "the search to finish")
        served = server.stats()
        # the money was written ahead to the target's spend journal, every call settled there
        journal = client.CoreV1Api(api).read_namespaced_config_map("llm-tuned-spend", namespace)
        written = json.loads(base64.b64decode(journal.binary_data["spend"]))
        # the key went no further than the call: not in the status, not in the Events
        everything = str(read_target(api, namespace, "llm-tuned")) + str(
            event_reasons(api, namespace, "llm-tuned")
        )
        tuned = checkpoint(api, namespace, "llm-tuned")
        delete("llm-tuned")

        # Given a second search with the models, when the operator is killed -9 while the
        # server has served calls that the search's checkpoint does not hold yet, and
        # started again
        server.reset()
        apply_target(api, llm_target(namespace, "llm-killed", base_url, "llm-keys", budget=16))

        def unrecorded_spend() -> bool:
            state = checkpoint(api, namespace, "llm-killed")
            return state is not None and server.usd() > state.ledger.usd_spent + 1e-9

        wait_until(unrecorded_spend, 120, "a served call the checkpoint does not hold")
        operator.kill()
        operator.start()
        resumed = search_finished("llm-killed", "the killed search to finish")
        served_after_kill = server.usd()
        delete("llm-killed")

        # Given a model that answers only prose (a gateway's notice, say), when a search
        # asks it, then the tier rests after its tries keep failing: a Warning Event, the
        # tier's rests and failed calls in the status, and fewer calls than mutations
        server.reset()
        server.set_faults("garbage@small:1.0")
        apply_target(api, llm_target(namespace, "llm-prose", base_url, "llm-keys", budget=24))
        prose = search_finished("llm-prose", "the search asking a prose-only model to finish")
        small_calls = sum(call.get("model") == "small" for call in server.calls())
        prose_events = event_reasons(api, namespace, "llm-prose")
        delete("llm-prose")

        # Given a spend limit below the search's own budget, when the target searches, then
        # the search gets what the limit leaves and spends no more than that
        server.reset()
        capped_target = llm_target(namespace, "llm-capped", base_url, "llm-keys", budget=24)
        capped_target["spec"]["retune"] = {"spendLimit": {"maxUsd": 0.002, "window": "168h"}}
        apply_target(api, capped_target)
        capped = search_finished("llm-capped", "the search under a spend limit to finish")
        capped_served, calls_at_cap = server.usd(), len(server.calls())
        # and when the limit is lowered below what was spent and the search changed, the
        # new search waits for room instead of starting
        lowered = {
            "retune": {"spendLimit": {"maxUsd": capped["ledger"]["usd"] / 2, "window": "168h"}},
            "search": {"seed": 7},
        }
        custom(api).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "llm-capped", {"spec": lowered}
        )
        waiting = wait_for_status(
            api,
            namespace,
            "llm-capped",
            lambda s: condition(s, "Searching").get("reason") == "SpendLimitReached",
            60,
            "the changed search to wait for the spend limit",
            operator,
        )
        calls_while_waiting = len(server.calls()) - calls_at_cap
    assert capped["search"]["usdAllowance"] == pytest.approx(0.002)
    assert 0 < capped["ledger"]["usd"] <= 0.002
    assert capped["search"]["stopReason"] == "USD budget reached"  # the allowance, not 0.05
    assert capped_served == pytest.approx(capped["ledger"]["usd"], abs=1e-6)
    assert capped["spend"]["totalUsd"] == pytest.approx(capped["ledger"]["usd"], abs=1e-6)
    assert waiting["phase"] == "Profiling"
    # (below what the last search could not use of its allowance: no room opens until the
    # limit is raised, and the wait is said once)
    assert (
        "when spec.retune.spendLimit.maxUsd is raised" in condition(waiting, "Searching")["message"]
    )
    assert calls_while_waiting == 0  # the server was not called while the search waited
    assert waiting["spend"]["totalUsd"] == pytest.approx(capped["spend"]["totalUsd"])
    prose_small = prose["ledger"]["models"]["small"]
    assert prose_small["rests"] >= 1, prose_small
    assert prose_small["failedCalls"] == prose_small["calls"] == small_calls
    assert small_calls < 2 * 20  # without a rest, a mutation and its repair each time
    assert "ModelTierResting" in prose_events
    # then every dollar served is in its ledger (a call in flight at the kill at its worst
    # case), and the budget held
    assert resumed["search"]["resumes"] >= 1
    assert served_after_kill - 1e-6 <= resumed["ledger"]["usd"] <= 0.05
    ledger = done["ledger"]
    assert served.get("small", {}).get("completion_tokens", 0) > 0, served
    assert {
        model: {
            "prompt_tokens": used["promptTokens"],
            "completion_tokens": used["completionTokens"],
        }
        for model, used in ledger["models"].items()
        if used["promptTokens"] or used["completionTokens"]
    } == served
    # the USD is those tokens at the tiers' prices (the status rounds to 6 digits)
    priced = sum(
        used["prompt_tokens"] * MODELS[model].input_per_million / 1e6
        + used["completion_tokens"] * MODELS[model].output_per_million / 1e6
        for model, used in served.items()
    )
    assert ledger["usd"] == pytest.approx(priced, abs=1e-6)
    assert 0 < ledger["usd"] <= 0.05
    assert ledger["evaluations"] == 8
    # before the models, a free start of the built-in edits: a third of the 8, on top, in
    # pods too, its programs kept out of the models' prompts
    assert tuned is not None and tuned.free_start is not None
    assert tuned.ledger.free_evaluations == 2 == len(tuned.free_start.history)
    assert all(point.usd == 0 for point in tuned.free_start.history)
    # the money was written ahead to the target's spend journal, every call settled there
    assert written["open"] == []
    assert written["base"]["usd_spent"] == pytest.approx(ledger["usd"], abs=1e-6)
    assert [ref.name for ref in journal.metadata.owner_references] == ["llm-tuned"]
    # the key went no further than the call: not in the status, not in the Events
    assert API_KEY not in everything

    # and its users see all of it where they look: the chart's dashboard and alerts
    _dashboard_and_alerts_show(e2e, namespace, started, capped["spend"]["totalUsd"])


QUIET_PANELS = {
    "Evaluation failures by reason",
    "Canary weight",
    "Canary analysis",
    "SLO values and burn rates",
    "SLOs violated or pending",
    "Retunes by trigger",
    "Rollouts by outcome",
}
"""The dashboard's panels that the LLM targets give nothing to show: no rollout, no SLO."""


def _dashboard_and_alerts_show(e2e: E2E, namespace: str, since: float, capped_usd: float) -> None:
    """The chart's Grafana dashboard's queries, as Grafana sends them for this namespace,
    on the real Prometheus scraping the operator; and the chart's alerts evaluated there."""
    prometheus, monitoring = e2e.prometheus, e2e.monitoring
    # When one target waits on its spend limit and one is Degraded, the chart's alerts say
    # so for those targets, and none says the operator is down or idle (an alert on a
    # target's first outcome is checked where the outcome is certain: test_continuous's
    # rolled-back canary; whether a search here finds a winner is its draws')
    # (and Prometheus has scraped the wait's Warning Event twice: a panel's increase()
    # needs two samples of a series)
    event = f'retune_events_total{{target_namespace="{namespace}",reason="SpendLimitReached"}}'

    def alerted() -> bool:
        alerts = monitoring.alerts(namespace)
        return bool(
            {"llm-capped"} <= alerts.get("RetuneSpendLimitReached", set())
            and {"keyless"} <= alerts.get("RetuneTargetDegraded", set())
            and prometheus.query(f"count_over_time({event}[1h]) >= 2")
        )

    wait_until(alerted, 60, "the chart's alerts on the waiting and the Degraded target")
    alerts = monitoring.alerts(namespace)
    assert alerts["RetuneSpendLimitReached"] == {"llm-capped"}, alerts
    assert alerts["RetuneTargetDegraded"] == {"keyless"}, alerts
    assert "RetuneOperatorDown" not in alerts and "RetuneOperatorNotReconciling" not in alerts

    # The dashboard's variables offer this namespace and its targets
    end = time.time()
    variables = variable_queries()
    label, selector = variables["namespace"]
    assert namespace in prometheus.label_values(label, selector, since, end)
    label, selector = variables["target"]
    offered = prometheus.label_values(label, selector.replace("$namespace", namespace), since, end)
    assert {"keyless", "llm-tuned", "llm-killed", "llm-prose", "llm-capped"} <= set(offered)

    # Every panel's query is one Prometheus runs (it refuses a query it cannot parse), and
    # every panel but those of rollouts and SLOs shows this namespace's work
    step = 15.0
    start = end - step * math.ceil((end - since) / step)  # the last point is now
    shown: dict[str, list[dict[str, Any]]] = {}
    for title, query in dashboard_queries(namespace, step=step):
        shown.setdefault(title, []).extend(prometheus.query_range(query, start, end, step))
    assert {title for title, series in shown.items() if not series} <= QUIET_PANELS, shown

    def last(title: str, target: str) -> float:
        """The panel's latest value for ``target`` (of the current operator pod's series:
        a replaced pod's series end earlier)."""
        found = [s["values"][-1] for s in shown[title] if s["metric"].get("target") == target]
        assert found, f"{title}: nothing for {target}"
        return float(max(found)[1])

    assert last("Spend by all searches (USD)", "llm-capped") == pytest.approx(capped_usd, abs=1e-6)
    assert last("Spend limit left (USD)", "llm-capped") == 0
    assert {s["metric"]["target"] for s in shown["Degraded targets"]} == {"keyless"}
    spent = [float(v) for s in shown["Search spend per model (USD/h)"] for _, v in s["values"]]
    assert max(spent) > 0
    warnings = {s["metric"]["reason"] for s in shown["Warning events"]}
    assert {"ModelTierResting", "SpendLimitReached"} <= warnings, warnings
    assert event_reasons(e2e.api, namespace, "llm-capped").count("SpendLimitReached") == 1


def test_a_parameters_target_moves_only_its_values_and_publishes_them_as_json(e2e: E2E) -> None:
    api, namespace, operator = e2e.api, e2e.namespaces["parameters"], e2e.operator
    name = "cache-weights"
    deploy_cache(api, namespace)
    target = cache_target(namespace, name, budget=16)
    policy = target["spec"]["policy"]
    declared = [w.model_dump(exclude_none=True) for w in WEIGHTS]
    policy.update(kind="parameters", seed={"inline": WEIGHTED_SEED}, parameters=declared)
    apply_target(api, target)

    ready = wait_for_status(
        api,
        namespace,
        name,
        lambda s: s.get("phase") in ("Ready", "Stable", "Degraded"),
        240,
        "the end",
        operator,
    )
    assert ready["phase"] == "Ready", ready["conditions"]
    state = checkpoint(api, namespace, name)
    assert state is not None and state.best is not None
    # every program the search kept is the seed with its weights moved, within bounds
    kept = [state.best, *Archive(state.archive).elites()]
    assert len(kept) > 2
    for elite in kept:
        assert values_only_problem(WEIGHTED_SEED, elite.code, WEIGHTS) is None
    config_map = client.CoreV1Api(api).read_namespaced_config_map(
        ready["validatedRevision"], namespace
    )
    assert set(config_map.data) == {"policy.py", "policy.json"}
    values = json.loads(config_map.data["policy.json"])
    assert values == read_values(config_map.data["policy.py"], WEIGHTS)
    assert values != {"FREQUENCY_WEIGHT": 0.0, "RETURN_WEIGHT": 0.0}
