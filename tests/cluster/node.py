"""A real Kubernetes node on this host: containerd, kubelet and kube-proxy, with the CNI
bridge, joined to the test control plane.

Pods scheduled to it run as real containers (runc) from images built by ``make images``
and imported into containerd (there is no registry to pull from), with real cgroup limits,
ConfigMap volumes, pod IPs on the bridge and Services through kube-proxy's iptables rules.
The node is a singleton per host (fixed ports, the host's iptables, ``/kubepods``): a lock
serialises test sessions, and :mod:`tests.cluster.host` records the host before the node
starts and restores it after — at teardown, at exit, or at the next start after a crash.

The facts behind the settings are in docs/testing.md ("The real node").
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.host import RECORD_FILE, STATE_DIR, HostRecord, restore, restore_recorded
from tests.cluster.pki import kubeconfig
from tests.cluster.processes import ManagedProcess, wait_until

POD_SUBNET = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
BRIDGE = "cni0"
HOST_FROM_PODS = "10.244.0.1"
"""The host as pods see it: the bridge's gateway address, set before the first pod so the
API server, Prometheus and the LLM stand-in can be reached from pods at a fixed address."""
PAUSE_IMAGE = "retune.dev/pause:1"
LOCK_FILE = STATE_DIR.parent / "lock" / "retune-node.lock"
LOCK_TIMEOUT = 3600.0
IMAGE_CACHE = Path(os.environ.get("RETUNE_IMAGE_CACHE", Path.home() / ".cache" / "retune-images"))
REAL_NODE_TAINT = {"key": "retune.dev/kubelet", "value": "true", "effect": "NoSchedule"}
"""Keeps pods that do not ask for the real node off it: the tests' other pods use images
that exist only in name (the node agent runs them as local processes)."""


class NodeUnavailable(RuntimeError):
    """The real node cannot run here; the message says why and what to do."""


def image_manifest() -> dict[str, Any]:
    """``make images``' manifest: image reference -> archive."""
    path = IMAGE_CACHE / "manifest.json"
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise NodeUnavailable(f"no image manifest at {path} ({error}): run 'make images'") from None
    return manifest


def check_prerequisites(bin_dir: Path) -> None:
    """Fail with one line naming what is missing."""
    if os.geteuid() != 0:
        raise NodeUnavailable("the real node needs root (kubelet, containerd, iptables)")
    for name in ("kubelet", "kube-proxy"):
        if not (bin_dir / name).is_file():
            raise NodeUnavailable(f"{bin_dir / name} is missing: run tests/cluster/build-binaries")
    for command in (
        "containerd",
        "containerd-shim-runc-v2",
        "runc",
        "ctr",
        "iptables",
        "conntrack",
    ):
        if shutil.which(command) is None:
            raise NodeUnavailable(f"{command} is not installed: run tests/cluster/install-node")
    if not Path("/usr/lib/cni/bridge").is_file():
        raise NodeUnavailable("the CNI plugins are not installed: run tests/cluster/install-node")


