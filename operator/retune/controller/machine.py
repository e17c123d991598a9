"""The per-target state machine: from a status and the facts of now, the next decision.

Phases, in the order a target goes through them::

    Idle -> Profiling -> Searching -> Validating -> Ready -> Canary -> Stable
                ^                  \\             \\           (promoted, rolled back
                |                   \\-> Stable    \\-> Stable   or aborted)
                |                  (nothing beat   (validation      |
                |                    the seed)       failed)        |
                +---------------- a retune trigger -----------------+

Between Ready and Canary, ``AwaitingApproval``: under ``spec.rollout.approval: manual`` a
validated revision waits there for a person (:mod:`~retune.controller.approval`); under
``recommend`` it is published and the target goes Stable.

Beside them: ``Degraded`` (the spec cannot work in this cluster, or a search failed in a way
only a spec change can fix), ``Paused`` (``spec.retune.paused``). A target waiting for its
signals (Prometheus down, no data, no node) stays in ``Profiling`` with ``SignalsReady``
false saying which query and what error, and retries with a growing delay.

Where a target goes after Idle, Paused or Degraded is derived from what the status records
(:func:`resume_point`): an unfinished search of the same spec resumes from its checkpoint,
a finished one goes on to validation, a rollout in flight resumes at its step, a validated
revision not yet rolled out is Ready.
"""

from __future__ import annotations

from datetime import datetime

from retune.controller.approval import withdraw
from retune.controller.canary import drop_rollout
from retune.controller.decision import Decision
from retune.controller.draft import DEGRADED, READY, SEARCHING, Draft, backoff, stop_active_work
from retune.controller.facts import Facts, SpecDigests, WorkKind
from retune.controller.library import recalling
from retune.controller.phases import REQUEUE_SETTLED, by_phase
from retune.rollout.controls import RETUNE_ANNOTATION
from retune.spec import Phase, TargetStatus
from retune.spec.events import EventReason

# Degraded reasons that only a spec change clears (retrying would fail the same way).
STICKY_REASONS = frozenset({"SearchFailed", "ValidationError"})


def decide(status: TargetStatus, facts: Facts, now: datetime) -> Decision:
    """The next decision for a target whose status is ``status``."""
    draft = Draft(status, facts, now)
    previous = status.observed_generation
    draft.status.observed_generation = facts.generation
    if facts.paused:
        return _paused(draft)
    if facts.problems:
        return _invalid_spec(draft)
    if _sticky_failure(draft):
        return draft.decision(REQUEUE_SETTLED)
    if draft.is_true(DEGRADED):
        draft.condition(DEGRADED, False, "Recovered", "")
        draft.event(EventReason.RECOVERED, "the target's problems are resolved")
    elif draft.status.condition(DEGRADED) is None:
        draft.condition(DEGRADED, False, "NoProblems", "")
    if draft.status.phase is Phase.PAUSED:
        draft.event(EventReason.UNPAUSED, "spec.retune.paused is false again")
    if previous is not None and previous != facts.generation:
        _spec_changed(draft, previous)
    elif draft.status.phase in (Phase.IDLE, Phase.PAUSED, Phase.DEGRADED):
        draft.status.phase = resume_point(draft.status, facts.digests)
    _retune_while_searching(draft)
    return by_phase(draft)


def resume_point(status: TargetStatus, digests: SpecDigests) -> Phase:
    """Where a target continues, judged by what its status records and the spec now."""
    search = status.search
    if search is None or (search.signals_digest, search.search_digest) != (
        digests.signals,
        digests.search,
    ):
        return Phase.PROFILING
    if search.finished_at is None:
        return Phase.SEARCHING
    if status.rollout is not None:
        return Phase.CANARY
    if recalling(status):
        return Phase.VALIDATING
    if not _improved(status):
        return Phase.STABLE
    validation = status.validation
    if validation is None or validation.finished_at is None:
        return Phase.VALIDATING
    if validation.finished_at < search.finished_at:
        return Phase.VALIDATING
    return Phase.READY if validation.passed and status.validated_revision else Phase.STABLE


