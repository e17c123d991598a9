"""What ``kubectl retune status`` and ``history`` print, from a target's status and Events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from retune.rollout.controls import (
    ABORT_ANNOTATION,
    APPROVE_ANNOTATION,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    RETUNE_ANNOTATION,
    UNDO_ANNOTATION,
)
from retune.spec import TargetStatus

EVENTS_SHOWN = 10
CONTROLS = (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    PAUSE_ANNOTATION,
    RETUNE_ANNOTATION,
    APPROVE_ANNOTATION,
    UNDO_ANNOTATION,
)


@dataclass(frozen=True)
class Target:
    """A target as read: where it is, its annotations and its status."""

    namespace: str
    name: str
    annotations: dict[str, str]
    status: TargetStatus


def render_status(target: Target, events: list[dict[str, Any]], now: datetime) -> str:
    """What ``kubectl retune status`` prints."""
    s = target.status
    ready = s.condition("Ready")
    lines = [
        f"OptimizationTarget {target.namespace}/{target.name}: {s.phase.value}"
        + (f", Ready {ready.status} ({ready.reason})" if ready else ""),
    ]
    if ready and ready.message:
        lines.append(f"  {ready.message}")
    if s.hardware_fingerprint:
        summary = s.hardware.get("retune.dev/hardware") or s.hardware_fingerprint
        lines.append(f"Hardware    {summary} ({s.hardware_fingerprint})")
    best = f"best {_score(s.best_score)}" + (f" ({s.best_candidate})" if s.best_candidate else "")
    stable = f"stable {_score(s.stable_score)} ({s.stable_revision or 'the seed policy'})"
    lines.append(f"Scores      {best}, seed {_score(s.seed_score)}, {stable}")
    ledger = s.ledger
    spent = (
        f"{ledger.evaluations} evaluations ({ledger.failed_evaluations} failed), "
        f"${ledger.usd:.4f} (strong tiers ${ledger.strong_usd:.4f}), {ledger.wall_seconds:.0f}s"
    )
    if s.search is not None and s.search.finished_at is None and s.search.started_at:
        spent += f"; running for {_age(s.search.started_at, now)}"
    elif s.search is not None and s.search.stop_reason:
        spent += f"; {s.search.stop_reason}"
    lines.append(f"Search      {spent}")
    for model, usage in ledger.models.items():
        rested = f", rested {usage.rests}x" if usage.rests else ""
        lines.append(
            f"  {model}: {usage.calls} calls ({usage.failed_calls} without a usable program"
            f"{rested}), {usage.prompt_tokens} prompt + {usage.completion_tokens} completion "
            f"tokens, ${usage.usd:.4f}"
        )
    if s.spend.searches or (s.search is not None and s.search.usd_allowance is not None):
        allowed = s.search.usd_allowance if s.search is not None else None
        cap = f"; this search may spend ${allowed:.4f} (spendLimit)" if allowed is not None else ""
        lines.append(f"Spend       ${s.spend.total_usd:.4f} by all searches{cap}")
    if s.validation is not None:
        v = s.validation
        verdict = "passed" if v.passed else "refused: " + "; ".join(v.reasons)
        change = f" ({v.improvement:+.2%})" if v.improvement is not None else ""
        lines.append(
            f"Validation  {v.candidate}: {_score(v.candidate_score)} against the stable's "
            f"{_score(v.stable_score)}{change}, {verdict}"
        )
    if s.rollout is not None:
        r = s.rollout
        lines.append(
            f"Rollout     {r.revision}: step {r.step + 1} at {r.share}%, "
            f"{r.failures} failed analyses, {r.no_data_intervals} without data"
        )
        for query, value in r.analysis.items():
            verdict = r.verdicts.get(query, "")
            beside = r.stable_analysis.get(query)
            stable_value = f", stable {_value(beside)}" if query in r.stable_analysis else ""
            lines.append(f"  {query}: canary {_value(value)}{stable_value} {verdict}".rstrip())
        if r.message:
            lines.append(f"  {r.message}")
    if s.approval is not None:
        a = s.approval
        lines.append(
            f"Approval    {a.revision} {a.state} ({a.mode}): {_score(a.candidate_score)} against "
            f"{_score(a.stable_score)}"
            + (
                f"; approve with: kubectl retune approve {target.name}"
                if a.state == "Waiting"
                else ""
            )
        )
    set_controls = [key for key in CONTROLS if target.annotations.get(key)]
    if set_controls:
        lines.append(
            "Controls    " + ", ".join(f"{k}={target.annotations[k]}" for k in set_controls)
        )
    lines.append("Conditions")
    for c in s.conditions:
        since = f" {_age(c.last_transition_time, now)}" if c.last_transition_time else ""
        lines.append(f"  {c.type:<18} {c.status:<7} {c.reason:<20}{since:>6}  {c.message}".rstrip())
    lines.append(f"Events (last {EVENTS_SHOWN})")
    shown = sorted(events, key=_event_time)[-EVENTS_SHOWN:]
    if not shown:
        lines.append("  none")
    for event in shown:
        when = _parse_time(_event_time(event))
        age = _age(when, now) if when else "?"
        lines.append(
            f"  {age:>5}  {event.get('type', ''):<7} {event.get('reason', ''):<20} "
            f"{event.get('message', '')}".rstrip()
        )
    return "\n".join(lines) + "\n"


def render_history(target: Target, now: datetime) -> str:
    """What ``kubectl retune history`` prints: the finished rollouts, newest last."""
    s = target.status
    rows = [("REVISION", "OUTCOME", "SCORE", "FINISHED", "REASON")]
    for number, record in enumerate(s.history, 1):
        finished = _age(record.finished_at, now) + " ago" if record.finished_at else ""
        current = " (stable)" if record.revision == s.stable_revision else ""
        rows.append(
            (
                f"{number} {record.revision}{current}",
                record.outcome,
                _score(record.score),
                finished,
                record.reason,
            )
        )
    if len(rows) == 1:
        return f"{target.namespace}/{target.name} has rolled nothing out yet\n"
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)), row[4]])
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _value(value: float | None) -> str:
    return "no data" if value is None else f"{value:.4g}"


def _event_time(event: Mapping[str, Any]) -> str:
    metadata = event.get("metadata") or {}
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or metadata.get("creationTimestamp")
        or ""
    )


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _age(when: datetime, now: datetime) -> str:
    """As kubectl shows an age: ``45s``, ``12m``, ``3h``, ``2d``."""
    seconds = max(0, int((now - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
