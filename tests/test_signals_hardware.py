"""Nodes, placement and the hardware fingerprint."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import (
    V1Affinity,
    V1Node,
    V1NodeAffinity,
    V1NodeSelector,
    V1NodeSelectorRequirement,
    V1NodeSelectorTerm,
    V1NodeSpec,
    V1NodeStatus,
    V1ObjectMeta,
    V1PodSpec,
    V1Taint,
    V1Toleration,
)

from retune.signals import (
    HardwareFingerprint,
    NodeInfo,
    Placement,
    Taint,
    Toleration,
    hardware_context,
    node_info,
    nodes_for_workload,
)
from retune.signals.hardware import normalise_allocatable

M6I = {
    "node.kubernetes.io/instance-type": "m6i.xlarge",
    "kubernetes.io/arch": "amd64",
    "kubernetes.io/hostname": "ip-10-0-0-1",
    "topology.kubernetes.io/zone": "eu-west-1a",
}
P5 = {
    "node.kubernetes.io/instance-type": "p5.48xlarge",
    "kubernetes.io/arch": "amd64",
    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    "nvidia.com/gpu.memory": "81559",
    "nvidia.com/gfd.timestamp": "1700000000",
}
M6I_ALLOC = {"cpu": "3920m", "memory": "15163Mi", "pods": "58"}
P5_ALLOC = {"cpu": "191450m", "memory": "1967Gi", "nvidia.com/gpu": "8"}


def node(name: str, labels: dict[str, str], allocatable: dict[str, str], **extra: Any) -> NodeInfo:
    return NodeInfo(name=name, labels=labels, allocatable=allocatable, **extra)


# -- adapters ---------------------------------------------------------------------------------


def test_node_info_from_a_v1_node() -> None:
    v1 = V1Node(
        metadata=V1ObjectMeta(name="gpu-1", labels=P5),
        spec=V1NodeSpec(
            taints=[V1Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")]
        ),
        status=V1NodeStatus(allocatable=P5_ALLOC),
    )
    info = node_info(v1)
    assert info.name == "gpu-1"
    assert info.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert info.allocatable["nvidia.com/gpu"] == "8"
    assert info.taints == (Taint("nvidia.com/gpu", "present", "NoSchedule"),)
    assert not info.unschedulable


def test_node_info_from_api_json_and_from_to_dict() -> None:
    api = {
        "metadata": {"name": "n1", "labels": M6I},
        "spec": {"unschedulable": True},
        "status": {"allocatable": M6I_ALLOC},
    }
    info = node_info(api)
    assert info.unschedulable and info.allocatable["cpu"] == "3920m"
    v1 = V1Node(
        metadata=V1ObjectMeta(name="n1", labels=M6I), status=V1NodeStatus(allocatable=M6I_ALLOC)
    )
    assert node_info(v1.to_dict()).labels == M6I
    assert node_info(info) is info
    with pytest.raises(ValueError, match=r"metadata\.name"):
        node_info({"metadata": {}})


# -- fingerprint ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "quantity", "expected"),
    [
        ("cpu", "3920m", "4"),
        ("cpu", "4", "4"),
        ("cpu", "3500m", "4"),
        ("cpu", "250m", "0.2"),
        ("memory", "15163Mi", "15Gi"),
        ("memory", "16Gi", "16Gi"),
        ("memory", "512Mi", "512Mi"),
        ("memory", "16384000Ki", "16Gi"),
        ("nvidia.com/gpu", "8", "8"),
        ("nvidia.com/gpu", "0", None),
        ("cpu", "lots", "lots"),
    ],
)
def test_allocatable_is_normalised_to_machine_size(
    resource: str, quantity: str, expected: str | None
) -> None:
    assert normalise_allocatable(resource, quantity) == expected


def test_fingerprint_of_a_cpu_pool() -> None:
    fp = HardwareFingerprint.from_nodes([node("a", M6I, M6I_ALLOC), node("b", M6I, M6I_ALLOC)])
    assert fp.summary == "m6i.xlarge/amd64"
    assert fp.fingerprint.startswith("hw-") and len(fp.fingerprint) == 13
    assert len(fp.classes) == 1 and not fp.heterogeneous
    assert fp.nodes == ("a", "b")


def test_fingerprint_of_a_gpu_node_ignores_volatile_labels() -> None:
    fp = HardwareFingerprint.from_nodes([node("g", P5, P5_ALLOC)])
    assert fp.summary == "p5.48xlarge/NVIDIA-H100-80GB-HBM3x8"
    labels = dict(fp.classes[0].labels)
    assert "nvidia.com/gfd.timestamp" not in labels
    later = dict(P5, **{"nvidia.com/gfd.timestamp": "1800000000"})
    assert HardwareFingerprint.from_nodes([node("g", later, P5_ALLOC)]) == fp


def test_volatile_keys_are_excluded_even_when_asked_for() -> None:
    keys = ["node.kubernetes.io/instance-type", "kubernetes.io/hostname"]
    one = HardwareFingerprint.from_nodes([node("a", M6I, {})], keys)
    other = HardwareFingerprint.from_nodes(
        [node("b", dict(M6I, **{"kubernetes.io/hostname": "ip-10-0-0-2"}), {})], keys
    )
    assert one.fingerprint == other.fingerprint


def test_fingerprint_is_stable_and_ignores_unselected_labels_and_order() -> None:
    first = HardwareFingerprint.from_nodes([node("a", M6I, M6I_ALLOC), node("g", P5, P5_ALLOC)])
    moved = dict(M6I, **{"topology.kubernetes.io/zone": "eu-west-1b"})
    second = HardwareFingerprint.from_nodes([node("g2", P5, P5_ALLOC), node("b", moved, M6I_ALLOC)])
    assert first.fingerprint == second.fingerprint
    assert first == second  # node names are informational
    # Pinned: the hash must not change between releases or Python runs, or every target
    # would see a hardware change after an operator upgrade.
    pinned = node(
        "z",
        {"node.kubernetes.io/instance-type": "m6i.xlarge", "kubernetes.io/arch": "amd64"},
        {"cpu": "4", "memory": "16Gi"},
    )
    assert HardwareFingerprint.from_nodes([pinned]).fingerprint == "hw-c6cb6e599a"


def test_kubelet_reservations_do_not_split_a_class() -> None:
    slightly_less = {"cpu": "3900m", "memory": "15100Mi"}
    assert (
        HardwareFingerprint.from_nodes([node("a", M6I, M6I_ALLOC)]).fingerprint
        == HardwareFingerprint.from_nodes([node("b", M6I, slightly_less)]).fingerprint
    )


def test_a_heterogeneous_pool_covers_the_set_of_classes() -> None:
    arm = {"node.kubernetes.io/instance-type": "m7g.xlarge", "kubernetes.io/arch": "arm64"}
    pool = HardwareFingerprint.from_nodes([node("a", M6I, M6I_ALLOC), node("b", arm, M6I_ALLOC)])
    assert pool.heterogeneous
    assert pool.summary == "m6i.xlarge/amd64 + m7g.xlarge/arm64"
    scaled = HardwareFingerprint.from_nodes(
        [node("a", M6I, M6I_ALLOC), node("b", arm, M6I_ALLOC), node("c", arm, M6I_ALLOC)]
    )
    assert scaled.fingerprint == pool.fingerprint  # more nodes of known classes: same hardware
    only_x86 = HardwareFingerprint.from_nodes([node("a", M6I, M6I_ALLOC)])
    assert only_x86.fingerprint != pool.fingerprint


def test_hardware_changes_change_the_fingerprint() -> None:
    base = HardwareFingerprint.from_nodes([node("a", M6I, M6I_ALLOC)])
    bigger = dict(M6I, **{"node.kubernetes.io/instance-type": "m6i.2xlarge"})
    assert HardwareFingerprint.from_nodes([node("a", bigger, M6I_ALLOC)]) != base
    more_memory = dict(M6I_ALLOC, memory="31Gi")
    assert HardwareFingerprint.from_nodes([node("a", M6I, more_memory)]) != base


def test_summary_without_an_instance_type() -> None:
    bare = HardwareFingerprint.from_nodes([node("a", {"kubernetes.io/arch": "arm64"}, M6I_ALLOC)])
    assert bare.summary == "4cpu-15Gi/arm64"
    assert HardwareFingerprint.from_nodes([node("a", {}, {})]).summary == "unknown"


def test_no_nodes_is_an_error_not_a_class() -> None:
    with pytest.raises(ValueError, match="no nodes"):
        HardwareFingerprint.from_nodes([])


def test_recorded_hardware_for_local_mode() -> None:
    fp = HardwareFingerprint.from_labels(P5, allocatable={"nvidia.com/gpu": "8"})
    assert fp.summary == "p5.48xlarge/NVIDIA-H100-80GB-HBM3x8"
    assert fp.nodes == ("local",)


def test_hardware_context_for_one_class() -> None:
    fp = HardwareFingerprint.from_nodes([node("g", P5, P5_ALLOC)])
    context = hardware_context(fp)
    assert context == {
        "retune.dev/fingerprint": fp.fingerprint,
        "retune.dev/hardware": "p5.48xlarge/NVIDIA-H100-80GB-HBM3x8",
        "node.kubernetes.io/instance-type": "p5.48xlarge",
        "kubernetes.io/arch": "amd64",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        "nvidia.com/gpu.memory": "81559",
        "cpu": "191",
        "memory": "1967Gi",
        "nvidia.com/gpu": "8",
    }


def test_hardware_context_lists_differing_values_of_a_pool() -> None:
    arm = {"node.kubernetes.io/instance-type": "m7g.xlarge", "kubernetes.io/arch": "arm64"}
    context = hardware_context(
        HardwareFingerprint.from_nodes([node("a", M6I, M6I_ALLOC), node("b", arm, M6I_ALLOC)])
    )
    assert context["kubernetes.io/arch"] == "amd64,arm64"
    assert context["node.kubernetes.io/instance-type"] == "m6i.xlarge,m7g.xlarge"
    assert context["cpu"] == "4"


# -- placement --------------------------------------------------------------------------------

GPU_TAINT = Taint("nvidia.com/gpu", "present", "NoSchedule")
CLUSTER = [
    node("cpu-a", dict(M6I, **{"pool": "general", "cores": "4"}), M6I_ALLOC),
    node("cpu-b", dict(M6I, **{"pool": "general", "cores": "8"}), M6I_ALLOC),
    node("gpu-a", dict(P5, pool="gpu", cores="192"), P5_ALLOC, taints=(GPU_TAINT,)),
    node("cordoned", dict(M6I, pool="general", cores="4"), M6I_ALLOC, unschedulable=True),
]


def names(nodes: list[NodeInfo]) -> list[str]:
    return [n.name for n in nodes]


def required(*terms: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": list(term)} for term in terms]
            }
        }
    }


def test_bound_pods_decide_the_nodes() -> None:
    chosen = nodes_for_workload(
        CLUSTER, node_selector={"pool": "gpu"}, pod_node_names=["cpu-b", "gone"]
    )
    assert names(chosen) == ["cpu-b"]


def test_without_constraints_untainted_schedulable_nodes_match() -> None:
    assert names(nodes_for_workload(CLUSTER)) == ["cpu-a", "cpu-b"]


def test_node_selector() -> None:
    assert names(nodes_for_workload(CLUSTER, node_selector={"cores": "8"})) == ["cpu-b"]


def test_taints_need_tolerations() -> None:
    selector = {"pool": "gpu"}
    assert nodes_for_workload(CLUSTER, node_selector=selector) == []
    exact = [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    ]
    assert names(nodes_for_workload(CLUSTER, node_selector=selector, tolerations=exact)) == [
        "gpu-a"
    ]
    exists = [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert names(nodes_for_workload(CLUSTER, node_selector=selector, tolerations=exists)) == [
        "gpu-a"
    ]
    wrong_value = [{"key": "nvidia.com/gpu", "value": "absent"}]
    assert nodes_for_workload(CLUSTER, node_selector=selector, tolerations=wrong_value) == []
    wrong_effect = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}]
    assert nodes_for_workload(CLUSTER, node_selector=selector, tolerations=wrong_effect) == []


def test_tolerate_everything_also_reaches_cordoned_nodes() -> None:
    everything = [{"operator": "Exists"}]
    assert names(nodes_for_workload(CLUSTER, tolerations=everything)) == [
        "cpu-a",
        "cpu-b",
        "gpu-a",
        "cordoned",
    ]


def test_prefer_no_schedule_taints_do_not_block() -> None:
    soft = node("soft", M6I, M6I_ALLOC, taints=(Taint("spot", "true", "PreferNoSchedule"),))
    assert names(nodes_for_workload([soft])) == ["soft"]


@pytest.mark.parametrize(
    ("expressions", "expected"),
    [
        ([{"key": "pool", "operator": "In", "values": ["general", "other"]}], ["cpu-a", "cpu-b"]),
        ([{"key": "cores", "operator": "NotIn", "values": ["4"]}], ["cpu-b"]),
        ([{"key": "missing", "operator": "NotIn", "values": ["x"]}], ["cpu-a", "cpu-b"]),
        ([{"key": "pool", "operator": "Exists"}], ["cpu-a", "cpu-b"]),
        ([{"key": "pool", "operator": "DoesNotExist"}], []),
        ([{"key": "cores", "operator": "Gt", "values": ["4"]}], ["cpu-b"]),
        ([{"key": "cores", "operator": "Lt", "values": ["8"]}], ["cpu-a"]),
        ([{"key": "pool", "operator": "Gt", "values": ["4"]}], []),  # not an integer
        (
            [
                {"key": "pool", "operator": "In", "values": ["general"]},
                {"key": "cores", "operator": "Gt", "values": ["5"]},
            ],
            ["cpu-b"],
        ),
    ],
)
def test_required_node_affinity_operators(
    expressions: list[dict[str, Any]], expected: list[str]
) -> None:
    assert names(nodes_for_workload(CLUSTER, affinity=required(expressions))) == expected


def test_affinity_terms_are_ored_and_an_empty_term_matches_nothing() -> None:
    first = [{"key": "cores", "operator": "In", "values": ["4"]}]
    second = [{"key": "cores", "operator": "In", "values": ["8"]}]
    assert names(nodes_for_workload(CLUSTER, affinity=required(first, second))) == [
        "cpu-a",
        "cpu-b",
    ]
    assert nodes_for_workload(CLUSTER, affinity=required([])) == []


def test_match_fields_on_the_node_name() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchFields": [
                            {"key": "metadata.name", "operator": "In", "values": ["cpu-b"]}
                        ]
                    }
                ]
            }
        }
    }
    assert names(nodes_for_workload(CLUSTER, affinity=affinity)) == ["cpu-b"]


def test_placement_from_a_v1_pod_spec() -> None:
    spec = V1PodSpec(
        containers=[],
        node_selector={"pool": "gpu"},
        tolerations=[V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
        affinity=V1Affinity(
            node_affinity=V1NodeAffinity(
                required_during_scheduling_ignored_during_execution=V1NodeSelector(
                    node_selector_terms=[
                        V1NodeSelectorTerm(
                            match_expressions=[
                                V1NodeSelectorRequirement(
                                    key="cores", operator="Gt", values=["100"]
                                )
                            ]
                        )
                    ]
                )
            )
        ),
    )
    placement = Placement.from_pod_spec(spec)
    assert placement.tolerations == (Toleration("nvidia.com/gpu", "Exists", "", "NoSchedule"),)
    assert [n.name for n in CLUSTER if placement.admits(n)] == ["gpu-a"]
    # The same spec as a dict from the API, camelCase, and from to_dict(), snake_case.
    assert [n.name for n in CLUSTER if Placement.from_pod_spec(spec.to_dict()).admits(n)] == [
        "gpu-a"
    ]


def test_an_unknown_operator_is_an_error() -> None:
    with pytest.raises(ValueError, match="Near"):
        nodes_for_workload(CLUSTER, affinity=required([{"key": "a", "operator": "Near"}]))
