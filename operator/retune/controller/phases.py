"""The main line of a target's life: Profiling, Searching, Validating, then Ready, Canary
and Stable (:mod:`~retune.controller.canary`, :mod:`~retune.controller.triggers`), each
deciding from the facts of one reconcile.

:mod:`retune.controller.machine` decides which phase a target is in; the functions here
decide what that phase does now.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC

from retune.controller import spend
from retune.controller.approval import awaiting_approval, settled
from retune.controller.canary import canary_step, start_rollout
from retune.controller.decision import (
    Decision,
    ForgetWork,
    PublishRevision,
    StartSearch,
    StartValidation,
)
from retune.controller.draft import (
    DEGRADED,
    READY,
    SEARCHING,
    SIGNALS_READY,
    Draft,
    backoff,
    replace_stale,
    score,
    stop_active_work,
    validation_status,
)
from retune.controller.facts import (
    SearchOutcome,
    SignalsWaiting,
    ValidationOutcome,
    WorkKind,
    WorkReport,
    WorkState,
)
from retune.controller.library import (
    recall,
    recall_validated,
    recalling,
    settle_on_stable,
    start_recall_validation,
)
from retune.controller.triggers import RETUNE_TRIGGERS, watch
from retune.rollout.revisions import revision_name
from retune.spec import LedgerStatus, Phase, SearchStatus
from retune.spec.events import EventReason

REQUEUE_ACTIVE = 3.0
"""Seconds between reconciles while a worker runs (progress reaches the status this often)."""
REQUEUE_SETTLED = 300.0
REQUEUE_READY = 1.0
"""Seconds between the end of a search or validation and the next phase's first step (a
published revision's ConfigMap exists before its canary is made)."""
RETRY_AFTER_FAILURE = 20.0
"""Seconds before a worker that failed for a passing reason (API errors) is restarted."""
SPEND_RECHECK = 3600.0
"""Most seconds between two looks at a spend limit with nothing left (the spec may
change it sooner, which reconciles at once)."""
_MAX_HOPS = 6


def by_phase(draft: Draft) -> Decision:
    """What the target's phase does now; a phase that hands over to the next one in the
    same reconcile (Ready to Canary, Stable to Profiling...) returns None."""
    handlers: dict[Phase, Callable[[Draft], Decision | None]] = {
        Phase.PROFILING: _profiling,
        Phase.SEARCHING: _searching,
        Phase.VALIDATING: _validating,
        Phase.READY: start_rollout,
        Phase.AWAITING_APPROVAL: awaiting_approval,
        Phase.CANARY: canary_step,
        Phase.STABLE: settled,
    }
    for _ in range(_MAX_HOPS):
        decision = handlers.get(draft.status.phase, watch)(draft)
        if decision is not None:
            return decision
    raise RuntimeError(f"no decision after {_MAX_HOPS} phases (now {draft.status.phase})")


def _work_failed(draft: Draft, work: WorkReport) -> Decision:
    what = work.kind.value
    if work.permanent:
        draft.act(ForgetWork())
        draft.work = None
        where = f"{work.error_path}: " if work.error_path else ""
        reason = (
            EventReason.SEARCH_FAILED
            if work.kind is WorkKind.SEARCH
            else EventReason.VALIDATION_ERROR
        )
        message = f"the {what} failed: {where}{work.error}; change the spec to try again"
        draft.condition(DEGRADED, True, reason, message)
        draft.condition(READY, False, "Degraded", message)
        draft.condition(SEARCHING, False, reason, message)
        draft.status.phase = Phase.DEGRADED
        draft.event(reason, message)
        return draft.decision(REQUEUE_SETTLED)
    waited = (draft.now - work.ended_at).total_seconds() if work.ended_at else RETRY_AFTER_FAILURE
    if waited < RETRY_AFTER_FAILURE:
        message = (
            f"the {what} was interrupted: {work.error}; retrying {RETRY_AFTER_FAILURE:.0f}s after"
        )
        if draft.condition(READY, False, "Retrying", message):
            draft.event(EventReason.INTERRUPTED, message)
        return draft.decision(max(1.0, RETRY_AFTER_FAILURE - waited))
    draft.act(ForgetWork())
    draft.work = None
    return by_phase(draft)


