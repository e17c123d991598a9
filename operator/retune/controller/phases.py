"""The main line of a target's life: Profiling, Searching, Validating, and the settled
phases (Ready, Stable), each deciding from the facts of one reconcile.

:mod:`retune.controller.machine` decides which phase a target is in; the functions here
decide what that phase does now.
"""

from __future__ import annotations

from retune.controller.decision import (
    Decision,
    ForgetWork,
    PublishRevision,
    StartSearch,
    StartValidation,
    StopWork,
)
from retune.controller.draft import (
    DEGRADED,
    READY,
    SEARCHING,
    SIGNALS_READY,
    Draft,
    candidate_id,
    score,
)
from retune.controller.facts import (
    SearchOutcome,
    SignalsWaiting,
    ValidationOutcome,
    WorkKind,
    WorkReport,
    WorkState,
)
from retune.rollout.revisions import revision_name
from retune.spec import LedgerStatus, Phase, SearchStatus, ValidationStatus

REQUEUE_ACTIVE = 3.0
"""Seconds between reconciles while a worker runs (progress reaches the status this often)."""
REQUEUE_SETTLED = 300.0
RETRY_AFTER_FAILURE = 20.0
"""Seconds before a worker that failed for a passing reason (API errors) is restarted."""
BACKOFF = (5.0, 120.0)
"""Least and most seconds between two checks of a target that waits for its signals or
for a spec problem to be fixed: a quarter of the time it has waited, within these."""


def by_phase(draft: Draft) -> Decision:
    phase = draft.status.phase
    if phase is Phase.PROFILING:
        return _profiling(draft)
    if phase is Phase.SEARCHING:
        return _searching(draft)
    if phase is Phase.VALIDATING:
        return _validating(draft)
    return _settled(draft)


def stop_active_work(draft: Draft, reason: str) -> None:
    if draft.work is not None and draft.work.active:
        draft.act(StopWork(reason))
    draft.work = None


def backoff(draft: Draft, condition_type: str) -> float:
    """Check again soon after a condition changed, then less and less often."""
    condition = draft.status.condition(condition_type)
    since = condition.last_transition_time if condition else None
    waited = (draft.now - since).total_seconds() if since else 0.0
    low, high = BACKOFF
    return min(high, max(low, waited / 4))


def _work_failed(draft: Draft, work: WorkReport) -> Decision:
    what = work.kind.value
    if work.permanent:
        draft.act(ForgetWork())
        draft.work = None
        where = f"{work.error_path}: " if work.error_path else ""
        reason = "SearchFailed" if work.kind is WorkKind.SEARCH else "ValidationError"
        message = f"the {what} failed: {where}{work.error}; change the spec to try again"
        draft.condition(DEGRADED, True, reason, message)
        draft.condition(READY, False, "Degraded", message)
        draft.condition(SEARCHING, False, reason, message)
        draft.status.phase = Phase.DEGRADED
        draft.event(reason, message, warning=True)
        return draft.decision(REQUEUE_SETTLED)
    waited = (draft.now - work.ended_at).total_seconds() if work.ended_at else RETRY_AFTER_FAILURE
    if waited < RETRY_AFTER_FAILURE:
        message = (
            f"the {what} was interrupted: {work.error}; retrying {RETRY_AFTER_FAILURE:.0f}s after"
        )
        if draft.condition(READY, False, "Retrying", message):
            draft.event("Interrupted", message, warning=True)
        return draft.decision(max(1.0, RETRY_AFTER_FAILURE - waited))
    draft.act(ForgetWork())
    draft.work = None
    return by_phase(draft)


