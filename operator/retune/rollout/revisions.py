"""Policy revisions: a validated policy as an immutable ConfigMap ``<target>-policy-<hash>``.

The name is derived from the program, so publishing the same policy twice (an operator
restarted between creating the ConfigMap and recording it in the status) finds the one
already there instead of making a second. The ConfigMap is ``immutable: true``: what a
revision name points to never changes, which is what lets a rollout (and a rollback) refer
to it by name. Its key is the policy's file name, so it can be mounted as the policy
volume as it is; a parameters policy's revision holds the values as JSON too
(:func:`values_file_name`), for a workload in any language. It is owned by the target
and goes when the target goes. Names and manifests are pure;
:func:`retune.rollout.apps.publish_revision` creates them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from retune.evaluate.podspec import TARGET_LABEL, target_label
from retune.spec.target import owner_reference

ROLE_LABEL = "retune.dev/role"
ROLE_POLICY_REVISION = "policy-revision"
REVISION_LABEL = "retune.dev/revision"
_HASH_LENGTH = 10
_MAX_NAME = 253


def revision_hash(code: str) -> str:
    """The content hash in a revision's name and label."""
    return hashlib.sha256(code.encode()).hexdigest()[:_HASH_LENGTH]


def revision_name(target: str, code: str) -> str:
    """``<target>-policy-<hash>``, with the target's name shortened if it must be."""
    suffix = f"-policy-{revision_hash(code)}"
    return f"{target[: _MAX_NAME - len(suffix)].rstrip('-.')}{suffix}"


def values_file_name(file_name: str) -> str:
    """Where a parameters policy's values are, beside its file: ``policy.py`` ->
    ``policy.json``."""
    stem = file_name[:-3] if file_name.endswith(".py") else file_name
    return f"{stem}.json"


def revision_manifest(
    *,
    name: str,
    namespace: str,
    owner: Mapping[str, Any],
    code: str,
    file_name: str,
    annotations: Mapping[str, str] | None = None,
    values: Mapping[str, int | float] | None = None,
) -> dict[str, Any]:
    """The ConfigMap of a revision (API JSON); ``values``, a parameters policy's, go in
    a JSON file beside the program."""
    data = {file_name: code}
    if values is not None:
        data[values_file_name(file_name)] = json.dumps(dict(values), indent=2) + "\n"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                TARGET_LABEL: target_label(str(owner["name"])),
                ROLE_LABEL: ROLE_POLICY_REVISION,
                REVISION_LABEL: revision_hash(code),
                "app.kubernetes.io/managed-by": "retune",
            },
            "annotations": dict(annotations or {}),
            "ownerReferences": [owner_reference(owner)],
        },
        "immutable": True,
        "data": data,
    }


def revision_annotations(
    *, candidate: str, score: float | None, stable_score: float | None, validated_at: datetime
) -> dict[str, str]:
    """What a revision records about how it was validated."""
    annotations = {
        "retune.dev/candidate": candidate,
        "retune.dev/validated-at": validated_at.isoformat(),
    }
    if score is not None:
        annotations["retune.dev/holdout-score"] = f"{score:.6g}"
    if stable_score is not None:
        annotations["retune.dev/stable-holdout-score"] = f"{stable_score:.6g}"
    return annotations
