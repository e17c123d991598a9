"""Nodes and where a workload's pods can go: the input of the hardware fingerprint.

Pure functions over :class:`NodeInfo`. Nodes and pod specs come from the Kubernetes API
either as client objects (``V1Node``, ``V1PodSpec``: snake_case attributes) or as plain
dicts (API JSON in camelCase, or ``to_dict()`` output in snake_case); the adapters here
accept all three, so this module never imports the Kubernetes client.

The placement rules are the scheduler's filters that depend on the node alone:
``nodeSelector``, required node affinity (``matchExpressions`` with In, NotIn, Exists,
DoesNotExist, Gt, Lt; ``matchFields`` on ``metadata.name``), taints with effect
NoSchedule/NoExecute against tolerations, and cordoned nodes. Capacity and pod
(anti-)affinity are not considered: they decide *which* matching node a pod gets, not what
hardware it can get.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_UNSCHEDULABLE_TAINT_KEY = "node.kubernetes.io/unschedulable"
_BLOCKING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})


@dataclass(frozen=True)
class Taint:
    """A node taint."""

    key: str
    value: str = ""
    effect: str = "NoSchedule"


@dataclass(frozen=True)
class Toleration:
    """A pod toleration; ``operator`` is ``Equal`` or ``Exists``; empty key or effect
    means any."""

    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: Taint) -> bool:
        """Whether this toleration lets a pod onto a node with ``taint``."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator == "Exists":
            return True
        return self.value == taint.value