# -- the main line ---------------------------------------------------------------------------
def _profiling(draft: Draft) -> Decision | None:
    status, facts = draft.status, draft.facts
    limit = facts.spend_limit
    allowance = spend.room(status, limit, draft.now, facts.max_usd) if limit is not None else None
    if limit is not None and allowance is not None and allowance <= 0:
        stop_active_work(draft, "a new search starts")
        return _spend_limited(draft, spend.waiting(status, limit, draft.now, facts.max_usd))
    signals = facts.signals
    if signals is None:
        return draft.decision(0.0, needs_signals=True)
    stop_active_work(draft, "a new search starts")
    if isinstance(signals, SignalsWaiting):
        if draft.condition(SIGNALS_READY, False, signals.reason, signals.message):
            draft.event(signals.reason, signals.message)
        draft.condition(READY, False, "WaitingForSignals", f"waiting: {signals.message}")
        return draft.decision(backoff(draft, SIGNALS_READY))
    read = (
        f"{len(signals.profile)} profile values; hardware {signals.summary} ({signals.fingerprint})"
    )
    draft.condition(SIGNALS_READY, True, "SignalsRead", read)
    status.profile = dict(signals.profile)
    status.profile_time = draft.now
    status.hardware = dict(signals.hardware)
    status.hardware_fingerprint = signals.fingerprint
    if status.last_retune_reason is None:
        status.last_retune_reason = "the target was created"
        status.last_retune_trigger = "Created"
    draft.event(EventReason.SIGNALS_READ, read)
    if recall(draft, signals):
        return None  # Validating the known context's winner
    retune = status.last_retune_trigger in RETUNE_TRIGGERS
    counted = status.ledger.usd
    spend.fold_search(status, draft.now, limit.window_seconds if limit else None)
    status.search = SearchStatus(
        started_at=draft.now,
        generation=facts.generation,
        signals_digest=facts.digests.signals,
        search_digest=facts.digests.search,
        budget_digest=facts.digests.budget,
        trigger=status.last_retune_trigger,
        seed_revision=status.stable_revision if retune else None,
        seed_offset=status.retunes if retune else 0,
        warm_start=retune and facts.retune.warm_start,
        usd_allowance=round(allowance, 6) if allowance is not None else None,
        previous_usd=counted,
    )
    status.best_score = status.seed_score = status.best_candidate = None
    status.ledger = LedgerStatus()
    status.last_retune_time = draft.now
    status.watch = None
    status.phase = Phase.SEARCHING
    started = f"searching for a better policy on {signals.summary}"
    if retune:
        origin = status.search.seed_revision or "the seed policy"
        warm = ", warm-started from the archive" if status.search.warm_start else ""
        started += f", from {origin}{warm} ({status.last_retune_trigger})"
    draft.event(EventReason.SEARCH_STARTED, started)
    draft.act(_start_search(status.search, signals.profile, signals.hardware, resume=False))
    draft.condition(SEARCHING, True, "Started", "the search started")
    _ready_while_busy(draft, "Searching", "searching for a better policy")
    return draft.decision(REQUEUE_ACTIVE)


def _spend_limited(draft: Draft, wait: spend.Wait) -> Decision:
    """No search starts: the spend limit has nothing left until earlier spending leaves
    its window."""
    message = f"{wait.spent}; {wait.until('search')}"
    if draft.condition(SEARCHING, False, "SpendLimitReached", message):
        draft.event(EventReason.SPEND_LIMIT_REACHED, message)
    _ready_while_busy(draft, "SpendLimitReached", message)
    return draft.decision(max(1.0, min(wait.seconds, SPEND_RECHECK)))


def _searching(draft: Draft) -> Decision | None:
    status, work = draft.status, draft.work
    if status.search is None:
        status.phase = Phase.PROFILING
        return _profiling(draft)
    if work is not None and work.kind is not WorkKind.SEARCH:
        replace_stale(draft, work)
        work = None
    if work is None:
        status.search.resumes += 1
        status.search.budget_digest = draft.facts.digests.budget
        done = status.ledger.evaluations
        draft.act(_start_search(status.search, status.profile, status.hardware, resume=True))
        draft.event(
            EventReason.SEARCH_RESUMED,
            f"resuming the search from its checkpoint ({done} evaluations done)",
        )
        draft.condition(SEARCHING, True, "Resuming", f"resuming from {done} evaluations")
        _ready_while_busy(draft, "Searching", "searching for a better policy")
        return draft.decision(REQUEUE_ACTIVE)
    if work.state is WorkState.FAILED:
        return _work_failed(draft, work)
    if work.state is WorkState.QUEUED:
        _queued(draft, work)
        return draft.decision(REQUEUE_ACTIVE)
    if work.progress is not None:
        draft.apply_progress(work.progress)
    if work.warm_programs is not None:
        status.search.warm_programs = work.warm_programs
    if work.abandoned_usd > status.search.abandoned_usd:
        unsettled = work.abandoned_usd - status.search.abandoned_usd
        status.search.abandoned_usd = work.abandoned_usd
        spend.add_unsettled(status, unsettled, draft.now)
        if status.search.usd_allowance is not None:  # as the worker lowered its budget
            status.search.usd_allowance = round(
                max(0.0, status.search.usd_allowance - unsettled), 6
            )
        draft.event(
            EventReason.UNSETTLED_CALLS_CHARGED,
            f"the search before this one spent ${unsettled:.6f} its status never counted "
            "(calls in flight when it was replaced, at their worst case, or settled after "
            "its last progress): counted in status.spend",
        )
    if work.state is WorkState.FINISHED and work.search is not None:
        return _search_finished(draft, work.search)
    draft.condition(SEARCHING, True, "InProgress", _progress_message(draft, work))
    _ready_while_busy(draft, "Searching", "searching for a better policy")
    return draft.decision(REQUEUE_ACTIVE)