class KubeletNode:
    """One kubelet node named ``name``; :meth:`start` joins it, :meth:`stop` undoes it all."""

    def __init__(
        self,
        name: str,
        bin_dir: Path,
        workdir: Path,
        *,
        server: str,
        ca_cert: Path,
        kubelet_cert: tuple[Path, Path],
        proxy_cert: tuple[Path, Path],
        labels: Mapping[str, str],
        taints: list[dict[str, str]] | None = None,
    ) -> None:
        self.name = name
        self.bin_dir = bin_dir
        self.workdir = workdir
        self.server = server
        self.ca_cert = ca_cert
        self.kubelet_cert = kubelet_cert
        self.proxy_cert = proxy_cert
        self.labels = dict(labels)
        self.taints = taints if taints is not None else [REAL_NODE_TAINT]
        self.processes: list[ManagedProcess] = []
        self.images: list[str] = []
        self.startup_seconds = 0.0
        self._lock: Any = None
        self._record: HostRecord | None = None

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Take the host's node lock, record the host, start containerd, import the
        images, start kubelet and kube-proxy; return once the API says the node is Ready."""
        started = time.monotonic()
        check_prerequisites(self.bin_dir)
        manifest = image_manifest()
        self._take_lock()
        leftovers = restore_recorded()  # a previous session that died without cleaning up
        if leftovers:
            raise NodeUnavailable("could not undo a previous node: " + "; ".join(leftovers))
        self._remove_stray_bridge()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._record = HostRecord.take(self.workdir, BRIDGE, self.socket)
        self._record.save()
        # pytest interrupted (Ctrl-C, SIGTERM) may skip the fixture's teardown: undo at exit
        # too. A kill -9 leaves the record, which the next start undoes first.
        atexit.register(self._stop_at_exit)
        self._make_bridge()
        containerd = self._spawn(
            "containerd", ["containerd", "--config", str(self._containerd_config())]
        )
        wait_until(
            lambda: self._ctr("version").returncode == 0,
            30,
            "containerd to answer",
            abort=lambda: None if containerd.running else containerd.describe_exit(),
        )
        self._import_images(manifest)
        kubeconfig = self._kubeconfig("kubelet", self.kubelet_cert)
        kubelet = self._spawn("kubelet", self._kubelet_args(kubeconfig))
        self._spawn("kube-proxy", self._proxy_args())
        wait_until(
            lambda: self._healthy("http://127.0.0.1:10248/healthz"),
            60,
            "the kubelet's /healthz",
            abort=lambda: None if kubelet.running else kubelet.describe_exit(),
        )
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> list[str]:
        """Stop everything and restore the host; returns what could not be undone."""
        kubelet = [p for p in self.processes if p.name == "kubelet"]
        for process in kubelet:
            process.stop(timeout=10)
        if any(p.name == "containerd" and p.running for p in self.processes):
            # Containers and their sandboxes down through the CRI, networks torn down by CNI.
            self._crictl("rmp", "--all", "--force")
        for process in reversed(self.processes):
            process.stop(timeout=10)
        self.processes.clear()
        # Only the record this node wrote is its to delete: a start that stopped early (a
        # previous node that could not be undone) leaves that node's record for the next try.
        if self._record is not None:
            problems = restore(self._record)
            if not problems:
                RECORD_FILE.unlink(missing_ok=True)
        else:
            problems = []
        self._record = None
        self._release_lock()
        return problems

    def _stop_at_exit(self) -> None:
        if self._record is not None:
            problems = self.stop()
            if problems:
                print("the real node left the host changed: " + "; ".join(problems))

    def diagnostics(self, lines: int = 20) -> str:
        return "\n".join(
            f"--- {p.name} ({'running' if p.running else p.describe_exit()}):\n{p.log_tail(lines)}"
            for p in self.processes
        )

    # -- host lock -----------------------------------------------------------------------
    def _take_lock(self) -> None:
        LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(LOCK_FILE, "w")  # noqa: SIM115 - held for the node's lifetime
        deadline = time.monotonic() + LOCK_TIMEOUT
        announced = False
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    print(f"\nanother test session holds the real node ({LOCK_FILE}); waiting")
                    announced = True
                if time.monotonic() > deadline:
                    raise NodeUnavailable(f"{LOCK_FILE} held for over an hour") from None
                time.sleep(1)
        self._lock.write(f"{os.getpid()}\n")
        self._lock.flush()

    def _release_lock(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    # -- pieces --------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        process = ManagedProcess(
            name, argv, self.logs_dir / f"{name}.log", cwd=self.workdir, parent_death_signal="TERM"
        )
        process.start()
        self.processes.append(process)
        return process

    def _remove_stray_bridge(self) -> None:
        """A bridge with the node's gateway address and no record is a node's that lost its
        record (the host restored by hand, say): it is ours, and would stop the next one."""
        shown = subprocess.run(
            ["ip", "-o", "addr", "show", "dev", BRIDGE], capture_output=True, text=True, check=False
        )
        if shown.returncode == 0 and f" {HOST_FROM_PODS}/" in shown.stdout:
            subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)

    def _make_bridge(self) -> None:
        """The bridge with the gateway address, before any pod: the host's fixed address
        for pods (the CNI bridge plugin adopts an existing bridge)."""
        commands = [
            ["ip", "link", "add", BRIDGE, "type", "bridge"],
            ["ip", "addr", "add", f"{HOST_FROM_PODS}/24", "dev", BRIDGE],
            ["ip", "link", "set", BRIDGE, "up"],
        ]
        for argv in commands:
            result = subprocess.run(argv, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise NodeUnavailable(f"{' '.join(argv)} failed: {result.stderr.strip()}")

    def _containerd_config(self) -> Path:
        root = self.workdir / "containerd"
        cni = self.workdir / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "retune",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET, "gateway": HOST_FROM_PODS}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(cni / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (cni / "net.d" / "10-retune.conflist").write_text(json.dumps(conflist, indent=1))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[debug]
  level = "info"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # Root here lacks CAP_SYS_RESOURCE: runc cannot set a negative oom_score_adj.
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  max_container_log_line_size = 16384
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
  discard_unpacked_layers = false
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{cni / "net.d"}"
"""
        path = root / "config.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config)
        return path

    def _ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=False,
        )

    def _crictl(self, *args: str) -> subprocess.CompletedProcess[str]:
        crictl = self.bin_dir / "crictl"
        if not crictl.is_file():
            return subprocess.CompletedProcess([], 0, "", "")
        endpoint = f"unix://{self.socket}"
        return subprocess.run(
            [str(crictl), "--runtime-endpoint", endpoint, "--image-endpoint", endpoint,
             "--timeout", "20s", *args],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    def _import_images(self, manifest: dict[str, Any]) -> None:
        images = manifest.get("images") or {}
        if PAUSE_IMAGE not in images:
            raise NodeUnavailable(f"{PAUSE_IMAGE} is not among the built images: run 'make images'")
        for reference, entry in images.items():
            archive = Path(entry["archive"])
            if not archive.is_file():
                raise NodeUnavailable(f"{archive} ({reference}) is missing: run 'make images'")
            result = self._ctr("images", "import", "--no-unpack", str(archive))
            if result.returncode != 0:
                raise NodeUnavailable(f"importing {archive}: {result.stderr.strip()}")
            self.images.append(reference)
        # the sandbox image must never be garbage-collected (there is no registry to pull
        # it back from); imported images are kept by imageGCHighThresholdPercent: 100
        self._ctr("images", "label", PAUSE_IMAGE, "io.cri-containerd.pinned=pinned")

    def _kubeconfig(self, name: str, cert: tuple[Path, Path]) -> Path:
        path = self.workdir / f"{name}.kubeconfig"
        user = {"client-certificate": str(cert[0]), "client-key": str(cert[1])}
        path.write_text(yaml.safe_dump(kubeconfig(self.server, self.ca_cert, user)))
        return path

    def _kubelet_args(self, kubeconfig: Path) -> list[str]:
        endpoint = f"unix://{self.socket}"
        settings = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This host has cgroups v1 (hybrid) and swap settings the kubelet would refuse.
            "failCgroupV1": False,
            "failSwapOn": False,
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": endpoint,
            "imageServiceEndpoint": endpoint,
            "authentication": {
                "x509": {"clientCAFile": str(self.ca_cert)},
                "webhook": {"enabled": True},
                "anonymous": {"enabled": False},
            },
            "authorization": {"mode": "Webhook"},
            "address": HOST_FROM_PODS,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            # Imported images cannot be pulled back: never garbage-collect them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "podLogsDir": str(self.workdir / "pod-logs"),
            "syncFrequency": "10s",
            "nodeStatusUpdateFrequency": "4s",
            "volumeStatsAggPeriod": "10s",
            "resolvConf": "/etc/resolv.conf",
            "maxPods": 110,
            "serializeImagePulls": False,
        }
        path = self.workdir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(settings))
        labels = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        taints = ",".join(f"{t['key']}={t['value']}:{t['effect']}" for t in self.taints)
        args = [
            str(self.bin_dir / "kubelet"),
            f"--config={path}",
            f"--kubeconfig={kubeconfig}",
            f"--hostname-override={self.name}",
            f"--node-ip={HOST_FROM_PODS}",
            f"--root-dir={self.workdir / 'kubelet'}",
            f"--cert-dir={self.workdir / 'kubelet-pki'}",
            f"--node-labels={labels}",
            "--v=1",
        ]
        if taints:
            args.append(f"--register-with-taints={taints}")
        return args

    def _proxy_args(self) -> list[str]:
        kubeconfig = self._kubeconfig("kube-proxy", self.proxy_cert)
        settings = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": self.name,
            "mode": "iptables",
            "clusterCIDR": CLUSTER_CIDR,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # conntrack limits at 0: kube-proxy leaves the host's sysctls alone
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
            "iptables": {"localhostNodePorts": False},
        }
        path = self.workdir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(settings))
        return [str(self.bin_dir / "kube-proxy"), f"--config={path}", "--v=1"]

    @staticmethod
    def _healthy(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False
