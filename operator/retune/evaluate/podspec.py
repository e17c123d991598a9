"""Manifests of evaluation pods: the batch ConfigMap, the Job, the NetworkPolicy.

Pure functions returning API JSON (camelCase dicts), unit-tested without a cluster;
:mod:`retune.evaluate.kubernetes` does the I/O and :mod:`retune.evaluate.podstatus` reads
the pods back.
See ``docs/evaluation-pods.md`` for what an evaluation pod looks like and why.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from retune.evaluate.contract import SandboxLimits
from retune.evaluate.entrypoint import DEFAULT_BATCH
from retune.spec.evaluator import EvaluatorSpec
from retune.spec.target import owner_reference

TARGET_LABEL = "retune.dev/target"
ROLE_LABEL = "retune.dev/role"
BATCH_LABEL = "retune.dev/batch"
ROLE_EVALUATION = "evaluation"
BATCH_KEY = "batch.json"
BATCH_DIR = DEFAULT_BATCH.rsplit("/", 1)[0]
CONTAINER = "evaluate"
EVALUATOR_UID = 65532  # the evaluator images' user (see evaluator-images/)
# The zygote (interpreter, pydantic, the evaluator's imports) lives beside the candidate
# in the pod, so the pod gets this much memory on top of the candidate's own limit: a
# candidate then meets the same memory limit as in local mode, and fails alone.
HARNESS_MEMORY_MIB = 256
TMP_SIZE_LIMIT = "64Mi"
CONFIGMAP_LIMIT = 1_000_000  # bytes; the API refuses a ConfigMap over 1 MiB
_MAX_NAME = 63  # a Job's name must fit a label value


@dataclass(frozen=True)
class PodPlacement:
    """Where evaluation pods may run: a pod spec's ``nodeSelector``, ``affinity``,
    ``tolerations`` (API JSON, camelCase). Usually the workload's own."""

    node_selector: Mapping[str, str] = field(default_factory=dict)
    affinity: Mapping[str, Any] | None = None
    tolerations: Sequence[Mapping[str, Any]] = ()

    @classmethod
    def from_pod_spec(cls, pod_spec: Mapping[str, Any]) -> PodPlacement:
        """The placement of a pod spec given as API JSON (e.g. a Deployment's template)."""
        return cls(
            node_selector=dict(pod_spec.get("nodeSelector") or {}),
            affinity=pod_spec.get("affinity"),
            tolerations=list(pod_spec.get("tolerations") or ()),
        )

    def overridden_by(self, evaluator: EvaluatorSpec) -> PodPlacement:
        """This placement with each field the evaluator spec sets taking its place."""
        return PodPlacement(
            node_selector=(
                self.node_selector if evaluator.node_selector is None else evaluator.node_selector
            ),
            affinity=self.affinity if evaluator.affinity is None else evaluator.affinity,
            tolerations=self.tolerations
            if evaluator.tolerations is None
            else evaluator.tolerations,
        )


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def short_name(name: str, suffix: str = "", limit: int = _MAX_NAME) -> str:
    """``name + suffix`` within ``limit`` characters and without dots (pod names and
    hostnames derive from it); when anything is cut or replaced, a hash of ``name`` is
    added so that two targets never share a name."""
    if "." not in name and len(name) + len(suffix) <= limit:
        return name + suffix
    keep = max(limit - len(suffix) - 11, 1)
    return f"{name.replace('.', '-')[:keep].rstrip('-')}-{_digest(name)[:10]}{suffix}"


def target_label(target_name: str) -> str:
    """The ``retune.dev/target`` label value of a target (label values are at most 63)."""
    if len(target_name) <= _MAX_NAME:
        return target_name
    return f"{target_name[:52].rstrip('-.')}-{_digest(target_name)[:10]}"


def evaluation_selector(target_name: str) -> str:
    """The label selector of every evaluation object (Job, pod, ConfigMap) of a target."""
    return f"{TARGET_LABEL}={target_label(target_name)},{ROLE_LABEL}={ROLE_EVALUATION}"


def batch_name(target_name: str, session: str, task_ids: Sequence[str]) -> str:
    """``<target>-eval-<hash>``: the name of a batch's ConfigMap and Job.

    ``session`` is a token of the executor instance, so a batch re-sent after a restart
    never collides with an orphan of the previous run that is still being deleted.
    """
    return short_name(target_name, f"-eval-{_digest(session, *task_ids)[:10]}")


def network_policy_name(target_name: str) -> str:
    return short_name(target_name, "-evaluation", limit=253)


def sandbox_limits(evaluator: EvaluatorSpec) -> SandboxLimits:
    """The per-candidate limits, the same as a local run applies."""
    timeout = float(evaluator.timeout_seconds)
    return SandboxLimits(
        wall_seconds=timeout, cpu_seconds=timeout, memory_mb=evaluator.memory_mb_limit
    )


def job_deadline(evaluator: EvaluatorSpec, tasks: int, slack_seconds: int) -> int:
    """``activeDeadlineSeconds`` of a batch's Job: every task at its timeout, plus slack
    for pulling the image, starting the interpreter and importing the evaluator."""
    return math.ceil(float(evaluator.timeout_seconds) * tasks) + slack_seconds


