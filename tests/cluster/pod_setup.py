"""What the test node agent prepares before a pod's processes start.

Volumes become directories under the pod's directory; each container gets a root
directory (its ``RETUNE_PATH_PREFIX``) in which every ``volumeMount`` is a symlink at the
remapped mount path, e.g. ``<root>/etc/retune/batch``; env vars are resolved the way the
kubelet resolves them (``envFrom``, ``value`` with ``$(VAR)`` expansion, ``fieldRef``,
ConfigMap and Secret keys).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger("node-agent")

_VAR_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_DEFAULT_MODE = 0o644


class NotReadyYet(Exception):
    """Something the pod needs (a ConfigMap, a Secret) is missing; the kubelet retries."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def expand(text: str, variables: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined names are replaced, ``$$`` escapes ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        return variables.get(match[1], match[0])

    return _VAR_REFERENCE.sub(replace, text)


def field_value(pod: dict[str, Any], path: str) -> str:
    """The value of a downward-API ``fieldPath`` such as ``metadata.labels['app']``."""
    meta, spec = pod["metadata"], pod["spec"]
    if match := re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path):
        return str((meta.get(match[1]) or {}).get(match[2], ""))
    values = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
        "status.podIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
    }
    return str(values.get(path) or "")


def _write_file(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


class PodSetup:
    """Reads what one pod refers to and lays it out on disk for its processes."""

    def __init__(self, core: client.CoreV1Api, pod: dict[str, Any], pod_dir: Path) -> None:
        self.core = core
        self.pod = pod
        self.namespace: str = pod["metadata"]["namespace"]
        self.volumes_dir = pod_dir / "volumes"

    # -- volumes -------------------------------------------------------------------------
    def materialise_volumes(self) -> None:
        """Write every volume of the pod (ConfigMap, Secret, downward API...) to a directory."""
        for volume in self.pod["spec"].get("volumes") or []:
            target = self.volumes_dir / volume["name"]
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            if "configMap" in volume:
                self._write_keys(target, volume["configMap"], "configMap")
            elif "secret" in volume:
                self._write_keys(target, volume["secret"], "secret")
            elif "downwardAPI" in volume:
                self._write_downward(target, volume["downwardAPI"].get("items") or [])
            elif "projected" in volume:
                for source in volume["projected"].get("sources") or []:
                    if "configMap" in source:
                        self._write_keys(target, source["configMap"], "configMap")
                    elif "secret" in source:
                        self._write_keys(target, source["secret"], "secret")
                    elif "downwardAPI" in source:
                        self._write_downward(target, source["downwardAPI"].get("items") or [])
            elif "hostPath" in volume:
                target.rmdir()
                target.symlink_to(volume["hostPath"]["path"])
            elif "emptyDir" not in volume:
                log.info("volume %s: type not supported, mounted empty", volume["name"])

    def lay_out_root(self, root: Path, spec: dict[str, Any], message_path: Path) -> Path:
        """Make a container's root with its mounts; return its working directory."""
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        for mount in spec.get("volumeMounts") or []:
            source = self.volumes_dir / mount["name"]
            if mount.get("subPath"):
                source = source / mount["subPath"]
            where = root / mount["mountPath"].lstrip("/")
            where.parent.mkdir(parents=True, exist_ok=True)
            if not where.exists():
                where.symlink_to(source)
        message_path.parent.mkdir(parents=True, exist_ok=True)
        cwd = root / (spec.get("workingDir") or "/").lstrip("/")
        cwd.mkdir(parents=True, exist_ok=True)
        return cwd

    def _read(self, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
        """The data of a ConfigMap or Secret as bytes per key; None if optional and absent."""
        try:
            if kind == "configMap":
                obj = self.core.read_namespaced_config_map(name, self.namespace)
                data = {k: v.encode() for k, v in (obj.data or {}).items()}
                data.update({k: base64.b64decode(v) for k, v in (obj.binary_data or {}).items()})
                return data
            secret = self.core.read_namespaced_secret(name, self.namespace)
            return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
        except ApiException as error:
            if error.status != 404:
                raise
            if optional:
                return None
            label = "configmap" if kind == "configMap" else "secret"
            raise NotReadyYet("CreateContainerConfigError", f'{label} "{name}" not found') from None

    def _write_keys(self, target: Path, source: dict[str, Any], kind: str) -> None:
        name = source.get("name") or source.get("secretName") or ""
        data = self._read(kind, name, bool(source.get("optional")))
        if data is None:
            return
        default_mode = source.get("defaultMode", _DEFAULT_MODE)
        for item in source.get("items") or [{"key": key, "path": key} for key in data]:
            if item["key"] in data:
                _write_file(
                    target / item["path"], data[item["key"]], item.get("mode", default_mode)
                )
            elif not source.get("optional"):
                message = f'key "{item["key"]}" not found in {kind} "{name}"'
                raise NotReadyYet("CreateContainerConfigError", message)

    def _write_downward(self, target: Path, items: list[dict[str, Any]]) -> None:
        for item in items:
            if "fieldRef" in item:
                value = field_value(self.pod, item["fieldRef"]["fieldPath"])
                _write_file(target / item["path"], value.encode(), item.get("mode", _DEFAULT_MODE))

    # -- environment ---------------------------------------------------------------------
    def declared_env(self, spec: dict[str, Any]) -> dict[str, str]:
        """A container's ``envFrom`` and ``env`` variables, resolved."""
        declared: dict[str, str] = {}
        for source in spec.get("envFrom") or []:
            kind = "configMap" if "configMapRef" in source else "secret"
            ref = source.get("configMapRef") or source.get("secretRef") or {}
            data = self._read(kind, ref["name"], bool(ref.get("optional"))) or {}
            prefix = source.get("prefix", "")
            declared.update({prefix + key: value.decode() for key, value in data.items()})
        for var in spec.get("env") or []:
            declared[var["name"]] = self._env_value(var, declared)
        return declared

    def process_env(self, root: Path, declared: dict[str, str], tmp: Path) -> dict[str, str]:
        """The process's environment: the agent's own, adjusted, then the pod's variables."""
        env = dict(os.environ)
        # Commands such as `python -m ...` or `retune-evaluate` resolve in our interpreter's venv.
        interpreter_bin = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([interpreter_bin, env.get("PATH", os.defpath)])
        env["HOSTNAME"] = self.pod["metadata"]["name"]
        env["RETUNE_PATH_PREFIX"] = str(root)
        env.update(declared)
        # Whatever the pod declares (evaluation pods say /tmp, their emptyDir): with no
        # mount namespace that would be the host's /tmp, which outlives the pod.
        env["TMPDIR"] = str(tmp)
        return env

    def _env_value(self, var: dict[str, Any], declared: dict[str, str]) -> str:
        if "value" in var:
            return expand(var["value"] or "", declared)
        source = var.get("valueFrom") or {}
        if "fieldRef" in source:
            return field_value(self.pod, source["fieldRef"]["fieldPath"])
        for kind, key in (("configMap", "configMapKeyRef"), ("secret", "secretKeyRef")):
            if key in source:
                ref = source[key]
                data = self._read(kind, ref["name"], bool(ref.get("optional"))) or {}
                if ref["key"] not in data and not ref.get("optional"):
                    message = f"couldn't find key {ref['key']} in {kind} {ref['name']}"
                    raise NotReadyYet("CreateContainerConfigError", message)
                return data.get(ref["key"], b"").decode()
        return ""  # resourceFieldRef is not supported
