"""Plans: what must be created and dropped to bring an infrastructure to its desired shape.

Desired: the compiled graph, each node's target instance count (stored, moved by scaling
requests, clamped to the node's limits).  Actual: the instance records and what is known of
their health.  A plan is data: it can be printed (``occopus-build --dry-run``), serialised
and tested without any cloud; the executor applies it.

Scaling requests are applied in the order they arrived, each exactly once (the original
counted an unselected scale-down twice): ``up`` adds, ``down`` removes (the youngest instance,
or the one its selector names by node id or address), ``set`` replaces the target.  A request
that would cross a limit is clamped to it, with the original's warning ("request(s) ignored,
maximum count reached").  An instance a request names is dropped even when fewer instances
are alive than the target (it is then replaced).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from occo.compiler import InfraGraph
from occo.instances import Instance

UP, DOWN, SET = 'up', 'down', 'set'


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
    waiting: Optional[str] = None  # why creates are held back (retry backoff)
    outdated: int = 0              # kept instances made from an older definition of the node
    outdated_reason: Optional[str] = None


@dataclass
class Plan:
    """Drops (run first, dependents before dependees) and creates (dependency order)."""

    infra_id: str
    infra_name: str
    nodes: List[NodePlan]
    drops: List[DropNode] = field(default_factory=list)
    creates: List[CreateNode] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class Scaling:
    """The outcome of applying scaling requests: new targets, the instances the requests
    selected for dropping, the original's warnings, and how many requests were consumed."""

    targets: Dict[str, int]
    selected: Dict[str, List[str]] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    consumed: int = 0


def describe_implementation(index: int, resource: Mapping[str, Any]) -> Dict[str, Any]:
    """A short description of a candidate implementation for plans and reports."""
    summary = {'index': index, 'type': resource.get('type')}
    for key in ('name', 'endpoint'):
        if key in resource:
            summary[key] = resource[key]
    return summary


def _matches(instance: Instance, selector: str) -> bool:
    return selector == instance.node_id or selector in instance.addresses + [instance.private_address]


def apply_requests(graph: InfraGraph, stored: Mapping[str, int],
                   requests: Sequence[Mapping[str, Any]],
                   alive: Mapping[str, Sequence[Instance]]) -> Scaling:
    """Apply pending scaling requests (oldest first) to the stored targets.

    :param stored: node name -> stored target (missing: the node's min).
    :param alive: node name -> its live instance records (what a selector can name).
    """
    targets = {name: node.scaling.clamp(stored.get(name, node.scaling.min))
               for name, node in graph.nodes.items()}
    scaling = Scaling(targets, consumed=len(requests))
    for request in requests:
        name, kind = request.get('node'), request.get('kind')
        node = graph.nodes.get(name)
        if node is None:
            scaling.warnings.append(f"Scaling: request for node '{name}' ignored: the "
                                    'infrastructure has no such node (any more)')
            continue
        low, high = node.scaling.min, node.scaling.max
        count = int(request.get('count') or 0)
        current = targets[name]
        selector = request.get('selector')
        if kind == DOWN and selector:
            taken = scaling.selected.setdefault(name, [])
            found = [r for r in alive.get(name, ()) if _matches(r, selector) and r.node_id not in taken]
            if not found:
                scaling.warnings.append(f"Scaling: no instance of node '{name}' has the id or "
                                        f"address '{selector}'; request ignored")
                continue
            if current - 1 < low:
                scaling.warnings.append(f"Scaling: request(s) ignored, minimum count ({low}) "
                                        f"reached for node '{name}'")
                continue
            taken.append(found[0].node_id)
            targets[name] = current - 1
            continue
        wanted = current + count if kind == UP else current - count if kind == DOWN else count
        if wanted > high:
            scaling.warnings.append(f"Scaling: request(s) ignored, maximum count ({high}) "
                                    f"reached for node '{name}'")
        elif wanted < low:
            scaling.warnings.append(f"Scaling: request(s) ignored, minimum count ({low}) "
                                    f"reached for node '{name}'")
        targets[name] = max(low, min(high, wanted))
    return scaling


