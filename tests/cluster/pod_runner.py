"""How the test node agent runs one pod: its processes and the status it reports.

Test-only. A container is a local process: ``command`` + ``args`` run in the agent's
environment plus the pod's env vars, with the current interpreter's bin directory first on
PATH. Absolute paths are remapped under a per-container root directory that the process
receives as ``RETUNE_PATH_PREFIX``: a volume mounted at ``/etc/retune/batch`` is a
directory at ``$RETUNE_PATH_PREFIX/etc/retune/batch``, and the termination message is read
from ``$RETUNE_PATH_PREFIX/dev/termination-log`` (or the container's own
``terminationMessagePath``). See docs/testing.md for what it does not do.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.cluster.pod_setup import NotReadyYet, PodSetup, expand
from tests.cluster.processes import signal_group

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


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Container:
    """A container's process and the status the agent reports for it."""

    spec: dict[str, Any]
    root: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0
    restart_at: float | None = None  # monotonic time of a pending restart
    done: bool = False  # terminated for good
    variables: dict[str, str] = field(default_factory=dict)  # the pod's env vars, for $(VAR)
    env: dict[str, str] = field(default_factory=dict)  # the process's whole environment
    cwd: Path | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def message_path(self) -> Path:
        """The termination-message file, remapped under the container's root."""
        path = self.spec.get("terminationMessagePath") or "/dev/termination-log"
        return self.root / path.lstrip("/")


