"""The continuous-tuning story, scene by scene, told as Given / When / Then: each step says
what it does (``story.when``) and what it expects (``story.then``), and the asserts after a
``then`` check it at once, next to the step that caused it. The end-to-end tests play the
scenes; the cluster demo plays the same scenes and prints their timeline.
"""

from __future__ import annotations

import re
import time
from typing import Any

from retune.search.archive import Archive
from tests.cluster.nodes import REAL_NODE
from tests.cluster.processes import wait_until
from tests.cluster.prometheus import PrometheusServer
from tests.e2e.harness import checkpoint, condition
from tests.e2e.operator_pod import OperatorPod
from tests.e2e.story import SHIFTED, CacheStory, continuous_target, finished, promoted
from tests.e2e.workload import MIX

SEARCH = 150.0
"""Seconds a search, its validation and its canary may take on 2 shared cores."""
CPU_NODES = (REAL_NODE,)
"""The CPU pool: the real kubelet node."""
NEW_INSTANCE_TYPE = "m7i.xlarge"
DRIFTED = {"key_space": 20000}
"""The mix after the drift: four times the keys, far beyond the 50% drift threshold."""
ONE_SHOT_CONTROLS = {"retune.dev/abort", "retune.dev/promote", "retune.dev/retune"}
TEST_EVALUATOR = "ghcr.io/retune/evaluator-test:0.1.0"
TEST_EVALUATOR_PATH = "/opt/retune/evaluator/scoring_evaluator.py"
RECENCY_FROM = 10000
"""Where the test evaluator's context mode wants recency instead of frequency: between the
recorded mix's key space and the drifted one's."""
SEARCH_TASK = re.compile(r"c\d+-\w+")
"""A search's evaluation task ids (validation's are ``validate-...``)."""


def tuned(story: CacheStory) -> None:
    """A target is tuned and promoted, retuned when its SLO is violated, and again when
    the hardware under it changes."""
    recorder, traffic = story.recorder, story.traffic
    assert recorder is not None and traffic is not None
    story.given("the cache running LRU under the load generator's traffic")
    story.apply(continuous_target(story.namespace))
    first = story.wait(promoted(1), SEARCH, "the first promotion")
    story.then("a better policy is found, validated, rolled out as a canary and promoted")
    revision = first["stableRevision"]
    assert [(r["revision"], r["outcome"]) for r in first["history"]] == [(revision, "Promoted")]
    assert condition(first, "Ready")["reason"] == "Promoted"
    assert story.deployment("cache-canary") is None
    story.saw("RolloutStarted", "CanaryStep", "CanaryPromoted")
    traffic.wait_for_pods({"stable"})  # the promoted pods carry the stable track
    state = checkpoint(story.api, story.namespace, story.name)
    elites = {elite.code for elite in Archive(state.archive).elites()} if state else set()

    story.when(f"the load generator shifts its mix to {SHIFTED}")
    shifted_at = time.time()
    traffic.shift(**SHIFTED)
    retuning = story.wait(
        lambda s: s.get("lastRetuneTrigger") == "SLOViolation", 90, "a retune on the SLO"
    )
    story.then("the hit ratio SLO is violated, and a retune starts")
    assert "hit-ratio" in retuning["lastRetuneReason"]
    story.saw("SLOViolated", "RetuneStarted")

    story.when("the SLO is lowered to 0.01: the owners accept the new normal")
    slo = story.target()["spec"]["slos"][0]
    story.patch_spec({"slos": [{**slo, "threshold": 0.01}]})
    second = story.wait(promoted(2), SEARCH, "the second promotion")
    story.then(
        "the retune ran on the shifted profile from the stable revision, warm-started, and "
        "its winner is the workload's policy"
    )
    search = second["search"]
    assert search["trigger"] == "SLOViolation" and search["seedRevision"] == revision
    assert search["warmStart"] and search["warmPrograms"] > 0
    assert {key: second["profile"][key] for key in SHIFTED} == SHIFTED
    rescored = [
        task
        for task in recorder.tasks
        if task.at >= shifted_at
        and task.code in elites
        and re.fullmatch(r"c[1-9]\d*-\w+", task.task_id)
    ]
    assert rescored, "the retune evaluated none of the previous archive's elites"
    assert second["stableRevision"] not in (None, revision)
    assert story.policy_of(story.deployment() or {}) == second["stableRevision"]

    story.when(f"{', '.join(CPU_NODES)} relabelled to instance type {NEW_INSTANCE_TYPE}")
    relabelled_at = time.time()
    for node in CPU_NODES:
        story.env.cluster.relabel_node(
            node, {"node.kubernetes.io/instance-type": NEW_INSTANCE_TYPE}
        )
    third = story.wait(
        lambda s: (
            s.get("lastRetuneTrigger") == "HardwareChange"
            and (s.get("search") or {}).get("finishedAt") is not None
            and s.get("phase") == "Stable"
        ),
        SEARCH,
        "a retune on the new hardware",
    )
    story.then(
        "once the change has settled, a retune runs with its evaluations on the relabelled "
        "nodes, told the new instance type"
    )
    assert third["hardware"]["node.kubernetes.io/instance-type"] == NEW_INSTANCE_TYPE
    assert NEW_INSTANCE_TYPE in third["lastRetuneReason"]
    evaluated = [task for task in recorder.tasks if task.at >= relabelled_at]
    assert evaluated, "no evaluation after the relabelling"
    hardware = {task.hardware["node.kubernetes.io/instance-type"] for task in evaluated}
    assert hardware == {NEW_INSTANCE_TYPE}
    assert recorder.pod_nodes and set(recorder.pod_nodes.values()) <= set(CPU_NODES)
    assert third["retunes"] == 2
    story.saw("HardwareChanged", "HardwareSettled")


