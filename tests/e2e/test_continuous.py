"""Continuous tuning end to end: the real cache service under real traffic, scraped by the
real Prometheus; its policy rolled out as a canary, promoted or rolled back on the
analysis; retuned when its SLO is violated, its profile drifts or its hardware changes;
the operator killed mid-canary. Each scene is in :mod:`tests.e2e.scenarios`, told as
Given / When / Then with its expectations checked next to the step that caused them; small
budgets and 2 s canary steps keep the story within minutes."""

from __future__ import annotations

import pytest

from tests.e2e import scenarios
from tests.e2e.environment import E2E
from tests.e2e.story import CacheStory

E2E_ROLES = ("tuned", "drift", "manual", "rollback", "blind", "restarts")


@pytest.mark.role("tuned")
def test_promoted_then_retuned_on_an_slo_violation_and_on_new_hardware(story: CacheStory) -> None:
    scenarios.tuned(story)


@pytest.mark.role("drift")
def test_retuned_on_a_sustained_profile_drift(story: CacheStory) -> None:
    scenarios.drifting(story)


@pytest.mark.role("manual")
def test_a_rollout_is_paused_aborted_and_promoted_by_annotations(story: CacheStory) -> None:
    scenarios.steered(story)


@pytest.mark.role("rollback")
def test_a_canary_whose_analysis_fails_is_rolled_back_and_the_stable_is_untouched(
    story: CacheStory,
) -> None:
    scenarios.failing_canary(story)


@pytest.mark.role("blind")
def test_a_canary_without_prometheus_is_held_and_never_promoted(
    e2e: E2E, story: CacheStory
) -> None:
    scenarios.blind_canary(story, e2e.prometheus)


@pytest.mark.role("restarts")
def test_an_operator_killed_at_every_canary_step_promotes_exactly_once(
    e2e: E2E, story: CacheStory
) -> None:
    scenarios.killed_canary(story, e2e.operator)