# -- the main line ---------------------------------------------------------------------------
def _profiling(draft: Draft) -> Decision:
    signals = draft.facts.signals
    if signals is None:
        return draft.decision(0.0, needs_signals=True)
    stop_active_work(draft, "a new search starts")
    if isinstance(signals, SignalsWaiting):
        if draft.condition(SIGNALS_READY, False, signals.reason, signals.message):
            draft.event(signals.reason, signals.message, warning=True)
        draft.condition(READY, False, "WaitingForSignals", f"waiting: {signals.message}")
        return draft.decision(backoff(draft, SIGNALS_READY))
    status, facts = draft.status, draft.facts
    read = (
        f"{len(signals.profile)} profile values; hardware {signals.summary} ({signals.fingerprint})"
    )
    draft.condition(SIGNALS_READY, True, "SignalsRead", read)
    status.profile = dict(signals.profile)
    status.profile_time = draft.now
    status.hardware = dict(signals.hardware)
    status.hardware_fingerprint = signals.fingerprint
    status.search = SearchStatus(
        started_at=draft.now,
        generation=facts.generation,
        signals_digest=facts.digests.signals,
        search_digest=facts.digests.search,
        budget_digest=facts.digests.budget,
    )
    status.best_score = status.seed_score = status.best_candidate = None
    status.ledger = LedgerStatus()
    status.last_retune_time = draft.now
    if status.last_retune_reason is None:
        status.last_retune_reason = "the target was created"
    status.phase = Phase.SEARCHING
    draft.event("SignalsRead", read)
    draft.event("SearchStarted", f"searching for a better policy on {signals.summary}")
    draft.act(StartSearch(dict(signals.profile), dict(signals.hardware), resume=False))
    draft.condition(SEARCHING, True, "Started", "the search started")
    draft.condition(READY, False, "Searching", "searching for a better policy")
    return draft.decision(REQUEUE_ACTIVE)


def _searching(draft: Draft) -> Decision:
    status, work = draft.status, draft.work
    if status.search is None:
        status.phase = Phase.PROFILING
        return _profiling(draft)
    if work is not None and work.kind is not WorkKind.SEARCH:
        _replace_stale(draft, work)
        work = None
    if work is None:
        status.search.resumes += 1
        status.search.budget_digest = draft.facts.digests.budget
        done = status.ledger.evaluations
        draft.act(StartSearch(dict(status.profile), dict(status.hardware), resume=True))
        draft.event(
            "SearchResumed", f"resuming the search from its checkpoint ({done} evaluations done)"
        )
        draft.condition(SEARCHING, True, "Resuming", f"resuming from {done} evaluations")
        draft.condition(READY, False, "Searching", "searching for a better policy")
        return draft.decision(REQUEUE_ACTIVE)
    if work.state is WorkState.FAILED:
        return _work_failed(draft, work)
    if work.state is WorkState.QUEUED:
        _queued(draft, work)
        return draft.decision(REQUEUE_ACTIVE)
    if work.progress is not None:
        draft.apply_progress(work.progress)
    if work.state is WorkState.FINISHED and work.search is not None:
        return _search_finished(draft, work.search)
    draft.condition(SEARCHING, True, "InProgress", _progress_message(draft, work))
    draft.condition(READY, False, "Searching", "searching for a better policy")
    return draft.decision(REQUEUE_ACTIVE)


def _replace_stale(draft: Draft, work: WorkReport) -> None:
    """A worker of the other kind (left from before a restart of the phase) goes."""
    if work.active:
        draft.act(StopWork(f"a {work.kind.value} is not what the target needs now"))
    else:
        draft.act(ForgetWork())
    draft.work = None


def _queued(draft: Draft, work: WorkReport) -> None:
    limit = draft.facts.max_concurrent_searches
    message = f"waiting for a search slot: {work.queued_behind} searches are running" + (
        f" (at most {limit} at once, --max-concurrent-searches)" if limit else ""
    )
    draft.condition(SEARCHING, False, "Queued", message)
    draft.condition(READY, False, "Queued", message)


def _progress_message(draft: Draft, work: WorkReport) -> str:
    status = draft.status
    progress = work.progress
    total = f"/{progress.max_evaluations}" if progress and progress.max_evaluations else ""
    text = (
        f"{status.ledger.evaluations}{total} evaluations; best {score(status.best_score)} "
        f"(seed {score(status.seed_score)}); ${status.ledger.usd:.4f}"
    )
    if work.resumed_from is not None:
        text += f"; resumed at {work.resumed_from} evaluations"
    if work.discarded:
        text += f"; started afresh: {work.discarded}"
    return text


