"""Continuous tuning end to end: the real cache service under real traffic, scraped by the
real Prometheus; its policy rolled out as a canary, promoted or rolled back on the
analysis; retuned when its SLO is violated, its profile drifts or its hardware changes;
the operator killed mid-canary. The scenes are in :mod:`tests.e2e.scenarios`; small budgets and 2 s canary
steps keep the story within minutes."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.cluster.processes import wait_until
from tests.e2e import scenarios
from tests.e2e.environment import E2E
from tests.e2e.harness import condition
from tests.e2e.scenarios import CPU_NODES, DRIFTED, NEW_INSTANCE_TYPE
from tests.e2e.story import SHIFTED, CacheStory

E2E_ROLES = ("tuned", "drift", "manual", "rollback", "blind", "restarts")


def _generation(deployment: dict[str, Any] | None) -> int:
    assert deployment is not None
    return int(deployment["metadata"]["generation"])


@pytest.mark.role("tuned")
def test_promoted_then_retuned_on_an_slo_violation_and_on_new_hardware(story: CacheStory) -> None:
    seen = scenarios.tuned(story)
    recorder = story.recorder
    assert recorder is not None

    # The first winner was rolled out as a canary and promoted: the workload runs it
    first = seen.first
    revision = first["stableRevision"]
    assert [(r["revision"], r["outcome"]) for r in first["history"]] == [(revision, "Promoted")]
    assert condition(first, "Ready")["reason"] == "Promoted"
    assert story.deployment("cache-canary") is None
    for reason in ("RolloutStarted", "CanaryStep", "CanaryPromoted"):
        assert reason in story.reasons()

    # The SLO violation started a retune on the shifted profile, from the stable revision,
    # warm-started: the previous archive's elites were evaluated again
    assert "hit-ratio" in seen.retuning["lastRetuneReason"]
    second = seen.second
    search = second["search"]
    assert search["trigger"] == "SLOViolation" and search["seedRevision"] == revision
    assert search["warmStart"] and search["warmPrograms"] > 0
    assert {key: second["profile"][key] for key in SHIFTED} == SHIFTED
    rescored = [
        task
        for task in recorder.tasks
        if task.at >= seen.shifted_at
        and task.code in seen.elites
        and re.fullmatch(r"c[1-9]\d*-\w+", task.task_id)
    ]
    assert rescored, "the retune evaluated none of the previous archive's elites"
    # and its winner is the workload's policy now
    assert second["stableRevision"] not in (None, revision)
    assert story.policy_of(story.deployment() or {}) == second["stableRevision"]

    # The hardware change started a retune whose evaluations ran on the relabelled nodes,
    # told the new instance type
    third = seen.third
    assert third["hardware"]["node.kubernetes.io/instance-type"] == NEW_INSTANCE_TYPE
    assert NEW_INSTANCE_TYPE in third["lastRetuneReason"]
    evaluated = [task for task in recorder.tasks if task.at >= seen.relabelled_at]
    assert evaluated, "no evaluation after the relabelling"
    hardware = {task.hardware["node.kubernetes.io/instance-type"] for task in evaluated}
    assert hardware == {NEW_INSTANCE_TYPE}
    assert recorder.pod_nodes and set(recorder.pod_nodes.values()) <= set(CPU_NODES)
    assert third["retunes"] == 2
    for reason in ("SLOViolated", "RetuneStarted", "HardwareChanged", "HardwareSettled"):
        assert reason in story.reasons()


@pytest.mark.role("drift")
def test_retuned_on_a_sustained_profile_drift(story: CacheStory) -> None:
    seen = scenarios.drifting(story)
    assert seen.first["profile"]["key_space"] != DRIFTED["key_space"]
    retuned = seen.retuned
    # The drift was named, and the retune ran warm-started on the drifted profile
    assert retuned["lastRetuneTrigger"] == "ProfileDrift"
    assert "key_space" in retuned["lastRetuneReason"]
    search = retuned["search"]
    assert search["warmStart"] and search["warmPrograms"] > 0
    assert search["seedRevision"] == seen.first["stableRevision"]
    assert retuned["profile"]["key_space"] == DRIFTED["key_space"]
    assert retuned["retunes"] == 1
    reasons = story.reasons()
    assert reasons.index("ProfileDrifted") < reasons.index("RetuneStarted")
    # (a profile that only drifted, with an SLO that never called, is not an SLO retune)
    assert "SLOViolated" not in reasons


@pytest.mark.role("manual")
def test_a_rollout_is_paused_aborted_and_promoted_by_annotations(story: CacheStory) -> None:
    seen = scenarios.steered(story)
    # paused: held at its first share past its 15 s interval, nothing analysed or ended
    rollout = seen.paused["rollout"]
    assert seen.paused["phase"] == "Canary" and rollout["step"] == 0
    assert "retune.dev/pause" in rollout["message"] and not seen.paused.get("history")
    # aborted: rolled back, the stable never written to
    assert [r["outcome"] for r in seen.aborted["history"]] == ["Aborted"]
    assert "retune.dev/abort" in seen.aborted["history"][-1]["reason"]
    assert seen.aborted.get("stableRevision") is None
    # a manual retune, whose canary was promoted by hand within its first step
    done = seen.promoted
    assert done["lastRetuneTrigger"] == "Manual" and done["search"]["trigger"] == "Manual"
    assert [r["outcome"] for r in done["history"]] == ["Aborted", "Promoted"]
    assert "retune.dev/promote" in done["history"][-1]["reason"]
    assert story.policy_of(story.deployment() or {}) == done["stableRevision"]
    assert _generation(story.deployment()) == _generation(seen.before) + 1
    # the one-shot controls were removed by the operator; retune.dev/pause was the user's
    annotations = story.target()["metadata"].get("annotations") or {}
    assert not {"retune.dev/abort", "retune.dev/promote", "retune.dev/retune"} & set(annotations)
    reasons = story.reasons()
    for reason in ("CanaryAborted", "RetuneStarted", "CanaryPromoted"):
        assert reason in reasons


@pytest.mark.role("rollback")
def test_a_canary_whose_analysis_fails_is_rolled_back_and_the_stable_is_untouched(
    story: CacheStory,
) -> None:
    before, after = scenarios.failing_canary(story)
    record = after["history"][-1]
    assert "hit-ratio" in record["reason"] and "is not at least 0.99" in record["reason"]
    assert after.get("stableRevision") is None and after.get("validatedRevision") is None
    assert condition(after, "Ready")["reason"] == "RolledBack"
    assert "CanaryRolledBack" in story.reasons()
    # the stable was never written to
    workload = story.deployment()
    assert _generation(workload) == _generation(before)
    assert story.policy_of(workload or {}) == "cache-policy"
    wait_until(lambda: story.deployment("cache-canary") is None, 30, "the canary to go")


@pytest.mark.role("blind")
def test_a_canary_without_prometheus_is_held_and_never_promoted(
    e2e: E2E, story: CacheStory
) -> None:
    before, after = scenarios.blind_canary(story, e2e.prometheus)
    record = after["history"][-1]
    assert "no data 4/4" in record["reason"] and "cannot connect to Prometheus" in record["reason"]
    assert "Promoted" not in story.outcomes()
    assert "CanaryHeld" in story.reasons()
    assert _generation(story.deployment()) == _generation(before)


@pytest.mark.role("restarts")
def test_an_operator_killed_at_every_canary_step_promotes_exactly_once(
    e2e: E2E, story: CacheStory
) -> None:
    before, after = scenarios.killed_canary(story, e2e.operator)
    assert [r["outcome"] for r in after["history"]] == ["Promoted"]
    reasons = story.reasons()
    # (an Event is posted after the status it reports is written: a kill between the two
    # loses it, never doubles it)
    assert reasons.count("RolloutStarted") == 1 and reasons.count("CanaryPromoted") <= 1
    # the stable rolled once: one template change
    assert _generation(story.deployment()) == _generation(before) + 1
    assert story.deployment("cache-canary") is None