@dataclass(frozen=True)
class PodTemplate:
    """Everything about an evaluation pod that does not change from batch to batch."""

    namespace: str
    target_name: str
    owner: Mapping[str, Any]
    evaluator: EvaluatorSpec
    placement: PodPlacement
    image_pull_policy: str = "IfNotPresent"
    env: Mapping[str, str] = field(default_factory=dict)
    ttl_seconds_after_finished: int = 3600
    deadline_slack_seconds: int = 120

    def labels(self, name: str | None = None) -> dict[str, str]:
        labels = {
            TARGET_LABEL: target_label(self.target_name),
            ROLE_LABEL: ROLE_EVALUATION,
            "app.kubernetes.io/managed-by": "retune",
            "app.kubernetes.io/component": "evaluation",
        }
        if name is not None:
            labels[BATCH_LABEL] = name
        return labels

    def metadata(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": self.labels(name),
            "ownerReferences": [owner_reference(self.owner)],
        }

    def config_map(self, name: str, batch_json: str) -> dict[str, Any]:
        """The ConfigMap holding a batch (mounted read-only at ``/etc/retune/batch``)."""
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": self.metadata(name),
            "data": {BATCH_KEY: batch_json},
            "immutable": True,
        }

    def resources(self) -> dict[str, Any]:
        spec = self.evaluator.resources
        memory = f"{self.evaluator.memory_mb_limit + HARNESS_MEMORY_MIB}Mi"
        amounts = {"cpu": spec.cpu, "memory": memory, "ephemeral-storage": TMP_SIZE_LIMIT}
        return {"requests": dict(amounts), "limits": dict(amounts)}

    def pod_spec(self, name: str) -> dict[str, Any]:
        """The hardened pod of one batch; see ``docs/evaluation-pods.md``."""
        image = self.evaluator.image
        if not image:
            raise ValueError("spec.evaluator.image: evaluation pods need an evaluator image")
        env = {
            "RETUNE_BATCH": f"{BATCH_DIR}/{BATCH_KEY}",
            "TMPDIR": "/tmp",  # the harness writes each candidate's file to a temp dir
            "PYTHONDONTWRITEBYTECODE": "1",
            **self.env,
        }
        container = {
            "name": CONTAINER,
            "image": image,
            "imagePullPolicy": self.image_pull_policy,
            "command": list(self.evaluator.command),
            "env": [{"name": key, "value": value} for key, value in env.items()],
            "resources": self.resources(),
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": EVALUATOR_UID,
                "runAsGroup": EVALUATOR_UID,
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                "privileged": False,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumeMounts": [
                {"name": "batch", "mountPath": BATCH_DIR, "readOnly": True},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
        }
        spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,  # no Service addresses in the environment
            "terminationGracePeriodSeconds": 5,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": EVALUATOR_UID,
                "runAsGroup": EVALUATOR_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [
                {"name": "batch", "configMap": {"name": name, "defaultMode": 0o444}},
                {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}},
            ],
        }
        if self.placement.node_selector:
            spec["nodeSelector"] = dict(self.placement.node_selector)
        if self.placement.affinity:
            spec["affinity"] = dict(self.placement.affinity)
        if self.placement.tolerations:
            spec["tolerations"] = [dict(t) for t in self.placement.tolerations]
        evaluator = self.evaluator
        if evaluator.runtime_class_name:
            spec["runtimeClassName"] = evaluator.runtime_class_name
        if evaluator.priority_class_name:
            spec["priorityClassName"] = evaluator.priority_class_name
        if evaluator.image_pull_secrets:
            spec["imagePullSecrets"] = [{"name": s.name} for s in evaluator.image_pull_secrets]
        return spec

    def pod_metadata(self, name: str) -> dict[str, Any]:
        """The evaluation pod's labels and annotations: the spec's, then retune's own (which
        the NetworkPolicy and the executor select on, so they always win)."""
        metadata: dict[str, Any] = {"labels": {**self.evaluator.pod_labels, **self.labels(name)}}
        if self.evaluator.pod_annotations:
            metadata["annotations"] = dict(self.evaluator.pod_annotations)
        return metadata

    def job(self, name: str, tasks: int) -> dict[str, Any]:
        """The Job that runs one batch: one pod, never retried, with a deadline."""
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": self.metadata(name),
            "spec": {
                "backoffLimit": 0,
                "completions": 1,
                "parallelism": 1,
                "activeDeadlineSeconds": job_deadline(
                    self.evaluator, tasks, self.deadline_slack_seconds
                ),
                "ttlSecondsAfterFinished": self.ttl_seconds_after_finished,
                "template": {
                    "metadata": self.pod_metadata(name),
                    "spec": self.pod_spec(name),
                },
            },
        }

    def network_policy(self) -> dict[str, Any]:
        """Selects the target's evaluation pods and allows no traffic in or out."""
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": network_policy_name(self.target_name),
                "namespace": self.namespace,
                "labels": self.labels(),
                "ownerReferences": [owner_reference(self.owner)],
            },
            "spec": {
                "podSelector": {
                    "matchLabels": {
                        TARGET_LABEL: target_label(self.target_name),
                        ROLE_LABEL: ROLE_EVALUATION,
                    }
                },
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [],
                "egress": [],
            },
        }
