"""The per-target state machine, driven with plain facts: no cluster, no engine, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from retune.controller import (
    Facts,
    ForgetWork,
    PublishRevision,
    SearchOutcome,
    SearchProgress,
    Signals,
    SignalsWaiting,
    SpecDigests,
    StartSearch,
    StartValidation,
    StopWork,
    ValidationOutcome,
    WorkKind,
    WorkReport,
    WorkState,
    decide,
)
from retune.rollout.revisions import revision_name
from retune.search.ledger import LedgerState, ModelUsage
from retune.search.validation import ValidationReport
from retune.spec import Phase, Problem, RolloutSpec, TargetStatus
from retune.spec.events import EventReason

T0 = datetime(2025, 1, 1, tzinfo=UTC)
FIRST_SEARCH = "1/2025-01-01T00:00:00Z"  # the id of the search started at T0 (generation 1)
DIGESTS = SpecDigests(signals="sig", search="search", budget="budget")
SIGNALS = Signals(
    profile={"request_rate": 2000.0, "zipf_alpha": 0.85},
    hardware={"retune.dev/fingerprint": "hw-abc", "node.kubernetes.io/instance-type": "m6i.xlarge"},
    fingerprint="hw-abc",
    summary="m6i.xlarge/amd64",
)
BEST_CODE = "def priority(size, now, last_access, *rest):\n    return last_access + 300.0\n"


def facts(**changes: object) -> Facts:
    values: dict[str, object] = {
        "target": "cache-eviction",
        "generation": 1,
        "paused": False,
        "digests": DIGESTS,
    }
    if "approval" in changes:  # spec.rollout.approval
        changes["rollout"] = RolloutSpec(approval=changes.pop("approval"))  # type: ignore[arg-type]
    values.update(changes)
    return Facts(**values)  # type: ignore[arg-type]


def progress(evaluations: int, best: float = 0.5, seed: float = 0.46) -> SearchProgress:
    ledger = LedgerState(evaluations=evaluations, failed_evaluations=1, usd_spent=0.002)
    ledger.models["small"] = ModelUsage(
        calls=3, failed_calls=1, prompt_tokens=900, completion_tokens=300, usd=0.002
    )
    return SearchProgress(
        evaluations=evaluations,
        best_score=best,
        seed_score=seed,
        best_candidate="c7" if best > seed else "c0",
        ledger=ledger,
        max_evaluations=24,
    )


def running(evaluations: int = 5, **changes: object) -> WorkReport:
    values: dict[str, object] = {
        "kind": WorkKind.SEARCH,
        "state": WorkState.RUNNING,
        "progress": progress(evaluations),
    }
    values.update(changes)
    return WorkReport(**values)  # type: ignore[arg-type]


def finished_search(best: float = 0.52, seed: float = 0.46) -> WorkReport:
    result = progress(24, best, seed)
    outcome = SearchOutcome(stop_reason="evaluation budget reached", progress=result)
    return WorkReport(
        kind=WorkKind.SEARCH, state=WorkState.FINISHED, progress=result, search=outcome
    )


def finished_validation(passed: bool = True) -> WorkReport:
    report = ValidationReport(
        passed=passed,
        candidate_score=0.53,
        stable_score=0.47 if passed else 0.525,
        improvement=0.127 if passed else 0.0095,
        reasons=[]
        if passed
        else ["improvement +0.95% on held-out seeds is below the required 2.00%"],
    )
    outcome = ValidationOutcome(candidate="c7", candidate_code=BEST_CODE, report=report)
    return WorkReport(kind=WorkKind.VALIDATION, state=WorkState.FINISHED, validation=outcome)


def condition(status: TargetStatus, type_: str) -> tuple[str, str, str]:
    found = status.condition(type_)
    assert found is not None, f"no {type_} condition"
    return found.status, found.reason, found.message


def reasons(decision: object) -> list[str]:
    return [event.reason for event in decision.events]  # type: ignore[attr-defined]


def searching_status() -> TargetStatus:
    """A target whose search started on SIGNALS."""
    first = decide(TargetStatus(), facts(signals=SIGNALS), T0)
    return first.status


def finished_status(best: float = 0.52) -> TargetStatus:
    return decide(searching_status(), facts(work=finished_search(best)), T0).status


# -- a target from creation to a validated revision ------------------------------------------
def test_a_new_target_asks_for_its_signals_first() -> None:
    decision = decide(TargetStatus(), facts(), T0)
    assert decision.needs_signals
    assert decision.actions == []
    assert decision.status.observed_generation == 1
    assert condition(decision.status, "Degraded")[0] == "False"


def test_signals_start_a_fresh_search_on_them_and_are_recorded() -> None:
    decision = decide(TargetStatus(), facts(signals=SIGNALS), T0)
    status = decision.status
    assert status.phase is Phase.SEARCHING
    assert decision.actions == [
        StartSearch(SIGNALS.profile, SIGNALS.hardware, resume=False, search_id=FIRST_SEARCH)
    ]
    assert status.profile == SIGNALS.profile and status.profile_time == T0
    assert status.hardware == SIGNALS.hardware and status.hardware_fingerprint == "hw-abc"
    assert status.search is not None and status.search.started_at == T0
    assert (status.search.signals_digest, status.search.budget_digest) == ("sig", "budget")
    assert condition(status, "SignalsReady")[:2] == ("True", "SignalsRead")
    assert "m6i.xlarge/amd64 (hw-abc)" in condition(status, "SignalsReady")[2]
    assert reasons(decision) == ["SignalsRead", "SearchStarted"]
    assert decision.requeue_after <= 5


def test_progress_of_the_search_reaches_the_status() -> None:
    decision = decide(searching_status(), facts(work=running(12)), T0)
    status = decision.status
    assert status.phase is Phase.SEARCHING and decision.actions == []
    assert status.best_score == 0.5 and status.seed_score == 0.46 and status.best_candidate == "c7"
    assert status.ledger.evaluations == 12 and status.ledger.failed_evaluations == 1
    assert status.ledger.models["small"].prompt_tokens == 900
    assert status.ledger.models["small"].failed_calls == 1
    state, reason, message = condition(status, "Searching")
    assert (state, reason) == ("True", "InProgress")
    assert message.startswith("12/24 evaluations; best 0.5000 (seed 0.4600)")
    assert condition(status, "Ready")[:2] == ("False", "Searching")


def test_a_free_start_shows_in_the_progress_beside_the_search() -> None:
    report = progress(3)
    report.ledger.free_evaluations = 8
    status = decide(searching_status(), facts(work=running(progress=report)), T0).status
    message = condition(status, "Searching")[2]
    assert message.startswith("3/24 evaluations; best") and "; free start 8 evaluations" in message
    assert status.ledger.evaluations == 3, "the budget counts the search's own"


def test_a_model_tier_that_begins_a_rest_is_a_warning_once() -> None:
    quiet = decide(searching_status(), facts(work=running(12)), T0)
    assert "ModelTierResting" not in reasons(quiet)
    resting = running(14)
    resting.progress.ledger.rests["small"] = 1
    first = decide(quiet.status, facts(work=resting), T0 + timedelta(seconds=30))
    assert first.status.ledger.models["small"].rests == 1
    warned = [e for e in first.events if e.reason == "ModelTierResting"]
    assert len(warned) == 1 and warned[0].type == "Warning"
    assert "model tier small kept giving no usable program (1 of 3 calls)" in warned[0].message
    again = decide(first.status, facts(work=resting), T0 + timedelta(seconds=60))
    assert "ModelTierResting" not in reasons(again)  # the same rest: no second Event


def test_a_search_that_beat_the_seed_goes_on_to_validation() -> None:
    decision = decide(searching_status(), facts(work=finished_search()), T0 + timedelta(minutes=2))
    status = decision.status
    assert status.phase is Phase.VALIDATING
    assert decision.actions == [ForgetWork(), StartValidation(SIGNALS.profile, SIGNALS.hardware)]
    assert status.search is not None and status.search.finished_at == T0 + timedelta(minutes=2)
    assert status.search.stop_reason == "evaluation budget reached"
    assert status.best_score == 0.52 and status.ledger.evaluations == 24
    assert condition(status, "Searching")[:2] == ("False", "Finished")
    assert reasons(decision) == ["SearchFinished", "ValidationStarted"]


def test_a_passed_validation_publishes_an_immutable_revision_and_is_ready() -> None:
    decision = decide(finished_status(), facts(work=finished_validation()), T0)
    status = decision.status
    name = revision_name("cache-eviction", BEST_CODE)
    assert name.startswith("cache-eviction-policy-")
    assert decision.actions == [
        ForgetWork(),
        PublishRevision(name=name, code=BEST_CODE, candidate="c7", score=0.53, stable_score=0.47),
    ]
    assert status.phase is Phase.READY and status.validated_revision == name
    assert status.validation is not None and status.validation.passed
    assert status.validation.candidate == "c7" and status.validation.stable_score == 0.47
    state, reason, message = condition(status, "Ready")
    assert (state, reason) == ("True", "RevisionValidated")
    assert name in message and "+12.70%" in message
    assert reasons(decision) == ["ValidationPassed", "RevisionPublished"]
    assert decision.requeue_after <= 1  # its canary starts at the next reconcile


def test_a_failed_validation_keeps_the_stable_policy_and_says_why() -> None:
    decision = decide(finished_status(), facts(work=finished_validation(passed=False)), T0)
    status = decision.status
    assert status.phase is Phase.STABLE and status.validated_revision is None
    assert not any(isinstance(action, PublishRevision) for action in decision.actions)
    state, reason, message = condition(status, "Ready")
    assert (state, reason) == ("True", "ValidationFailed")
    assert "below the required 2.00%" in message
    assert status.validation is not None and not status.validation.passed


def test_a_search_that_found_nothing_better_skips_validation() -> None:
    decision = decide(searching_status(), facts(work=finished_search(best=0.46)), T0)
    assert decision.status.phase is Phase.STABLE
    assert decision.actions == [ForgetWork()]
    assert condition(decision.status, "Ready")[:2] == ("True", "NoImprovement")


def test_a_ready_target_starts_the_canary_of_its_revision() -> None:
    ready = decide(finished_status(), facts(work=finished_validation()), T0).status
    again = decide(ready, facts(), T0 + timedelta(seconds=1))
    assert again.needs_canary and again.actions == []
    assert again.status.phase is Phase.CANARY
    assert again.status.rollout is not None
    assert again.status.rollout.revision == again.status.canary_revision == ready.validated_revision
    assert reasons(again) == ["RolloutStarted"]


# -- restarts ---------------------------------------------------------------------------------
def test_a_search_without_a_worker_resumes_on_its_recorded_signals() -> None:
    status = decide(searching_status(), facts(work=running(12)), T0).status
    decision = decide(status, facts(), T0 + timedelta(minutes=1))  # the operator restarted
    assert decision.actions == [
        StartSearch(SIGNALS.profile, SIGNALS.hardware, resume=True, search_id=FIRST_SEARCH)
    ]
    assert not decision.needs_signals  # Prometheus is not asked again
    assert decision.status.search is not None and decision.status.search.resumes == 1
    assert reasons(decision) == ["SearchResumed"]
    assert "12 evaluations done" in decision.events[0].message


def test_a_resumed_search_says_so_in_its_condition() -> None:
    work = running(14, resumed_from=12)
    message = condition(decide(searching_status(), facts(work=work), T0).status, "Searching")[2]
    assert "resumed at 12 evaluations" in message


def test_a_validation_interrupted_by_a_restart_runs_again() -> None:
    decision = decide(finished_status(), facts(), T0)
    assert decision.actions == [StartValidation(SIGNALS.profile, SIGNALS.hardware)]


def test_a_worker_of_the_wrong_kind_is_replaced() -> None:
    stale = WorkReport(kind=WorkKind.SEARCH, state=WorkState.RUNNING)
    decision = decide(finished_status(), facts(work=stale), T0)
    assert isinstance(decision.actions[0], StopWork)
    assert isinstance(decision.actions[1], StartValidation)


# -- waiting for signals ----------------------------------------------------------------------
def test_prometheus_down_makes_the_target_wait_with_the_query_and_the_error() -> None:
    waiting = SignalsWaiting(
        EventReason.PROMETHEUS_UNAVAILABLE,
        "profile query key_space (spec.profile.queries.key_space): unavailable: connection refused",
    )
    decision = decide(TargetStatus(), facts(signals=waiting), T0)
    status = decision.status
    assert status.phase is Phase.PROFILING and decision.actions == []
    assert condition(status, "SignalsReady") == ("False", "PrometheusUnavailable", waiting.message)
    assert condition(status, "Ready")[:2] == ("False", "WaitingForSignals")
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "PrometheusUnavailable")]
    first_delay = decision.requeue_after
    later = decide(status, facts(signals=waiting), T0 + timedelta(minutes=4))
    assert later.events == []  # one Event per change, not per retry
    assert later.requeue_after > first_delay
    assert later.requeue_after <= 120

    recovered = decide(later.status, facts(signals=SIGNALS), T0 + timedelta(minutes=5))
    assert recovered.status.phase is Phase.SEARCHING
    assert condition(recovered.status, "SignalsReady")[0] == "True"
    assert isinstance(recovered.actions[0], StartSearch)


def test_profiling_asks_for_signals_at_every_retry() -> None:
    waiting = SignalsWaiting(EventReason.PROFILE_NO_DATA, "profile query rps: no data")
    status = decide(TargetStatus(), facts(signals=waiting), T0).status
    assert decide(status, facts(), T0 + timedelta(seconds=10)).needs_signals


# -- degraded and paused ----------------------------------------------------------------------
def test_spec_problems_degrade_the_target_naming_the_field() -> None:
    problems = (
        Problem("spec.policy.seed.configMapRef.name", "ConfigMap 'seed' not found in 'shop'"),
    )
    decision = decide(searching_status(), facts(problems=problems, work=running()), T0)
    status = decision.status
    assert status.phase is Phase.DEGRADED
    assert isinstance(decision.actions[0], StopWork)
    state, reason, message = condition(status, "Degraded")
    assert (state, reason) == ("True", "InvalidSpec")
    assert message == "spec.policy.seed.configMapRef.name: ConfigMap 'seed' not found in 'shop'"
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "InvalidSpec")]
    assert decide(status, facts(problems=problems), T0).events == []

    fixed = decide(status, facts(), T0 + timedelta(minutes=1))
    assert condition(fixed.status, "Degraded")[:2] == ("False", "Recovered")
    assert fixed.status.phase is Phase.SEARCHING  # the interrupted search resumes
    assert isinstance(fixed.actions[0], StartSearch) and fixed.actions[0].resume


def test_a_seed_that_fails_degrades_until_the_spec_changes() -> None:
    failed = WorkReport(
        kind=WorkKind.SEARCH,
        state=WorkState.FAILED,
        error="the seed policy failed its evaluation: exception: ZeroDivisionError",
        error_path="spec.policy.seed",
        permanent=True,
        ended_at=T0,
    )
    decision = decide(searching_status(), facts(work=failed), T0)
    status = decision.status
    assert status.phase is Phase.DEGRADED and decision.actions == [ForgetWork()]
    state, reason, message = condition(status, "Degraded")
    assert (state, reason) == ("True", "SearchFailed")
    assert "spec.policy.seed: the seed policy failed" in message
    assert decide(status, facts(), T0 + timedelta(hours=1)).actions == []  # sticky

    new_seed = SpecDigests(signals="sig", search="search-2", budget="budget")
    again = decide(status, facts(generation=2, digests=new_seed), T0 + timedelta(hours=1))
    assert again.status.phase is Phase.PROFILING and again.needs_signals


def test_an_interrupted_worker_is_restarted_after_a_delay() -> None:
    failed = WorkReport(
        kind=WorkKind.SEARCH,
        state=WorkState.FAILED,
        error="HTTP 503 Service Unavailable",
        ended_at=T0,
    )
    status = searching_status()
    soon = decide(status, facts(work=failed), T0 + timedelta(seconds=5))
    assert soon.actions == [] and 10 <= soon.requeue_after <= 16
    assert condition(soon.status, "Ready")[:2] == ("False", "Retrying")
    assert reasons(soon) == ["Interrupted"]
    later = decide(soon.status, facts(work=failed), T0 + timedelta(seconds=30))
    assert later.actions[0] == ForgetWork()
    assert later.actions[1] == StartSearch(
        SIGNALS.profile, SIGNALS.hardware, resume=True, search_id=FIRST_SEARCH
    )


def test_pausing_stops_the_search_and_unpausing_resumes_it() -> None:
    status = decide(searching_status(), facts(work=running(12)), T0).status
    paused = decide(status, facts(generation=2, paused=True, work=running(13)), T0)
    assert paused.status.phase is Phase.PAUSED
    assert isinstance(paused.actions[0], StopWork)
    assert condition(paused.status, "Ready")[:2] == ("False", "Paused")
    assert reasons(paused) == ["Paused"]

    resumed = decide(paused.status, facts(generation=3), T0 + timedelta(minutes=5))
    assert resumed.status.phase is Phase.SEARCHING
    assert resumed.actions == [
        StartSearch(SIGNALS.profile, SIGNALS.hardware, resume=True, search_id=FIRST_SEARCH)
    ]
    assert "Unpaused" in reasons(resumed)


def test_a_queued_search_says_what_it_waits_for() -> None:
    queued = WorkReport(kind=WorkKind.SEARCH, state=WorkState.QUEUED, queued_behind=2)
    decision = decide(searching_status(), facts(work=queued, max_concurrent_searches=2), T0)
    state, reason, message = condition(decision.status, "Searching")
    assert (state, reason) == ("False", "Queued")
    assert "2 searches are running (at most 2 at once" in message


# -- spec changes -----------------------------------------------------------------------------
def test_a_budget_change_resumes_the_running_search_under_it() -> None:
    more = SpecDigests(signals="sig", search="search", budget="budget-2")
    decision = decide(searching_status(), facts(generation=2, digests=more, work=running()), T0)
    assert isinstance(decision.actions[0], StopWork)
    assert decision.actions[1] == StartSearch(
        SIGNALS.profile, SIGNALS.hardware, resume=True, search_id=FIRST_SEARCH
    )
    assert decision.status.search is not None
    assert decision.status.search.budget_digest == "budget-2"


def test_a_change_the_search_does_not_depend_on_leaves_it_running() -> None:
    decision = decide(searching_status(), facts(generation=2, work=running()), T0)
    assert decision.actions == []
    assert decision.status.phase is Phase.SEARCHING
    assert decision.status.observed_generation == 2
    assert reasons(decision) == ["SpecChanged"]


def test_a_change_to_the_profile_queries_starts_a_new_search_on_fresh_signals() -> None:
    other = SpecDigests(signals="sig-2", search="search", budget="budget")
    decision = decide(searching_status(), facts(generation=2, digests=other, work=running()), T0)
    assert isinstance(decision.actions[0], StopWork)
    assert decision.status.phase is Phase.PROFILING and decision.needs_signals


def test_a_new_seed_after_a_validated_revision_searches_again() -> None:
    ready = decide(finished_status(), facts(work=finished_validation()), T0).status
    other = SpecDigests(signals="sig", search="search-2", budget="budget")
    decision = decide(ready, facts(generation=2, digests=other), T0)
    assert decision.status.phase is Phase.PROFILING and decision.needs_signals
    started = decide(ready, facts(generation=2, digests=other, signals=SIGNALS), T0)
    assert started.status.search is not None and started.status.search.search_digest == "search-2"
    assert started.status.ledger.evaluations == 0 and started.status.best_score is None
    assert started.status.validated_revision is None  # superseded by the new search
    assert started.status.search.trigger == "SpecChanged"
    assert not started.status.search.warm_start  # a new problem: no warm start


def test_decide_never_changes_the_status_it_is_given() -> None:
    status = searching_status()
    before = status.model_dump()
    decide(status, facts(work=finished_search()), T0)
    decide(status, facts(paused=True), T0)
    assert status.model_dump() == before
