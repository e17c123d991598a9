"""Node objects with the labels and capacity that real cloud nodes carry.

The test cluster has no kubelets: a Node is an API object created with its status
(Ready, allocatable), kept Ready by the node agent's Lease heartbeats, and its pods are
run by that agent. The labels follow what the cloud provider, Node Feature Discovery and
NVIDIA GPU Feature Discovery put on real nodes, so hardware fingerprinting sees the
same keys it would see in production.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

KUBERNETES_VERSION = "v1.36.3"
POOL_LABEL = "retune.dev/pool"
# A fixed discovery time keeps GFD's volatile timestamp label stable across a session.
GFD_TIMESTAMP = "1767225600"


def _common_labels(name: str, instance_type: str, zone: str) -> dict[str, str]:
    return {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": instance_type,
        "topology.kubernetes.io/region": "us-east-1",
        "topology.kubernetes.io/zone": zone,
    }


def cpu_node_labels(name: str) -> dict[str, str]:
    """An m6i.xlarge: 4 vCPU Intel Xeon (Ice Lake, family 6 model 106), 16 GiB."""
    return {
        **_common_labels(name, "m6i.xlarge", "us-east-1a"),
        "feature.node.kubernetes.io/cpu-model.vendor_id": "Intel",
        "feature.node.kubernetes.io/cpu-model.family": "6",
        "feature.node.kubernetes.io/cpu-model.id": "106",
        POOL_LABEL: "cpu",
    }


def gpu_node_labels(name: str) -> dict[str, str]:
    """A p5.48xlarge: 8 NVIDIA H100 80GB HBM3 on AMD EPYC (Milan, family 25 model 1)."""
    return {
        **_common_labels(name, "p5.48xlarge", "us-east-1b"),
        "feature.node.kubernetes.io/cpu-model.vendor_id": "AMD",
        "feature.node.kubernetes.io/cpu-model.family": "25",
        "feature.node.kubernetes.io/cpu-model.id": "1",
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        "nvidia.com/gpu.memory": "81559",
        "nvidia.com/gpu.count": "8",
        "nvidia.com/gpu.family": "hopper",
        "nvidia.com/gpu.compute.major": "9",
        "nvidia.com/gpu.compute.minor": "0",
        "nvidia.com/gfd.timestamp": GFD_TIMESTAMP,
        POOL_LABEL: "gpu",
    }


CPU_ALLOCATABLE = {"cpu": "4", "memory": "15Gi", "pods": "58", "ephemeral-storage": "100Gi"}
GPU_ALLOCATABLE = {
    "cpu": "192",
    "memory": "1980Gi",
    "pods": "110",
    "ephemeral-storage": "7Ti",
    "nvidia.com/gpu": "8",
}

POOLS: dict[str, tuple[Any, dict[str, str]]] = {
    "cpu": (cpu_node_labels, CPU_ALLOCATABLE),
    "gpu": (gpu_node_labels, GPU_ALLOCATABLE),
}

# The nodes every session starts with, and that the per-test reset restores.
DEFAULT_NODES: dict[str, str] = {"cpu-pool-0": "cpu", "cpu-pool-1": "cpu", "gpu-pool-0": "gpu"}
# With a real kubelet node (tests/cluster/node.py), it is the CPU pool on its own and has
# this name; the simulated nodes of its pool are left out.
REAL_NODE = "cpu-pool-0"
REAL_NODE_POOLS = ("cpu",)
# Labels a kubelet sets on its Node itself (and refuses to take from --node-labels).
KUBELET_LABELS = ("kubernetes.io/hostname", "kubernetes.io/os", "kubernetes.io/arch")


def pool_labels(name: str, pool: str, *, kubelet_sets: bool) -> dict[str, str]:
    """A pool's labels for node ``name``; without those the kubelet sets when not ``kubelet_sets``."""
    labels: dict[str, str] = POOLS[pool][0](name)
    if not kubelet_sets:
        labels = {k: v for k, v in labels.items() if k not in KUBELET_LABELS}
    return labels


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_manifest(
    name: str,
    pool: str = "cpu",
    *,
    labels: Mapping[str, str] | None = None,
    allocatable: Mapping[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A Node as a kubelet would register it: labels, Ready status, capacity.

    ``labels`` and ``allocatable`` are merged over the pool's defaults.
    """
    if pool not in POOLS:
        raise ValueError(f"unknown node pool {pool!r}; known pools: {', '.join(POOLS)}")
    make_labels, pool_allocatable = POOLS[pool]
    resources = {**pool_allocatable, **(allocatable or {})}
    now = _now()

    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }

    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {**make_labels(name), **(labels or {})}},
        "spec": {"taints": taints or []},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition(
                    "Ready",
                    "True",
                    "KubeletReady",
                    "retune test node agent is posting ready status",
                ),
                condition(
                    "MemoryPressure", "False", "KubeletHasSufficientMemory", "sufficient memory"
                ),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "sufficient PID"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "retune test node",
                "kernelVersion": "",
                "kubeletVersion": KUBERNETES_VERSION,
                "kubeProxyVersion": "",
                "containerRuntimeVersion": "retune-node-agent://0",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }
