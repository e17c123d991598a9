"""The context library: winners kept per context, recalled on a return without a search.

Driven with plain facts, as the rest of the controller: a status that knows some contexts,
the signals of the context the workload is in now, and the workers' reports.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from retune.controller import (
    Decision,
    PublishRevision,
    Signals,
    StartSearch,
    StartValidation,
    ValidationOutcome,
    WorkKind,
    WorkReport,
    WorkState,
    decide,
    resume_point,
)
from retune.controller.library import (
    context_id,
    find_context,
    profile_distance,
    remember_winner,
)
from retune.search.validation import ValidationReport
from retune.spec import (
    ContextStatus,
    DriftSpec,
    LibraryStatus,
    Phase,
    RetuneSpec,
    SearchStatus,
    TargetStatus,
)
from tests.test_controller import (
    DIGESTS,
    SIGNALS,
    T0,
    finished_search,
    finished_validation,
    reasons,
    searching_status,
)
from tests.test_controller_rollout import at_step, canary_status, facts, observed, report, step

RETUNE = RetuneSpec(drift=DriftSpec(threshold=0.2, for_seconds=4), cooldown_seconds=60)
SCAN_HEAVY = Signals(
    profile={"request_rate": 2000.0, "zipf_alpha": 0.55},
    hardware=SIGNALS.hardware,
    fingerprint=SIGNALS.fingerprint,
    summary=SIGNALS.summary,
)
LATER = T0 + timedelta(hours=1)


def context(
    revision: str,
    signals: Signals = SIGNALS,
    *,
    used: datetime = T0,
    digest: str = DIGESTS.search,
) -> ContextStatus:
    return ContextStatus(
        id=context_id(signals.fingerprint, signals.profile, 0.2),
        hardware_fingerprint=signals.fingerprint,
        hardware_summary=signals.summary,
        profile=dict(signals.profile),
        revision=revision,
        candidate="c7",
        score=0.61,
        search_digest=digest,
        recorded_at=used,
        last_used_at=used,
    )


def retuning(trigger: str = "ProfileDrift", stable: str = "rev-scan") -> TargetStatus:
    """Stable on the scan-heavy context's winner; the library knows both contexts; a retune
    trigger has just fired (the target is Profiling)."""
    return TargetStatus(
        phase=Phase.PROFILING,
        stable_revision=stable,
        profile=dict(SCAN_HEAVY.profile),
        hardware=dict(SCAN_HEAVY.hardware),
        hardware_fingerprint=SCAN_HEAVY.fingerprint,
        search=SearchStatus(
            started_at=T0,
            signals_digest=DIGESTS.signals,
            search_digest=DIGESTS.search,
            budget_digest=DIGESTS.budget,
            finished_at=T0 + timedelta(minutes=5),
        ),
        best_score=0.6,
        seed_score=0.5,
        last_search_end_time=T0 + timedelta(minutes=5),
        last_retune_trigger=trigger,
        last_retune_reason="the workload profile drifted",
        retunes=2,
        library=LibraryStatus(
            active=context("rev-scan", SCAN_HEAVY).id,
            contexts=[context("rev-orig"), context("rev-scan", SCAN_HEAVY)],
        ),
    )


def recalled(work: WorkReport | None = None, status: TargetStatus | None = None) -> Decision:
    return decide(status or retuning(), facts(signals=SIGNALS, retune=RETUNE, work=work), LATER)


def validation(passed: bool) -> WorkReport:
    outcome = ValidationOutcome(
        candidate=None,
        candidate_code="def priority(*a):\n    return 1.0\n",
        report=ValidationReport(
            passed=passed,
            candidate_score=0.61 if passed else 0.49,
            stable_score=0.52,
            improvement=0.17 if passed else -0.06,
            reasons=[] if passed else ["the candidate scores below the stable policy"],
        ),
    )
    return WorkReport(kind=WorkKind.VALIDATION, state=WorkState.FINISHED, validation=outcome)


def recall_canary() -> TargetStatus:
    """The recalled winner, validated again, at its canary's first step."""
    waiting = recalled().status
    asked = decide(waiting, facts(retune=RETUNE, work=validation(True)), LATER)
    assert asked.status.rollout is not None
    first = observed(asked.status.rollout, canary=False)
    return decide(waiting, facts(retune=RETUNE, work=validation(True), canary=first), LATER).status


