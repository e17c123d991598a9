"""Approval modes end to end: the real cache service, its target under
``spec.rollout.approval`` ``manual`` (a validated revision waits for
``retune.dev/approve=<revision>``) and ``recommend`` (published, never rolled out, and
exported for a GitOps repository by ``retune export``). The scenes are in
:mod:`tests.e2e.scenarios`, told as Given / When / Then."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retune import cli
from tests.e2e import scenarios
from tests.e2e.environment import E2E
from tests.e2e.story import CacheStory

E2E_ROLES = ("manual", "recommend")


@pytest.mark.role("manual")
def test_a_validated_revision_waits_for_an_approval_naming_it(story: CacheStory) -> None:
    scenarios.approved_by_hand(story)


@pytest.mark.role("recommend")
def test_a_recommended_revision_is_published_never_rolled_out_and_exported(
    e2e: E2E, story: CacheStory, tmp_path: Path
) -> None:
    revision = scenarios.recommended(story)
    out = tmp_path / "gitops"
    story.when(f"retune export {story.name} --output {out}")
    argv = ["export", story.name, "-n", story.namespace, "--output", str(out)]
    assert cli.main([*argv, "--kubeconfig", str(e2e.cluster.kubeconfig)]) == 0
    story.then("it writes the revision, the evidence and the diff against the seed")
    evidence = json.loads((out / "evidence.json").read_text())
    assert evidence["revision"] == revision
    assert evidence["approval"]["state"] == "Recommended"
    assert evidence["approval"]["subscores"] == story.status()["approval"]["subscores"]
    assert (out / "policy.py").read_text().strip()
    assert f"+++ {revision}/policy.py" in (out / "policy.diff").read_text()
