"""Pure pod-template edits: the canary's template, the policy volume, the replica share.

Templates are API JSON (camelCase dicts, as read from the API server); every function
returns a new dict and leaves its argument alone.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from retune.rollout.errors import RolloutError
from retune.signals.analysis import CANARY_TRACK
from retune.spec import PolicyVolume

TRACK_LABEL = "retune.dev/track"
"""Pod label saying which side of a rollout a pod is on: ``stable`` or ``canary``. The
analysis queries' ``{{track}}`` is matched against it."""

POLICY_REVISION_ANNOTATION = "retune.dev/policy-revision"
"""On the stable and canary Deployments: the policy revision (ConfigMap) they run."""

Json = dict[str, Any]


def canary_replicas(stable_replicas: int, share: int) -> int:
    """The canary's replicas at ``share`` percent beside ``stable_replicas`` stable ones:
    ``ceil(N * share / 100)``, at least one while the stable runs any."""
    if stable_replicas <= 0:
        return 0
    return max(1, -(-stable_replicas * share // 100))


def policy_config_map(template: Json, volume: PolicyVolume) -> str | None:
    """The ConfigMap the template's policy volume mounts, if it has one."""
    for entry in template.get("spec", {}).get("volumes") or []:
        if entry.get("name") == volume.name:
            return (entry.get("configMap") or {}).get("name")
    return None


def with_policy(template: Json, volume: PolicyVolume, revision: str, container: str | None) -> Json:
    """``template`` with its policy volume pointing at the ConfigMap ``revision``.

    The volume is added when missing, and so is its mount (at ``volume.mount_path``,
    read-only) in ``container``, or in every container when it is None; a mount the
    workload already has is left as it is. Other settings of an existing ConfigMap volume
    (``defaultMode``) are kept; ``items`` is dropped, as a revision holds one key, the
    policy's file name.
    """
    result = copy.deepcopy(template)
    spec = result.setdefault("spec", {})
    containers = spec.get("containers") or []
    names = [c.get("name") for c in containers]
    if container is not None and container not in names:
        raise RolloutError(
            f"spec.workloadRef.container: {container!r} is not a container of the workload "
            f"(its containers: {', '.join(map(str, names)) or 'none'})"
        )
    volumes = spec["volumes"] = list(spec.get("volumes") or [])
    existing = next((v for v in volumes if v.get("name") == volume.name), None)
    source = {k: v for k, v in ((existing or {}).get("configMap") or {}).items() if k != "items"}
    source["name"] = revision
    if existing is None:
        volumes.append({"name": volume.name, "configMap": source})
    else:
        existing.clear()
        existing.update({"name": volume.name, "configMap": source})
    for entry in containers:
        if container is not None and entry.get("name") != container:
            continue
        mounts = entry["volumeMounts"] = list(entry.get("volumeMounts") or [])
        if not any(m.get("name") == volume.name for m in mounts):
            mounts.append({"name": volume.name, "mountPath": volume.mount_path, "readOnly": True})
    return result


def with_track(template: Json, track: str) -> Json:
    """``template`` with the ``retune.dev/track`` pod label set to ``track``."""
    result = copy.deepcopy(template)
    metadata = result["metadata"] = dict(result.get("metadata") or {})
    metadata["labels"] = {**(metadata.get("labels") or {}), TRACK_LABEL: track}
    return result


def canary_template(
    stable_template: Json, volume: PolicyVolume, revision: str, container: str | None
) -> Json:
    """The stable's pod template with the canary's track label and revision."""
    return with_track(with_policy(stable_template, volume, revision, container), CANARY_TRACK)


def canary_selector(stable_selector: Json) -> Json:
    """The stable's selector narrowed to the canary's pods.

    The canary's pods keep every label of the stable's, so any Service that selects the
    stable's pods selects them too; the stable's own selector also matches them, which is
    harmless: Deployments only adopt ReplicaSets that no controller owns, and ReplicaSets
    select by ``pod-template-hash`` as well.
    """
    result = copy.deepcopy(stable_selector)
    result.setdefault("matchLabels", {})[TRACK_LABEL] = CANARY_TRACK
    return result


def digest(document: Any) -> str:
    """A short content hash of a JSON document (keys sorted)."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
