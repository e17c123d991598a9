"""How the test node agent runs one pod: its volumes, its processes, its status.

Test-only. A container is a local process: ``command`` + ``args`` run in the agent's
environment plus the pod's env vars, with the current interpreter's bin directory first on
PATH. Absolute paths are remapped under a per-container root directory that the process
receives as ``RETUNE_PATH_PREFIX``: a volume mounted at ``/etc/retune/batch`` is a
directory at ``$RETUNE_PATH_PREFIX/etc/retune/batch``, and the termination message is read
from ``$RETUNE_PATH_PREFIX/dev/termination-log`` (or the container's own
``terminationMessagePath``). See docs/testing.md for what it does not do.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger("node-agent")

CONTAINER_MESSAGE_LIMIT = 4096  # the kubelet's cap per container
POD_MESSAGE_LIMIT = 12 * 1024  # and per pod
FALLBACK_LOG_LINES = 80
TICK_SECONDS = 0.1
MAX_RESTART_BACKOFF = 10.0
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
# A container without a command has nothing we can run (there are no images): it idles.
IDLE_COMMAND = ["sleep", "infinity"]
_SETPRIV = shutil.which("setpriv")
_VAR_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class NotReadyYet(Exception):
    """Something the pod needs (a ConfigMap, a Secret) is missing; the kubelet retries."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Container:
    """A container's process and the status the agent reports for it."""

    spec: dict[str, Any]
    root: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0
    restart_at: float | None = None  # monotonic time of a pending restart
    done: bool = False  # terminated for good
    variables: dict[str, str] = field(default_factory=dict)  # the pod's env vars, for $(VAR)
    env: dict[str, str] = field(default_factory=dict)  # the process's whole environment

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def message_path(self) -> Path:
        return self.root / self.spec.get("terminationMessagePath", "/dev/termination-log").lstrip("/")