def drifting(story: CacheStory) -> None:
    """A target tuned on one profile is retuned when the profile drifts and stays drifted."""
    assert story.traffic is not None
    story.given("a target whose SLO never calls and whose drift threshold is 50% for 4 s")
    story.apply(
        continuous_target(story.namespace, budget=7, slo_threshold=0.0, drift_threshold=0.5)
    )
    first = story.wait(promoted(1), SEARCH, "the first promotion")
    story.then("it is tuned and promoted on the recorded mix")
    assert first["profile"]["key_space"] != DRIFTED["key_space"]

    story.when(f"the load generator shifts its mix to {DRIFTED}")
    story.traffic.shift(**DRIFTED)

    def retuned(status: dict[str, Any]) -> bool:
        search = status.get("search") or {}
        drifted = [c for c in status.get("conditions", []) if c["type"] == "Drifted"]
        return (
            search.get("trigger") == "ProfileDrift"
            and search.get("finishedAt") is not None
            and status.get("phase") == "Stable"
            and bool(drifted)
            and drifted[0]["status"] == "False"
        )

    done = story.wait(retuned, SEARCH, "a retune on the drift")
    story.then(
        "once the drift has lasted its 4 s, a retune named after it runs warm-started on "
        "the new profile, and the target is stable on it"
    )
    assert done["lastRetuneTrigger"] == "ProfileDrift"
    assert "key_space" in done["lastRetuneReason"]
    search = done["search"]
    assert search["warmStart"] and search["warmPrograms"] > 0
    assert search["seedRevision"] == first["stableRevision"]
    assert done["profile"]["key_space"] == DRIFTED["key_space"]
    assert done["retunes"] == 1
    reasons = story.saw("ProfileDrifted", "RetuneStarted")
    assert reasons.index("ProfileDrifted") < reasons.index("RetuneStarted")
    # (a profile that only drifted, with an SLO that never called, is not an SLO retune)
    assert "SLOViolated" not in reasons


def steered(story: CacheStory) -> None:
    """A rollout steered by hand: paused, aborted, a retune asked for, its canary promoted."""
    before = story.generation()
    story.given("a target whose canary steps last 15 s, with a canary in flight")
    story.apply(continuous_target(story.namespace, budget=7, step_interval="15s"))
    story.wait(lambda s: s.get("phase") == "Canary", SEARCH, "the canary")

    story.when("annotated retune.dev/pause=true")
    story.annotate("retune.dev/pause")
    story.wait(lambda s: "paused" in (s.get("rollout") or {}).get("message", ""), 30, "the pause")
    time.sleep(20)
    paused = story.status()
    story.then("it holds at its first share past its 15 s interval, nothing analysed or ended")
    rollout = paused["rollout"]
    assert paused["phase"] == "Canary" and rollout["step"] == 0
    assert "retune.dev/pause" in rollout["message"] and not paused.get("history")

    story.when("annotated retune.dev/abort=true")
    story.annotate("retune.dev/abort")
    aborted = story.wait(finished("Aborted"), 30, "the abort")
    story.then("it is rolled back at once, paused or not; the stable never written to")
    assert [r["outcome"] for r in aborted["history"]] == ["Aborted"]
    assert "retune.dev/abort" in aborted["history"][-1]["reason"]
    assert aborted.get("stableRevision") is None
    story.saw("CanaryAborted")

    story.when("retune.dev/pause removed; annotated retune.dev/retune=true")
    story.annotate("retune.dev/pause", None)
    story.annotate("retune.dev/retune")
    story.wait(
        lambda s: s.get("lastRetuneTrigger") == "Manual" and s.get("phase") == "Canary",
        SEARCH,
        "the manual retune's canary",
    )
    story.then("a new search runs, and its winner goes out as a canary")
    story.saw("RetuneStarted")

    story.when("annotated retune.dev/promote=true")
    story.annotate("retune.dev/promote")
    done = story.wait(promoted(1), 30, "the promotion")
    story.then("the canary replaces the stable before its first step is over")
    assert done["lastRetuneTrigger"] == "Manual" and done["search"]["trigger"] == "Manual"
    assert [r["outcome"] for r in done["history"]] == ["Aborted", "Promoted"]
    assert "retune.dev/promote" in done["history"][-1]["reason"]
    assert story.policy_of(story.deployment() or {}) == done["stableRevision"]
    assert story.generation() == before + 1
    story.saw("CanaryPromoted")
    # the one-shot controls were removed by the operator; retune.dev/pause was the user's
    annotations = story.target()["metadata"].get("annotations") or {}
    assert not ONE_SHOT_CONTROLS & set(annotations)


