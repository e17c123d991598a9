"""Reading an evaluation batch's fate back from its Job and pod.

Pure functions over API JSON (camelCase dicts): the outcomes in the pod's termination
message when there are any, otherwise one failure for every task of the batch, with a
reason and a detail a user can act on (OOMKilled, deadline, eviction, image pull,
unschedulable, a Job that was deleted). See ``docs/evaluation-pods.md``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from retune.evaluate.contract import EvaluationOutcome, FailureReason
from retune.evaluate.entrypoint import FORMAT_VERSION, decode_outcomes
from retune.evaluate.podspec import CONTAINER, HARNESS_MEMORY_MIB

_PULL_FAILURES = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
_START_FAILURES = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
_FAIL_AT_ONCE = {"InvalidImageName", "ErrImageNeverPull"}


@dataclass(frozen=True)
class Verdict:
    """How a batch ended: an outcome per task, or one failure for all of them."""

    outcomes: dict[str, EvaluationOutcome] | None = None
    failure: FailureReason | None = None
    detail: str = ""

    def for_tasks(self, task_ids: Sequence[str]) -> dict[str, EvaluationOutcome]:
        if self.outcomes is not None:
            return self.outcomes
        reason = self.failure or FailureReason.INFRASTRUCTURE
        return {task_id: EvaluationOutcome.failed(reason, self.detail) for task_id in task_ids}


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or ():
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        if status.get("name") == CONTAINER:
            terminated = (status.get("state") or {}).get("terminated")
            return dict(terminated) if terminated else None
    return None


def _waiting(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        if status.get("name") == CONTAINER:
            waiting = (status.get("state") or {}).get("waiting")
            return dict(waiting) if waiting else None
    return None


def read_outcomes(message: str, task_ids: Sequence[str]) -> dict[str, EvaluationOutcome] | None:
    """The outcomes in a termination message, or None if it is not a retune document."""
    try:
        document = json.loads(message)
    except ValueError:
        return None
    if not isinstance(document, dict) or document.get("v") != FORMAT_VERSION:
        return None
    return decode_outcomes(message, task_ids)


def judge(
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    task_ids: Sequence[str],
    *,
    waited_seconds: float,
    stuck_seconds: float,
    memory: str,
    deadline: int,
) -> Verdict | None:
    """The fate of one batch from its Job and pods, or None while it is still going.

    ``waited_seconds`` is how long the batch has existed; a pod that cannot be scheduled,
    or whose image cannot be pulled, fails its tasks once that passes ``stuck_seconds``.
    ``memory`` and ``deadline`` are the pod's memory limit and the Job's deadline, named
    in the details.
    """
    for pod in pods:
        terminated = _terminated(pod)
        if terminated is not None and terminated.get("message"):
            outcomes = read_outcomes(str(terminated["message"]), task_ids)
            if outcomes is not None:
                return Verdict(outcomes=_trusted(outcomes, terminated.get("exitCode")))
    failed = None if job is None else _condition(job, "Failed") or _condition(job, "FailureTarget")
    # The Job's deadline comes first: the pod it killed shows only an exit code.
    if failed is not None and failed.get("reason") == "DeadlineExceeded":
        return _deadline_verdict(deadline)
    for pod in pods:
        verdict = _judge_pod(pod, waited_seconds, stuck_seconds, memory, deadline)
        if verdict is not None:
            return verdict
    if job is None:
        return Verdict(
            failure=FailureReason.INFRASTRUCTURE,
            detail="the evaluation Job was deleted before it finished (by a user, or with "
            "its OptimizationTarget)",
        )
    if failed is not None:
        return Verdict(
            failure=FailureReason.INFRASTRUCTURE,
            detail=f"the evaluation Job failed ({failed.get('reason')}): {failed.get('message', '')}",
        )
    if _condition(job, "Complete") is not None and not pods:
        return Verdict(
            failure=FailureReason.INFRASTRUCTURE,
            detail="the evaluation Job completed but its pod, and with it the outcomes, is gone",
        )
    if not pods and waited_seconds > stuck_seconds:
        name = (job.get("metadata") or {}).get("name", "")
        return Verdict(
            failure=FailureReason.INFRASTRUCTURE,
            detail=f"no pod was created for Job {name} in {waited_seconds:.0f} s; a "
            f"ResourceQuota or LimitRange may refuse it (kubectl describe job {name})",
        )
    return None


def _trusted(
    outcomes: dict[str, EvaluationOutcome], exit_code: object
) -> dict[str, EvaluationOutcome]:
    """Scores count only from an entrypoint that finished cleanly: it writes the message
    after every candidate is gone, so a non-zero exit means something else may have
    written it. Failures carry no score and are kept as they are."""
    if exit_code == 0:
        return outcomes
    return {
        task_id: outcome
        if not outcome.ok
        else EvaluationOutcome.failed(
            FailureReason.INFRASTRUCTURE,
            f"the evaluation pod exited with code {exit_code}; its scores are not trusted",
        )
        for task_id, outcome in outcomes.items()
    }


def _deadline_verdict(deadline: int) -> Verdict:
    return Verdict(
        failure=FailureReason.TIMEOUT,
        detail=f"the evaluation pod ran past its deadline of {deadline} s (timeoutSeconds per "
        "task plus start-up slack); the image or the evaluator's import may be too slow, or "
        "the node overloaded: raise spec.evaluator.timeoutSeconds",
    )


def _judge_pod(
    pod: Mapping[str, Any], waited: float, stuck: float, memory: str, deadline: int
) -> Verdict | None:
    status = pod.get("status") or {}
    name = (pod.get("metadata") or {}).get("name", "")
    node = (pod.get("spec") or {}).get("nodeName") or "no node"
    phase, reason = status.get("phase"), status.get("reason") or ""
    terminated = _terminated(pod)
    if terminated is not None and terminated.get("reason") == "OOMKilled":
        return Verdict(
            failure=FailureReason.MEMORY,
            detail=f"evaluation pod {name} was OOMKilled at its memory limit of {memory} "
            f"(spec.evaluator.resources.memory plus {HARNESS_MEMORY_MIB}Mi for the harness); "
            "raise spec.evaluator.resources.memory",
        )
    if reason == "DeadlineExceeded":
        return _deadline_verdict(deadline)
    if reason == "Evicted" or (phase == "Failed" and reason):
        message = status.get("message") or ""
        return Verdict(
            failure=FailureReason.INFRASTRUCTURE,
            detail=f"evaluation pod {name} on {node} failed ({reason}): {message}",
        )
    if terminated is not None and phase in ("Succeeded", "Failed"):
        code = terminated.get("exitCode")
        why = terminated.get("reason") or "Error"
        message = str(terminated.get("message") or "")[:200]
        said = f"; it wrote {message!r}" if message else ""
        return Verdict(
            failure=FailureReason.INFRASTRUCTURE,
            detail=f"evaluation pod {name} on {node} exited with code {code} ({why}) without "
            f"writing outcomes{said}; see kubectl logs {name}",
        )
    waiting = _waiting(pod)
    waiting_reason = (waiting or {}).get("reason") or ""
    if waiting_reason in _FAIL_AT_ONCE or (
        waited > stuck and waiting_reason in _PULL_FAILURES | _START_FAILURES
    ):
        image = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("image", "")
        fix = (
            "check spec.evaluator.image and the image pull secrets"
            if waiting_reason in _PULL_FAILURES
            else "check spec.evaluator.command and the image"
        )
        return Verdict(
            failure=FailureReason.INFRASTRUCTURE,
            detail=f"evaluation pod {name} cannot start image {image} ({waiting_reason}: "
            f"{(waiting or {}).get('message', '')}); {fix}",
        )
    scheduled = next(
        (
            c
            for c in status.get("conditions") or ()
            if c.get("type") == "PodScheduled" and c.get("status") == "False"
        ),
        None,
    )
    if phase == "Pending" and scheduled is not None and waited > stuck:
        return Verdict(
            failure=FailureReason.INFRASTRUCTURE,
            detail=f"no node could take evaluation pod {name} for {waited:.0f} s "
            f"({scheduled.get('reason', 'Unschedulable')}: {scheduled.get('message', '')}); "
            "check the evaluator's (or the workload's) nodeSelector, affinity and "
            "tolerations, and spec.evaluator.resources",
        )
    return None
