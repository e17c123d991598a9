"""A rollout as the cluster shows it at one reconcile: read, never written.

The operator's adapters read it (:func:`retune.rollout.canary.observe`): which revision the
stable Deployment runs and at what size, whether the canary Deployment is as it should be,
and, once the current step's interval is over, the analysis queries' samples. The
controller decides the step from it (:func:`retune.rollout.steps.next_step`) and asks for
the writes as actions, which the adapters carry out.
"""

from __future__ import annotations

from dataclasses import dataclass

from retune.rollout.template import canary_replicas
from retune.signals.analysis import AnalysisReport


@dataclass(frozen=True)
class CanaryScale:
    """The canary's size at a share of the stable."""

    canary: int
    stable: int
    changed: bool
    """Whether the canary Deployment must be written to be so."""

    def describe(self) -> str:
        """E.g. ``1 canary pod beside 4 stable``."""
        return f"{self.canary} canary pod{'s' * (self.canary != 1)} beside {self.stable} stable"


@dataclass(frozen=True)
class CanaryObservation:
    """The Deployments of one rollout, and its analysis when one was due."""

    revision: str
    """The revision being rolled out (what the reading was made for)."""
    stable_revision: str | None
    """The ConfigMap the stable's policy volume mounts (None without one)."""
    stable_replicas: int
    canary_replicas: int | None
    """The canary Deployment's replicas; None when there is no canary."""
    canary_current: bool
    """Whether the canary runs ``revision`` on the stable's current pod template."""
    analysis: AnalysisReport | None = None
    """The analysis of the current step, read when its interval was over."""

    @property
    def promoted(self) -> bool:
        """Whether the stable runs the revision already (a promotion that a crash cut
        short before it was recorded)."""
        return self.stable_revision == self.revision

    def scale(self, share: int) -> CanaryScale:
        """The canary's size at ``share`` percent, and whether that needs a write."""
        want = canary_replicas(self.stable_replicas, share)
        changed = not self.canary_current or self.canary_replicas != want
        return CanaryScale(want, self.stable_replicas, changed)