# -- contexts --------------------------------------------------------------------------------
def test_a_profile_within_the_drift_threshold_of_a_context_is_in_it() -> None:
    library = LibraryStatus(contexts=[context("rev-orig"), context("rev-scan", SCAN_HEAVY)])
    near = {"request_rate": 2300.0, "zipf_alpha": 0.80}  # +15 %, -6 %
    found = find_context(library, "hw-abc", near, search_digest="search", tolerance=0.2)
    assert found is not None and found.revision == "rev-orig"
    assert profile_distance(near, SIGNALS.profile) == pytest.approx(0.15)
    far = {"request_rate": 2600.0, "zipf_alpha": 0.85}  # +30 %
    assert find_context(library, "hw-abc", far, search_digest="search", tolerance=0.2) is None


def test_only_the_same_hardware_profile_names_and_search_settings_match() -> None:
    library = LibraryStatus(contexts=[context("rev-orig")])
    profile = SIGNALS.profile
    assert find_context(library, "hw-other", profile, search_digest="search", tolerance=0.2) is None
    assert find_context(library, "hw-abc", profile, search_digest="other", tolerance=0.2) is None
    fewer = {"request_rate": 2000.0}
    assert find_context(library, "hw-abc", fewer, search_digest="search", tolerance=0.2) is None


def test_the_context_id_is_the_quantised_profile_on_its_hardware() -> None:
    ident = context_id("hw-abc", {"rate": 2000.0, "alpha": 0.85}, 0.2)
    assert ident.startswith("hw-abc/p-")
    assert context_id("hw-abc", {"rate": 2001.0, "alpha": 0.85}, 0.2) == ident
    assert context_id("hw-abc", {"rate": 4000.0, "alpha": 0.85}, 0.2) != ident


def test_a_new_winner_replaces_its_context_and_the_library_stays_bounded() -> None:
    library = LibraryStatus(contexts=[context("rev-orig"), context("rev-scan", SCAN_HEAVY)])
    newer = context("rev-orig-2", used=LATER)
    library = remember_winner(library, newer, tolerance=0.2)
    assert [c.revision for c in library.contexts] == ["rev-scan", "rev-orig-2"]
    assert library.active == newer.id
    for n in range(10):
        other = Signals({"request_rate": 100.0 * 2**n, "zipf_alpha": 0.9}, {}, "hw-abc", "x")
        library = remember_winner(
            library, context(f"rev-{n}", other, used=LATER + timedelta(minutes=n)), tolerance=0.2
        )
    assert len(library.contexts) == 8
    assert library.contexts[-1].revision == "rev-9"
    assert "rev-scan" not in {c.revision for c in library.contexts}  # least recently used


def test_a_promoted_winner_is_remembered_for_the_context_it_was_tuned_in() -> None:
    status = canary_status()
    assert status.rollout is not None
    later = T0 + timedelta(seconds=2)
    decision = step(at_step(status, 1), later, report("pass"))
    library = decision.status.library
    (known,) = library.contexts
    assert known.revision == status.rollout.revision and known.candidate == "c7"
    assert (known.hardware_fingerprint, known.profile) == ("hw-abc", SIGNALS.profile)
    assert known.score == 0.53 and known.search_digest == "search"
    assert library.active == known.id
    assert "ContextRemembered" in reasons(decision)


