"""The few Kubernetes API calls evaluation makes, behind a small interface.

:class:`EvaluationApi` is what :class:`retune.evaluate.kubernetes.KubernetesExecutor`
needs, in one namespace; :class:`KubeEvaluationApi` implements it with the Kubernetes
client, and unit tests with a double. Lists return API JSON (camelCase dicts).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

REQUEST_TIMEOUT = 30.0
_TRANSIENT = {429, 500, 502, 503, 504}


class EvaluationApi(Protocol):
    """The few API calls the executor makes, in one namespace (a seam for unit tests)."""

    def apply_network_policy(self, body: dict[str, Any]) -> None: ...
    def create_config_map(self, body: dict[str, Any]) -> None: ...
    def create_job(self, body: dict[str, Any]) -> None: ...
    def delete_job(self, name: str) -> None: ...
    def delete_config_map(self, name: str) -> None: ...
    def list_jobs(self, selector: str) -> list[dict[str, Any]]: ...
    def list_pods(self, selector: str) -> list[dict[str, Any]]: ...
    def list_config_maps(self, selector: str) -> list[dict[str, Any]]: ...


class KubeEvaluationApi:
    """:class:`EvaluationApi` over the Kubernetes client; lists return API JSON."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        # Typed as Any: the bodies are API JSON dicts, which the client sends as they are.
        self.core: Any = client.CoreV1Api(api)
        self.batch: Any = client.BatchV1Api(api)
        self.networking: Any = client.NetworkingV1Api(api)

    def apply_network_policy(self, body: dict[str, Any]) -> None:
        """Create the policy, or bring an existing one back to ``body`` (a merge patch,
        so the operator needs only create and patch on networkpolicies)."""
        try:
            self.networking.create_namespaced_network_policy(
                self.namespace, body, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as error:
            if error.status != 409:
                raise
            patch = {"metadata": {"labels": body["metadata"]["labels"]}, "spec": body["spec"]}
            self.networking.patch_namespaced_network_policy(
                body["metadata"]["name"],
                self.namespace,
                patch,
                _content_type="application/merge-patch+json",
                _request_timeout=REQUEST_TIMEOUT,
            )

    def create_config_map(self, body: dict[str, Any]) -> None:
        self.core.create_namespaced_config_map(
            self.namespace, body, _request_timeout=REQUEST_TIMEOUT
        )

    def create_job(self, body: dict[str, Any]) -> None:
        self.batch.create_namespaced_job(self.namespace, body, _request_timeout=REQUEST_TIMEOUT)

    def delete_job(self, name: str) -> None:
        with _absent_is_fine():
            self.batch.delete_namespaced_job(
                name,
                self.namespace,
                propagation_policy="Background",
                _request_timeout=REQUEST_TIMEOUT,
            )

    def delete_config_map(self, name: str) -> None:
        with _absent_is_fine():
            self.core.delete_namespaced_config_map(
                name, self.namespace, _request_timeout=REQUEST_TIMEOUT
            )

    def list_jobs(self, selector: str) -> list[dict[str, Any]]:
        return self._items(self.batch.list_namespaced_job, selector)

    def list_pods(self, selector: str) -> list[dict[str, Any]]:
        return self._items(self.core.list_namespaced_pod, selector)

    def list_config_maps(self, selector: str) -> list[dict[str, Any]]:
        return self._items(self.core.list_namespaced_config_map, selector)

    def _items(self, method: Any, selector: str) -> list[dict[str, Any]]:
        response = method(
            self.namespace,
            label_selector=selector,
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        return list(json.loads(response.data)["items"])


@contextlib.contextmanager
def _absent_is_fine() -> Iterator[None]:
    try:
        yield
    except ApiException as error:
        if error.status != 404:
            raise


def with_retries(call: Callable[[], None], attempts: int = 3) -> None:
    """Retry a create on throttling, server errors and lost connections."""
    for attempt in range(attempts):
        try:
            call()
            return
        except ApiException as error:
            if error.status not in _TRANSIENT or attempt == attempts - 1:
                raise
        except (OSError, urllib3.exceptions.HTTPError):
            if attempt == attempts - 1:
                raise
        time.sleep(0.5 * 2**attempt)


def describe_error(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        hint = {
            403: " (the operator's RBAC must allow create/delete on jobs and configmaps)",
            404: " (does the namespace exist?)",
            422: " (the manifest was refused; check spec.evaluator)",
        }.get(exc.status or 0, "")
        try:
            message = json.loads(exc.body or "{}").get("message", "")
        except ValueError:
            message = str(exc.body or "")[:300]
        return f"HTTP {exc.status} {exc.reason}: {message}{hint}"
    return f"{type(exc).__name__}: {exc}"
