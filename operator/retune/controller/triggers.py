"""Stable: watching what calls for a retune, and starting one.

At each reconcile of a Stable target the operator reads its SLOs, its workload profile
(every ``spec.profile.interval``) and the hardware under its workload (a
:class:`~retune.controller.facts.WatchReading`); the controller judges them against what
the stable policy was tuned for. The clocks saying how long a condition has held live in
``status.watch``, so a restarted operator carries on where it was.

Triggers, the most urgent first:

- ``Manual``: the annotation ``retune.dev/retune`` (removed once acted upon);
- ``SLOViolation``: an SLO violated (a threshold broken for its ``for``, or an error budget
  burning too fast in both windows of a pair), with ``spec.retune.onSloViolation``;
- ``HardwareChange``: a new hardware fingerprint under the workload that has held for
  ``spec.retune.hardwareSettleSeconds``, with ``spec.retune.onHardwareChange``;
- ``ProfileDrift``: a profile value beyond ``spec.retune.drift.threshold`` of the tuned
  one for ``spec.retune.drift.for``;
- ``Schedule``: ``spec.retune.schedule`` fired since the last search ended.

Every trigger but ``Manual`` waits for the cooldown (``spec.retune.cooldown`` after the end
of the last search), and every trigger for room under ``spec.retune.spendLimit`` when the
search calls models, shown as the condition ``RetunePending``. A retune goes back to
Profiling: a new search on a fresh profile and hardware, from the stable revision,
warm-started from the previous archive (``spec.retune.warmStart``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from retune.controller import spend
from retune.controller.decision import Decision
from retune.controller.draft import (
    DRIFTED,
    HARDWARE_CHANGED,
    READY,
    RETUNE_PENDING,
    SEARCHING,
    SLO_VIOLATED,
    Draft,
    replace_stale,
)
from retune.controller.facts import SignalsWaiting, WatchReading
from retune.controller.schedule import next_fire
from retune.rollout.controls import ABORT_ANNOTATION, PROMOTE_ANNOTATION, RETUNE_ANNOTATION
from retune.signals.drift import DriftDetector
from retune.signals.hardware import SUMMARY_KEY
from retune.signals.metrics import NoData, Sample
from retune.signals.slo import BurnRateVerdict, SLOTracker
from retune.signals.sustain import SustainClock
from retune.spec import SLO, ClockStatus, Phase, SLOStatus, WatchStatus, format_duration
from retune.spec.events import EventReason


class RetuneTrigger(StrEnum):
    """What calls for a retune; ``status.lastRetuneTrigger`` says which one started it."""

    MANUAL = "Manual"
    SLO_VIOLATION = "SLOViolation"
    HARDWARE_CHANGE = "HardwareChange"
    PROFILE_DRIFT = "ProfileDrift"
    SCHEDULE = "Schedule"


RETUNE_TRIGGERS: frozenset[str] = frozenset(RetuneTrigger)
"""The triggers' names, to tell a search started by a retune from the first one."""
WATCH_INTERVAL = (1.0, 30.0)
"""Least and most seconds between two checks of a Stable target: half the shortest
duration a trigger must hold, within these."""
BURN_RATE_CHECK = 60.0
"""Seconds between checks of error-budget SLOs (their shortest window is minutes)."""
_DRIFT_REASONS = {
    "drifted": "ProfileDrifted",
    "drifting": "Drifting",
    "stable": "ProfileStable",
    "nodata": "ProfileNoData",
}


@dataclass(frozen=True)
class Trigger:
    """A reason to retune."""

    kind: RetuneTrigger
    message: str


TriggerCheck = Callable[[Draft, WatchReading], str | None]
"""Reads one trigger's signal at a reconcile (keeping its clocks and conditions in the
status); says why to retune when it fires, else None."""


