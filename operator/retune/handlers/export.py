"""``retune export NAME``: a target's validated revision as files a GitOps repository takes.

Read only: the target's status names the revision (``status.approval``, else
``status.validatedRevision``), its immutable ConfigMap holds the program, and the stable
policy (the ``stableRevision`` ConfigMap, else ``spec.policy.seed``) is what the diff is
against. Written: the policy file (named as ``spec.policy.volume.fileName``; for a
parameters policy its values' JSON file too), the evidence as ``evidence.json`` and
``policy.diff``.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from retune.handlers.gather import read_seed
from retune.handlers.kube import Cluster, api_client
from retune.handlers.reconcile import parse, status_of
from retune.rollout.revisions import values_file_name

EVIDENCE_FILE = "evidence.json"
DIFF_FILE = "policy.diff"


class ExportError(RuntimeError):
    """What keeps a target from being exported, and what to do."""


class ClusterReads(Protocol):
    """The reads an export makes (a :class:`~retune.handlers.kube.Cluster` does them)."""

    def target(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class Export:
    """A revision, the stable policy it was validated against, and the evidence."""

    revision: str
    file_name: str
    code: str
    stable: str
    """The stable revision's name, or ``seed`` for ``spec.policy.seed``."""
    stable_code: str
    evidence: dict[str, Any]
    values: str | None = None
    """A parameters policy's values file (JSON), as the revision holds it."""


def open_cluster(kubeconfig: str | None) -> ClusterReads:
    """The cluster, with the caller's kubeconfig (or in-cluster) credentials."""
    return Cluster(api_client(kubeconfig))


def gather_export(cluster: ClusterReads, namespace: str, name: str) -> Export:
    """Read the target, its revision and its stable policy."""
    body = cluster.target(namespace, name)
    if body is None:
        raise ExportError(f"OptimizationTarget {namespace}/{name} not found")
    target, problems = parse(body)
    if target is None:
        raise ExportError(f"{namespace}/{name}: " + "; ".join(str(p) for p in problems))
    status = status_of(body)
    approval = status.approval
    revision = approval.revision if approval is not None else status.validated_revision
    if revision is None:
        raise ExportError(
            f"{namespace}/{name} has no validated revision to export (phase {status.phase}); "
            "one appears once a search's winner passes validation"
        )
    file_name = target.spec.policy.volume.file_name
    code = _policy(cluster, namespace, revision, file_name)
    if status.stable_revision is not None:
        stable = status.stable_revision
        stable_code = _policy(cluster, namespace, stable, file_name)
    else:
        # read_seed reads one ConfigMap, which any ClusterReads does.
        seed, problem = read_seed(cast(Cluster, cluster), target)
        if seed is None:
            raise ExportError(
                f"the seed policy to diff against: {problem or 'spec.policy.seed is a file'}"
            )
        stable, stable_code = "seed", seed
    config_map = cluster.config_map(namespace, revision) or {}
    evidence = {
        "target": f"{namespace}/{name}",
        "revision": revision,
        "stableRevision": status.stable_revision,
        "approval": approval.model_dump(mode="json", by_alias=True, exclude_none=True)
        if approval is not None
        else None,
        "validation": status.validation.model_dump(mode="json", by_alias=True, exclude_none=True)
        if status.validation is not None
        else None,
        "revisionAnnotations": dict((config_map.get("metadata") or {}).get("annotations") or {}),
        "profile": status.profile,
        "hardwareFingerprint": status.hardware_fingerprint,
        "hardware": status.hardware,
    }
    values = (config_map.get("data") or {}).get(values_file_name(file_name))
    return Export(revision, file_name, code, stable, stable_code, evidence, values)


def write_export(export: Export, directory: Path) -> list[Path]:
    """Write the policy file, ``evidence.json`` and ``policy.diff`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    diff = difflib.unified_diff(
        export.stable_code.splitlines(keepends=True),
        export.code.splitlines(keepends=True),
        fromfile=f"{export.stable}/{export.file_name}",
        tofile=f"{export.revision}/{export.file_name}",
    )
    files = {
        export.file_name: export.code,
        EVIDENCE_FILE: json.dumps(export.evidence, indent=2, sort_keys=True) + "\n",
        DIFF_FILE: "".join(diff),
    }
    if export.values is not None:
        files[values_file_name(export.file_name)] = export.values
    written = []
    for file_name, text in files.items():
        path = directory / file_name
        path.write_text(text)
        written.append(path)
    return written


def _policy(cluster: ClusterReads, namespace: str, revision: str, file_name: str) -> str:
    config_map = cluster.config_map(namespace, revision)
    code = ((config_map or {}).get("data") or {}).get(file_name)
    if code is None:
        raise ExportError(
            f"the revision {revision} (ConfigMap in {namespace}) is gone or has no key "
            f"{file_name!r}"
        )
    return str(code)