@dataclass(frozen=True)
class NodeInfo:
    """What retune needs to know about a node."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    allocatable: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False


def _get(obj: Any, camel: str, snake: str | None = None) -> Any:
    """A field of an API object given as a client object or a camelCase/snake_case dict."""
    if obj is None:
        return None
    snake = snake or camel
    if isinstance(obj, Mapping):
        return obj[camel] if camel in obj else obj.get(snake)
    return getattr(obj, snake, None)


def _strings(mapping: Any) -> dict[str, str]:
    return {str(key): str(value) for key, value in (mapping or {}).items()}


def node_info(node: Any) -> NodeInfo:
    """A :class:`NodeInfo` from a ``V1Node``, an API dict, or a ``NodeInfo``."""
    if isinstance(node, NodeInfo):
        return node
    metadata, spec, status = _get(node, "metadata"), _get(node, "spec"), _get(node, "status")
    name = _get(metadata, "name")
    if not name:
        raise ValueError(f"node without metadata.name: {node!r:.200}")
    taints = tuple(
        Taint(
            key=str(_get(taint, "key") or ""),
            value=str(_get(taint, "value") or ""),
            effect=str(_get(taint, "effect") or ""),
        )
        for taint in (_get(spec, "taints") or ())
    )
    return NodeInfo(
        name=str(name),
        labels=_strings(_get(metadata, "labels")),
        allocatable=_strings(_get(status, "allocatable")),
        taints=taints,
        unschedulable=bool(_get(spec, "unschedulable")),
    )


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions``/``matchFields`` entry of a node selector term."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, value: str | None) -> bool:
        """Whether a node whose label (or field) ``key`` is ``value`` (None: absent) matches."""
        if self.operator == "In":
            return value is not None and value in self.values
        if self.operator == "NotIn":
            return value is None or value not in self.values
        if self.operator == "Exists":
            return value is not None
        if self.operator == "DoesNotExist":
            return value is None
        if self.operator in ("Gt", "Lt"):
            if value is None or len(self.values) != 1:
                return False
            try:
                have, bound = int(value), int(self.values[0])
            except ValueError:
                return False
            return have > bound if self.operator == "Gt" else have < bound
        raise ValueError(f"unknown node selector operator {self.operator!r}")


@dataclass(frozen=True)
class SelectorTerm:
    """A ``nodeSelectorTerm``: every requirement must match (an empty term matches none)."""

    expressions: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()

    def matches(self, node: NodeInfo) -> bool:
        """Whether ``node`` satisfies the term."""
        if not self.expressions and not self.fields:
            return False
        node_fields = {"metadata.name": node.name}
        return all(req.matches(node.labels.get(req.key)) for req in self.expressions) and all(
            req.matches(node_fields.get(req.key)) for req in self.fields
        )


def _requirements(items: Any) -> tuple[Requirement, ...]:
    return tuple(
        Requirement(
            key=str(_get(item, "key")),
            operator=str(_get(item, "operator")),
            values=tuple(str(value) for value in (_get(item, "values") or ())),
        )
        for item in (items or ())
    )


def _toleration(item: Any) -> Toleration:
    if isinstance(item, Toleration):
        return item
    return Toleration(
        key=str(_get(item, "key") or ""),
        operator=str(_get(item, "operator") or "Equal"),
        value=str(_get(item, "value") or ""),
        effect=str(_get(item, "effect") or ""),
    )


@dataclass(frozen=True)
class Placement:
    """The node constraints of a pod template. ``terms`` is None when there is no required
    node affinity (any node), and a tuple of ORed terms otherwise."""

    node_selector: Mapping[str, str] = field(default_factory=dict)
    terms: tuple[SelectorTerm, ...] | None = None
    tolerations: tuple[Toleration, ...] = ()

    @classmethod
    def of(
        cls,
        node_selector: Mapping[str, str] | None = None,
        affinity: Any = None,
        tolerations: Iterable[Any] | None = None,
    ) -> Placement:
        """A placement from a pod spec's ``nodeSelector``, ``affinity`` and ``tolerations``
        (client objects or dicts)."""
        node_affinity = _get(affinity, "nodeAffinity", "node_affinity")
        required = _get(
            node_affinity,
            "requiredDuringSchedulingIgnoredDuringExecution",
            "required_during_scheduling_ignored_during_execution",
        )
        terms = None
        if required is not None:
            terms = tuple(
                SelectorTerm(
                    expressions=_requirements(_get(term, "matchExpressions", "match_expressions")),
                    fields=_requirements(_get(term, "matchFields", "match_fields")),
                )
                for term in (_get(required, "nodeSelectorTerms", "node_selector_terms") or ())
            )
        return cls(
            node_selector=_strings(node_selector),
            terms=terms,
            tolerations=tuple(_toleration(item) for item in (tolerations or ())),
        )

    @classmethod
    def from_pod_spec(cls, pod_spec: Any) -> Placement:
        """The placement of a pod spec (``V1PodSpec`` or dict)."""
        return cls.of(
            node_selector=_get(pod_spec, "nodeSelector", "node_selector"),
            affinity=_get(pod_spec, "affinity"),
            tolerations=_get(pod_spec, "tolerations"),
        )

    def admits(self, node: NodeInfo) -> bool:
        """Whether the scheduler could place a pod with this placement on ``node``."""
        if any(node.labels.get(key) != value for key, value in self.node_selector.items()):
            return False
        if self.terms is not None and not any(term.matches(node) for term in self.terms):
            return False
        taints = list(node.taints)
        if node.unschedulable:
            taints.append(Taint(_UNSCHEDULABLE_TAINT_KEY, "", "NoSchedule"))
        return all(
            any(toleration.tolerates(taint) for toleration in self.tolerations)
            for taint in taints
            if taint.effect in _BLOCKING_EFFECTS
        )


def nodes_for_workload(
    nodes: Iterable[Any],
    *,
    node_selector: Mapping[str, str] | None = None,
    affinity: Any = None,
    tolerations: Iterable[Any] | None = None,
    pod_node_names: Sequence[str] = (),
) -> list[NodeInfo]:
    """The nodes whose hardware the workload runs on.

    If any of the workload's pods is bound (``pod_node_names``, the pods' ``spec.nodeName``),
    these are the nodes it runs on, whatever its constraints say now. Otherwise, the nodes
    its pods could be scheduled to under ``node_selector``, ``affinity`` and
    ``tolerations``. Order follows ``nodes``.
    """
    infos = [node_info(node) for node in nodes]
    bound = {name for name in pod_node_names if name}
    if bound:
        return [node for node in infos if node.name in bound]
    placement = Placement.of(node_selector, affinity, tolerations)
    return [node for node in infos if placement.admits(node)]
