"""What can stop a rollout that the user has to fix."""

from __future__ import annotations


class RolloutError(RuntimeError):
    """The workload cannot be rolled out as the spec says; the message says what to fix."""


class WorkloadMissing(RolloutError):
    """The workload Deployment (spec.workloadRef) does not exist."""
