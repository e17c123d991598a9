"""A checkpoint in a ConfigMap ``<target>-checkpoint``, owned by the target.

The document is kept whole in ``binaryData`` and every write is conditional on the
resourceVersion this store last read or wrote (optimistic concurrency). A write that finds
a different version means someone else wrote in between, most likely a second operator
working on the same target: the store re-reads what is there and raises
:class:`CheckpointConflict` instead of overwriting it, so two writers can never silently
interleave their searches. Any operator replica can resume from the ConfigMap, and it goes
when the target goes (owner reference, garbage collector). The operator keeps its spend
journal the same way (``role="spend"``, ``handlers/spend.py``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from retune.spec.target import owner_reference

ROLE_CHECKPOINT = "checkpoint"
REQUEST_TIMEOUT = 30.0
# A ConfigMap holds at most 1 MiB; base64 makes the document a third bigger.
MAX_DOCUMENT_BYTES = 700_000


class CheckpointConflict(RuntimeError):
    """The checkpoint was written or deleted by someone else since this store last saw it;
    ``found`` is what the store read there next (None: nothing)."""

    def __init__(self, message: str, found: bytes | None = None) -> None:
        super().__init__(message)
        self.found = found


class CheckpointTooLarge(RuntimeError):
    """The checkpoint does not fit a ConfigMap."""


def checkpoint_name(target: str, role: str = ROLE_CHECKPOINT) -> str:
    """``<target>-checkpoint``, or ``<target>-<role>`` for another document of the target's
    (a ConfigMap name may be 253 characters long)."""
    suffix = f"-{role}"
    return f"{target[: 253 - len(suffix)].rstrip('-.')}{suffix}"


class KubernetesStore:
    """The engine's :class:`~retune.store.base.Store` in a ConfigMap.

    Call :meth:`load` before the first :meth:`save`: it learns the version to write over.
    A store that has loaded nothing creates the ConfigMap, and fails if it already exists.
    ``role`` names the document (``checkpoint``; ``spend`` for the spend journal): the
    ConfigMap is ``<target>-<role>``, labelled with it, the document under that key.
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        target: str,
        owner: Mapping[str, Any],
        labels: Mapping[str, str] | None = None,
        role: str = ROLE_CHECKPOINT,
    ) -> None:
        self.namespace = namespace
        self.role = role
        self.name = checkpoint_name(target, role)
        self._owner = dict(owner)
        self._labels = {
            "retune.dev/role": role,
            "app.kubernetes.io/managed-by": "retune",
            **dict(labels or {}),
        }
        # Typed as Any: bodies are API JSON, which the client sends as they are.
        self._core: Any = client.CoreV1Api(api)
        self._version: str | None = None

    @property
    def where(self) -> str:
        """``ConfigMap namespace/name``, for messages."""
        return f"ConfigMap {self.namespace}/{self.name}"

    def load(self) -> bytes | None:
        """The saved document, or None when there is no checkpoint yet."""
        try:
            config_map = self._core.read_namespaced_config_map(
                self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as error:
            if error.status == 404:
                self._version = None
                return None
            raise
        self._version = config_map.metadata.resource_version
        encoded = (config_map.binary_data or {}).get(self.role)
        return base64.b64decode(encoded) if encoded is not None else None

    def save(self, document: bytes) -> None:
        """Write ``document`` over the version last seen; raise on a conflict."""
        if len(document) > MAX_DOCUMENT_BYTES:
            raise CheckpointTooLarge(
                f"the checkpoint is {len(document)} bytes compressed, more than the "
                f"{MAX_DOCUMENT_BYTES} a ConfigMap can hold; lower spec.search.archive.cells "
                "or the evaluation budget"
            )
        body = self._manifest(document)
        try:
            if self._version is None:
                written = self._core.create_namespaced_config_map(
                    self.namespace, body, _request_timeout=REQUEST_TIMEOUT
                )
            else:
                body["metadata"]["resourceVersion"] = self._version
                written = self._core.replace_namespaced_config_map(
                    self.name, self.namespace, body, _request_timeout=REQUEST_TIMEOUT
                )
        except ApiException as error:
            if error.status in (404, 409):
                raise self._conflict(error.status) from None
            raise
        self._version = written.metadata.resource_version

    def delete(self) -> None:
        """Remove the checkpoint (nothing happens when there is none)."""
        try:
            self._core.delete_namespaced_config_map(
                self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as error:
            if error.status != 404:
                raise
        self._version = None

    def _conflict(self, status: int) -> CheckpointConflict:
        expected = self._version
        found = self.load()  # see what is there now, for the message and the caller
        if status == 404:
            what = "was deleted"
        elif expected is None:
            what = f"was created by someone else (resourceVersion {self._version})"
        else:
            now = self._version or "none: deleted"
            what = f"was changed by someone else (resourceVersion {expected} -> {now})"
        return CheckpointConflict(
            f"the {self.role} {self.where} {what}; the search stopped rather than overwrite "
            "it. Is a second operator serving this target? Run one operator replica.",
            found,
        )

    def _manifest(self, document: bytes) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": dict(self._labels),
                "annotations": {
                    "retune.dev/saved-at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "retune.dev/bytes": str(len(document)),
                },
                "ownerReferences": [owner_reference(self._owner)],
            },
            "binaryData": {self.role: base64.b64encode(document).decode("ascii")},
        }
