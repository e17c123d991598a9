"""The context library: a validated winner kept per workload context, recalled on a return.

A *context* is the hardware class under the workload (its fingerprint) and the workload
profile. A profile belongs to a known context when it runs on the same fingerprint, has the
same profile names, and every value is within ``spec.retune.drift.threshold`` of the value
the context's winner was tuned on (the relative change, as the drift trigger measures it):
a profile that would not count as drift from a context is in it. When several contexts
qualify, the nearest (smallest largest change) is taken. A context's id quantises each
value to logarithmic buckets of ratio ``1 + threshold``, so ids read as "about this
profile" and stay the same for small moves.

Winners are recorded when their canary is promoted (validated on held-out seeds, then
judged on live traffic), at most :data:`LIBRARY_SIZE` contexts; a new winner of a context
replaces the old, and the least recently used context goes first. Only winners found
under the current search settings (``search_digest``) are recalled. A retune that finds
nothing better (no improvement, or a winner that fails validation) settles its context on
the stable policy: the stable revision is recorded as the context's winner when the
context has none, or when its winner lost to the stable policy in this retune's recall.
The seed policy has no revision and is not recorded.

When a retune trigger that changes the context (a profile drift, new hardware, a violated
SLO) fires and the new context has a winner that is not the stable policy, the winner is
validated again on the current profile against the stable policy and, if it passes, goes
out as a canary (through the approval gate like any revision): no search. A recall that
fails validation or its canary searches, warm-started, as the retune would have without
the library.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Final

from retune.controller.decision import Decision, ForgetWork, StartValidation
from retune.controller.draft import READY, Draft, score, validation_status
from retune.controller.facts import Signals, ValidationOutcome
from retune.signals.drift import DEFAULT_EPSILON
from retune.signals.hardware import SUMMARY_KEY
from retune.spec import (
    ContextStatus,
    LibraryStatus,
    Phase,
    RecallStatus,
    RolloutRecord,
    TargetStatus,
)
from retune.spec.events import EventReason

LIBRARY_SIZE = 8
"""Most contexts kept per target."""
RECALL_TRIGGERS = frozenset({"SLOViolation", "HardwareChange", "ProfileDrift"})
"""Retunes that may land in a known context. A manual or scheduled retune asks for a
search, and a new target or spec has no winners yet."""
VALIDATING: Final = "Validating"
VALIDATED: Final = "Validated"
PROMOTED: Final = "Promoted"
FAILED: Final = "Failed"
_REQUEUE = 3.0


# -- contexts (pure functions of values) ---------------------------------------------------
def profile_distance(profile: Mapping[str, float], baseline: Mapping[str, float]) -> float | None:
    """The largest relative change of a profile value from ``baseline``'s; None when the
    two profiles do not name the same values."""
    if set(profile) != set(baseline):
        return None
    changes = [
        abs(profile[name] - old) / max(abs(old), DEFAULT_EPSILON) for name, old in baseline.items()
    ]
    return max(changes, default=0.0)


def context_id(fingerprint: str, profile: Mapping[str, float], tolerance: float) -> str:
    """``<fingerprint>/p-<8 hex>``: the digest of the profile quantised to logarithmic
    buckets of ratio ``1 + tolerance``."""
    buckets = {name: _bucket(value, tolerance) for name, value in sorted(profile.items())}
    digest = hashlib.sha256(json.dumps(buckets, sort_keys=True).encode()).hexdigest()[:8]
    return f"{fingerprint}/p-{digest}"


def _bucket(value: float, tolerance: float) -> str:
    if abs(value) < DEFAULT_EPSILON:
        return "0"
    index = round(math.log(abs(value)) / math.log1p(tolerance))
    return f"{'-' if value < 0 else ''}{index}"


def find_context(
    library: LibraryStatus,
    fingerprint: str,
    profile: Mapping[str, float],
    *,
    search_digest: str,
    tolerance: float,
) -> ContextStatus | None:
    """The known context ``profile`` on ``fingerprint`` belongs to, if any."""
    found: list[tuple[float, ContextStatus]] = []
    for context in library.contexts:
        if context.hardware_fingerprint != fingerprint or context.search_digest != search_digest:
            continue
        distance = profile_distance(profile, context.profile)
        if distance is not None and distance <= tolerance:
            found.append((distance, context))
    return min(found, key=lambda pair: pair[0])[1] if found else None


def remember_winner(
    library: LibraryStatus, winner: ContextStatus, *, tolerance: float, limit: int = LIBRARY_SIZE
) -> LibraryStatus:
    """``library`` with ``winner`` as its context's winner (replacing the context it falls
    in), bounded to ``limit`` contexts by dropping the least recently used."""
    kept = [
        context
        for context in library.contexts
        if not (
            context.hardware_fingerprint == winner.hardware_fingerprint
            and context.search_digest == winner.search_digest
            and (distance := profile_distance(winner.profile, context.profile)) is not None
            and distance <= tolerance
        )
    ]
    kept.append(winner)
    while len(kept) > limit:
        oldest = min(kept[:-1], key=lambda c: (c.last_used_at or c.recorded_at, c.id))
        kept.remove(oldest)
    return library.model_copy(update={"contexts": kept, "active": winner.id})


# -- the decisions ---------------------------------------------------------------------------
def recall(draft: Draft, signals: Signals) -> bool:
    """Profiling, with fresh signals: whether the retune recalls a known context's winner
    instead of searching (the target is then Validating it). Sets the active context."""
    status, facts = draft.status, draft.facts
    tolerance = facts.retune.drift.threshold
    known = find_context(
        status.library,
        signals.fingerprint,
        signals.profile,
        search_digest=facts.digests.search,
        tolerance=tolerance,
    )
    status.library.active = known.id if known is not None else None
    previous = status.library.recall
    if previous is not None and previous.state == VALIDATING:
        status.library.recall = None  # overtaken: a new search or recall starts
    if status.last_retune_trigger not in RECALL_TRIGGERS:
        return False
    if previous is not None and previous.state == FAILED and previous.retune == status.retunes:
        return False  # this retune's recall failed: it searches
    where = (
        f"{signals.summary}, context {context_id(signals.fingerprint, signals.profile, tolerance)}"
    )
    if known is None:
        draft.event(EventReason.CONTEXT_UNKNOWN, f"no winner is known for {where}: searching")
        return False
    if known.revision == status.stable_revision:
        draft.event(
            EventReason.CONTEXT_CURRENT,
            f"the workload is in context {known.id}, whose winner {known.revision} is the "
            "stable policy already: searching for a better one",
        )
        return False
    status.library.recall = RecallStatus(
        context=known.id,
        revision=known.revision,
        retune=status.retunes,
        state=VALIDATING,
        started_at=draft.now,
        message=f"re-validating {known.revision} on the current profile",
    )
    status.watch = None
    status.phase = Phase.VALIDATING
    draft.event(
        EventReason.CONTEXT_RECALLED,
        f"the workload is back in context {known.id} ({signals.summary}); its winner "
        f"{known.revision} (scored {score(known.score)}) is validated again on the current "
        "profile, then rolled out as a canary: no search",
    )
    return True


def recalling(status: TargetStatus) -> bool:
    """Whether a recalled winner is being validated."""
    recall = status.library.recall
    return recall is not None and recall.state == VALIDATING


def start_recall_validation(draft: Draft) -> Decision:
    """Validating a recall with no worker: start its validation."""
    status = draft.status
    recall = status.library.recall
    assert recall is not None
    draft.act(
        StartValidation(
            dict(status.profile),
            dict(status.hardware),
            revision=recall.revision,
            stable_revision=status.stable_revision,
        )
    )
    against = status.stable_revision or "the seed policy"
    message = (
        f"re-scoring the recalled {recall.revision} and {against} side by side on held-out "
        "seeds of the current profile"
    )
    draft.event(EventReason.VALIDATION_STARTED, message)
    # A recall is a retune: the stable policy serves meanwhile, so the target stays Ready.
    draft.condition(READY, True, "StableServing", f"{against} serves; {message}")
    return draft.decision(_REQUEUE)


def recall_validated(draft: Draft, outcome: ValidationOutcome) -> Decision | None:
    """A recall's validation finished: Ready to roll the winner out, or a warm-started
    search (None: the target is then Profiling)."""
    status, report = draft.status, outcome.report
    recall = status.library.recall
    assert recall is not None
    draft.act(ForgetWork())
    draft.work = None
    context = next((c for c in status.library.contexts if c.id == recall.context), None)
    candidate = context.candidate if context is not None else None
    status.validation = validation_status(report, candidate or recall.revision, draft.now)
    scores = (
        f"{score(report.candidate_score)} against the stable policy's "
        f"{score(report.stable_score)} on held-out seeds"
    )
    if not report.passed:
        _failed(draft, f"it scored {scores} ({'; '.join(report.reasons)})")
        return None
    recall.state = VALIDATED
    recall.message = f"validated again: {scores}"
    status.validated_revision = recall.revision
    status.phase = Phase.READY
    draft.condition(READY, True, "RevisionValidated", f"recalled {recall.revision}: {scores}")
    draft.event(
        EventReason.RECALL_VALIDATED, f"{recall.revision} scores {scores}; it goes out as a canary"
    )
    return None  # Ready: its ConfigMap exists already, so the canary starts now


def rollout_ended(draft: Draft, record: RolloutRecord) -> bool:
    """Take a finished rollout into the library: a promoted winner becomes its context's
    (or its recall is counted); a recalled winner that did not pass its canary is dropped
    from the library, and the retune searches: whether it does (the target is then
    Profiling)."""
    status = draft.status
    recall = status.library.recall
    recalled = (
        recall is not None and recall.state == VALIDATED and recall.revision == record.revision
    )
    if record.outcome == "Promoted":
        if recalled:
            assert recall is not None
            _restored(draft, recall)
        else:
            validation = status.validation
            _remember(
                draft,
                record.revision,
                candidate=validation.candidate if validation is not None else None,
                held_out=record.score,
                why="its canary was promoted",
            )
        return False
    if not recalled:
        return False
    status.library.contexts = [c for c in status.library.contexts if c.revision != record.revision]
    status.library.active = None
    _failed(draft, f"its canary ended {record.outcome}: {record.reason}")
    return True


def _failed(draft: Draft, why: str) -> None:
    status = draft.status
    recall = status.library.recall
    assert recall is not None
    recall.state = FAILED
    recall.message = why
    status.validated_revision = None
    status.phase = Phase.PROFILING
    warm = ", warm-started" if draft.facts.retune.warm_start else ""
    draft.event(
        EventReason.RECALL_FAILED,
        f"the recalled winner {recall.revision} of context {recall.context} failed again: "
        f"{why}; searching{warm}",
    )


def _restored(draft: Draft, recall: RecallStatus) -> None:
    library = draft.status.library
    recall.state = PROMOTED
    recall.message = f"{recall.revision} is the stable policy again"
    for context in library.contexts:
        if context.id == recall.context:
            context.last_used_at = draft.now
            context.recalls += 1
    library.active = recall.context
    draft.event(
        EventReason.CONTEXT_RESTORED,
        f"{recall.revision} is the stable policy of context {recall.context} again, "
        "without a search",
    )


def settle_on_stable(draft: Draft, held_out: float | None) -> None:
    """A retune found nothing better than the stable policy (scored ``held_out`` on this
    profile's held-out seeds, when validation ran): remember the stable revision as the
    current context's winner, unless the context knows another winner that did not lose
    to it here."""
    status, facts = draft.status, draft.facts
    revision = status.stable_revision
    if revision is None or status.hardware_fingerprint is None or status.search is None:
        return
    known = find_context(
        status.library,
        status.hardware_fingerprint,
        status.profile,
        search_digest=status.search.search_digest,
        tolerance=facts.retune.drift.threshold,
    )
    recall = status.library.recall
    lost = recall is not None and recall.state == FAILED and recall.retune == status.retunes
    if known is not None and known.revision != revision and not lost:
        return
    earlier = next((c for c in status.library.contexts if c.revision == revision), None)
    _remember(
        draft,
        revision,
        candidate=earlier.candidate if earlier is not None else None,
        held_out=held_out if held_out is not None else status.stable_score,
        why="the retune found nothing better than the stable policy",
    )


def _remember(
    draft: Draft, revision: str, *, candidate: str | None, held_out: float | None, why: str
) -> None:
    status, facts = draft.status, draft.facts
    fingerprint = status.hardware_fingerprint
    if fingerprint is None or status.search is None:
        return
    tolerance = facts.retune.drift.threshold
    winner = ContextStatus(
        id=context_id(fingerprint, status.profile, tolerance),
        hardware_fingerprint=fingerprint,
        hardware_summary=status.hardware.get(SUMMARY_KEY),
        profile=dict(status.profile),
        revision=revision,
        candidate=candidate,
        score=held_out,
        search_digest=status.search.search_digest,
        recorded_at=draft.now,
        last_used_at=draft.now,
    )
    before = {c.id for c in status.library.contexts}
    status.library = remember_winner(status.library, winner, tolerance=tolerance)
    dropped = before - {c.id for c in status.library.contexts} - {winner.id}
    message = (
        f"{revision} is the winner of context {winner.id} "
        f"({winner.hardware_summary or fingerprint}): {why}; the library knows "
        f"{len(status.library.contexts)} contexts"
    )
    if dropped:
        message += f" (forgot the least recently used: {', '.join(sorted(dropped))})"
    draft.event(EventReason.CONTEXT_REMEMBERED, message)
