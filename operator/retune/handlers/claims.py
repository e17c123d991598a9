"""One target per workload: the oldest target of a Deployment tunes it.

Two targets of one Deployment would each search and validate (and pay for it), then fight
over its canary and its policy: the second rollout fails on the first's canary, and a
promotion of either replaces the other's policy. So the target created first (then the
first by name) claims the Deployment, and any other target of it is Degraded, naming the
one that holds it, until that one is deleted or points elsewhere. The claims come from a
kopf index over every target the operator watches (:func:`claim_of`), kept up to date from
its watch stream, so a reconcile reads them without an API call. A target being deleted
claims nothing, and its workload's other targets are woken (:func:`rivals`) rather than left
to find out at their next Degraded retry (up to two minutes later).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from retune.spec import Problem

WorkloadKey = tuple[str, str]
"""A Deployment: (namespace, name)."""


@dataclass(frozen=True, order=True)
class Claim:
    """A target of a workload, ordered oldest first (then by name)."""

    created: str
    """``metadata.creationTimestamp`` (RFC 3339 in UTC: its text sorts as its time)."""
    target: str


def claim_of(namespace: str, name: str, body: Mapping[str, Any]) -> dict[WorkloadKey, Claim] | None:
    """The index entry of a target: its workload and its claim (None without a workload,
    and once the target is being deleted)."""
    workload = workload_of(body.get("spec"))
    if workload is None or being_deleted(body):
        return None
    created = str((body.get("metadata") or {}).get("creationTimestamp") or "")
    return {(namespace, workload): Claim(created, name)}


def being_deleted(body: Mapping[str, Any]) -> bool:
    """Whether the target's deletion has begun: it has let go of its workload."""
    return bool((body.get("metadata") or {}).get("deletionTimestamp"))


def workload_of(spec: Any) -> str | None:
    """The Deployment a target's spec names; None when it names none."""
    workload = ((spec if isinstance(spec, Mapping) else {}).get("workloadRef") or {}).get("name")
    return workload if isinstance(workload, str) and workload else None


def rivals(
    namespace: str, name: str, workload: str | None, claims: Mapping[WorkloadKey, Iterable[Claim]]
) -> list[str]:
    """The other targets of ``workload``, by name: those to wake when this target lets go of
    it (deleted, or pointed elsewhere), so the next in line takes it over at once."""
    if workload is None:
        return []
    return sorted({c.target for c in claims.get((namespace, workload), ()) if c.target != name})


def claim_problem(
    namespace: str, name: str, workload: str, claims: Mapping[WorkloadKey, Iterable[Claim]]
) -> Problem | None:
    """The problem of a target whose workload an older target tunes; None when it is the
    workload's oldest target (or the only one)."""
    holder = min(claims.get((namespace, workload), ()), default=None)
    if holder is None or holder.target == name:
        return None
    return Problem(
        "spec.workloadRef.name",
        f"Deployment {namespace}/{workload} is tuned by OptimizationTarget {holder.target}, "
        "created before this one: one target per workload; delete one of them or point "
        "spec.workloadRef elsewhere",
    )