def make_plan(graph: InfraGraph, resources: Mapping[str, Sequence[Mapping[str, Any]]],
              instances: Optional[Mapping[str, Instance]] = None,
              targets: Optional[Mapping[str, int]] = None, *,
              verdicts: Optional[Mapping[str, Optional[str]]] = None,
              selected: Optional[Mapping[str, Sequence[str]]] = None,
              held: Optional[Mapping[str, str]] = None,
              specs: Optional[Mapping[str, Mapping[str, str]]] = None) -> Plan:
    """Plan the drops and creates that bring every node of ``graph`` to its target.

    :param resources: node name -> resource section of each implementation of its type.
    :param instances: node id -> instance record (none for a new infrastructure).
    :param targets: node name -> target count, clamped to the node's scaling limits.
    :param verdicts: node id -> why the instance must be replaced (failed, shut down, ...);
        instances without a reason are alive.
    :param selected: node name -> node ids scaling requests chose to drop.
    :param held: node name -> why no instance of it may be created now (retry backoff).
    :param specs: node name -> what its instances are made from now (:func:`node_specs`):
        kept instances made from something else are counted as outdated (they stay as they
        are until ``occopus-build -i ID --replace NODE``).
    """
    instances = instances or {}
    targets = targets or {}
    verdicts = verdicts or {}
    selected = selected or {}
    held = held or {}
    specs = specs or {}
    by_node = alive_by_node(instances, {})
    plan = Plan(infra_id=graph.infra_id, infra_name=graph.infra_name, nodes=[])
    for name in sorted(set(by_node) - set(graph.nodes)):
        plan.drops += [DropNode(name, r.node_id, 'its node is no longer in the description')
                       for r in by_node[name]]
    for name in graph.order:
        node = graph.nodes[name]
        target = node.scaling.clamp(targets.get(name, node.scaling.min))
        alive = []
        for record in by_node.get(name, []):
            reason = verdicts.get(record.node_id)
            if reason:
                plan.drops.append(DropNode(name, record.node_id, reason))
            else:
                alive.append(record)
        # The instances a request named go whatever else happens; then the youngest, while
        # there are more than the target.
        chosen = set(selected.get(name, ()))
        named = [r for r in alive if r.node_id in chosen]
        plan.drops += [DropNode(name, r.node_id, 'scaled down (selected)') for r in named]
        alive = [r for r in alive if r.node_id not in chosen]
        surplus = len(alive) - target
        if surplus > 0:
            plan.drops += [DropNode(name, r.node_id, 'scaled down (youngest)')
                           for r in list(reversed(alive))[:surplus]]
            alive = alive[:len(alive) - surplus]
        missing = max(0, target - len(alive))
        stale = [r for r in (outdated_reason(i, specs.get(name)) for i in alive) if r]
        plan.nodes.append(NodePlan(
            name=name, type=node.type, target=target, existing=min(len(alive), target),
            minimum=node.scaling.min, maximum=node.scaling.max, depends_on=list(node.depends_on),
            candidates=[describe_implementation(i, resources[name][i]) for i in node.candidates
                        if i < len(resources.get(name, ()))], waiting=held.get(name) if missing else None,
            outdated=len(stale), outdated_reason=stale[0] if stale else None))
        if name not in held:
            plan.creates += [CreateNode(name, tuple(node.depends_on)) for _ in range(missing)]
    return plan


def alive_by_node(instances: Mapping[str, Instance], verdicts: Mapping[str, Any]
                  ) -> Dict[str, List[Instance]]:
    """Node name -> its instances without a verdict, oldest first."""
    by_node: Dict[str, List[Instance]] = {}
    for instance in sorted(instances.values(), key=lambda i: i.created_at or 0):
        if instance.node_id not in verdicts:
            by_node.setdefault(instance.node, []).append(instance)
    return by_node


def plan_from_state(graph: InfraGraph, resources: Mapping[str, Sequence[Mapping[str, Any]]],
                    instances: Mapping[str, Instance], targets: Mapping[str, int],
                    requests: Sequence[Mapping[str, Any]], *,
                    verdicts: Mapping[str, str], held: Optional[Mapping[str, str]] = None,
                    specs: Optional[Mapping[str, Mapping[str, str]]] = None
                    ) -> Tuple[Plan, Scaling]:
    """The plan from stored state (the dry run of an update, a report, a management pass):
    pending scaling requests applied to the stored targets, instances with a verdict
    replaced, surplus dropped, missing ones created."""
    scaling = apply_requests(graph, targets, requests, alive_by_node(instances, verdicts))
    plan = make_plan(graph, resources, instances, scaling.targets, verdicts=verdicts,
                     selected=scaling.selected, held=held, specs=specs)
    return plan, scaling


def node_specs(graph: InfraGraph, definitions: Mapping[str, Any]) -> Dict[str, Dict[str, str]]:
    """What each node's instances are made from, as short fingerprints of its type's
    definition (``definitions``: type -> definition JSON), its filter and its variables.
    An instance records the spec it was made from; one whose spec differs is outdated."""
    def digest(value: Any) -> str:
        return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]
    cache: Dict[str, str] = {}
    specs = {}
    for name, node in graph.nodes.items():
        if node.type not in cache:
            cache[node.type] = digest([node.type, definitions.get(node.type)])
        specs[name] = {'definition': cache[node.type], 'filter': digest(node.filter),
                       'variables': digest(node.variables)}
    return specs


SPEC_PARTS = {'definition': "its type's definition", 'filter': 'its filter',
              'variables': 'its variables'}


def outdated_reason(instance: Instance, spec: Optional[Mapping[str, str]]) -> Optional[str]:
    """Why ``instance`` no longer matches its node's ``spec`` (None if it does, or if either
    side is unknown: a record made before specs were kept)."""
    if not spec or not instance.spec:
        return None
    changed = [SPEC_PARTS[k] for k in SPEC_PARTS if instance.spec.get(k) != spec.get(k)]
    return ' and '.join(changed) + ' changed' if changed else None
