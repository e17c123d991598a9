"""A test-only stand-in for the kubelet of the simulated Nodes in the test cluster.

It serves the nodes registered as API objects by the fixtures (their runtime version says
``retune-node-agent``), never a real kubelet's node (``tests/cluster/node.py``).
It does two things a kubelet does, and nothing else:
- keeps each Node alive by renewing its Lease in ``kube-node-lease``;
- runs the pods the scheduler binds to those nodes as local processes
  (see ``pod_runner``), reports their status, kills them when the pod is deleted and
  then removes the pod with grace period 0.

Run by the cluster fixture as ``python -m tests.cluster.node_agent --kubeconfig ...``.
It is no sandbox: pods run with the agent's own user and environment. docs/testing.md
lists what it leaves out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.cluster.pod_runner import PodRunner, delete_pod_now

log = logging.getLogger("node-agent")

LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40
AGENT_RUNTIME = "retune-node-agent://"
WATCH_TIMEOUT_SECONDS = 30


def served_by_agent(node: client.V1Node) -> bool:
    """A simulated node (registered with the agent's runtime), not a real kubelet's."""
    info = node.status.node_info if node.status else None
    return bool(info and (info.container_runtime_version or "").startswith(AGENT_RUNTIME))


def _micro_time() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NodeAgent:
    """Watches pods bound to any node and keeps one ``PodRunner`` per live pod."""

    def __init__(
        self, api: client.ApiClient, workdir: Path, heartbeat_seconds: float, tmpdir: Path
    ) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.leases = client.CoordinationV1Api(api)
        self.workdir = workdir
        self.tmpdir = tmpdir
        self.heartbeat_seconds = heartbeat_seconds
        self.runners: dict[str, PodRunner] = {}
        self.deleting: set[str] = set()  # uids whose deletion we have already acted on
        self.stopping = threading.Event()
        self._served: dict[str, bool] = {}  # node name -> simulated by this agent

    # -- heartbeats ----------------------------------------------------------------------
    def heartbeat_forever(self) -> None:
        while not self.stopping.is_set():
            try:
                for node in self.core.list_node().items:
                    self._served[node.metadata.name] = served_by_agent(node)
                    if self._served[node.metadata.name]:
                        self._renew_lease(node)
            except Exception as error:
                log.warning("heartbeat failed: %s", error)
            self.stopping.wait(self.heartbeat_seconds)

    def _renew_lease(self, node: client.V1Node) -> None:
        name = node.metadata.name
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": _micro_time(),
        }
        try:
            self.leases.patch_namespaced_lease(
                name, LEASE_NAMESPACE, {"spec": spec}, _content_type="application/merge-patch+json"
            )
        except ApiException as error:
            if error.status != 404:
                raise
            owner = {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node.metadata.uid}
            body = {"metadata": {"name": name, "ownerReferences": [owner]}, "spec": spec}
            self.leases.create_namespaced_lease(LEASE_NAMESPACE, body)

    # -- pods ----------------------------------------------------------------------------
    def watch_forever(self) -> None:
        """List, then watch, pods with a node; relist when the watch expires or breaks."""
        while not self.stopping.is_set():
            try:
                version = self._relist()
                self._watch(version)
            except ApiException as error:
                if error.status != 410:  # 410 Gone: our resourceVersion is too old, relist
                    log.warning("pod watch failed: %s", error.reason)
                    time.sleep(1)
            except Exception as error:
                log.warning("pod watch broken: %s", error)
                time.sleep(1)

    def _relist(self) -> str:
        response = self.core.list_pod_for_all_namespaces(
            field_selector="spec.nodeName!=", _preload_content=False
        )
        listing = json.loads(response.data)
        seen = set()
        for pod in listing["items"]:
            seen.add(pod["metadata"]["uid"])
            self._handle(pod)
        for uid in set(self.runners) - seen:
            self._forget(uid)
        return str(listing["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> None:
        stream = watch.Watch().stream(
            self.core.list_pod_for_all_namespaces,
            field_selector="spec.nodeName!=",
            resource_version=version,
            timeout_seconds=WATCH_TIMEOUT_SECONDS,
            allow_watch_bookmarks=True,
        )
        for event in stream:
            pod = event["raw_object"]
            if event["type"] == "ERROR":
                if pod.get("code") == 410:
                    return
                raise RuntimeError(pod.get("message", "watch error"))
            if event["type"] == "DELETED":
                self._forget(pod["metadata"]["uid"])
            elif event["type"] in ("ADDED", "MODIFIED"):
                self._handle(pod)

    def _serves(self, node_name: str) -> bool:
        if node_name not in self._served:
            try:
                self._served[node_name] = served_by_agent(self.core.read_node(node_name))
            except ApiException:
                return False
        return self._served[node_name]

    def _handle(self, pod: dict[str, Any]) -> None:
        if not self._serves(pod["spec"]["nodeName"]):
            return  # a real kubelet's pod
        meta = pod["metadata"]
        uid = meta["uid"]
        runner = self.runners.get(uid)
        if meta.get("deletionTimestamp"):
            if uid not in self.deleting:
                self.deleting.add(uid)
                grace = float(meta.get("deletionGracePeriodSeconds") or 0)
                # Nothing left running (finished, or never started): confirm the deletion now.
                if runner is None or not runner.request_stop(grace, delete=True):
                    delete_pod_now(self.core, meta["namespace"], meta["name"], uid)
            return
        phase = (pod.get("status") or {}).get("phase")
        if runner is None and phase not in ("Succeeded", "Failed"):
            log.info(
                "pod %s/%s bound to %s: starting",
                meta["namespace"],
                meta["name"],
                pod["spec"]["nodeName"],
            )
            runner = PodRunner(self.api, pod, self.workdir, self.tmpdir)
            self.runners[uid] = runner
            runner.start()

    def _forget(self, uid: str) -> None:
        self.deleting.discard(uid)
        runner = self.runners.pop(uid, None)
        if runner is not None and runner.is_alive():
            runner.request_stop(0, delete=False)

    def shutdown(self) -> None:
        """Kill every pod's processes; pods stay in the API (the cluster is going away)."""
        self.stopping.set()
        for runner in list(self.runners.values()):
            runner.request_stop(1.0, delete=False)
        for runner in list(self.runners.values()):
            runner.join(3.0)
            runner.kill_now()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True, type=Path)
    parser.add_argument(
        "--workdir", required=True, type=Path, help="where pod directories and logs go"
    )
    parser.add_argument(
        "--tmpdir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where each pod gets its TMPDIR, removed when the pod ends",
    )
    parser.add_argument("--heartbeat-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s: %(message)s"
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(f"node agent stopped by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    args.workdir.mkdir(parents=True, exist_ok=True)
    agent = NodeAgent(
        config.new_client_from_config(str(args.kubeconfig)),
        args.workdir,
        args.heartbeat_seconds,
        args.tmpdir,
    )
    threading.Thread(target=agent.heartbeat_forever, name="heartbeat", daemon=True).start()
    log.info("node agent running; pods in %s", args.workdir)
    try:
        agent.watch_forever()
    except (SystemExit, KeyboardInterrupt) as reason:
        log.info("%s", reason)
    finally:
        agent.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
