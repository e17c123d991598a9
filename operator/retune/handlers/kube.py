"""The operator's own Kubernetes calls (reads, the status patch, clean-up), as API JSON.

Every call is synchronous with a timeout; the reconcile loop runs them in threads.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from retune.evaluate.podspec import TARGET_LABEL, target_label
from retune.spec import GROUP, PLURAL, VERSION

REQUEST_TIMEOUT = 30.0


def api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """A client with the operator's credentials: the in-cluster ServiceAccount, else the
    kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``)."""
    configuration = client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    configuration.connection_pool_maxsize = 64  # workers, pollers and reconcile loops
    return client.ApiClient(configuration)


def connection_info(api: client.ApiClient) -> kopf.ConnectionInfo:
    """kopf's credentials, taken from ``api``'s: both then act as the same identity."""
    settings = api.configuration
    header = settings.get_api_key_with_prefix("BearerToken") or settings.get_api_key_with_prefix(
        "authorization"
    )
    scheme, _, token = (header or "").partition(" ")
    return kopf.ConnectionInfo(
        server=settings.host,
        ca_path=settings.ssl_ca_cert,
        insecure=not settings.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=settings.cert_file,
        private_key_path=settings.key_file,
    )


def _json(response: Any) -> dict[str, Any]:
    return dict(json.loads(response.data))


def _absent(error: ApiException) -> bool:
    return error.status == 404


class Cluster:
    """The reads and writes of the reconcile loop and the workers, in API JSON."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        # Typed as Any: bodies are API JSON, which the client sends as they are.
        self.core: Any = client.CoreV1Api(api)
        self.apps: Any = client.AppsV1Api(api)
        self.batch: Any = client.BatchV1Api(api)
        self.custom: Any = client.CustomObjectsApi(api)

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A ConfigMap, or None if it does not exist."""
        try:
            return _json(
                self.core.read_namespaced_config_map(
                    name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
            )
        except ApiException as error:
            if _absent(error):
                return None
            raise

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data (key -> base64-encoded value), or None if it does not exist."""
        try:
            secret = _json(
                self.core.read_namespaced_secret(
                    name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
            )
        except ApiException as error:
            if _absent(error):
                return None
            raise
        return dict(secret.get("data") or {})

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret, decoded; None if the Secret or the key is missing."""
        encoded = (self.secret_data(namespace, name) or {}).get(key)
        return None if encoded is None else base64.b64decode(encoded).decode()

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Deployment, or None if it does not exist."""
        try:
            return _json(
                self.apps.read_namespaced_deployment(
                    name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
            )
        except ApiException as error:
            if _absent(error):
                return None
            raise

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The pods matching a label selector."""
        response = self.core.list_namespaced_pod(
            namespace,
            label_selector=selector,
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        return list(_json(response)["items"])

    def target(self, namespace: str, name: str) -> dict[str, Any] | None:
        """An OptimizationTarget, or None if it does not exist."""
        try:
            return dict(
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT
                )
            )
        except ApiException as error:
            if _absent(error):
                return None
            raise

    def replace_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Write the whole status (a JSON patch on the status subresource, so keys the
        status no longer has are removed, not merged)."""
        patch = [{"op": "add", "path": "/status", "value": dict(status)}]
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            patch,
            _content_type="application/json-patch+json",
            _request_timeout=REQUEST_TIMEOUT,
        )

    def remove_annotations(self, namespace: str, name: str, keys: tuple[str, ...]) -> None:
        """Remove annotations from a target (a merge patch: absent keys are no error)."""
        patch = {"metadata": {"annotations": dict.fromkeys(keys)}}
        self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            patch,
            _content_type="application/merge-patch+json",
            _request_timeout=REQUEST_TIMEOUT,
        )

    def delete_target_objects(self, namespace: str, target: str) -> list[str]:
        """Delete the Jobs (their pods follow) and ConfigMaps labelled as the target's."""
        selector = f"{TARGET_LABEL}={target_label(target)}"
        deleted = []
        jobs = self.batch.list_namespaced_job(
            namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
        )
        for job in jobs.items:
            self._delete(
                self.batch.delete_namespaced_job,
                job.metadata.name,
                namespace,
                propagation_policy="Background",
            )
            deleted.append(f"Job {job.metadata.name}")
        config_maps = self.core.list_namespaced_config_map(
            namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
        )
        for config_map in config_maps.items:
            self._delete(
                self.core.delete_namespaced_config_map, config_map.metadata.name, namespace
            )
            deleted.append(f"ConfigMap {config_map.metadata.name}")
        return deleted

    @staticmethod
    def _delete(method: Any, name: str, namespace: str, **options: Any) -> None:
        try:
            method(name, namespace, _request_timeout=REQUEST_TIMEOUT, **options)
        except ApiException as error:
            if not _absent(error):
                raise


def selector_of(match_labels: Mapping[str, str]) -> str:
    """A label selector string from ``matchLabels``."""
    return ",".join(f"{key}={value}" for key, value in sorted(match_labels.items()))