def watch(draft: Draft) -> Decision | None:
    """A Stable target's decision; None when a retune starts (the phase is then
    Profiling, and the caller goes on with it)."""
    status, facts = draft.status, draft.facts
    if draft.work is not None:
        replace_stale(draft, draft.work)
    if draft.is_true(SEARCHING):
        draft.condition(SEARCHING, False, "Finished", "the search has finished")
    if not draft.is_true(READY):
        draft.condition(READY, True, "StablePolicyKept", "the workload keeps its stable policy")
    for key in (ABORT_ANNOTATION, PROMOTE_ANNOTATION):
        if key in facts.controls:
            draft.consume(key)
            draft.event(
                EventReason.CONTROL_IGNORED, f"{key} is set but no rollout is in flight; removed"
            )
    if status.watch is None:
        status.watch = WatchStatus(since=draft.now)
    reading = facts.watch
    if reading is None:
        return draft.decision(0.0, needs_watch=True)
    status.watch.checked_at = draft.now
    # Every trigger reads its signal, whichever fires first: each keeps its own clocks
    # and conditions up to date.
    found = [(kind, check(draft, reading)) for kind, check in TRIGGERS.items()]
    fired = [Trigger(kind, message) for kind, message in found if message is not None]
    requeue = _next_check(draft)
    if not fired:
        draft.condition(RETUNE_PENDING, False, "NoTrigger", "nothing calls for a retune")
        return draft.decision(requeue)
    trigger = fired[0]
    wait = cooldown_left(draft)
    if trigger.kind is not RetuneTrigger.MANUAL and wait > 0:
        assert status.last_search_end_time is not None
        ends = status.last_search_end_time + timedelta(seconds=facts.retune.cooldown_seconds)
        message = (
            f"{trigger.message}; the retune starts when the cooldown "
            f"(spec.retune.cooldown) ends at {ends:%Y-%m-%d %H:%M:%S} UTC"
        )
        if draft.turn(RETUNE_PENDING, True, trigger.kind.value, message):
            draft.event(EventReason.RETUNE_DEFERRED, message)
        return draft.decision(max(WATCH_INTERVAL[0], min(requeue, wait)))
    limit = facts.spend_limit
    if limit is not None and spend.room(status, limit, draft.now, facts.max_usd) <= 0:
        waiting = spend.waiting(status, limit, draft.now, facts.max_usd)
        message = f"{trigger.message}; {waiting.spent}: {waiting.until('retune')}"
        if draft.turn(RETUNE_PENDING, True, trigger.kind.value, message):
            draft.event(EventReason.RETUNE_DEFERRED, message)
        return draft.decision(max(WATCH_INTERVAL[0], min(requeue, waiting.seconds)))
    _start(draft, trigger)
    return None


def cooldown_left(draft: Draft) -> float:
    """Seconds until the cooldown after the last search is over (0 when it is)."""
    end = draft.status.last_search_end_time
    if end is None:
        return 0.0
    waited = (draft.now - end).total_seconds()
    return max(0.0, draft.facts.retune.cooldown_seconds - waited)


def _start(draft: Draft, trigger: Trigger) -> None:
    status = draft.status
    status.retunes += 1
    status.last_retune_reason = trigger.message
    status.last_retune_trigger = trigger.kind.value
    status.watch = None
    status.phase = Phase.PROFILING
    draft.condition(RETUNE_PENDING, False, "Retuning", f"{trigger.kind}: a retune started")
    draft.event(EventReason.RETUNE_STARTED, f"{trigger.kind}: {trigger.message}")


# -- the triggers ----------------------------------------------------------------------------
def _manual(draft: Draft, reading: WatchReading) -> str | None:
    if RETUNE_ANNOTATION not in draft.facts.controls:
        return None
    draft.consume(RETUNE_ANNOTATION)
    return f"{RETUNE_ANNOTATION} was set"