def _ready_while_busy(draft: Draft, reason: str, message: str) -> None:
    """Ready while a search or its validation runs: True when a stable policy serves (the
    target settled before: a retune, or a promoted revision), so that kstatus and
    ``kubectl wait --for=condition=Ready`` see a working target; the Searching condition
    says what runs. False on the first search, before anything settled."""
    status = draft.status
    retune = status.search is not None and status.search.trigger in RETUNE_TRIGGERS
    if status.stable_revision is None and not retune:
        draft.condition(READY, False, reason, message)
        return
    serving = status.stable_revision or "the seed policy"
    draft.condition(READY, True, "StableServing", f"{serving} serves; {message}")


def _start_search(
    search: SearchStatus, profile: dict[str, float], hardware: dict[str, str], *, resume: bool
) -> StartSearch:
    return StartSearch(
        dict(profile),
        dict(hardware),
        resume=resume,
        seed_revision=search.seed_revision,
        seed_offset=search.seed_offset,
        warm_start=search.warm_start,
        usd_allowance=search.usd_allowance,
        counted_usd=search.previous_usd,
        search_id=search_id(search),
    )


def search_id(search: SearchStatus) -> str:
    """The id of a search, the same for each of its attempts: the spec generation it was
    started for and when, to the second (what any store of the status keeps); "" for a
    search started before searches had one."""
    if search.started_at is None:
        return ""
    return f"{search.generation}/{search.started_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def _queued(draft: Draft, work: WorkReport) -> None:
    limit = draft.facts.max_concurrent_searches
    message = f"waiting for a search slot: {work.queued_behind} searches are running" + (
        f" (at most {limit} at once, --max-concurrent-searches)" if limit else ""
    )
    draft.condition(SEARCHING, False, "Queued", message)
    _ready_while_busy(draft, "Queued", message)


def _progress_message(draft: Draft, work: WorkReport) -> str:
    status = draft.status
    progress = work.progress
    total = f"/{progress.max_evaluations}" if progress and progress.max_evaluations else ""
    text = (
        f"{status.ledger.evaluations}{total} evaluations; best {score(status.best_score)} "
        f"(seed {score(status.seed_score)}); ${status.ledger.usd:.4f}"
    )
    if progress and progress.ledger.free_evaluations:
        text += f"; free start {progress.ledger.free_evaluations} evaluations"
    if work.resumed_from is not None:
        text += f"; resumed at {work.resumed_from} evaluations"
    if work.discarded:
        text += f"; started afresh: {work.discarded}"
    if work.carried_usd:
        text += f" (the ${work.carried_usd:.4f} it had spent counts)"
    return text


def _search_finished(draft: Draft, outcome: SearchOutcome) -> Decision | None:
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
    draft.event(EventReason.SEARCH_FINISHED, message)
    if outcome.improved:
        status.phase = Phase.VALIDATING
        return _validating(draft)
    status.phase = Phase.STABLE
    kept = "no candidate scored better than the seed; the workload keeps its stable policy"
    draft.condition(READY, True, "NoImprovement", kept)
    draft.event(EventReason.NO_IMPROVEMENT, kept)
    settle_on_stable(draft, None)
    return draft.decision(REQUEUE_READY)


def _validating(draft: Draft) -> Decision | None:
    status, work = draft.status, draft.work
    if work is not None and work.kind is not WorkKind.VALIDATION:
        replace_stale(draft, work)
        work = None
    if work is None and recalling(status):
        return start_recall_validation(draft)
    if work is None:
        draft.act(StartValidation(dict(status.profile), dict(status.hardware)))
        message = (
            f"re-scoring {status.best_candidate} and the stable policy side by side on "
            "held-out seeds"
        )
        draft.event(EventReason.VALIDATION_STARTED, message)
        _ready_while_busy(draft, "Validating", message)
        return draft.decision(REQUEUE_ACTIVE)
    if work.state is WorkState.FAILED:
        return _work_failed(draft, work)
    if work.state is WorkState.QUEUED:
        _queued(draft, work)
        return draft.decision(REQUEUE_ACTIVE)
    if work.state is WorkState.FINISHED and work.validation is not None:
        return _validation_finished(draft, work.validation)
    return draft.decision(REQUEUE_ACTIVE)


def _validation_finished(draft: Draft, outcome: ValidationOutcome) -> Decision | None:
    if recalling(draft.status):
        return recall_validated(draft, outcome)
    status, report = draft.status, outcome.report
    candidate = outcome.candidate or "?"
    status.validation = validation_status(report, candidate, draft.now)
    if report.stable_score is not None:
        status.stable_score = report.stable_score
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
        draft.event(EventReason.VALIDATION_FAILED, message)
        settle_on_stable(draft, report.stable_score)
        return draft.decision(REQUEUE_READY)
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
    draft.event(EventReason.VALIDATION_PASSED, f"{candidate} scores {scores}")
    draft.event(EventReason.REVISION_PUBLISHED, f"ConfigMap {name} holds {candidate}")
    return draft.decision(REQUEUE_READY)