def _improved(status: TargetStatus) -> bool:
    best, seed = status.best_score, status.seed_score
    return best is not None and seed is not None and best > seed


def _retune_while_searching(draft: Draft) -> None:
    """``retune.dev/retune`` on a target that is searching already: nothing to start."""
    searching = (Phase.PROFILING, Phase.SEARCHING, Phase.VALIDATING)
    if RETUNE_ANNOTATION in draft.facts.controls and draft.status.phase in searching:
        draft.consume(RETUNE_ANNOTATION)
        draft.event(
            EventReason.RETUNE_IGNORED,
            f"{RETUNE_ANNOTATION} is set while a search runs already; removed",
        )


# -- outside the main line: paused, invalid, failed ------------------------------------------
def _paused(draft: Draft) -> Decision:
    stop_active_work(draft, "paused")
    drop_rollout(draft, "spec.retune.paused is true", keep_revision=True)
    if draft.status.phase is not Phase.PAUSED:
        draft.event(
            EventReason.PAUSED,
            "spec.retune.paused is true: searches, rollouts and retunes stopped; the "
            "stable policy stays and the search's checkpoint is kept",
        )
    draft.status.phase = Phase.PAUSED
    message = "spec.retune.paused is true"
    draft.condition(READY, False, "Paused", message)
    draft.condition(SEARCHING, False, "Paused", message)
    return draft.decision(REQUEUE_SETTLED)


def _invalid_spec(draft: Draft) -> Decision:
    stop_active_work(draft, "the spec cannot be used")
    message = "; ".join(str(problem) for problem in draft.facts.problems)
    drop_rollout(draft, f"the spec cannot be used: {message}", keep_revision=True)
    if draft.condition(DEGRADED, True, "InvalidSpec", message):
        draft.event(EventReason.INVALID_SPEC, message)
    draft.status.phase = Phase.DEGRADED
    draft.condition(READY, False, "Degraded", message)
    if draft.is_true(SEARCHING):
        draft.condition(SEARCHING, False, "Degraded", message)
    return draft.decision(backoff(draft, DEGRADED))


def _sticky_failure(draft: Draft) -> bool:
    condition = draft.status.condition(DEGRADED)
    return (
        draft.status.phase is Phase.DEGRADED
        and condition is not None
        and condition.status == "True"
        and condition.reason in STICKY_REASONS
        and condition.observed_generation == draft.facts.generation
    )


# -- a spec change -------------------------------------------------------------------------
def _spec_changed(draft: Draft, previous: int) -> None:
    status, digests, work = draft.status, draft.facts.digests, draft.work
    search = status.search
    same_search = search is not None and (search.signals_digest, search.search_digest) == (
        digests.signals,
        digests.search,
    )
    message = f"generation {previous} -> {draft.facts.generation}"
    if work is not None and work.active and same_search:
        assert search is not None
        if work.kind is WorkKind.VALIDATION or search.budget_digest == digests.budget:
            draft.event(
                EventReason.SPEC_CHANGED, f"{message}: the running {work.kind.value} is unaffected"
            )
            return
        draft.event(
            EventReason.SPEC_CHANGED, f"{message}: the search continues under the new budget"
        )
        stop_active_work(draft, "the budget changed")
    elif not same_search:
        stop_active_work(draft, "the spec changed")
        drop_rollout(draft, f"the spec changed ({message})", keep_revision=False)
        status.validated_revision = None
        withdraw(draft)
        draft.event(EventReason.SPEC_CHANGED, f"{message}: a new search starts")
        status.last_retune_reason = f"the spec changed ({message})"
        status.last_retune_trigger = "SpecChanged"
    else:
        draft.event(EventReason.SPEC_CHANGED, f"{message}: nothing the search depends on changed")
    status.phase = resume_point(status, digests)