# -- a return to a known context -------------------------------------------------------------
def test_a_return_to_a_known_context_revalidates_its_winner_without_a_search() -> None:
    decision = recalled()
    status = decision.status
    assert status.phase is Phase.VALIDATING
    assert decision.actions == [
        StartValidation(
            SIGNALS.profile, SIGNALS.hardware, revision="rev-orig", stable_revision="rev-scan"
        )
    ]
    assert not any(isinstance(a, StartSearch) for a in decision.actions)
    assert reasons(decision) == ["SignalsRead", "ContextRecalled", "ValidationStarted"]
    assert status.library.active == context("rev-orig").id
    recall = status.library.recall
    assert recall is not None and (recall.revision, recall.state, recall.retune) == (
        "rev-orig",
        "Validating",
        2,
    )
    assert status.search == retuning().search  # no new search was started
    assert status.profile == SIGNALS.profile  # what the drift trigger compares with now


def test_a_revalidated_winner_goes_out_as_a_canary() -> None:
    waiting = recalled().status
    decision = decide(waiting, facts(retune=RETUNE, work=validation(True)), LATER)
    status = decision.status
    assert status.phase is Phase.CANARY and decision.needs_canary
    assert status.rollout is not None and status.rollout.revision == "rev-orig"
    assert not any(isinstance(a, PublishRevision) for a in decision.actions)  # it exists
    assert reasons(decision) == ["RecallValidated", "RolloutStarted"]
    assert status.validation is not None and status.validation.candidate == "c7"
    assert status.library.recall is not None and status.library.recall.state == "Validated"


def test_the_recalled_winner_promoted_is_the_stable_policy_of_its_context_again() -> None:
    canary = recall_canary()
    assert canary.rollout is not None
    last = at_step(canary, 1)
    assert last.rollout is not None
    at = LATER + timedelta(seconds=2)
    reading = observed(last.rollout, report("pass"))
    decision = decide(last, facts(retune=RETUNE, canary=reading), at)
    status = decision.status
    assert status.phase is Phase.STABLE and status.stable_revision == "rev-orig"
    assert reasons(decision) == ["CanaryPromoted", "ContextRestored"]
    orig = next(c for c in status.library.contexts if c.revision == "rev-orig")
    assert (orig.recalls, orig.last_used_at) == (1, at)
    assert status.library.active == orig.id and len(status.library.contexts) == 2


def test_a_recall_that_fails_validation_searches_warm_started() -> None:
    waiting = recalled().status
    asked = decide(waiting, facts(retune=RETUNE, work=validation(False)), LATER)
    assert asked.needs_signals
    decision = decide(waiting, facts(retune=RETUNE, work=validation(False), signals=SIGNALS), LATER)
    status = decision.status
    assert status.phase is Phase.SEARCHING
    (search,) = [a for a in decision.actions if isinstance(a, StartSearch)]
    assert search.warm_start and search.seed_revision == "rev-scan"
    assert "RecallFailed" in reasons(decision) and "SearchStarted" in reasons(decision)
    assert "ContextRecalled" not in reasons(decision)  # not tried twice for one retune
    assert status.library.recall is not None and status.library.recall.state == "Failed"


def test_a_recalled_winner_that_fails_its_canary_is_forgotten_and_the_retune_searches() -> None:
    canary = recall_canary()
    assert canary.rollout is not None
    at = LATER + timedelta(seconds=2)
    failed = observed(canary.rollout, report("fail", 0.1))
    decision = decide(canary, facts(retune=RETUNE, canary=failed, signals=SIGNALS), at)
    status = decision.status
    assert status.stable_revision == "rev-scan" and status.phase is Phase.SEARCHING
    assert [c.revision for c in status.library.contexts] == ["rev-scan"]
    assert "RecallFailed" in reasons(decision)
    assert any(isinstance(a, StartSearch) and a.warm_start for a in decision.actions)


def test_a_restart_during_the_recall_validates_the_recalled_winner_again() -> None:
    waiting = recalled().status.model_copy(update={"phase": Phase.IDLE})
    assert resume_point(waiting, DIGESTS) is Phase.VALIDATING
    decision = decide(waiting, facts(retune=RETUNE), LATER)
    assert decision.actions == [
        StartValidation(
            SIGNALS.profile, SIGNALS.hardware, revision="rev-orig", stable_revision="rev-scan"
        )
    ]


