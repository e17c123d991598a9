"""The continuous-tuning story, scene by scene: what is done to the cache and its target,
and what is awaited. The end-to-end tests assert on what each scene saw; the cluster demo
plays the same scenes and prints the timeline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from retune.search.archive import Archive
from tests.cluster.nodes import REAL_NODE
from tests.cluster.processes import wait_until
from tests.cluster.prometheus import PrometheusServer
from tests.e2e.harness import checkpoint
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
TEST_EVALUATOR = "ghcr.io/retune/evaluator-test:0.1.0"
TEST_EVALUATOR_PATH = "/opt/retune/evaluator/scoring_evaluator.py"
RECENCY_FROM = 10000
"""Where the test evaluator's context mode wants recency instead of frequency: between the
recorded mix's key space and the drifted one's."""


@dataclass
class Tuned:
    """What the tuning scene saw."""

    first: dict[str, Any]
    """The status at the first promotion."""
    elites: set[str]
    """The programs of the first search's archive."""
    shifted_at: float
    retuning: dict[str, Any]
    """The status when the retune on the SLO violation was seen."""
    second: dict[str, Any]
    """The status at the second promotion."""
    relabelled_at: float
    third: dict[str, Any]
    """The status once the retune on the new hardware finished."""


def tuned(story: CacheStory) -> Tuned:
    """A target is tuned and promoted, retuned when its SLO is violated, and again when
    the hardware under it changes."""
    # Given the cache running LRU, when its target is applied, then a better policy is
    # found, validated, rolled out as a canary and promoted
    story.apply(continuous_target(story.namespace))
    first = story.wait(promoted(1), SEARCH, "the first promotion")
    assert story.traffic is not None
    story.traffic.wait_for_pods({"stable"})  # the promoted pods carry the stable track
    state = checkpoint(story.api, story.namespace, story.name)
    elites = {elite.code for elite in Archive(state.archive).elites()} if state else set()

    # When the load generator shifts to scan-heavy traffic, then the hit ratio SLO is
    # violated, and a retune starts
    shifted_at = time.time()
    story.act(f"the load generator shifts its mix to {SHIFTED}")
    story.traffic.shift(**SHIFTED)
    retuning = story.wait(
        lambda s: s.get("lastRetuneTrigger") == "SLOViolation", 90, "a retune on the SLO"
    )
    # (the owners accept the new normal: the SLO is lowered so that it does not call again)
    slo = story.target()["spec"]["slos"][0]
    story.act("the SLO is lowered to 0.01: the owners accept the new normal")
    story.patch_spec({"slos": [{**slo, "threshold": 0.01}]})
    # then the retune's winner is promoted as a second canary
    second = story.wait(promoted(2), SEARCH, "the second promotion")

    # When the nodes under the workload are relabelled to a new instance type, then once
    # the change has settled a retune runs on the new hardware
    relabelled_at = time.time()
    story.act(f"{', '.join(CPU_NODES)} relabelled to instance type {NEW_INSTANCE_TYPE}")
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
    return Tuned(first, elites, shifted_at, retuning, second, relabelled_at, third)


@dataclass
class Drifted:
    """What the drift scene saw."""

    first: dict[str, Any]
    """The status at the first promotion."""
    drifted_at: float
    retuned: dict[str, Any]
    """The status once the retune on the drifted profile finished."""


def drifting(story: CacheStory) -> Drifted:
    """A target tuned on one profile is retuned when the profile drifts and stays drifted."""
    # Given a target whose SLO never calls and whose drift threshold is 50% for 4 s, tuned
    # and promoted
    story.apply(
        continuous_target(story.namespace, budget=7, slo_threshold=0.0, drift_threshold=0.5)
    )
    first = story.wait(promoted(1), SEARCH, "the first promotion")
    # When the workload's key space grows fourfold, then once the drift has lasted its 4 s
    # a retune runs on the new profile, and the target is stable on it
    drifted_at = time.time()
    story.act(f"the load generator shifts its mix to {DRIFTED}")
    assert story.traffic is not None
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

    return Drifted(first, drifted_at, story.wait(retuned, SEARCH, "a retune on the drift"))


