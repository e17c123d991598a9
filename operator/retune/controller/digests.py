"""Which spec changes matter to a search, as digests kept in the status.

A spec change is judged by what it touches: the sections the signals are read under (a new
profile, so a new search), the rest of what the search depends on (a new search on the same
profile), the budget alone (the search resumes under the new budget), or none of them
(rollout or retune settings: nothing to redo).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from retune.controller.facts import SpecDigests
from retune.spec import TargetSpec
from retune.spec.search import search_identity


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def spec_digests(spec: TargetSpec) -> SpecDigests:
    """The digests of ``spec``'s signals, search and budget sections."""
    dumped = spec.model_dump(mode="json", by_alias=True)
    evaluator = dumped["evaluator"]
    placement = {key: evaluator.get(key) for key in ("nodeSelector", "affinity", "tolerations")}
    signals = {
        "workloadRef": dumped["workloadRef"],
        "profile": dumped["profile"],
        "hardware": dumped["hardware"],
        "placement": placement,
    }
    search = search_identity(
        {key: value for key, value in dumped["search"].items() if key != "budget"}
    )
    return SpecDigests(
        signals=_digest(signals),
        search=_digest({"policy": dumped["policy"], "evaluator": evaluator, "search": search}),
        budget=_digest(dumped["search"]["budget"]),
    )