def _field_value(pod: dict[str, Any], path: str) -> str:
    """The value of a downward-API ``fieldPath`` such as ``metadata.labels['app']``."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
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
    return str(values.get(path) or status.get(path.removeprefix("status.")) or "")


def expand(text: str, variables: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined names are replaced, ``$$`` escapes ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        return variables.get(match[1], match[0])

    return _VAR_REFERENCE.sub(replace, text)


class PodRunner(threading.Thread):
    """Runs one pod bound to one of the agent's nodes, from pickup to deletion."""

    def __init__(self, api: client.ApiClient, pod: dict[str, Any], workdir: Path) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.core = client.CoreV1Api(api)
        self.pod = pod
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.dir = workdir / f"{self.namespace}_{self.pod_name}_{self.uid[:8]}"
        self.containers = [
            Container(spec=spec, root=self.dir / "containers" / spec["name"], log_path=self.dir / "logs" / f"{spec['name']}.log")
            for spec in pod["spec"]["containers"]
        ]  # fmt: skip
        self.started_monotonic: float | None = None
        self.start_time = (pod.get("status") or {}).get("startTime") or now_rfc3339()
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.volumes_ready = False
        self._stop = threading.Event()
        self._grace = 0.0
        self._delete_after_stop = False
        self._lock = threading.Lock()
        self._finished = False
        self._last_conditions: list[dict[str, Any]] = []

    # -- called from the agent's watch loop -------------------------------------------
    def request_stop(self, grace_seconds: float, delete: bool) -> bool:
        """Kill the pod's processes (SIGTERM, then SIGKILL after the grace period).

        With ``delete``, the pod is then deleted with grace 0. False when the runner has
        already finished: the caller must delete the pod itself.
        """
        with self._lock:
            if self._finished:
                return False
            self._grace = min(max(grace_seconds, 0.0), 30.0)
            self._delete_after_stop = delete
            self._stop.set()
            return True

    def kill_now(self) -> None:
        for container in self.containers:
            if container.process is not None:
                _signal_group(container.process.pid, signal.SIGKILL)

    # -- the pod's life ------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception:  # noqa: BLE001 - a broken pod must not take the agent down
            log.exception("pod %s/%s: agent error", self.namespace, self.pod_name)
            self.phase, self.reason, self.message = "Failed", "NodeAgentError", "the test node agent failed; see its log"
            self._report()
        finally:
            self._kill_all(self._grace)
            with self._lock:
                self._finished = True
        if self._delete_after_stop:
            delete_pod_now(self.core, self.namespace, self.pod_name, self.uid)

    def _run(self) -> None:
        if self.pod["spec"].get("initContainers"):
            self.phase, self.reason = "Failed", "UnsupportedByNodeAgent"
            self.message = "the retune test node agent does not run initContainers"
            self._report()
            return
        self._report()
        if not self._prepare():
            return
        self.volumes_ready = True
        self.started_monotonic = time.monotonic()
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        for container in self.containers:
            self._start(container)
        self._report()
        while not self._stop.wait(TICK_SECONDS):
            if deadline is not None and time.monotonic() - self.started_monotonic >= deadline:
                self._kill_all(grace=2.0)
                self._collect_exits(allow_restart=False)
                self.phase, self.reason, self.message = "Failed", "DeadlineExceeded", DEADLINE_MESSAGE
                self._report()
                return
            changed = self._collect_exits(allow_restart=True)
            changed |= self._restart_due()
            if all(c.done for c in self.containers):
                failed = any(c.state["terminated"]["exitCode"] != 0 for c in self.containers)
                self.phase = "Failed" if failed else "Succeeded"
                self._report()
                return
            if changed:
                self._report()

    def _prepare(self) -> bool:
        """Materialise volumes and env; retried like a kubelet until it works or the pod goes."""
        while True:
            try:
                self._materialise_volumes()
                for container in self.containers:
                    container.variables = self._declared_env(container)
                    container.env = self._process_env(container)
                return True
            except NotReadyYet as missing:
                for container in self.containers:
                    container.state = {"waiting": {"reason": missing.reason, "message": missing.message}}
                self._report()
            if self._stop.wait(1.0):
                return False

    # -- volumes and environment ---------------------------------------------------------
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

    def _write_keys(self, target: Path, source: dict[str, Any], kind: str, default_mode: int) -> None:
        name = source.get("name") or source.get("secretName") or ""
        data = self._read(kind, name, bool(source.get("optional")))
        if data is None:
            return
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        for item in items:
            if item["key"] not in data:
                if source.get("optional"):
                    continue
                raise NotReadyYet("CreateContainerConfigError", f'key "{item["key"]}" not found in {kind} "{name}"')
            _write_file(target / item["path"], data[item["key"]], item.get("mode", default_mode))

    def _materialise_volumes(self) -> None:
        for volume in self.pod["spec"].get("volumes") or []:
            target = self.dir / "volumes" / volume["name"]
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            if "configMap" in volume:
                source = volume["configMap"]
                self._write_keys(target, source, "configMap", source.get("defaultMode", 0o644))
            elif "secret" in volume:
                source = volume["secret"]
                self._write_keys(target, source, "secret", source.get("defaultMode", 0o644))
            elif "downwardAPI" in volume:
                self._write_downward(target, volume["downwardAPI"].get("items") or [])
            elif "projected" in volume:
                for source in volume["projected"].get("sources") or []:
                    if "configMap" in source:
                        self._write_keys(target, source["configMap"], "configMap", 0o644)
                    elif "secret" in source:
                        self._write_keys(target, source["secret"], "secret", 0o644)
                    elif "downwardAPI" in source:
                        self._write_downward(target, source["downwardAPI"].get("items") or [])
            elif "hostPath" in volume:
                target.rmdir()
                target.symlink_to(volume["hostPath"]["path"])
            elif "emptyDir" not in volume:
                log.info("pod %s/%s: volume %s: unsupported type, mounted empty", self.namespace, self.pod_name, volume["name"])
        for container in self.containers:
            self._mount(container)

    def _write_downward(self, target: Path, items: list[dict[str, Any]]) -> None:
        for item in items:
            if "fieldRef" in item:
                value = _field_value(self.pod, item["fieldRef"]["fieldPath"])
                _write_file(target / item["path"], value.encode(), item.get("mode", 0o644))

    def _mount(self, container: Container) -> None:
        """Lay out the container's root: its volume mounts and its termination-log file."""
        shutil.rmtree(container.root, ignore_errors=True)
        container.root.mkdir(parents=True)
        for mount in container.spec.get("volumeMounts") or []:
            source = self.dir / "volumes" / mount["name"]
            if mount.get("subPath"):
                source = source / mount["subPath"]
            where = container.root / mount["mountPath"].lstrip("/")
            where.parent.mkdir(parents=True, exist_ok=True)
            if not where.exists():
                where.symlink_to(source)
        container.message_path.parent.mkdir(parents=True, exist_ok=True)
        container.message_path.write_bytes(b"")
        container.log_path.parent.mkdir(parents=True, exist_ok=True)
        workdir = container.root / (container.spec.get("workingDir") or "/").lstrip("/")
        workdir.mkdir(parents=True, exist_ok=True)

    def _declared_env(self, container: Container) -> dict[str, str]:
        """The container's ``envFrom`` and ``env`` variables, resolved."""
        declared: dict[str, str] = {}
        for source in container.spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            ref_kind = "configMap" if "configMapRef" in source else "secret"
            ref = source.get("configMapRef") or source.get("secretRef") or {}
            data = self._read(ref_kind, ref["name"], bool(ref.get("optional"))) or {}
            declared.update({prefix + key: value.decode() for key, value in data.items()})
        for var in container.spec.get("env") or []:
            declared[var["name"]] = self._env_value(var, declared)
        return declared

    def _process_env(self, container: Container) -> dict[str, str]:
        """Environment of the process: the agent's, then the pod's env vars."""
        env = dict(os.environ)
        interpreter_bin = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([interpreter_bin, env.get("PATH", os.defpath)])
        env["HOSTNAME"] = self.pod_name
        env["RETUNE_PATH_PREFIX"] = str(container.root)
        env.update(container.variables)
        return env

    def _env_value(self, var: dict[str, Any], declared: dict[str, str]) -> str:
        if "value" in var:
            return expand(var["value"] or "", declared)
        source = var.get("valueFrom") or {}
        if "fieldRef" in source:
            return _field_value(self.pod, source["fieldRef"]["fieldPath"])
        for kind, key in (("configMap", "configMapKeyRef"), ("secret", "secretKeyRef")):
            if key in source:
                ref = source[key]
                data = self._read(kind, ref["name"], bool(ref.get("optional"))) or {}
                if ref["key"] not in data and not ref.get("optional"):
                    raise NotReadyYet("CreateContainerConfigError", f'couldn\'t find key {ref["key"]} in {kind} {ref["name"]}')
                return data.get(ref["key"], b"").decode()
        return ""  # resourceFieldRef is not supported

    # -- processes -----------------------------------------------------------------------
    def _start(self, container: Container) -> None:
        spec = container.spec
        argv = [expand(a, container.variables) for a in (spec.get("command") or []) + (spec.get("args") or [])]
        if not spec.get("command"):
            argv = list(IDLE_COMMAND)
        executable = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=container.env["PATH"])
        started_at = now_rfc3339()
        container.restart_at = None
        if executable is None:
            message = f'exec: "{argv[0]}": executable file not found in $PATH'
            self._finish(container, 128, "StartError", message, started_at, allow_restart=True)
            return
        argv[0] = executable
        if _SETPRIV:
            argv = [_SETPRIV, "--pdeathsig=KILL", "--", *argv]
        cwd = container.root / (spec.get("workingDir") or "/").lstrip("/")
        with open(container.log_path, "ab") as log_file:
            container.process = subprocess.Popen(
                argv, cwd=cwd, env=container.env, stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        container.state = {"running": {"startedAt": started_at}}

    def _may_restart(self, exit_code: int) -> bool:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        return policy == "Always" or (policy == "OnFailure" and exit_code != 0)

    def _collect_exits(self, allow_restart: bool) -> bool:
        changed = False
        for container in self.containers:
            process = container.process
            if process is None or process.poll() is None:
                continue
            code = process.returncode if process.returncode >= 0 else 128 - process.returncode
            started = container.state.get("running", {}).get("startedAt", self.start_time)
            reason = "Completed" if code == 0 else "Error"
            self._finish(container, code, reason, self._message(container, code), started, allow_restart)
            container.state["terminated"]["containerID"] = f"retune-agent://{process.pid}"
            container.process = None
            changed = True
        return changed

    def _finish(
        self, container: Container, code: int, reason: str, message: str, started_at: str, allow_restart: bool
    ) -> None:
        """Record a container's exit, and schedule its restart if the restart policy says so."""
        container.state = _terminated(code, reason, message, started_at)
        if allow_restart and self._may_restart(code):
            backoff = min(MAX_RESTART_BACKOFF, 0.5 * 2**container.restart_count)
            container.restart_at = time.monotonic() + backoff
        else:
            container.done = True

    def _restart_due(self) -> bool:
        changed = False
        for container in self.containers:
            if container.restart_at is not None and time.monotonic() >= container.restart_at:
                container.last_state = container.state
                container.restart_count += 1
                self._start(container)
                changed = True
        return changed

    def _message(self, container: Container, exit_code: int) -> str:
        """The termination message, capped like the kubelet caps it."""
        limit = min(CONTAINER_MESSAGE_LIMIT, POD_MESSAGE_LIMIT // len(self.containers))
        try:
            with open(container.message_path, "rb") as handle:
                message = handle.read(limit)
        except OSError:
            message = b""
        if not message and exit_code != 0 and container.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            lines = container.log_path.read_bytes().splitlines()[-FALLBACK_LOG_LINES:]
            message = b"\n".join(lines)[-limit:]
        return message.decode(errors="replace")

    def _kill_all(self, grace: float) -> None:
        running = [c.process for c in self.containers if c.process is not None and c.process.poll() is None]
        for process in running:
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for process in running:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()

    # -- API -----------------------------------------------------------------------------
    def _report(self) -> None:
        """Write the pod's status the way a kubelet does (merge patch of pods/status)."""
        statuses = []
        for container in self.containers:
            running = "running" in container.state
            status: dict[str, Any] = {
                "name": container.name,
                "image": container.spec.get("image") or "none",
                "imageID": "",
                "state": container.state,
                "lastState": container.last_state,
                "ready": running,
                "started": running,
                "restartCount": container.restart_count,
            }
            if container.process is not None:
                status["containerID"] = f"retune-agent://{container.process.pid}"
            statuses.append(status)
        terminal = self.phase in ("Succeeded", "Failed")
        if not terminal and any("running" in c.state or c.restart_at is not None for c in self.containers):
            self.phase = "Running"
        all_ready = not terminal and all("running" in c.state for c in self.containers)
        ready_reason = "PodCompleted" if terminal else ("" if all_ready else "ContainersNotReady")
        conditions = [c for c in (self.pod.get("status") or {}).get("conditions") or [] if c["type"] == "PodScheduled"]
        conditions += [
            _condition("PodReadyToStartContainers", self.volumes_ready and not terminal, ""),
            _condition("Initialized", True, ""),
            _condition("ContainersReady", all_ready, ready_reason),
            _condition("Ready", all_ready, ready_reason),
        ]
        status_patch: dict[str, Any] = {
            "phase": self.phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "conditions": self._keep_transition_times(conditions),
            "containerStatuses": statuses,
            "reason": self.reason,
            "message": self.message,
        }
        try:
            self.core.patch_namespaced_pod_status(
                self.pod_name, self.namespace, {"status": status_patch}, _content_type="application/merge-patch+json"
            )
        except ApiException as error:
            if error.status == 404:
                self._stop.set()
            else:
                log.warning("pod %s/%s: status update failed: %s", self.namespace, self.pod_name, error.reason)

    def _keep_transition_times(self, conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        previous = {c["type"]: c for c in self._last_conditions}
        for condition in conditions:
            old = previous.get(condition["type"])
            if old is not None and old["status"] == condition["status"]:
                condition["lastTransitionTime"] = old["lastTransitionTime"]
        self._last_conditions = conditions
        return conditions



def delete_pod_now(core: client.CoreV1Api, namespace: str, name: str, uid: str) -> None:
    """Confirm a pod's deletion with grace period 0, as the kubelet does once it is stopped."""
    options = client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid))
    try:
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0, body=options)
    except ApiException as error:
        if error.status not in (404, 409):
            log.warning("pod %s/%s: delete failed: %s", namespace, name, error.reason)


def _terminated(code: int, reason: str, message: str, started_at: str) -> dict[str, Any]:
    state: dict[str, Any] = {"exitCode": code, "reason": reason, "startedAt": started_at, "finishedAt": now_rfc3339()}
    if message:
        state["message"] = message
    return {"terminated": state}


def _condition(kind: str, true: bool, reason: str) -> dict[str, Any]:
    condition: dict[str, Any] = {"type": kind, "status": "True" if true else "False", "lastTransitionTime": now_rfc3339()}
    if reason and not true:
        condition["reason"] = reason
    return condition


def _write_file(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
