"""Manual control of a rollout: annotations a user sets on the OptimizationTarget.

``kubectl annotate ot/<name> retune.dev/<control>=true``. A value of ``false``, ``0``, ``no``
or the empty string counts as unset, so a control can also be switched off in place.

- ``retune.dev/abort``: roll the canary back now; the rollout ends as ``Aborted``.
- ``retune.dev/promote``: promote the canary now, skipping the remaining steps and their
  analysis (the one way to promote without passing data).
- ``retune.dev/pause``: hold the canary at its current share: no analysis, no step; the
  step's interval keeps running, so the analysis is due as soon as the pause is lifted.
- ``retune.dev/retune``: start a new search now (read by the controller, not here).
- ``retune.dev/approve=<revision>``: under ``spec.rollout.approval: manual``, roll the
  waiting revision out; the value must name it (read by the controller, not here).
- ``retune.dev/undo=<revision>``: roll an earlier promoted revision out again, as a canary,
  once the target is Stable (read by the controller, not here).

Abort wins over promote, and both over pause. Abort and promote are one-shot: the caller
removes them once acted upon (the controller, when the rollout ends), so they do
not carry over to the next rollout. Pause is a state, and stays until the user removes it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

ABORT_ANNOTATION = "retune.dev/abort"
"""Roll the canary in flight back now (outcome ``Aborted``)."""
PROMOTE_ANNOTATION = "retune.dev/promote"
"""Promote the canary in flight now, without further analysis."""
PAUSE_ANNOTATION = "retune.dev/pause"
"""Hold the canary in flight at its current share until the annotation is removed."""
RETUNE_ANNOTATION = "retune.dev/retune"
"""Start a new search now (the controller's; defined here beside the others)."""
APPROVE_ANNOTATION = "retune.dev/approve"
"""Approve the revision it names for rollout (the controller's; one-shot)."""
UNDO_ANNOTATION = "retune.dev/undo"
"""Roll the earlier promoted revision it names out again (the controller's; one-shot)."""

ROLLOUT_CONTROLS = (ABORT_ANNOTATION, PROMOTE_ANNOTATION, PAUSE_ANNOTATION)
"""The annotations a canary in flight reads."""
_OFF = frozenset({"", "false", "0", "no", "off"})


def is_set(annotations: Mapping[str, str] | None, key: str) -> bool:
    """Whether the annotation ``key`` is present with a value that does not switch it off."""
    if not annotations or key not in annotations:
        return False
    return str(annotations[key]).strip().lower() not in _OFF


@dataclass(frozen=True)
class Controls:
    """The manual controls set on a target."""

    abort: bool = False
    promote: bool = False
    pause: bool = False

    @classmethod
    def from_keys(cls, keys: Collection[str]) -> Controls:
        """The controls among ``keys``, the control annotations that are set."""
        return cls(
            abort=ABORT_ANNOTATION in keys,
            promote=PROMOTE_ANNOTATION in keys,
            pause=PAUSE_ANNOTATION in keys,
        )

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str] | None) -> Controls:
        """The controls set in a target's ``metadata.annotations``."""
        return cls.from_keys([key for key in ROLLOUT_CONTROLS if is_set(annotations, key)])