def _slos(draft: Draft, reading: WatchReading) -> str | None:
    watch, slos = draft.status.watch, draft.facts.slos
    assert watch is not None
    if not slos:
        watch.slos = {}
        return None
    at = draft.now.timestamp()
    readings = {
        slo.name: (
            _threshold(slo, watch.slos.get(slo.name), reading.slo_samples.get(slo.name), at)
            if slo.kind == "threshold"
            else _burn_rate(slo, reading.burn_rates.get(slo.name))
        )
        for slo in slos
    }
    watch.slos = readings
    violated = [r.message for r in readings.values() if r.state == "violated"]
    was_violated = draft.is_true(SLO_VIOLATED)
    if violated:
        message = "; ".join(violated)
        if draft.turn(SLO_VIOLATED, True, "Violated", message):
            draft.event(EventReason.SLO_VIOLATED, message)
        on = draft.facts.retune.on_slo_violation
        return message if on else None
    states = {r.state for r in readings.values()}
    reason = "Pending" if "pending" in states else "NoData" if "nodata" in states else "Met"
    message = "; ".join(r.message for r in readings.values() if r.state != "ok")
    draft.condition(SLO_VIOLATED, False, reason, message or "every SLO is met")
    if was_violated:
        draft.event(
            EventReason.SLO_MET, f"no SLO is violated any more ({message or 'every SLO is met'})"
        )
    return None


def _threshold(slo: SLO, previous: SLOStatus | None, sample: Sample | None, at: float) -> SLOStatus:
    tracker = SLOTracker(slo)
    if previous is not None and previous.clock is not None:
        tracker.clock = _restore(previous.clock, slo.for_seconds)
    verdict = tracker.observe(at, sample if sample is not None else NoData("not queried"))
    return SLOStatus(
        state=verdict.status,
        value=verdict.value,
        message=verdict.message,
        clock=_persist(tracker.clock),
    )


def _burn_rate(slo: SLO, verdict: BurnRateVerdict | None) -> SLOStatus:
    if verdict is None:
        return SLOStatus(state="nodata", message=f"{slo.name}: not queried")
    burns = [b for p in verdict.pairs for b in (p.long_burn, p.short_burn) if b is not None]
    return SLOStatus(
        state=verdict.status, value=max(burns) if burns else None, message=verdict.message
    )


def _hardware(draft: Draft, watched: WatchReading) -> str | None:
    status, reading = draft.status, watched.hardware
    watch, tuned = status.watch, status.hardware_fingerprint
    assert watch is not None
    if reading is None or tuned is None:
        return None
    if isinstance(reading, SignalsWaiting):
        draft.condition(HARDWARE_CHANGED, None, reading.reason, reading.message)
        return None
    summary = status.hardware.get(SUMMARY_KEY)
    was = f"{summary} ({tuned})" if summary else tuned
    if reading.fingerprint == tuned:
        watch.hardware_fingerprint = watch.hardware_summary = watch.hardware_since = None
        message = f"the workload runs on {was}, the hardware it was tuned for"
        draft.condition(HARDWARE_CHANGED, False, "Unchanged", message)
        return None
    if watch.hardware_fingerprint != reading.fingerprint or watch.hardware_since is None:
        watch.hardware_fingerprint = reading.fingerprint
        watch.hardware_summary = reading.summary
        watch.hardware_since = draft.now
    held = (draft.now - watch.hardware_since).total_seconds()
    settle = draft.facts.retune.hardware_settle_seconds
    change = (
        f"the hardware under the workload changed from {was} to {reading.summary} "
        f"({reading.fingerprint})"
    )
    if held < settle:
        message = (
            f"{change}; it counts once it has held for {format_duration(settle)} "
            "(spec.retune.hardwareSettleSeconds)"
        )
        if draft.turn(HARDWARE_CHANGED, True, "Settling", message):
            draft.event(EventReason.HARDWARE_CHANGED, message)
        return None
    message = f"{change}, and it has held for {format_duration(round(held))}"
    if draft.turn(HARDWARE_CHANGED, True, "Settled", message):
        draft.event(EventReason.HARDWARE_SETTLED, message)
    return message if draft.facts.retune.on_hardware_change else None


