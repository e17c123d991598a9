"""Fault injection for the stand-in model server: which request fails, and how.

A spec is comma-separated ``KIND[@MODEL]:P`` (each request fails with probability P, by a
seeded draw from its content, so the decision replays) or ``KIND[@MODEL]:#N`` (the next N
matching requests, counted in arrival order). Count faults are checked first; at most one
fault applies to a request.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

FAULT_KINDS = ("stall", "429", "500", "503", "drop", "malformed", "empty", "garbage", "truncate")


@dataclass
class Fault:
    kind: str
    model: str | None  # None: every model
    probability: float = 0.0
    remaining: int | None = None  # a count fault: the next N matching requests


def parse_faults(spec: str) -> list[Fault]:
    """``"429:0.2,500@large:#3"`` -> faults; raises ValueError naming a bad entry."""
    faults = []
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        head, sep, value = entry.rpartition(":")
        kind, _, model = head.partition("@")
        kind = "stall" if kind == "timeout" else kind
        if not sep or kind not in FAULT_KINDS:
            raise ValueError(
                f"fault {entry!r}: expected KIND[@MODEL]:P or KIND[@MODEL]:#N, "
                f"KIND one of {', '.join(FAULT_KINDS)}"
            )
        if value.startswith("#"):
            faults.append(Fault(kind, model or None, remaining=int(value[1:])))
        else:
            probability = float(value)
            if not 0 <= probability <= 1:
                raise ValueError(f"fault {entry!r}: probability must be within [0, 1]")
            faults.append(Fault(kind, model or None, probability=probability))
    if sum(f.probability for f in faults) > 1 + 1e-9:
        raise ValueError("fault probabilities add up to more than 1")
    return faults


class Faults:
    def __init__(self, spec: str) -> None:
        self._lock = threading.Lock()
        self.spec = spec
        self._faults = parse_faults(spec)

    def replace(self, spec: str) -> None:
        faults = parse_faults(spec)
        with self._lock:
            self.spec, self._faults = spec, faults

    def pick(self, model: str, draw: float) -> str | None:
        """The fault for a request, if any; ``draw`` is the request's seeded uniform."""
        with self._lock:
            for fault in self._faults:
                if fault.remaining and fault.model in (None, model):
                    fault.remaining -= 1
                    return fault.kind
            cumulative = 0.0
            for fault in self._faults:
                if fault.remaining is None and fault.model in (None, model):
                    cumulative += fault.probability
                    if draw < cumulative:
                        return fault.kind
        return None