# -- when the library is not used ------------------------------------------------------------
def test_a_manual_retune_searches_even_in_a_known_context() -> None:
    decision = recalled(status=retuning(trigger="Manual"))
    assert decision.status.phase is Phase.SEARCHING
    assert "ContextRecalled" not in reasons(decision)
    assert decision.status.library.active == context("rev-orig").id


def test_an_unknown_context_searches_and_says_so() -> None:
    new_hardware = Signals(SIGNALS.profile, SIGNALS.hardware, "hw-new", "m6i.large/amd64")
    decision = decide(retuning(), facts(signals=new_hardware, retune=RETUNE), LATER)
    assert decision.status.phase is Phase.SEARCHING
    assert "ContextUnknown" in reasons(decision)
    assert decision.status.library.active is None


def test_a_context_whose_winner_is_stable_already_searches() -> None:
    decision = recalled(status=retuning(stable="rev-orig"))
    assert decision.status.phase is Phase.SEARCHING
    assert "ContextCurrent" in reasons(decision)


# -- a retune that finds nothing better settles its context on the stable policy ------------
def searched(status: TargetStatus, signals: Signals = SIGNALS) -> TargetStatus:
    """``status``'s retune, past its recall if any, searching on ``signals``."""
    decision = decide(status, facts(signals=signals, retune=RETUNE), LATER)
    assert decision.status.phase is Phase.SEARCHING, reasons(decision)
    return decision.status


def nothing_better(status: TargetStatus, *, validated: bool = False) -> Decision:
    """The search ends without a better policy: no improvement, or (``validated``) a
    winner that fails validation."""
    at = LATER + timedelta(minutes=5)
    if not validated:
        return decide(status, facts(retune=RETUNE, work=finished_search(best=0.46)), at)
    found = decide(status, facts(retune=RETUNE, work=finished_search(best=0.52)), at)
    return decide(found.status, facts(retune=RETUNE, work=finished_validation(False)), at)


@pytest.mark.parametrize("validated", [False, True])
def test_a_retune_that_finds_nothing_better_settles_an_unknown_context_on_the_stable(
    validated: bool,
) -> None:
    known = retuning()
    known.library.contexts = [context("rev-scan", SCAN_HEAVY)]
    decision = nothing_better(searched(known), validated=validated)
    library = decision.status.library
    settled = next(c for c in library.contexts if c.profile == SIGNALS.profile)
    assert settled.revision == "rev-scan" and settled.candidate == "c7"
    assert settled.id == context("rev-scan").id and library.active == settled.id
    assert settled.score == (0.525 if validated else known.stable_score)
    assert "ContextRemembered" in reasons(decision)
    assert "nothing better than the stable policy" in decision.events[-1].message
    assert len(library.contexts) == 2


def test_a_winner_that_lost_its_recall_gives_its_context_to_the_stable() -> None:
    waiting = recalled().status
    failed = decide(waiting, facts(retune=RETUNE, work=validation(False), signals=SIGNALS), LATER)
    decision = nothing_better(failed.status)
    revisions = {c.id: c.revision for c in decision.status.library.contexts}
    assert revisions == {
        context("rev-orig").id: "rev-scan",
        context("rev-scan", SCAN_HEAVY).id: "rev-scan",
    }


def test_a_known_winner_not_tried_in_this_retune_is_kept() -> None:
    decision = nothing_better(searched(retuning(trigger="Manual")))
    revisions = {c.id: c.revision for c in decision.status.library.contexts}
    assert revisions[context("rev-orig").id] == "rev-orig"
    assert "ContextRemembered" not in reasons(decision)


def test_the_seed_policy_has_no_revision_to_remember() -> None:
    decision = nothing_better(searching_status())
    assert decision.status.stable_revision is None
    assert decision.status.library.contexts == []
