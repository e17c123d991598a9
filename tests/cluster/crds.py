"""Install CustomResourceDefinitions from YAML files and wait until they are served."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException


def load_crds(directories: Iterable[Path]) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition in ``*.yaml``/``*.yml`` files of the directories."""
    crds = []
    for directory in directories:
        if not directory.is_dir():
            continue
        for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
            for document in yaml.safe_load_all(path.read_text()):
                if not document:
                    continue
                if document.get("kind") != "CustomResourceDefinition":
                    raise ValueError(
                        f"{path}: expected only CustomResourceDefinitions, found kind {document.get('kind')!r}"
                    )
                crds.append(document)
    return crds


def install_crds(api: client.ApiClient, crds: list[dict[str, Any]], timeout: float = 30.0) -> None:
    """Create (or replace) each CRD, then wait until all are Established with names accepted."""
    extensions = client.ApiextensionsV1Api(api)
    for crd in crds:
        name = crd["metadata"]["name"]
        try:
            extensions.create_custom_resource_definition(crd)
        except ApiException as error:
            if error.status != 409:
                raise RuntimeError(f"CRD {name} was rejected: {error.body}") from None
            current = extensions.read_custom_resource_definition(name)
            body = {
                **crd,
                "metadata": {
                    **crd["metadata"],
                    "resourceVersion": current.metadata.resource_version,
                },
            }
            extensions.replace_custom_resource_definition(name, body)
    deadline = time.monotonic() + timeout
    for crd in crds:
        name = crd["metadata"]["name"]
        while not _established(extensions.read_custom_resource_definition(name)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not Established after {timeout:.0f}s")
            time.sleep(0.1)


def _established(crd: client.V1CustomResourceDefinition) -> bool:
    conditions = {c.type: c.status for c in (crd.status.conditions or [])} if crd.status else {}
    return conditions.get("Established") == "True" and conditions.get("NamesAccepted") == "True"
