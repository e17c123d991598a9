"""Approval modes end to end: the real cache service, its target under
``spec.rollout.approval`` ``manual`` (a validated revision waits for
``retune.dev/approve=<revision>``) and ``recommend`` (published, never rolled out, and
exported for a GitOps repository by ``retune export``). The scenes are in
:mod:`tests.e2e.scenarios`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from retune import cli
from tests.e2e import scenarios
from tests.e2e.environment import E2E
from tests.e2e.harness import condition
from tests.e2e.story import CacheStory

E2E_ROLES = ("manual", "recommend")


def generation(deployment: dict[str, Any] | None) -> int:
    return int((deployment or {}).get("metadata", {}).get("generation", -1))


@pytest.mark.role("manual")
def test_a_validated_revision_waits_for_an_approval_naming_it(story: CacheStory) -> None:
    seen = scenarios.approved_by_hand(story)
    # waiting: the evidence in the status, no canary, the workload untouched
    waiting = seen.waiting
    approval = waiting["approval"]
    assert (approval["mode"], approval["state"]) == ("manual", "Waiting")
    assert approval["revision"] == waiting["validatedRevision"]
    assert approval["candidateScore"] > approval["stableScore"]
    assert approval["subscores"], "no subscore evidence"
    assert condition(waiting, "Ready")["reason"] == "AwaitingApproval"
    assert not waiting.get("history") and waiting.get("rollout") is None
    # a stale approval changed nothing
    assert seen.held_at["phase"] == "AwaitingApproval" and not seen.held_at.get("history")
    assert story.deployment("cache-canary") is None
    # (the stable Deployment never written to)
    assert generation(seen.held) == generation(seen.before)
    # approved by name: rolled out and promoted
    done = seen.promoted
    assert [(r["revision"], r["outcome"]) for r in done["history"]] == [
        (approval["revision"], "Promoted")
    ]
    assert done["approval"]["state"] == "Approved"
    assert story.policy_of(story.deployment() or {}) == approval["revision"]
    reasons = story.reasons()
    for reason in ("AwaitingApproval", "ApprovalIgnored", "Approved", "CanaryPromoted"):
        assert reason in reasons
    assert reasons.index("Approved") < reasons.index("RolloutStarted")


@pytest.mark.role("recommend")
def test_a_recommended_revision_is_published_never_rolled_out_and_exported(
    e2e: E2E, story: CacheStory, tmp_path: Path
) -> None:
    before, after = scenarios.recommended(story)
    approval = after["approval"]
    revision = approval["revision"]
    assert after["phase"] == "Stable" and not after.get("history")
    assert after.get("stableRevision") is None and after.get("validatedRevision") is None
    assert story.deployment("cache-canary") is None
    assert generation(story.deployment()) == generation(before)
    assert story.policy_of(story.deployment() or {}) == "cache-policy"
    assert "RevisionRecommended" in story.reasons()
    assert "RolloutStarted" not in story.reasons()
    # retune export writes the revision, the evidence and the diff against the seed
    out = tmp_path / "gitops"
    argv = ["export", story.name, "-n", story.namespace, "--output", str(out)]
    assert cli.main([*argv, "--kubeconfig", str(e2e.cluster.kubeconfig)]) == 0
    evidence = json.loads((out / "evidence.json").read_text())
    assert evidence["revision"] == revision
    assert evidence["approval"]["state"] == "Recommended"
    assert evidence["approval"]["subscores"] == approval["subscores"]
    assert (out / "policy.py").read_text().strip()
    assert f"+++ {revision}/policy.py" in (out / "policy.diff").read_text()