class PodRunner(threading.Thread):
    """Runs one pod bound to one of the agent's nodes, from pickup to deletion."""

    def __init__(
        self, api: client.ApiClient, pod: dict[str, Any], workdir: Path, tmpdir: Path
    ) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.core = client.CoreV1Api(api)
        self.pod = pod
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.dir = workdir / f"{self.namespace}_{self.pod_name}_{self.uid[:8]}"
        # The pod's TMPDIR: a container's /tmp goes with it, and so does this with the pod.
        # Writable by anyone and sticky, as /tmp is, so a sandbox's unprivileged child can
        # reach the files its harness puts there.
        self.tmp = tmpdir / self.dir.name
        self.setup = PodSetup(self.core, pod, self.dir)
        self.containers = [
            Container(
                spec=spec,
                root=self.dir / "containers" / spec["name"],
                log_path=self.dir / "logs" / f"{spec['name']}.log",
            )
            for spec in pod["spec"]["containers"]
        ]
        self.started_monotonic: float | None = None
        self.start_time = (pod.get("status") or {}).get("startTime") or now_rfc3339()
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.volumes_ready = False
        # (not ``_stop``: Thread has a method of that name, which is_alive() calls)
        self._stopping = threading.Event()
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
            self._stopping.set()
            return True

    def kill_now(self) -> None:
        for container in self.containers:
            if container.process is not None:
                signal_group(container.process.pid, signal.SIGKILL)

    # -- the pod's life ------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod %s/%s: agent error", self.namespace, self.pod_name)
            self.phase, self.reason, self.message = (
                "Failed",
                "NodeAgentError",
                "the test node agent failed; see its log",
            )
            self._report()
        finally:
            self._kill_all(self._grace)
            shutil.rmtree(self.tmp, ignore_errors=True)
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
        while not self._stopping.wait(TICK_SECONDS):
            if deadline is not None and time.monotonic() - self.started_monotonic >= deadline:
                self._kill_all(grace=2.0)
                self._collect_exits(allow_restart=False)
                self.phase, self.reason, self.message = (
                    "Failed",
                    "DeadlineExceeded",
                    DEADLINE_MESSAGE,
                )
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
                self.setup.materialise_volumes()
                self.tmp.mkdir(parents=True, exist_ok=True)
                self.tmp.chmod(0o1777)
                for container in self.containers:
                    container.cwd = self.setup.lay_out_root(
                        container.root, container.spec, container.message_path
                    )
                    container.log_path.parent.mkdir(parents=True, exist_ok=True)
                    container.variables = self.setup.declared_env(container.spec)
                    container.env = self.setup.process_env(
                        container.root, container.variables, self.tmp
                    )
                return True
            except NotReadyYet as missing:
                for container in self.containers:
                    container.state = {
                        "waiting": {"reason": missing.reason, "message": missing.message}
                    }
                self._report()
            if self._stopping.wait(1.0):
                return False

    # -- processes -----------------------------------------------------------------------
    def _start(self, container: Container) -> None:
        spec = container.spec
        argv = [
            expand(a, container.variables)
            for a in (spec.get("command") or []) + (spec.get("args") or [])
        ]
        if not spec.get("command"):
            argv = list(IDLE_COMMAND)
        executable = (
            argv[0] if "/" in argv[0] else shutil.which(argv[0], path=container.env["PATH"])
        )
        started_at = now_rfc3339()
        container.restart_at = None
        if executable is None:
            message = f'exec: "{argv[0]}": executable file not found in $PATH'
            self._finish(container, _terminated(128, "StartError", message, started_at), True)
            return
        argv[0] = executable
        container.message_path.write_bytes(b"")  # each run starts with an empty message
        if _SETPRIV:
            argv = [_SETPRIV, "--pdeathsig=KILL", "--", *argv]
        with open(container.log_path, "ab") as log_file:
            container.process = subprocess.Popen(
                argv, cwd=container.cwd, env=container.env, stdin=subprocess.DEVNULL, stdout=log_file,
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
            state = _terminated(code, reason, self._message(container, code), started)
            state["terminated"]["containerID"] = f"retune-agent://{process.pid}"
            container.process = None
            self._finish(container, state, allow_restart)
            changed = True
        return changed

    def _finish(self, container: Container, state: dict[str, Any], allow_restart: bool) -> None:
        """Record a container's exit, and schedule its restart if the restart policy says so."""
        if allow_restart and self._may_restart(state["terminated"]["exitCode"]):
            backoff = min(MAX_RESTART_BACKOFF, 0.5 * 2**container.restart_count)
            container.restart_at = time.monotonic() + backoff
            container.last_state = state
            message = f"back-off {backoff:.1f}s restarting failed container={container.name}"
            container.state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
        else:
            container.state = state
            container.done = True

    def _restart_due(self) -> bool:
        changed = False
        for container in self.containers:
            if container.restart_at is not None and time.monotonic() >= container.restart_at:
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
        if (
            not message
            and exit_code != 0
            and container.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            lines = container.log_path.read_bytes().splitlines()[-FALLBACK_LOG_LINES:]
            message = b"\n".join(lines)[-limit:]
        return message.decode(errors="replace")

    def _kill_all(self, grace: float) -> None:
        running = [
            c.process for c in self.containers if c.process is not None and c.process.poll() is None
        ]
        for process in running:
            signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.0, deadline - time.monotonic()))
        for process in running:
            signal_group(process.pid, signal.SIGKILL)
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
        if not terminal and any(
            "running" in c.state or c.restart_at is not None for c in self.containers
        ):
            self.phase = "Running"
        all_ready = not terminal and all("running" in c.state for c in self.containers)
        ready_reason = "PodCompleted" if terminal else ("" if all_ready else "ContainersNotReady")
        conditions = [
            c
            for c in (self.pod.get("status") or {}).get("conditions") or []
            if c["type"] == "PodScheduled"
        ]
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
                self.pod_name,
                self.namespace,
                {"status": status_patch},
                _content_type="application/merge-patch+json",
            )
        except ApiException as error:
            if error.status == 404:
                self._stopping.set()
            else:
                log.warning(
                    "pod %s/%s: status update failed: %s",
                    self.namespace,
                    self.pod_name,
                    error.reason,
                )

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
    options = client.V1DeleteOptions(
        grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)
    )
    try:
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0, body=options)
    except ApiException as error:
        if error.status not in (404, 409):
            log.warning("pod %s/%s: delete failed: %s", namespace, name, error.reason)


def _terminated(code: int, reason: str, message: str, started_at: str) -> dict[str, Any]:
    state: dict[str, Any] = {
        "exitCode": code,
        "reason": reason,
        "startedAt": started_at,
        "finishedAt": now_rfc3339(),
    }
    if message:
        state["message"] = message
    return {"terminated": state}


def _condition(kind: str, true: bool, reason: str) -> dict[str, Any]:
    condition: dict[str, Any] = {
        "type": kind,
        "status": "True" if true else "False",
        "lastTransitionTime": now_rfc3339(),
    }
    if reason and not true:
        condition["reason"] = reason
    return condition
