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

import pytest

from tests.e2e import scenarios
from tests.e2e.story import CacheStory

E2E_ROLES = ("library",)


@pytest.mark.role("library")
def test_a_return_to_a_known_context_starts_a_canary_of_its_winner_without_a_search(
    story: CacheStory,
) -> None:
    scenarios.returned(story)
