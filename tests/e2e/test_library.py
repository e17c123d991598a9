"""The context library end to end: a workload that returns to a traffic mix it was tuned
for gets that mix's winner back as a canary, validated again, with no search.

Given the cache tuned on its recorded mix (winner A promoted), and retuned when its key
space grew fourfold (winner B promoted), when the load generator goes back to the first
mix, then the profile drift is a return to a known context: A is validated again against
B on the current profile and rolled out as a canary, and no search starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.scenarios import DRIFTED, SEARCH
from tests.e2e.story import CacheStory, continuous_target, promoted
from tests.e2e.workload import MIX

E2E_ROLES = ("library",)


@dataclass
class Returned:
    """What the return scene saw."""

    first: dict[str, Any]
    """The status at the first promotion (the recorded mix's winner)."""
    second: dict[str, Any]
    """The status at the second promotion (the drifted mix's winner)."""
    returned_at: float
    recalled: dict[str, Any]
    """The status once the remembered winner's canary has started (or it was promoted)."""
    searches: int
    """``SearchStarted`` Events before the return."""


def returned(story: CacheStory) -> Returned:
    """Tuned on one mix, retuned on another, then back to the first."""
    # Given a target whose SLO never calls and whose drift threshold is 50 % for 4 s,
    # tuned and promoted on the recorded mix
    story.apply(
        continuous_target(story.namespace, budget=7, slo_threshold=0.0, drift_threshold=0.5)
    )
    first = story.wait(promoted(1), SEARCH, "the first promotion")
    assert story.traffic is not None
    # When the key space grows fourfold, then a retune runs and its winner is promoted
    story.act(f"the load generator shifts its mix to {DRIFTED}")
    story.traffic.shift(**DRIFTED)
    second = story.wait(promoted(2), 2 * SEARCH, "the drifted mix's winner promoted")
    searches = story.reasons().count("SearchStarted")
    # When the load generator goes back to the first mix
    returned_at = time.time()
    original = {key: MIX[key] for key in DRIFTED}
    story.act(f"the load generator goes back to its first mix {original}")
    story.traffic.shift(**original)
    remembered = first["stableRevision"]

    def canary_of_remembered(status: dict[str, Any]) -> bool:
        rollout = status.get("rollout") or {}
        history = [r["revision"] for r in status.get("history", [])]
        return rollout.get("revision") == remembered or history.count(remembered) > 1

    recalled = story.wait(canary_of_remembered, SEARCH, "a canary of the remembered winner")
    return Returned(first, second, returned_at, recalled, searches)


@pytest.mark.role("library")
def test_a_return_to_a_known_context_starts_a_canary_of_its_winner_without_a_search(
    story: CacheStory,
) -> None:
    seen = returned(story)
    first, second, recalled = seen.first, seen.second, seen.recalled
    remembered = first["stableRevision"]
    assert second["stableRevision"] not in (None, remembered)
    # Both winners are in the library, each with the profile it was tuned on
    contexts = {c["revision"]: c for c in second["library"]["contexts"]}
    assert set(contexts) == {remembered, second["stableRevision"]}
    assert contexts[remembered]["profile"]["key_space"] == MIX["key_space"]
    assert contexts[second["stableRevision"]]["profile"]["key_space"] == DRIFTED["key_space"]
    # The return was recognised: the remembered winner was validated again and rolled out
    # as a canary, and no search started (the last search is still the drifted mix's)
    library = recalled["library"]
    assert library["active"] == contexts[remembered]["id"]
    assert library["recall"]["revision"] == remembered
    assert library["recall"]["state"] in ("Validated", "Promoted")
    assert recalled["search"]["startedAt"] == second["search"]["startedAt"]
    assert recalled["lastRetuneTrigger"] == "ProfileDrift"
    reasons = story.reasons()
    assert reasons.count("SearchStarted") == seen.searches
    assert "ContextRecalled" in reasons and "RecallValidated" in reasons
    assert reasons.index("ContextRecalled") < reasons.index("RecallValidated")
    assert "RecallFailed" not in reasons
    assert story.recorder is not None
    # every evaluation since the return is the validation's: the winner and the stable
    codes = {t.code for t in story.recorder.tasks if t.at >= seen.returned_at}
    assert len(codes) <= 2