def failing_canary(story: CacheStory) -> None:
    """A canary whose analysis fails is rolled back; the stable is untouched."""
    before = story.generation()
    story.given("a target whose analysis asks the canary for a hit ratio no cache reaches")
    story.apply(continuous_target(story.namespace, budget=7, canary_floor=0.99))
    after = story.wait(finished("RolledBack"), SEARCH, "the rollback")
    story.then("its canary is rolled back, saying which check failed; the stable untouched")
    record = after["history"][-1]
    assert "hit-ratio" in record["reason"] and "is not at least 0.99" in record["reason"]
    assert after.get("stableRevision") is None and after.get("validatedRevision") is None
    assert condition(after, "Ready")["reason"] == "RolledBack"
    story.saw("CanaryRolledBack")
    assert story.generation() == before
    assert story.policy_of(story.deployment() or {}) == "cache-policy"
    wait_until(lambda: story.deployment("cache-canary") is None, 30, "the canary to go")
    story.then("the chart's alert on a rolled-back canary fires for it, the first rollback")
    alerts = story.env.monitoring.alerts
    wait_until(
        lambda: story.name in alerts(story.namespace).get("RetuneCanaryRolledBack", set()),
        30,
        "the RetuneCanaryRolledBack alert on the real Prometheus",
    )


def blind_canary(story: CacheStory, prometheus: PrometheusServer) -> None:
    """Prometheus stopped mid-canary: the canary is held, and rolled back at the limit."""
    before = story.generation()
    story.given("a target whose canary holds at most 4 intervals without data")
    story.apply(continuous_target(story.namespace, budget=7, no_data_limit=4))
    story.wait(lambda s: s.get("phase") == "Canary", SEARCH, "the canary")

    story.when("Prometheus stops mid-canary")
    prometheus.stop()
    try:
        after = story.wait(finished("RolledBack"), 60, "the rollback without data")
    finally:
        prometheus.start()
        story.when("Prometheus starts again")
    story.then("the canary is held, then rolled back at the limit, never promoted")
    record = after["history"][-1]
    assert "no data 4/4" in record["reason"] and "cannot connect to Prometheus" in record["reason"]
    assert "Promoted" not in story.outcomes()
    story.saw("CanaryHeld")
    assert story.generation() == before


def killed_canary(story: CacheStory, operator: OperatorPod) -> None:
    """The operator killed at each canary step still promotes exactly once."""
    before = story.generation()
    story.given("a target with a three-step canary")
    story.apply(continuous_target(story.namespace, budget=7, steps=(25, 50, 100)))
    for step in range(3):
        story.wait(
            lambda s, step=step: (
                (s.get("rollout") or {}).get("step", -1) >= step or bool(s.get("history"))
            ),
            SEARCH,
            f"canary step {step + 1}",
        )
        story.when(
            f"the operator's pod is deleted (--force) at canary step {step + 1}; "
            "its Deployment starts a new one"
        )
        operator.kill()
        operator.start()
    after = story.wait(promoted(1), 60, "the promotion")
    story.then("the rollout ends promoted, once; the stable rolled once")
    assert [r["outcome"] for r in after["history"]] == ["Promoted"]
    reasons = story.reasons()
    # (an Event is posted after the status it reports is written: a kill between the two
    # loses it, never doubles it)
    assert reasons.count("RolloutStarted") == 1 and reasons.count("CanaryPromoted") <= 1
    assert story.generation() == before + 1
    assert story.deployment("cache-canary") is None