@dataclass
class Steered:
    """What the manual-control scene saw."""

    before: dict[str, Any]
    """The workload before the target was applied."""
    paused: dict[str, Any]
    """The status once the paused canary had outlived its step interval."""
    aborted: dict[str, Any]
    """The status once the aborted canary was gone."""
    promoted: dict[str, Any]
    """The status once the manual retune's canary was promoted by hand."""


def steered(story: CacheStory) -> Steered:
    """A rollout steered by hand: paused, aborted, a retune asked for, its canary promoted."""
    before = story.deployment()
    assert before is not None
    # Given a target whose canary steps last 15 s, with a canary in flight
    story.apply(continuous_target(story.namespace, budget=7, step_interval="15s"))
    story.wait(lambda s: s.get("phase") == "Canary", SEARCH, "the canary")
    # When it is paused, then it holds at its share past the step's interval
    story.act("annotated retune.dev/pause=true")
    story.annotate("retune.dev/pause")
    story.wait(lambda s: "paused" in (s.get("rollout") or {}).get("message", ""), 30, "the pause")
    time.sleep(20)
    paused = story.status()
    # When it is aborted, then it is rolled back at once, paused or not
    story.act("annotated retune.dev/abort=true")
    story.annotate("retune.dev/abort")
    aborted = story.wait(finished("Aborted"), 30, "the abort")
    # When the pause is lifted and a retune asked for, then a new search runs, and its
    # canary, promoted by hand, replaces the stable before its first step is over
    story.act("retune.dev/pause removed; annotated retune.dev/retune=true")
    story.annotate("retune.dev/pause", None)
    story.annotate("retune.dev/retune")
    story.wait(
        lambda s: s.get("lastRetuneTrigger") == "Manual" and s.get("phase") == "Canary",
        SEARCH,
        "the manual retune's canary",
    )
    story.act("annotated retune.dev/promote=true")
    story.annotate("retune.dev/promote")
    return Steered(before, paused, aborted, story.wait(promoted(1), 30, "the promotion"))


def failing_canary(story: CacheStory) -> tuple[dict[str, Any], dict[str, Any]]:
    """A canary whose analysis fails; returns the workload before, and the status after."""
    before = story.deployment()
    assert before is not None
    # Given a target whose analysis asks the canary for a hit ratio no cache reaches,
    # then its canary is rolled back
    story.apply(continuous_target(story.namespace, budget=7, canary_floor=0.99))
    return before, story.wait(finished("RolledBack"), SEARCH, "the rollback")


