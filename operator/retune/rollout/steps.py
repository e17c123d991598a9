"""The canary's step decisions: from the spec, the status and this interval's analysis, what
to do next. Pure: no I/O, no clock (``now`` is passed in).

A rollout moves through the spec's ``steps`` (the canary's share, in percent). Each step
lasts ``interval`` seconds and ends with one analysis of the canary's pods:

- ``pass``: the next step (:class:`SetShare`), or :class:`Promote` after the last one;
- ``fail``: one more failure; at ``failureLimit`` failures (over the whole rollout)
  :class:`Rollback`, below it :class:`Hold` (the step is run again);
- ``nodata`` with ``noData: hold``: :class:`Hold` at the current share, and
  :class:`Rollback` after ``noDataLimit`` such intervals in a row;
- ``nodata`` with ``noData: rollback``: counted as a failure, as above.

Missing data never promotes. The manual controls (:mod:`retune.rollout.controls`) come
first: abort, then promote, then pause. Everything a decision depends on is in the
:class:`~retune.spec.RolloutStatus`, so a restarted operator resumes mid-step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar, Literal, TypeAlias

from retune.rollout.controls import (
    ABORT_ANNOTATION,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    Controls,
)
from retune.signals.analysis import AnalysisReport
from retune.signals.metrics import Value
from retune.spec import RolloutRecord, RolloutSpec, RolloutStatus
from retune.spec.events import EventReason


@dataclass(frozen=True)
class Wait:
    """Nothing to do until ``until`` (the end of the step's interval)."""

    until: datetime
    reason: str
    event: ClassVar[EventReason] = EventReason.CANARY_WAITING


@dataclass(frozen=True)
class SetShare:
    """Run the canary at ``share`` percent: step ``step`` starts now."""

    step: int
    share: int
    reason: str
    event: ClassVar[EventReason] = EventReason.CANARY_STEP


@dataclass(frozen=True)
class Hold:
    """Stay at the current share (a failure below the limit, no data, or paused)."""

    reason: str
    event: ClassVar[EventReason] = EventReason.CANARY_HELD


@dataclass(frozen=True)
class Promote:
    """Promote the canary's revision to the stable."""

    reason: str
    event: ClassVar[EventReason] = EventReason.CANARY_PROMOTED


@dataclass(frozen=True)
class Rollback:
    """Remove the canary; the stable keeps its revision."""

    reason: str
    outcome: Literal["RolledBack", "Aborted"] = "RolledBack"

    @property
    def event(self) -> EventReason:
        """The Kubernetes Event reason."""
        if self.outcome == "Aborted":
            return EventReason.CANARY_ABORTED
        return EventReason.CANARY_ROLLED_BACK


Action: TypeAlias = Wait | SetShare | Hold | Promote | Rollback


@dataclass(frozen=True)
class Step:
    """What a rollout does next: an action and the rollout's status after it."""

    action: Action
    status: RolloutStatus
    """The status to persist; for :class:`Promote` and :class:`Rollback`, the final one."""
    next_check: datetime | None
    """When to look again; None when the rollout is over."""

    @property
    def finished(self) -> bool:
        """Whether the rollout ends with this step."""
        return isinstance(self.action, Promote | Rollback)


def begin(revision: str) -> RolloutStatus:
    """The status of a rollout of ``revision`` that has not started its first step."""
    return RolloutStatus(revision=revision)


def analysis_due(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> bool:
    """Whether the current step's interval is over, so its analysis must be run."""
    return status.step_started_at is not None and now >= _step_end(spec, status)


def analysis_needed(
    spec: RolloutSpec, status: RolloutStatus, now: datetime, controls: Controls | None = None
) -> bool:
    """Whether :func:`next_step` will judge the current step's analysis: its interval is
    over and no manual control decides instead. The adapters read the analysis then."""
    controls = controls or Controls()
    if controls.abort or controls.promote or controls.pause:
        return False
    return analysis_due(spec, _normalised(spec, status), now)


def next_step(
    spec: RolloutSpec,
    status: RolloutStatus,
    now: datetime,
    analyse: Callable[[], AnalysisReport] | None = None,
    controls: Controls | None = None,
) -> Step:
    """The next step of the rollout in ``status``.

    ``analyse`` returns this interval's analysis; it is called only when the analysis is
    due (:func:`analysis_needed`), and is required then.
    """
    controls = controls or Controls()
    status = _normalised(spec, status)
    share = status.share
    if controls.abort:
        return _end(status, Rollback(f"aborted by {ABORT_ANNOTATION}", outcome="Aborted"))
    if controls.promote:
        return _end(status, Promote(f"promoted at {share}% by {PROMOTE_ANNOTATION}"))
    recheck = now + timedelta(seconds=spec.interval_seconds)
    if status.step_started_at is None:
        first = spec.steps[status.step]
        started = status.model_copy(
            update={"share": first, "started_at": status.started_at or now, "step_started_at": now}
        )
        action = SetShare(status.step, first, f"canary of {status.revision} starts at {first}%")
        return Step(action, started, recheck)
    if controls.pause:
        return Step(Hold(f"paused at {share}% by {PAUSE_ANNOTATION}"), status, recheck)
    if not analysis_due(spec, status, now):
        until = _step_end(spec, status)
        return Step(Wait(until, f"step {status.step + 1} at {share}%"), status, until)
    if analyse is None:
        raise ValueError("the step's analysis is due: pass analyse")
    return _judge(spec, status, now, analyse(), recheck)


def record(step: Step, now: datetime, score: float | None = None) -> RolloutRecord | None:
    """The history entry of a finished rollout (None while it runs)."""
    action = step.action
    if not isinstance(action, Promote | Rollback):
        return None
    return RolloutRecord(
        revision=step.status.revision,
        outcome="Promoted" if isinstance(action, Promote) else action.outcome,
        reason=action.reason,
        score=score,
        started_at=step.status.started_at,
        finished_at=now,
    )


def _judge(
    spec: RolloutSpec,
    status: RolloutStatus,
    now: datetime,
    report: AnalysisReport,
    recheck: datetime,
) -> Step:
    values = {
        result.name: result.canary.value if isinstance(result.canary, Value) else None
        for result in report.results
    }
    judged = status.model_copy(update={"analysis": values})
    share, last = status.share, len(spec.steps) - 1
    if report.outcome == "pass":
        judged.no_data_intervals = 0
        if status.step >= last:
            return _end(judged, Promote(f"analysis passed at {share}%: {report.message}"))
        step = status.step + 1
        judged.step, judged.share, judged.step_started_at = step, spec.steps[step], now
        passed = f"analysis passed at {share}%, step {step + 1} at {spec.steps[step]}%"
        return Step(SetShare(step, spec.steps[step], passed), judged, recheck)
    judged.step_started_at = now  # the step runs again
    if report.outcome == "nodata":
        judged.no_data_intervals += 1
        if spec.no_data == "hold":
            missing = f"no data {judged.no_data_intervals}/{spec.no_data_limit} in a row"
            if judged.no_data_intervals >= spec.no_data_limit:
                return _end(judged, Rollback(f"{missing}: {report.message}"))
            return Step(Hold(f"{missing}, holding at {share}%: {report.message}"), judged, recheck)
    else:
        judged.no_data_intervals = 0
    judged.failures += 1
    what = "no data" if report.outcome == "nodata" else "analysis failed"
    failed = f"{what} ({judged.failures}/{spec.failure_limit} failures)"
    if judged.failures >= spec.failure_limit:
        return _end(judged, Rollback(f"{failed}: {report.message}"))
    return Step(Hold(f"{failed}, holding at {share}%: {report.message}"), judged, recheck)


def _normalised(spec: RolloutSpec, status: RolloutStatus) -> RolloutStatus:
    """``status`` with its step within the spec's steps and its share the step's (the steps
    may have been edited mid-rollout)."""
    step = min(status.step, len(spec.steps) - 1)
    share = spec.steps[step] if status.step_started_at is not None else status.share
    if (step, share) == (status.step, status.share):
        return status
    return status.model_copy(update={"step": step, "share": share})


def _step_end(spec: RolloutSpec, status: RolloutStatus) -> datetime:
    assert status.step_started_at is not None
    return status.step_started_at + timedelta(seconds=spec.interval_seconds)


def _end(status: RolloutStatus, action: Promote | Rollback) -> Step:
    return Step(action, status, None)