def approved_by_hand(story: CacheStory) -> None:
    """A validated revision waits for a person, who approves it by name."""
    story.given("a target whose rollouts need a person's approval")
    target = continuous_target(story.namespace, budget=7)
    target["spec"]["rollout"]["approval"] = "manual"
    story.apply(target)
    waiting = story.wait(
        lambda s: s.get("phase") == "AwaitingApproval", SEARCH, "the revision to wait"
    )
    story.then("its validated winner waits with the evidence in the status, and no canary starts")
    approval = waiting["approval"]
    assert (approval["mode"], approval["state"]) == ("manual", "Waiting")
    assert approval["revision"] == waiting["validatedRevision"]
    assert approval["candidateScore"] > approval["stableScore"]
    assert approval["subscores"], "no subscore evidence"
    assert condition(waiting, "Ready")["reason"] == "AwaitingApproval"
    assert not waiting.get("history") and waiting.get("rollout") is None
    story.saw("AwaitingApproval")
    before = story.generation()

    story.when("annotated retune.dev/approve=cache-policy-0000000000 (a stale revision)")
    story.annotate("retune.dev/approve", "cache-policy-0000000000")
    story.saw("ApprovalIgnored")
    wait_until(
        lambda: "retune.dev/approve" not in (story.target()["metadata"].get("annotations") or {}),
        30,
        "the stale approval to be removed",
    )
    story.then("it is removed with a Warning, and the revision keeps waiting")
    held = story.status()
    assert held["phase"] == "AwaitingApproval" and not held.get("history")
    assert story.deployment("cache-canary") is None
    assert story.generation() == before  # the stable Deployment never written to

    revision = approval["revision"]
    story.when(f"annotated retune.dev/approve={revision}")
    story.annotate("retune.dev/approve", revision)
    done = story.wait(promoted(1), SEARCH, "the promotion")
    story.then("its canary runs and is promoted")
    assert [(r["revision"], r["outcome"]) for r in done["history"]] == [(revision, "Promoted")]
    assert done["approval"]["state"] == "Approved"
    assert story.policy_of(story.deployment() or {}) == revision
    reasons = story.saw("Approved", "RolloutStarted", "CanaryPromoted")
    assert reasons.index("Approved") < reasons.index("RolloutStarted")


def recommended(story: CacheStory) -> str:
    """A validated revision recommended, never rolled out; returns the revision."""
    before = story.generation()
    story.given("a target that only recommends")
    target = continuous_target(story.namespace, budget=7)
    target["spec"]["rollout"]["approval"] = "recommend"
    story.apply(target)
    story.wait(
        lambda s: (s.get("approval") or {}).get("state") == "Recommended",
        SEARCH,
        "the recommendation",
    )
    time.sleep(8)  # (long enough for a canary's first step, were one started)
    after = story.status()
    story.then("its validated winner is published, and it stays Stable on the policy it had")
    assert after["phase"] == "Stable" and not after.get("history")
    assert after.get("stableRevision") is None and after.get("validatedRevision") is None
    assert story.deployment("cache-canary") is None
    assert story.generation() == before
    assert story.policy_of(story.deployment() or {}) == "cache-policy"
    story.saw("RevisionRecommended")
    assert "RolloutStarted" not in story.reasons()
    return str(after["approval"]["revision"])


def context_target(namespace: str) -> dict[str, Any]:
    """The cache's target, scored by the test evaluator's ``context`` mode: the recorded
    mix's key space wants frequency, the drifted mix's recency, and the probes are such
    that whatever orders objects more as one wants orders them less as the other does
    (tests/fixtures/context_rules.py). So each context's winner loses in the other by
    design, not by a search's luck: the drifted mix's retune has only to re-score a program
    that did worse than the first winner on the recorded mix (its warm start does) to have
    a winner of its own, and the first winner beats that one when the mix returns."""
    target = continuous_target(namespace, budget=9, slo_threshold=0.0, drift_threshold=0.5)
    evaluator = target["spec"]["evaluator"]
    evaluator.update(image=TEST_EVALUATOR, path=TEST_EVALUATOR_PATH)
    evaluator["params"] = {"mode": "context", "recency_from": RECENCY_FROM}
    return target