def blind_canary(
    story: CacheStory, prometheus: PrometheusServer
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Prometheus stopped mid-canary; returns the workload before, and the status after."""
    before = story.deployment()
    assert before is not None
    # Given a target whose canary holds at most 4 intervals without data
    story.apply(continuous_target(story.namespace, budget=7, no_data_limit=4))
    story.wait(lambda s: s.get("phase") == "Canary", SEARCH, "the canary")
    # When Prometheus stops mid-canary, then the canary is held, and rolled back at the limit
    story.act("Prometheus stopped")
    prometheus.stop()
    try:
        done = story.wait(finished("RolledBack"), 60, "the rollback without data")
    finally:
        prometheus.start()
        story.act("Prometheus started again")
    return before, done


def killed_canary(
    story: CacheStory, operator: OperatorPod
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The operator killed at each canary step; returns the workload before, and the status
    after."""
    before = story.deployment()
    assert before is not None
    # Given a target with a three-step canary
    story.apply(continuous_target(story.namespace, budget=7, steps=(25, 50, 100)))
    # When the operator is killed -9 at each step and started again
    for step in range(3):
        story.wait(
            lambda s, step=step: (
                (s.get("rollout") or {}).get("step", -1) >= step or bool(s.get("history"))
            ),
            SEARCH,
            f"canary step {step + 1}",
        )
        story.act(
            f"the operator's pod is deleted (--force) at canary step {step + 1}; "
            "its Deployment starts a new one"
        )
        operator.kill()
        operator.start()
    # then the rollout ends
    return before, story.wait(promoted(1), 60, "the promotion")


@dataclass
class Approved:
    """What the manual-approval scene saw."""

    waiting: dict[str, Any]
    """The status while the validated revision waited for approval."""
    held_at: dict[str, Any]
    """The status after a stale approval, removed with a Warning."""
    before: dict[str, Any]
    """The workload when the revision began to wait."""
    held: dict[str, Any]
    """The workload after the stale approval, before the real one."""
    promoted: dict[str, Any]
    """The status once the approved revision was promoted."""


def approved_by_hand(story: CacheStory) -> Approved:
    """A validated revision waits for a person, who approves it by name."""
    # Given a target whose rollouts need a person's approval, then its validated winner
    # waits, and no canary starts
    target = continuous_target(story.namespace, budget=7)
    target["spec"]["rollout"]["approval"] = "manual"
    story.apply(target)
    waiting = story.wait(
        lambda s: s.get("phase") == "AwaitingApproval", SEARCH, "the revision to wait"
    )
    before = story.deployment()
    assert before is not None
    # When an approval names another revision, then it is removed with a Warning and the
    # revision keeps waiting
    story.act("annotated retune.dev/approve=cache-policy-0000000000 (a stale revision)")
    story.annotate("retune.dev/approve", "cache-policy-0000000000")
    wait_until(lambda: "ApprovalIgnored" in story.reasons(), 30, "the stale approval's Event")
    wait_until(
        lambda: "retune.dev/approve" not in (story.target()["metadata"].get("annotations") or {}),
        30,
        "the stale approval to be removed",
    )
    held_at = story.status()
    held = story.deployment()
    assert held is not None
    # When the approval names the waiting revision, then its canary runs and is promoted
    revision = waiting["approval"]["revision"]
    story.act(f"annotated retune.dev/approve={revision}")
    story.annotate("retune.dev/approve", revision)
    return Approved(
        waiting, held_at, before, held, story.wait(promoted(1), SEARCH, "the promotion")
    )


def recommended(story: CacheStory) -> tuple[dict[str, Any], dict[str, Any]]:
    """A validated revision recommended, never rolled out; returns the workload before and
    the status a while after the recommendation."""
    before = story.deployment()
    assert before is not None
    # Given a target that only recommends, then its validated winner is published, and the
    # target stays Stable on the policy it had
    target = continuous_target(story.namespace, budget=7)
    target["spec"]["rollout"]["approval"] = "recommend"
    story.apply(target)
    story.wait(
        lambda s: (s.get("approval") or {}).get("state") == "Recommended",
        SEARCH,
        "the recommendation",
    )
    time.sleep(8)  # (long enough for a canary's first step, were one started)
    return before, story.status()


@dataclass
class Returned:
    """What the return-to-a-known-context scene saw."""

    first: dict[str, Any]
    """The status at the first promotion (the recorded mix's winner)."""
    second: dict[str, Any]
    """The status at the second promotion (the drifted mix's winner)."""
    searches: int
    """``SearchStarted`` Events before the return."""
    returned_at: float
    canary: dict[str, Any]
    """The status when the remembered winner's canary was first seen (or its promotion)."""
    restored: dict[str, Any]
    """The status once the remembered winner was promoted again."""


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


def returned(story: CacheStory) -> Returned:
    """Tuned on one mix, retuned on another, then back to the first: the first mix's winner
    comes back as a canary with no search."""
    # Given a target whose SLO never calls and whose drift threshold is 50% for 4 s, tuned
    # and promoted on the recorded mix
    story.apply(context_target(story.namespace))
    first = story.wait(promoted(1), SEARCH, "the first promotion")
    assert story.traffic is not None
    # When the key space grows fourfold, then a retune runs and its winner is promoted
    story.act(f"the load generator shifts its mix to {DRIFTED}")
    story.traffic.shift(**DRIFTED)
    second = story.wait(promoted(2), SEARCH, "the drifted mix's winner promoted")
    searches = story.reasons().count("SearchStarted")
    # When the load generator goes back to the first mix
    returned_at = time.time()
    original = {key: MIX[key] for key in DRIFTED}
    story.act(f"the load generator goes back to its first mix {original}")
    story.traffic.shift(**original)
    remembered = first["stableRevision"]

    def canary_of_remembered(status: dict[str, Any]) -> bool:
        canary = (status.get("rollout") or {}).get("revision")
        history = [r["revision"] for r in status.get("history", [])]
        return canary == remembered or history.count(remembered) > 1

    # then the remembered winner goes out as a canary, and is promoted
    canary = story.wait(canary_of_remembered, SEARCH, "a canary of the remembered winner")
    restored = story.wait(promoted(3), SEARCH, "the remembered winner promoted again")
    return Returned(first, second, searches, returned_at, canary, restored)
