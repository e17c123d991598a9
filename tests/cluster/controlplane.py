"""A real Kubernetes control plane, for the test suite.

etcd, kube-apiserver (RBAC on), kube-controller-manager and kube-scheduler run as local
processes with certificates made for the session. With ``real_node``, a real kubelet node
(containerd, kubelet, kube-proxy, ``tests/cluster/node.py``) is the CPU pool, and the API
server listens where its pods reach it; the node agent plays the kubelet of the simulated
nodes (the GPU pool, and nodes tests add). ``ControlPlane`` starts and stops all of it and
offers the helpers tests use: API clients, ServiceAccount credentials, nodes, pod logs.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.cluster.crds import install_crds, load_crds
from tests.cluster.node import HOST_FROM_PODS, KubeletNode
from tests.cluster.nodes import (
    DEFAULT_NODES,
    REAL_NODE,
    REAL_NODE_POOLS,
    node_manifest,
    pool_labels,
)
from tests.cluster.pki import ClusterPKI, create_pki, kubeconfig
from tests.cluster.processes import ManagedProcess, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE_CIDR = "10.0.0.0/24"
STARTUP_TIMEOUT = 60.0
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
_CLIENTS = {
    "admin": "/O=system:masters/CN=retune-admin",
    "controller-manager": "/CN=system:kube-controller-manager",
    "scheduler": "/CN=system:kube-scheduler",
    # The node agent writes pod status and Leases for every node: cluster-admin is simplest.
    "node-agent": "/O=system:masters/CN=retune-test-node-agent",
    # The real node's identities: the Node authorizer knows a kubelet by this subject.
    "kubelet": f"/O=system:nodes/CN=system:node:{REAL_NODE}",
    "kube-proxy": "/CN=system:kube-proxy",
    # The API server's own identity towards kubelets (logs, exec, port-forward).
    "apiserver-kubelet-client": "/O=system:masters/CN=kube-apiserver-kubelet-client",
}


def _free_port(taken: set[int]) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            taken.add(port)
            return port


class ControlPlane:
    """The test cluster: start it, use it from tests, stop it."""

    def __init__(
        self, bin_dir: Path, workdir: Path, crd_dirs: list[Path], *, real_node: bool = False
    ) -> None:
        self.bin_dir = bin_dir
        self.real_node: KubeletNode | None = None
        self._want_real_node = real_node
        # Simulated nodes by pool; with a real node, it is the CPU pool on its own.
        self.default_nodes = (
            {name: pool for name, pool in DEFAULT_NODES.items() if pool not in REAL_NODE_POOLS}
            if real_node
            else dict(DEFAULT_NODES)
        )
        self.workdir = workdir
        self.crd_dirs = crd_dirs
        self.processes: list[ManagedProcess] = []
        self._ports: set[int] = set()
        self.server = ""
        self.pki: ClusterPKI | None = None
        self._admin: client.ApiClient | None = None
        self.pod_tmp: Path | None = None
        self.startup_seconds = 0.0

    # -- paths ---------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (group system:masters)."""
        return self.workdir / "kubeconfigs" / "admin.yaml"

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    def binary(self, name: str) -> Path:
        """A binary of the pinned test set, e.g. ``helm``."""
        return self.bin_dir / name

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start every component and wait until the cluster schedules pods onto Ready nodes."""
        started = time.monotonic()
        self.pki = create_pki(
            self.workdir / "pki",
            _CLIENTS,
            extra_ips=[HOST_FROM_PODS] if self._want_real_node else [],
        )
        etcd_port, etcd_peer, api_port = (_free_port(self._ports) for _ in range(3))
        self.server = f"https://127.0.0.1:{api_port}"
        kubeconfigs = self._write_kubeconfigs()
        etcd = self._spawn("etcd", self._etcd_args(etcd_port, etcd_peer))
        self._wait_http(etcd, f"http://127.0.0.1:{etcd_port}/health", None)
        apiserver = self._spawn("kube-apiserver", self._apiserver_args(etcd_port, api_port))
        admin_tls = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        admin_tls.load_cert_chain(self.pki.clients["admin"].cert, self.pki.clients["admin"].key)
        # Ready includes the RBAC bootstrap: started earlier, the controller-manager and
        # scheduler would be refused their own roles and exit.
        self._wait_http(apiserver, f"{self.server}/readyz", admin_tls)
        cm_port, scheduler_port = _free_port(self._ports), _free_port(self._ports)
        controller_manager = self._spawn(
            "kube-controller-manager",
            self._controller_manager_args(kubeconfigs["controller-manager"], cm_port),
        )
        scheduler = self._spawn(
            "kube-scheduler", self._scheduler_args(kubeconfigs["scheduler"], scheduler_port)
        )
        # Pods' temporary files go outside the work directory, which the sandbox's
        # unprivileged candidates cannot traverse; removed with the node agent's pods.
        self.pod_tmp = Path(tempfile.mkdtemp(prefix="retune-pod-tmp-"))
        self.pod_tmp.chmod(0o711)
        self._spawn(
            "node-agent",
            [sys.executable, "-m", "tests.cluster.node_agent", "--kubeconfig", str(kubeconfigs["node-agent"]),
             "--workdir", str(self.workdir / "pods"), "--tmpdir", str(self.pod_tmp),
             "--heartbeat-seconds", "5"],
            cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, parent_death_signal="TERM",
        )  # fmt: skip
        # Nodes and CRDs need only the API server: register them while the others start.
        for name, pool in self.default_nodes.items():
            self.add_node(name, pool, wait=False)
        if self._want_real_node:
            self._start_real_node()
        install_crds(self.api(), load_crds(self.crd_dirs))
        anonymous_tls = ssl.create_default_context()
        anonymous_tls.check_hostname, anonymous_tls.verify_mode = False, ssl.CERT_NONE
        self._wait_http(controller_manager, f"https://127.0.0.1:{cm_port}/healthz", anonymous_tls)
        self._wait_http(scheduler, f"https://127.0.0.1:{scheduler_port}/healthz", anonymous_tls)
        for name in self.node_names:
            self._wait_schedulable(name, timeout=90 if name == REAL_NODE else 30)
        self.startup_seconds = time.monotonic() - started

    @property
    def node_names(self) -> list[str]:
        """Every node of the default set: simulated ones and the real one."""
        return [*self.default_nodes, *([REAL_NODE] if self._want_real_node else [])]

    def _start_real_node(self) -> None:
        assert self.pki is not None
        kubelet, proxy = self.pki.clients["kubelet"], self.pki.clients["kube-proxy"]
        self.real_node = KubeletNode(
            REAL_NODE,
            self.bin_dir,
            Path(tempfile.mkdtemp(prefix="retune-node-")),
            server=self.server,
            ca_cert=self.pki.ca_cert,
            kubelet_cert=(kubelet.cert, kubelet.key),
            proxy_cert=(proxy.cert, proxy.key),
            labels=pool_labels(REAL_NODE, "cpu", kubelet_sets=False),
        )
        self.real_node.start()

    def stop(self) -> None:
        """Stop every component: the node agent (and with it every pod) first, then the rest."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self.real_node is not None:
            problems = self.real_node.stop()
            if problems:
                print("\nthe real node left the host changed: " + "; ".join(problems))
        first = [p for p in self.processes if p.name == "node-agent"]
        rest = [p for p in self.processes if p.name != "node-agent"]
        for process in first:
            process.stop(timeout=10)
        for process in rest:  # nothing here is worth an orderly shutdown one by one
            process.terminate()
        for process in rest:
            process.stop(timeout=5)
        if self.pod_tmp is not None:
            shutil.rmtree(self.pod_tmp, ignore_errors=True)

    def _spawn(
        self,
        name: str,
        argv: list[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        parent_death_signal: str = "KILL",
    ) -> ManagedProcess:
        process = ManagedProcess(
            name,
            argv,
            self.logs_dir / f"{name}.log",
            cwd=cwd,
            env=env,
            parent_death_signal=parent_death_signal,
        )
        process.start()
        self.processes.append(process)
        return process

    def _wait_http(self, process: ManagedProcess, url: str, tls: ssl.SSLContext | None) -> None:
        def ok() -> bool:
            with urllib.request.urlopen(url, timeout=2, context=tls) as response:
                return bool(response.status == 200)

        def died() -> str | None:
            return None if process.running else process.describe_exit()

        wait_until(ok, STARTUP_TIMEOUT, f"{process.name} at {url}", abort=died)

    # -- component arguments -------------------------------------------------------------
    def _write_kubeconfigs(self) -> dict[str, Path]:
        assert self.pki is not None
        directory = self.kubeconfig.parent
        directory.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, cert in self.pki.clients.items():
            user = {"client-certificate": str(cert.cert), "client-key": str(cert.key)}
            paths[name] = directory / f"{name}.yaml"
            paths[name].write_text(yaml.safe_dump(kubeconfig(self.server, self.pki.ca_cert, user)))
        return paths

    def _etcd_args(self, client_port: int, peer_port: int) -> list[str]:
        client_url, peer_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
        return [
            str(self.binary("etcd")), "--name=retune-test", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=retune-test={peer_url}", "--unsafe-no-fsync", "--log-level=warn",
        ]  # fmt: skip

    def _apiserver_args(self, etcd_port: int, port: int) -> list[str]:
        assert self.pki is not None
        if self._want_real_node:
            kubelet_client = self.pki.clients["apiserver-kubelet-client"]
            # Pods reach the API server at the bridge's gateway (the `kubernetes` Service's
            # endpoint); the API server reaches kubelets for logs with its own identity.
            network = [
                "--bind-address=0.0.0.0", f"--secure-port={port}",
                f"--advertise-address={HOST_FROM_PODS}",
                f"--kubelet-client-certificate={kubelet_client.cert}",
                f"--kubelet-client-key={kubelet_client.key}",
                "--kubelet-preferred-address-types=InternalIP",
            ]  # fmt: skip
        else:
            # Loopback has no routable address; kwok's pair of flags for that case.
            network = [
                "--bind-address=127.0.0.1", f"--secure-port={port}",
                "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
            ]  # fmt: skip
        return [
            str(self.binary("kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            *network,
            f"--tls-cert-file={self.pki.serving.cert}", f"--tls-private-key-file={self.pki.serving.key}",
            f"--client-ca-file={self.pki.ca_cert}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.pki.sa_public_key}",
            f"--service-account-signing-key-file={self.pki.sa_private_key}",
            "--authorization-mode=Node,RBAC", "--allow-privileged=true",
            f"--cert-dir={self.workdir / 'pki' / 'apiserver'}", "--profiling=false",
        ]  # fmt: skip

    def _controller_manager_args(self, kubeconfig: Path, port: int) -> list[str]:
        assert self.pki is not None
        return [
            str(self.binary("kube-controller-manager")),
            f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={port}", f"--cert-dir={self.workdir / 'pki' / 'cm'}",
            f"--service-account-private-key-file={self.pki.sa_private_key}", f"--root-ca-file={self.pki.ca_cert}",
            f"--cluster-signing-cert-file={self.pki.ca_cert}", f"--cluster-signing-key-file={self.pki.ca_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--use-service-account-credentials=true",
            "--leader-elect=false", "--node-monitor-period=2s", "--profiling=false",
        ]  # fmt: skip

    def _scheduler_args(self, kubeconfig: Path, port: int) -> list[str]:
        settings = self.workdir / "kube-scheduler.yaml"
        settings.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubescheduler.config.k8s.io/v1",
                    "kind": "KubeSchedulerConfiguration",
                    "clientConnection": {"kubeconfig": str(kubeconfig)},
                    "leaderElection": {"leaderElect": False},
                }
            )
        )
        return [
            str(self.binary("kube-scheduler")), f"--config={settings}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={port}", f"--cert-dir={self.workdir / 'pki' / 'scheduler'}",
        ]  # fmt: skip

    # -- clients -------------------------------------------------------------------------
    def api(self, kubeconfig: Path | None = None) -> client.ApiClient:
        """An ApiClient for the admin (default) or for the identity in ``kubeconfig``.

        The admin client is shared; clients for other kubeconfigs are new each call.
        """
        if kubeconfig is not None:
            return config.new_client_from_config(str(kubeconfig))
        if self._admin is None:
            self._admin = config.new_client_from_config(str(self.kubeconfig))
        return self._admin

    def serviceaccount_token(
        self, namespace: str, name: str, expiration_seconds: int = 3600
    ) -> str:
        """A bound token for the ServiceAccount, from the TokenRequest API."""
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
        )
        response = client.CoreV1Api(self.api()).create_namespaced_service_account_token(
            name, namespace, request
        )
        return str(response.status.token)

    def serviceaccount_kubeconfig(self, namespace: str, name: str) -> Path:
        """A kubeconfig file that authenticates as the ServiceAccount (with a fresh token)."""
        assert self.pki is not None
        path = self.kubeconfig.parent / f"serviceaccount-{namespace}-{name}.yaml"
        user = {"token": self.serviceaccount_token(namespace, name)}
        path.write_text(yaml.safe_dump(kubeconfig(self.server, self.pki.ca_cert, user)))
        return path

    # -- nodes ---------------------------------------------------------------------------
    def add_node(
        self,
        name: str,
        pool: str = "cpu",
        *,
        labels: Mapping[str, str] | None = None,
        allocatable: Mapping[str, str] | None = None,
        taints: list[dict[str, str]] | None = None,
        wait: bool = True,
    ) -> client.V1Node:
        """Register a Node of a pool (``cpu`` or ``gpu``); by default wait until pods can land on it."""
        manifest = node_manifest(name, pool, labels=labels, allocatable=allocatable, taints=taints)
        node = client.CoreV1Api(self.api()).create_node(manifest)
        if wait:
            self._wait_schedulable(name)
        return node

    def relabel_node(self, name: str, labels: Mapping[str, str | None]) -> client.V1Node:
        """Set labels on a node; a value of None removes that label."""
        body = {"metadata": {"labels": dict(labels)}}
        return client.CoreV1Api(self.api()).patch_node(
            name, body, _content_type="application/merge-patch+json"
        )

    def remove_node(self, name: str, wait: bool = True) -> None:
        """Delete a node (its pods are left to the pod garbage collector, as in a real cluster)."""
        if self.real_node is not None and name == self.real_node.name:
            raise ValueError(f"{name} is the real kubelet node: relabel it, do not remove it")
        core = client.CoreV1Api(self.api())
        try:
            core.delete_node(name)
        except ApiException as error:
            if error.status != 404:
                raise
        if wait:
            wait_until(lambda: not self._node_exists(name), 30, f"node {name} to be deleted")

    def reset_nodes(self) -> None:
        """Bring the nodes back to the default set with their default labels."""
        core = client.CoreV1Api(self.api())
        current = {node.metadata.name: node for node in core.list_node().items}
        wanted_nodes = set(self.node_names)
        for name in set(current) - wanted_nodes:
            self.remove_node(name, wait=False)
        for name in wanted_nodes:
            pool = self.default_nodes.get(name, "cpu")
            wanted = (
                node_manifest(name, pool)["metadata"]["labels"]
                if name in self.default_nodes
                else pool_labels(name, pool, kubelet_sets=True)
            )
            if name not in current:
                self.add_node(name, pool)
                continue
            labels = current[name].metadata.labels or {}
            if labels != wanted:
                self.relabel_node(name, {**{key: None for key in labels}, **wanted})
        for name in set(current) - wanted_nodes:
            wait_until(
                lambda name=name: not self._node_exists(name), 30, f"node {name} to be deleted"
            )

    def _node_exists(self, name: str) -> bool:
        try:
            client.CoreV1Api(self.api()).read_node(name)
            return True
        except ApiException as error:
            if error.status == 404:
                return False
            raise

    def _wait_schedulable(self, name: str, timeout: float = 30) -> None:
        """The node-lifecycle controller lifts the not-ready taint once it sees the node Ready."""
        core = client.CoreV1Api(self.api())

        def untainted() -> bool:
            taints = core.read_node(name).spec.taints or []
            return not any(taint.key == NOT_READY_TAINT for taint in taints)

        wait_until(untainted, timeout, f"node {name} to lose its {NOT_READY_TAINT} taint")

    # -- diagnostics ---------------------------------------------------------------------
    def pod_log(self, namespace: str, pod: str, container: str | None = None) -> str:
        """What a pod's container wrote to stdout/stderr: from the kubelet through the API
        for the real node's pods, from the node agent's file for simulated nodes' pods."""
        core = client.CoreV1Api(self.api())
        if self.real_node is not None:
            node = core.read_namespaced_pod(pod, namespace).spec.node_name
            if node == self.real_node.name:
                return str(core.read_namespaced_pod_log(pod, namespace, container=container))
        matches = sorted((self.workdir / "pods").glob(f"{namespace}_{pod}_*/logs/*.log"))
        if container is not None:
            matches = [path for path in matches if path.stem == container]
        if not matches:
            raise FileNotFoundError(
                f"no log for pod {namespace}/{pod} container {container or '(any)'}"
            )
        return matches[-1].read_text(errors="replace")

    def diagnostics(self, lines: int = 15) -> str:
        """Where the logs are, and the end of each component's log."""
        parts = [f"test cluster work directory: {self.workdir} (component logs in {self.logs_dir})"]
        if self.real_node is not None:
            parts.append(f"real node {self.real_node.name} in {self.real_node.workdir}:")
            parts.append(self.real_node.diagnostics(lines))
        for process in self.processes:
            state = "running" if process.running else process.describe_exit()
            parts.append(f"--- {process.name} ({state}), last {lines} lines of {process.log_path}:")
            parts.append(process.log_tail(lines))
        return "\n".join(parts)

    def remove_workdir(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
