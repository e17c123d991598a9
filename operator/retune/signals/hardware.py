"""The hardware fingerprint: which class of machine the workload (and its policy) runs on.

A node's *hardware class* is the values of the spec's hardware label keys on that node
(volatile labels such as ``nvidia.com/gfd.timestamp`` are always left out), plus its
allocatable cpu, memory and ``nvidia.com/gpu``, normalised to the machine's size (whole
cores, whole GiB) so kubelet reservations and kernel differences between nodes of one
instance type do not split it.

A workload spread over several classes (a heterogeneous pool) gets one fingerprint for the
*set* of distinct classes, sorted: adding or removing nodes of a class it already has does
not change the fingerprint; a node of a new class, or the last node of a class going away,
does. The fingerprint is ``hw-`` and 10 hex digits of a SHA-256 over the canonical JSON of
the classes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from retune.signals.nodes import NodeInfo, node_info
from retune.spec.signals import DEFAULT_HARDWARE_LABEL_KEYS, VOLATILE_LABEL_KEYS
from retune.spec.units import parse_quantity

ALLOCATABLE_RESOURCES: tuple[str, ...] = ("cpu", "memory", "nvidia.com/gpu")
"""The allocatable resources that are part of a hardware class."""

INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
ARCH_LABEL = "kubernetes.io/arch"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
FINGERPRINT_KEY = "retune.dev/fingerprint"
SUMMARY_KEY = "retune.dev/hardware"

_GIB = 2.0**30
_MIB = 2.0**20


def _half_up(value: float) -> int:
    return math.floor(value + 0.5)


def normalise_allocatable(resource: str, quantity: str) -> str | None:
    """The machine-size form of one allocatable quantity, or None when it is zero.

    cpu: whole cores ("3920m" -> "4"; under one core, tenths); memory: whole GiB
    ("15963Mi" -> "16Gi"; under 1 GiB, whole MiB); ``nvidia.com/gpu``: a count. A quantity
    that does not parse is kept as written.
    """
    try:
        amount = parse_quantity(quantity)
    except ValueError:
        return quantity.strip()
    if amount <= 0:
        return None
    if resource == "cpu":
        return str(_half_up(amount)) if amount >= 1 else f"{round(amount, 1):g}"
    if resource == "memory":
        if amount >= _GIB:
            return f"{_half_up(amount / _GIB)}Gi"
        return f"{max(1, _half_up(amount / _MIB))}Mi"
    return f"{amount:g}"


@dataclass(frozen=True, order=True)
class HardwareClass:
    """One class of node: selected label values and normalised allocatable resources."""

    labels: tuple[tuple[str, str], ...]
    allocatable: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, node: NodeInfo, label_keys: Sequence[str]) -> HardwareClass:
        """The class of ``node`` under ``label_keys`` (volatile keys ignored)."""
        labels = tuple(
            sorted(
                (key, node.labels[key])
                for key in set(label_keys) - VOLATILE_LABEL_KEYS
                if key in node.labels
            )
        )
        allocatable = []
        for resource in ALLOCATABLE_RESOURCES:
            if resource in node.allocatable:
                normalised = normalise_allocatable(resource, node.allocatable[resource])
                if normalised is not None:
                    allocatable.append((resource, normalised))
        return cls(labels=labels, allocatable=tuple(allocatable))

    def canonical(self) -> dict[str, dict[str, str]]:
        """The JSON-able form that is hashed."""
        return {"labels": dict(self.labels), "allocatable": dict(self.allocatable)}

    @property
    def summary(self) -> str:
        """E.g. ``m6i.xlarge/amd64`` or ``p5.48xlarge/NVIDIA-H100-80GB-HBM3x8``."""
        labels, allocatable = dict(self.labels), dict(self.allocatable)
        if INSTANCE_TYPE_LABEL in labels:
            head = labels[INSTANCE_TYPE_LABEL]
        elif "cpu" in allocatable or "memory" in allocatable:
            head = "-".join(
                part
                for part in (
                    f"{allocatable['cpu']}cpu" if "cpu" in allocatable else "",
                    allocatable.get("memory", ""),
                )
                if part
            )
        else:
            head = "unknown"
        gpus = allocatable.get("nvidia.com/gpu")
        if gpus is not None:
            tail = f"{labels.get(GPU_PRODUCT_LABEL, 'gpu')}x{gpus}"
        else:
            tail = labels.get(ARCH_LABEL, "")
        return f"{head}/{tail}" if tail else head


@dataclass(frozen=True)
class HardwareFingerprint:
    """The hardware classes under a workload, with a stable short hash.

    Two fingerprints are equal when their classes are; ``nodes`` is informational.
    """

    classes: tuple[HardwareClass, ...]
    fingerprint: str
    summary: str
    nodes: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_nodes(
        cls, nodes: Iterable[Any], label_keys: Sequence[str] = DEFAULT_HARDWARE_LABEL_KEYS
    ) -> HardwareFingerprint:
        """The fingerprint of ``nodes`` (``NodeInfo``, ``V1Node`` or API dicts).

        Raises ``ValueError`` when there are no nodes: "no hardware" is not a class, and a
        caller must not mistake it for a hardware change.
        """
        infos = [node_info(node) for node in nodes]
        if not infos:
            raise ValueError(
                "no nodes to fingerprint: the workload has no running pods and no node matches "
                "its nodeSelector, affinity and tolerations"
            )
        classes = tuple(sorted({HardwareClass.of(node, label_keys) for node in infos}))
        canonical = json.dumps([c.canonical() for c in classes], sort_keys=True)
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:10]
        return cls(
            classes=classes,
            fingerprint=f"hw-{digest}",
            summary=" + ".join(c.summary for c in classes),
            nodes=tuple(sorted(node.name for node in infos)),
        )

    @classmethod
    def from_labels(
        cls,
        labels: Mapping[str, str],
        label_keys: Sequence[str] = DEFAULT_HARDWARE_LABEL_KEYS,
        allocatable: Mapping[str, str] | None = None,
    ) -> HardwareFingerprint:
        """The fingerprint of one machine described by its labels (local mode's recorded
        hardware)."""
        node = NodeInfo(name="local", labels=dict(labels), allocatable=dict(allocatable or {}))
        return cls.from_nodes([node], label_keys)

    @property
    def heterogeneous(self) -> bool:
        """Whether the workload spans more than one hardware class."""
        return len(self.classes) > 1


def hardware_context(fingerprint: HardwareFingerprint) -> dict[str, str]:
    """The hardware description handed to evaluators and kept in the status.

    Keys: ``retune.dev/fingerprint``, ``retune.dev/hardware`` (the summary), every
    fingerprinted label key, and the resources ``cpu``, ``memory``, ``nvidia.com/gpu``.
    In a heterogeneous pool a key whose value differs between classes lists the distinct
    values, sorted and comma-separated.
    """
    merged: dict[str, set[str]] = {}
    for hardware_class in fingerprint.classes:
        for key, value in (*hardware_class.labels, *hardware_class.allocatable):
            merged.setdefault(key, set()).add(value)
    context = {FINGERPRINT_KEY: fingerprint.fingerprint, SUMMARY_KEY: fingerprint.summary}
    for key in sorted(merged):
        context[key] = ",".join(sorted(merged[key]))
    return context
