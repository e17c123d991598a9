"""The retune chart in tests: render and lint it with the real helm, apply what it renders.

Helm comes from the pinned test binaries (``tests/cluster/build-binaries``). The operator
end-to-end tests use these helpers to run the operator under the chart's own
ServiceAccount and RBAC::

    docs = render_chart({"watchNamespaces": [namespace]}, namespace=namespace)
    applied = apply_manifests(cluster.api(), docs)  # ServiceAccount and RBAC only
    account = find_manifest(docs, "ServiceAccount")["metadata"]["name"]
    api = service_account_api_client(cluster, namespace, account)
    ...
    delete_manifests(cluster.api(), applied)  # the cluster-scoped roles outlive the namespace
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from tests.cluster.controlplane import REPO_ROOT, ControlPlane
from tests.cluster.testbin import TestbinMissing, testbin_dir

CHART_DIR = REPO_ROOT / "charts" / "retune"
# What the operator needs to run under the chart's identity; the Deployment itself cannot
# run here (no kubelet pulls images), so tests start the operator process themselves.
IDENTITY_KINDS = frozenset(
    {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
)
FIELD_MANAGER = "retune-tests"

Manifest = dict[str, Any]


class HelmError(RuntimeError):
    """helm exited non-zero; the message holds the command and what helm said."""


def require_helm() -> None:
    """Fail the calling test, in one line saying how, when the pinned helm is not built."""
    import pytest

    try:
        testbin_dir()
    except TestbinMissing as missing:
        pytest.fail(str(missing), pytrace=False)


def helm(*args: str) -> str:
    """Run the pinned helm with ``args``; return its stdout, or raise ``HelmError``."""
    argv = [str(testbin_dir() / "helm"), *args]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} failed:\n{result.stderr}{result.stdout}")
    return result.stdout


def _with_values(values: Mapping[str, Any] | None, args: list[str]) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        json.dump(dict(values or {}), file)  # JSON is YAML
        file.flush()
        return helm(*args, "--values", file.name)


def render_chart(
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "retune",
    namespace: str = "retune-system",
    include_crds: bool = False,
    chart: Path = CHART_DIR,
) -> list[Manifest]:
    """``helm template`` the chart with ``values``: the rendered objects, in helm's order."""
    args = ["template", release, str(chart), "--namespace", namespace]
    if include_crds:
        args.append("--include-crds")
    rendered = _with_values(values, args)
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def lint_chart(
    values: Mapping[str, Any] | None = None, *, strict: bool = False, chart: Path = CHART_DIR
) -> str:
    """``helm lint`` the chart (values are checked against values.schema.json); its output."""
    args = ["lint", str(chart), *(["--strict"] if strict else [])]
    return _with_values(values, args)


def install_dry_run(
    kubeconfig: Path,
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "retune",
    namespace: str = "retune-system",
    chart: Path = CHART_DIR,
) -> str:
    """``helm install --dry-run=server``: the API server validates every object; helm's output."""
    args = ["install", release, str(chart), "--dry-run=server", "--namespace", namespace]
    return _with_values(values, [*args, "--kubeconfig", str(kubeconfig)])


def find_manifests(docs: Iterable[Manifest], kind: str) -> list[Manifest]:
    """The rendered objects of one kind."""
    return [doc for doc in docs if doc.get("kind") == kind]


def find_manifest(docs: Iterable[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one rendered object of ``kind`` (named ``name`` if given); fails if not exactly one."""
    found = [doc for doc in find_manifests(docs, kind) if name in (None, doc["metadata"]["name"])]
    if len(found) != 1:
        raise LookupError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


def apply_manifests(
    api: client.ApiClient,
    docs: Iterable[Manifest],
    kinds: Iterable[str] = IDENTITY_KINDS,
) -> list[Manifest]:
    """Server-side apply the rendered objects whose kind is in ``kinds``; return those applied.

    Namespaced objects go to their ``metadata.namespace`` (the chart always sets it).
    """
    dynamic = DynamicClient(api)
    wanted = set(kinds)
    applied = []
    for doc in docs:
        if doc.get("kind") not in wanted:
            continue
        resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        dynamic.server_side_apply(
            resource,
            body=doc,
            namespace=doc["metadata"].get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        applied.append(doc)
    return applied


def delete_manifests(api: client.ApiClient, docs: Iterable[Manifest]) -> None:
    """Delete the objects (cluster-scoped ones outlive a test namespace); absent ones are fine."""
    dynamic = DynamicClient(api)
    for doc in reversed(list(docs)):
        resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        namespace = doc["metadata"].get("namespace") if resource.namespaced else None
        try:
            dynamic.delete(resource, name=doc["metadata"]["name"], namespace=namespace)
        except ApiException as error:
            if error.status != 404:
                raise


def service_account_api_client(
    cluster: ControlPlane, namespace: str, name: str
) -> client.ApiClient:
    """An ApiClient that authenticates as the ServiceAccount, with a fresh bound token."""
    return cluster.api(cluster.serviceaccount_kubeconfig(namespace, name))


def install_chart(
    kubeconfig: Path,
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "retune",
    namespace: str = "retune-system",
    chart: Path = CHART_DIR,
    timeout: str = "180s",
) -> str:
    """``helm install --wait``: the release is up when the operator's pod is Ready."""
    args = [
        "install",
        release,
        str(chart),
        "--namespace",
        namespace,
        "--wait",
        "--timeout",
        timeout,
    ]
    return _with_values(values, [*args, "--kubeconfig", str(kubeconfig)])


def uninstall_chart(
    kubeconfig: Path, *, release: str = "retune", namespace: str = "retune-system"
) -> None:
    """``helm uninstall --wait``; a release that is not there is fine."""
    try:
        helm(
            "uninstall",
            release,
            "--namespace",
            namespace,
            "--wait",
            "--kubeconfig",
            str(kubeconfig),
        )
    except HelmError as error:
        if "not found" not in str(error):
            raise
