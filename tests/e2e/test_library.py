"""The context library end to end: a workload that returns to a traffic mix it was tuned
for gets that mix's winner back as a canary, validated again, with no search.

Given the cache tuned on its recorded mix (winner A promoted) and retuned when its key
space grew fourfold (winner B promoted), when the load generator goes back to the first
mix, then the profile drift is a return to a known context: A is validated again against
B on the current profile, rolled out as a canary and promoted, and no search starts. The
scene is :func:`tests.e2e.scenarios.returned`; its evaluator is the test evaluator's
``context`` mode, under which each mix's winner loses in the other by design.
"""

from __future__ import annotations

import re

import pytest
from kubernetes import client

from tests.e2e import scenarios
from tests.e2e.scenarios import DRIFTED
from tests.e2e.story import CacheStory
from tests.e2e.workload import MIX

E2E_ROLES = ("library",)
SEARCH_TASK = re.compile(r"c\d+-\w+")
"""A search's evaluation task ids (validation's are ``validate-...``)."""


def policy_code(story: CacheStory, revision: str) -> str:
    """The program a revision ConfigMap holds."""
    config_map = client.CoreV1Api(story.api).read_namespaced_config_map(revision, story.namespace)
    return str(config_map.data["policy.py"])


@pytest.mark.role("library")
def test_a_return_to_a_known_context_starts_a_canary_of_its_winner_without_a_search(
    story: CacheStory,
) -> None:
    seen = scenarios.returned(story)
    first, second, canary, restored = seen.first, seen.second, seen.canary, seen.restored
    remembered, drifted = first["stableRevision"], second["stableRevision"]

    # Each mix got a winner of its own, and the library holds both, each with the profile
    # it was tuned on
    assert remembered and drifted and drifted != remembered
    assert second["search"]["trigger"] == "ProfileDrift"
    assert second["search"]["seedRevision"] == remembered
    contexts = {c["revision"]: c for c in second["library"]["contexts"]}
    assert set(contexts) == {remembered, drifted}
    assert contexts[remembered]["profile"]["key_space"] == MIX["key_space"]
    assert contexts[drifted]["profile"]["key_space"] == DRIFTED["key_space"]
    assert second["library"]["active"] == contexts[drifted]["id"]
    assert contexts[remembered]["id"] != contexts[drifted]["id"]

    # The remembered winner's canary started with no search: the last search is still the
    # drifted mix's, with its ledger, and no SearchStarted came after it
    assert canary["search"]["startedAt"] == second["search"]["startedAt"]
    assert canary["ledger"] == second["ledger"]
    assert canary["lastRetuneTrigger"] == "ProfileDrift"
    assert canary["retunes"] == second["retunes"] + 1
    assert story.reasons().count("SearchStarted") == seen.searches
    # every evaluation since the return was the validation's, of the two revisions' programs
    assert story.recorder is not None
    since = [task for task in story.recorder.tasks if task.at >= seen.returned_at]
    assert since, "nothing was evaluated since the return: the recall was not validated"
    assert not [task.task_id for task in since if SEARCH_TASK.fullmatch(task.task_id)]
    codes = {policy_code(story, remembered), policy_code(story, drifted)}
    assert {task.code for task in since} == codes

    # It was validated again, on the current (first) profile, against the stable policy
    # (the drifted mix's winner)
    validation = canary["validation"]
    assert validation["finishedAt"] > second["validation"]["finishedAt"]
    assert validation["passed"]
    assert validation["candidateScore"] > validation["stableScore"]
    assert canary["profile"]["key_space"] == MIX["key_space"]

    # and promoted: the workload runs the first winner again, and the library says so
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
    assert story.reasons().count("SearchStarted") == seen.searches

    # The Events say which path was taken, in order
    reasons = story.reasons()
    assert "ContextUnknown" in reasons  # the drifted mix was new: it searched
    assert "RecallFailed" not in reasons and "ContextCurrent" not in reasons
    recall = reasons.index("ContextRecalled")
    validated = reasons.index("RecallValidated")
    restored_at = reasons.index("ContextRestored")
    rollout = max(i for i, reason in enumerate(reasons) if reason == "RolloutStarted")
    assert recall < validated < rollout < restored_at
    messages = [e.message for e in story.events() if e.reason == "ContextRecalled"]
    assert len(messages) == 1 and remembered in messages[0]
