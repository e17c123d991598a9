"""The few API calls a rollout makes: Deployments behind a small interface, and publishing
a policy revision's ConfigMap.

:class:`DeploymentApi` is what :mod:`retune.rollout.deployments` needs, in one namespace;
:class:`KubeDeploymentApi` implements it with the Kubernetes client (``AppsV1Api``), and
unit tests with a double. The user's Deployment is written only by server-side apply as
:data:`FIELD_MANAGER`, so its owner (a person, Argo CD, Flux) and retune each own their
fields and the managed fields say which are whose. Objects are API JSON (camelCase dicts, read raw so that no field
the client's models do not know is lost when one is written back).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.rest import ApiException

REQUEST_TIMEOUT = 30.0

Json = dict[str, Any]

FIELD_MANAGER = "retune"
"""The field manager of retune's server-side applies to the user's Deployment: what
GitOps tools are told to leave alone (``docs/gitops.md``)."""


class Conflict(RuntimeError):
    """The object changed since it was read (or already exists, on create)."""


class RevisionConflict(RuntimeError):
    """A ConfigMap with the revision's name exists and holds something else."""


class DeploymentApi(Protocol):
    """Deployments in one namespace."""

    def get(self, name: str) -> Json | None:
        """The Deployment, or None when there is none of that name."""
        ...

    def create(self, body: Json) -> Json:
        """Create; raises :class:`Conflict` when one of that name exists."""
        ...

    def replace(self, body: Json) -> Json:
        """Replace; ``metadata.resourceVersion`` is a precondition (:class:`Conflict`)."""
        ...

    def apply(self, body: Json) -> Json:
        """Server-side apply of ``body`` as the field manager :data:`FIELD_MANAGER`, taking
        over the fields it sets from any other manager: afterwards retune owns exactly the
        fields in ``body`` (a field it set before and leaves out is removed)."""
        ...

    def delete(self, name: str, uid: str) -> bool:
        """Delete the Deployment if it is still the one with ``uid``; False when gone."""
        ...


class KubeDeploymentApi:
    """:class:`DeploymentApi` over ``AppsV1Api``."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        # Typed as Any: bodies are API JSON dicts, which the client sends as they are.
        self.apps: Any = client.AppsV1Api(api)

    def get(self, name: str) -> Json | None:
        try:
            response = self.apps.read_namespaced_deployment(
                name, self.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return _json(response)

    def create(self, body: Json) -> Json:
        return self._write(
            self.apps.create_namespaced_deployment, self.namespace, body, conflict=409
        )

    def replace(self, body: Json) -> Json:
        return self._write(
            self.apps.replace_namespaced_deployment,
            body["metadata"]["name"],
            self.namespace,
            body,
            conflict=409,
        )

    def apply(self, body: Json) -> Json:
        return self._write(
            self.apps.patch_namespaced_deployment,
            body["metadata"]["name"],
            self.namespace,
            body,
            conflict=409,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )

    def delete(self, name: str, uid: str) -> bool:
        try:
            self.apps.delete_namespaced_deployment(
                name,
                self.namespace,
                body={"propagationPolicy": "Background", "preconditions": {"uid": uid}},
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as error:
            if error.status == 404:
                return False
            if error.status == 409:  # a different object of that name now: not ours to delete
                return False
            raise
        return True

    @staticmethod
    def _write(method: Any, *args: Any, conflict: int, **kwargs: Any) -> Json:
        try:
            response = method(
                *args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs
            )
        except ApiException as error:
            if error.status == conflict:
                raise Conflict(_message(error)) from None
            raise
        return _json(response)


def publish_revision(api: client.ApiClient, manifest: Mapping[str, Any]) -> bool:
    """Create the revision's ConfigMap; returns False when the same revision was there.

    Raises :class:`RevisionConflict` when a ConfigMap of that name holds other data.
    """
    # Typed as Any: the body is API JSON, which the client sends as it is.
    core: Any = client.CoreV1Api(api)
    metadata = manifest["metadata"]
    try:
        core.create_namespaced_config_map(
            metadata["namespace"], dict(manifest), _request_timeout=REQUEST_TIMEOUT
        )
        return True
    except ApiException as error:
        if error.status != 409:
            raise
    existing = core.read_namespaced_config_map(
        metadata["name"], metadata["namespace"], _request_timeout=REQUEST_TIMEOUT
    )
    if (existing.data or {}) != manifest["data"]:
        raise RevisionConflict(
            f"ConfigMap {metadata['namespace']}/{metadata['name']} exists with other content; "
            "revisions are immutable, so delete it if it is not a retune revision"
        )
    return False


def _json(response: Any) -> Json:
    document: Json = json.loads(response.data)
    return document


def _message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except ValueError:
        return str(error.reason)
