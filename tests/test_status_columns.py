"""What `kubectl get ot` and kstatus read: the scores of the status, and Ready during a
search, driven through the state machine with plain facts."""

from __future__ import annotations

from datetime import timedelta

from retune.controller import decide
from retune.spec import Phase
from tests.test_controller import (
    T0,
    condition,
    facts,
    finished_status,
    finished_validation,
    running,
    searching_status,
)
from tests.test_controller_rollout import at_step, canary_status, report, step


def test_a_validation_sets_the_stable_score_and_a_promotion_the_revisions() -> None:
    validated = decide(finished_status(), facts(work=finished_validation()), T0).status
    assert validated.stable_score == 0.47  # the stable policy on the held-out seeds
    status = canary_status()
    assert status.rollout is not None and status.rollout.share == 10  # the Canary column
    later = T0 + timedelta(seconds=2)
    done = step(at_step(status, 1), later, report("pass")).status
    assert done.phase is Phase.STABLE and done.rollout is None
    assert done.stable_score == 0.53  # the promoted revision's validated score


def test_ready_stays_true_while_a_retune_searches_beside_a_stable_policy() -> None:
    status = searching_status()
    status.stable_revision = "cache-eviction-policy-1a2b"
    searching = decide(status, facts(work=running(12)), T0).status
    assert searching.phase is Phase.SEARCHING
    assert condition(searching, "Searching")[:2] == ("True", "InProgress")
    state, reason, message = condition(searching, "Ready")
    assert (state, reason) == ("True", "StableServing")
    assert message.startswith("cache-eviction-policy-1a2b serves; searching")


def test_the_first_search_is_not_ready_yet() -> None:
    searching = decide(searching_status(), facts(work=running(12)), T0).status
    assert condition(searching, "Ready")[:2] == ("False", "Searching")
