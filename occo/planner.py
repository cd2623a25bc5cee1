"""Plans: what must be created and dropped to bring an infrastructure to its desired shape.

A plan is data: it can be printed (``occopus-build --dry-run``), serialised and tested without
any cloud.  The executor applies it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from occo.compiler import InfraGraph


@dataclass(frozen=True)
class CreateNode:
    """Create one instance of ``node`` once every node in ``depends_on`` is ready."""

    node: str
    depends_on: Tuple[str, ...] = ()
    action: str = 'create'


@dataclass(frozen=True)
class DropNode:
    """Destroy instance ``node_id`` of ``node`` (``reason`` says why)."""

    node: str
    node_id: str
    reason: str
    action: str = 'drop'


@dataclass
class NodePlan:
    """The desired and existing instance counts of one node."""

    name: str
    type: str
    target: int
    existing: int
    minimum: int
    maximum: int
    depends_on: List[str]
    candidates: List[Dict[str, Any]]


@dataclass
class Plan:
    """Drops (run first, dependents before dependees) and creates (dependency order)."""

    infra_id: str
    infra_name: str
    nodes: List[NodePlan]
    drops: List[DropNode] = field(default_factory=list)
    creates: List[CreateNode] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.drops and not self.creates

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


def describe_implementation(index: int, resource: Mapping[str, Any]) -> Dict[str, Any]:
    """A short description of a candidate implementation for plans and reports."""
    summary = {'index': index, 'type': resource.get('type')}
    for key in ('name', 'endpoint'):
        if key in resource:
            summary[key] = resource[key]
    return summary


def make_plan(graph: InfraGraph, resources: Mapping[str, Sequence[Mapping[str, Any]]],
              existing: Optional[Mapping[str, int]] = None,
              targets: Optional[Mapping[str, int]] = None) -> Plan:
    """Plan the creates that bring every node of ``graph`` to its target instance count.

    :param resources: node name -> resource section of each implementation of its type.
    :param existing: node name -> number of live instances (none for a new infrastructure).
    :param targets: node name -> requested instance count, clamped to the node's scaling.
    """
    existing = existing or {}
    targets = targets or {}
    nodes, creates = [], []
    for name in graph.order:
        node = graph.nodes[name]
        target = node.scaling.clamp(targets.get(name, node.scaling.min))
        have = existing.get(name, 0)
        nodes.append(NodePlan(
            name=name, type=node.type, target=target, existing=have, minimum=node.scaling.min,
            maximum=node.scaling.max, depends_on=list(node.depends_on),
            candidates=[describe_implementation(i, resources[name][i]) for i in node.candidates]))
        creates.extend(CreateNode(name, tuple(node.depends_on)) for _ in range(target - have))
    return Plan(infra_id=graph.infra_id, infra_name=graph.infra_name, nodes=nodes, creates=creates)