def _drift(draft: Draft, reading: WatchReading) -> str | None:
    status, profile = draft.status, reading.profile
    watch = status.watch
    assert watch is not None
    if not status.profile:
        return None  # no profile queries: nothing to drift
    if profile is not None:
        watch.profile_read_at = draft.now
        detector = DriftDetector(status.profile, draft.facts.retune.drift)
        for name, clock in watch.drift.items():
            if name in detector.clocks:
                detector.clocks[name] = _restore(clock, detector.spec.for_seconds)
        values = profile if isinstance(profile, dict) else {}
        if values:
            watch.current_profile = dict(values)
        verdict = detector.observe(draft.now.timestamp(), values)
        watch.drift = {name: _persist(clock) for name, clock in detector.clocks.items()}
        if isinstance(profile, SignalsWaiting):
            draft.condition(DRIFTED, None, profile.reason, profile.message)
        else:
            reason = _DRIFT_REASONS[verdict.status]
            turned = draft.turn(DRIFTED, verdict.drifted, reason, verdict.message)
            if turned and verdict.drifted:
                draft.event(EventReason.PROFILE_DRIFTED, verdict.message)
    condition = status.condition(DRIFTED)
    if condition is not None and condition.status == "True":
        return f"the workload profile {condition.message}"
    return None


def _schedule(draft: Draft, reading: WatchReading) -> str | None:
    expression = draft.facts.retune.schedule
    fire = _next_scheduled(draft)
    if expression is None or fire is None or fire > draft.now:
        return None
    return f"the schedule {expression!r} fired at {fire:%Y-%m-%d %H:%M} UTC"


def _next_scheduled(draft: Draft) -> datetime | None:
    expression, status = draft.facts.retune.schedule, draft.status
    after = status.last_search_end_time or (status.watch.since if status.watch else None)
    if expression is None or after is None:
        return None
    return next_fire(expression, after)


TRIGGERS: dict[RetuneTrigger, TriggerCheck] = {
    RetuneTrigger.MANUAL: _manual,
    RetuneTrigger.SLO_VIOLATION: _slos,
    RetuneTrigger.HARDWARE_CHANGE: _hardware,
    RetuneTrigger.PROFILE_DRIFT: _drift,
    RetuneTrigger.SCHEDULE: _schedule,
}
"""Every retune trigger's check, the most urgent first."""


def _next_check(draft: Draft) -> float:
    """Seconds until the next check: often enough for the shortest ``for``, and at the
    next profile read, the end of a hardware settle period, the next scheduled time."""
    facts, status = draft.facts, draft.status
    watch = status.watch
    assert watch is not None
    periods = [float(slo.for_seconds) for slo in facts.slos if slo.kind == "threshold"]
    if any(slo.kind == "burn_rate" for slo in facts.slos):
        periods.append(BURN_RATE_CHECK)
    if status.profile:
        periods.append(facts.retune.drift.for_seconds)
    periods.append(facts.retune.hardware_settle_seconds)
    low, high = WATCH_INTERVAL
    due = [min(periods) / 2]
    if status.profile and watch.profile_read_at is not None:
        read = (draft.now - watch.profile_read_at).total_seconds()
        due.append(facts.profile_interval - read)
    if watch.hardware_since is not None:
        held = (draft.now - watch.hardware_since).total_seconds()
        due.append(facts.retune.hardware_settle_seconds - held)
    fire = _next_scheduled(draft)
    if fire is not None:
        due.append((fire - draft.now).total_seconds())
    return min(high, max(low, min(due)))


# -- clocks in the status -------------------------------------------------------------------
def _restore(clock: ClockStatus, for_seconds: float) -> SustainClock:
    return SustainClock(
        for_seconds=for_seconds,
        since=clock.since,
        last_held_at=clock.last_held_at,
        missing=clock.missing,
        latest=clock.latest,
    )


def _persist(clock: SustainClock) -> ClockStatus:
    return ClockStatus(
        since=clock.since,
        last_held_at=clock.last_held_at,
        missing=clock.missing,
        latest=clock.latest,
    )