def returned(story: CacheStory) -> None:
    """Tuned on one mix, retuned on another, then back to the first: the first mix's winner
    comes back as a canary, validated again, with no search."""
    recorder, traffic = story.recorder, story.traffic
    assert recorder is not None and traffic is not None
    story.given("a target whose SLO never calls and whose drift threshold is 50% for 4 s")
    story.apply(context_target(story.namespace))
    first = story.wait(promoted(1), SEARCH, "the first promotion")
    story.then("it is tuned and its winner promoted on the recorded mix")
    remembered = first["stableRevision"]
    assert remembered

    story.when(f"the load generator shifts its mix to {DRIFTED}")
    traffic.shift(**DRIFTED)
    second = story.wait(promoted(2), SEARCH, "the drifted mix's winner promoted")
    story.then(
        "a retune runs and the drifted mix gets a winner of its own; the library holds both, "
        "each with the profile it was tuned on"
    )
    drifted = second["stableRevision"]
    assert drifted and drifted != remembered
    assert second["search"]["trigger"] == "ProfileDrift"
    assert second["search"]["seedRevision"] == remembered
    contexts = {c["revision"]: c for c in second["library"]["contexts"]}
    assert set(contexts) == {remembered, drifted}
    assert contexts[remembered]["profile"]["key_space"] == MIX["key_space"]
    assert contexts[drifted]["profile"]["key_space"] == DRIFTED["key_space"]
    assert second["library"]["active"] == contexts[drifted]["id"]
    assert contexts[remembered]["id"] != contexts[drifted]["id"]
    story.saw("ContextUnknown")  # the drifted mix was new: it searched
    searches = story.reasons().count("SearchStarted")

    original = {key: MIX[key] for key in DRIFTED}
    story.when(f"the load generator goes back to its first mix {original}")
    returned_at = time.time()
    traffic.shift(**original)

    def canary_of_remembered(status: dict[str, Any]) -> bool:
        canary = (status.get("rollout") or {}).get("revision")
        history = [r["revision"] for r in status.get("history", [])]
        return canary == remembered or history.count(remembered) > 1

    canary = story.wait(canary_of_remembered, SEARCH, "a canary of the remembered winner")
    story.then(
        "the first mix's winner goes out as a canary with no search, validated again on the "
        "current profile against the stable policy"
    )
    assert canary["search"]["startedAt"] == second["search"]["startedAt"]
    assert canary["ledger"] == second["ledger"]
    assert canary["lastRetuneTrigger"] == "ProfileDrift"
    assert canary["retunes"] == second["retunes"] + 1
    assert story.reasons().count("SearchStarted") == searches
    since = [task for task in recorder.tasks if task.at >= returned_at]
    assert since, "nothing was evaluated since the return: the recall was not validated"
    assert not [task.task_id for task in since if SEARCH_TASK.fullmatch(task.task_id)]
    codes = {story.policy_code(remembered), story.policy_code(drifted)}
    assert {task.code for task in since} == codes
    validation = canary["validation"]
    assert validation["finishedAt"] > second["validation"]["finishedAt"]
    assert validation["passed"]
    assert validation["candidateScore"] > validation["stableScore"]
    assert canary["profile"]["key_space"] == MIX["key_space"]

    restored = story.wait(promoted(3), SEARCH, "the remembered winner promoted again")
    story.then("it is promoted: the workload runs the first winner again, and the library says so")
    assert [(r["revision"], r["outcome"]) for r in restored["history"]] == [
        (remembered, "Promoted"),
        (drifted, "Promoted"),
        (remembered, "Promoted"),
    ]
    assert restored["stableRevision"] == remembered
    assert story.policy_of(story.deployment() or {}) == remembered
    library = restored["library"]
    assert library["active"] == contexts[remembered]["id"]
    assert library["recall"]["revision"] == remembered
    assert library["recall"]["state"] == "Promoted"
    recalled = next(c for c in library["contexts"] if c["revision"] == remembered)
    assert recalled["recalls"] == 1
    assert story.reasons().count("SearchStarted") == searches
    # The Events say which path was taken, in order
    reasons = story.saw("ContextRecalled", "RecallValidated", "ContextRestored")
    assert "RecallFailed" not in reasons and "ContextCurrent" not in reasons
    recall = reasons.index("ContextRecalled")
    validated = reasons.index("RecallValidated")
    restored_at = reasons.index("ContextRestored")
    rollout = max(i for i, reason in enumerate(reasons) if reason == "RolloutStarted")
    assert recall < validated < rollout < restored_at
    messages = [e.message for e in story.events() if e.reason == "ContextRecalled"]
    assert len(messages) == 1 and remembered in messages[0]