def _search_finished(draft: Draft, outcome: SearchOutcome) -> Decision:
    status = draft.status
    assert status.search is not None
    draft.apply_progress(outcome.progress)
    status.search.finished_at = draft.now
    status.search.stop_reason = outcome.stop_reason
    status.last_search_end_time = draft.now
    draft.act(ForgetWork())
    draft.work = None
    message = (
        f"{outcome.stop_reason}: {status.ledger.evaluations} evaluations, "
        f"best {score(status.best_score)} ({status.best_candidate}), seed {score(status.seed_score)}"
    )
    draft.condition(SEARCHING, False, "Finished", message)
    draft.event("SearchFinished", message)
    if outcome.improved:
        status.phase = Phase.VALIDATING
        return _validating(draft)
    status.phase = Phase.STABLE
    kept = "no candidate scored better than the seed; the workload keeps its stable policy"
    draft.condition(READY, True, "NoImprovement", kept)
    draft.event("NoImprovement", kept)
    return draft.decision(REQUEUE_SETTLED)


def _validating(draft: Draft) -> Decision:
    status, work = draft.status, draft.work
    if work is not None and work.kind is not WorkKind.VALIDATION:
        _replace_stale(draft, work)
        work = None
    if work is None:
        draft.act(StartValidation(dict(status.profile), dict(status.hardware)))
        message = (
            f"re-scoring {status.best_candidate} and the stable policy side by side on "
            "held-out seeds"
        )
        draft.event("ValidationStarted", message)
        draft.condition(READY, False, "Validating", message)
        return draft.decision(REQUEUE_ACTIVE)
    if work.state is WorkState.FAILED:
        return _work_failed(draft, work)
    if work.state is WorkState.QUEUED:
        _queued(draft, work)
        return draft.decision(REQUEUE_ACTIVE)
    if work.state is WorkState.FINISHED and work.validation is not None:
        return _validation_finished(draft, work.validation)
    return draft.decision(REQUEUE_ACTIVE)


def _validation_finished(draft: Draft, outcome: ValidationOutcome) -> Decision:
    status, report = draft.status, outcome.report
    candidate = candidate_id(outcome.candidate) or "?"
    status.validation = ValidationStatus(
        candidate=candidate,
        passed=report.passed,
        candidate_score=report.candidate_score,
        stable_score=report.stable_score,
        improvement=report.improvement,
        reasons=list(report.reasons),
        finished_at=draft.now,
    )
    draft.act(ForgetWork())
    draft.work = None
    scores = (
        f"{score(report.candidate_score)} against the stable policy's "
        f"{score(report.stable_score)} on held-out seeds"
        + (f" ({report.improvement:+.2%})" if report.improvement is not None else "")
    )
    if not report.passed:
        status.phase = Phase.STABLE
        message = (
            f"{candidate} did not pass validation ({'; '.join(report.reasons)}): it scored "
            f"{scores}; the workload keeps its stable policy"
        )
        draft.condition(READY, True, "ValidationFailed", message)
        draft.event("ValidationFailed", message)
        return draft.decision(REQUEUE_SETTLED)
    name = revision_name(draft.facts.target, outcome.candidate_code)
    draft.act(
        PublishRevision(
            name=name,
            code=outcome.candidate_code,
            candidate=outcome.candidate,
            score=report.candidate_score,
            stable_score=report.stable_score,
        )
    )
    status.validated_revision = name
    status.phase = Phase.READY
    message = f"revision {name} ({candidate}) scores {scores}; it is ready to roll out"
    draft.condition(READY, True, "RevisionValidated", message)
    draft.event("ValidationPassed", f"{candidate} scores {scores}")
    draft.event("RevisionPublished", f"ConfigMap {name} holds {candidate}")
    return draft.decision(REQUEUE_SETTLED)


def _settled(draft: Draft) -> Decision:
    """Ready or Stable: nothing to do until something changes (the next steps of the design
    start canaries and retunes from here)."""
    if draft.work is not None:
        _replace_stale(draft, draft.work)
    if draft.is_true(SEARCHING):
        draft.condition(SEARCHING, False, "Finished", "the search has finished")
    if not draft.is_true(READY):
        if draft.status.phase is Phase.READY:
            message = f"revision {draft.status.validated_revision} is validated"
            draft.condition(READY, True, "RevisionValidated", message)
        else:
            draft.condition(READY, True, "StablePolicyKept", "the workload keeps its stable policy")
    return draft.decision(REQUEUE_SETTLED)
