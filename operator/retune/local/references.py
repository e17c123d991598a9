"""Reference scores a run's report draws its candidates against: the seed, and the
baselines an example publishes.

An example may keep its baseline table as ``baselines.json`` beside its ``target.yaml``
(examples/01-cache-eviction writes it with ``baselines.py --json``). The file names the
evaluation context it was measured on; a baseline is only comparable with a run's scores
when the run evaluates in that same context, so the report draws the baselines of a
matching run and says why it leaves them out of any other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from retune.evaluate.contract import EvaluationContext
from retune.signals.hardware import FINGERPRINT_KEY, SUMMARY_KEY

BASELINES_FILE = "baselines.json"
# the hardware labels retune adds to a context, derived from the others
DERIVED = (FINGERPRINT_KEY, SUMMARY_KEY)


class Baseline(BaseModel):
    """One row of an example's baseline table: a policy and its score."""

    policy: str
    score: float
    subscores: dict[str, float] = {}


class BaselineTable(BaseModel):
    """``baselines.json``: what the baselines scored, and where."""

    stage: str = "full"
    context: EvaluationContext
    baselines: list[Baseline]


@dataclass(frozen=True)
class ReferenceLine:
    """A horizontal line on the report's score charts."""

    label: str
    score: float


@dataclass(frozen=True)
class References:
    """The baselines a report draws, and a note on any it could not."""

    baselines: tuple[ReferenceLine, ...] = ()
    note: str | None = None


def read_baselines(directory: Path, context: EvaluationContext) -> References:
    """The baselines in ``directory``'s ``baselines.json`` that apply to a run in
    ``context`` (none, with a note saying why, when the file is broken or measured
    elsewhere; none and no note when there is no file)."""
    path = directory / BASELINES_FILE
    if not path.is_file():
        return References()
    try:
        table = BaselineTable.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        return References(note=f"{path.name} could not be read ({first}); baselines not drawn")
    measured, run = _comparable(table.context), _comparable(context)
    if measured != run:
        differs = [name for name in measured if measured[name] != run[name]]
        return References(
            note=f"the example's baselines were measured with another {', '.join(differs)} "
            "than this run's; they are not comparable, so they are not drawn"
        )
    lines = tuple(ReferenceLine(f"{row.policy} (baseline)", row.score) for row in table.baselines)
    return References(baselines=lines)


def _comparable(context: EvaluationContext) -> dict[str, object]:
    """The context without the labels retune derives from the hardware labels (the
    fingerprint and its summary): they add nothing an evaluator scores on."""
    fields = context.model_dump()
    fields["hardware"] = {
        key: value for key, value in context.hardware.items() if key not in DERIVED
    }
    return fields
