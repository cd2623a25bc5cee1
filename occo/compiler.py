"""Compile an infrastructure description into an :class:`InfraGraph`.

The graph holds the nodes with their merged variables and candidate implementations, the
dependency edges (declared, plus those inferred from ``getip('x')``-like calls in a node's
templates), and a topological order.  Compiling needs the node definitions of the types used
but no cloud and no Redis.

Compiling is linear in the size of the description: every step works from indexes built once
(who depends on whom, which templates an implementation has and which addresses they name),
never by scanning all nodes or all edges for each node.
"""
from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from occo import templates
from occo.descriptions.common import listing, suggestion
from occo.descriptions.infra import InfraDescription, Scaling
from occo.descriptions.loader import gc_paused
from occo.descriptions.nodedefs import NodeDefinition, implementation_templates
from occo.errors import CompileError, SchemaError, TemplateError
from occo.resolution import ADDRESS_HELPERS, template_context

PLACEHOLDER_ADDRESS = '192.0.2.1'  # TEST-NET-1: never routed


@dataclass
class Edge:
    """``dependent`` needs ``dependee``; ``inferred`` edges come from templates, not the file."""

    dependent: str
    dependee: str
    inferred: bool = False
    mappings: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class GraphNode:
    """A node of the compiled graph."""

    name: str
    type: str
    scaling: Scaling
    filter: Dict[str, Any]
    variables: Dict[str, Any]
    candidates: List[int]
    depends_on: List[str] = field(default_factory=list)
    line: Optional[int] = None
    #: how the next instance picks among the candidates (see occo.placement)
    placement: str = 'random'


@dataclass
class InfraGraph:
    """A compiled infrastructure: nodes, edges and the order to build them in."""

    infra_id: str
    infra_name: str
    user_id: str
    nodes: Dict[str, GraphNode]
    edges: List[Edge]
    levels: List[List[str]]
    variables: Dict[str, Any] = field(default_factory=dict)
    source: Optional[str] = None
    warnings: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # (edge list, edges indexed, inbound, outbound): see mappings()
        self._mapping_index: Optional[Tuple[List[Edge], int, Dict[str, Dict[str, Any]],
                                            Dict[str, Dict[str, Any]]]] = None

    @property
    def order(self) -> List[str]:
        """Node names in build order: level by level, description order within a level."""
        return [name for level in self.levels for name in level]

    def mappings(self, name: str) -> Dict[str, Dict[str, List[Dict[str, Any]]]]:
        """The original's per-node ``mappings``: inbound (from dependees) and outbound.

        Answered from an index of the edges (built once, brought up to date when edges are
        appended), so asking for every node costs O(nodes + edges), not O(nodes x edges).
        """
        index = self._mapping_index
        if index is None or index[0] is not self.edges or index[1] > len(self.edges):
            index = (self.edges, 0, {}, {})
        edges, done, inbound, outbound = index
        for edge in edges[done:]:  # the last edge between two nodes wins, as in a dict display
            inbound.setdefault(edge.dependent, {})[edge.dependee] = edge.mappings
            outbound.setdefault(edge.dependee, {})[edge.dependent] = edge.mappings
        self._mapping_index = (edges, len(edges), inbound, outbound)
        return {'inbound': dict(inbound.get(name, {})), 'outbound': dict(outbound.get(name, {}))}

    def to_json(self) -> Dict[str, Any]:
        """What :func:`dataclasses.asdict` gives, faster on a big graph."""
        with gc_paused():
            return _plain(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> 'InfraGraph':
        data = dict(data)
        data['nodes'] = {name: GraphNode(**dict(n, scaling=Scaling(**n['scaling'])))
                         for name, n in data['nodes'].items()}
        data['edges'] = [Edge(**e) for e in data['edges']]
        return cls(**data)


_LEAVES = (str, int, float, bool, type(None))
_FIELDS: Dict[type, Tuple[str, ...]] = {}


def _plain(value: Any) -> Any:
    """A deep copy of ``value`` with dataclasses turned into dicts, like ``asdict``, without the
    generic checks and ``copy.deepcopy`` that ``asdict`` spends on every single value."""
    cls = value.__class__
    if cls in _LEAVES:
        return value
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    if is_dataclass(value):
        names = _FIELDS.get(cls)
        if names is None:
            names = _FIELDS[cls] = tuple(f.name for f in fields(value))
        return {name: _plain(getattr(value, name)) for name in names}
    return copy.deepcopy(value)


def merge_variables(base: Mapping[str, Any], override: Mapping[str, Any]) -> Dict[str, Any]:
    """Deep merge: nested mappings merge recursively, ``override`` wins on conflicts."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merge_variables(result[key], value)
        else:
            result[key] = value
    return result


def compile_infra(desc: InfraDescription, nodedefs: Mapping[str, NodeDefinition],
                  infra_id: Optional[str] = None, user_id: Optional[str] = None,
                  known_types: Optional[Sequence[str]] = None,
                  namespace: Optional[str] = None) -> InfraGraph:
    """Compile ``desc`` against the imported ``nodedefs`` (type name -> definition).

    ``known_types`` (every imported type) and ``namespace`` (where the definitions were looked
    up) only improve the message for a missing type.

    :raises CompileError: if a node's type is not imported, its filter matches no
        implementation, or a template asks for the address of a node that does not exist.
    :raises SchemaError: if the dependencies (declared and inferred) form a cycle.
    """
    def fail(message: str, line: Optional[int] = None) -> CompileError:
        return CompileError(message, source=desc.source, line=line)

    with gc_paused():  # hundreds of thousands of small objects for a big description
        nodes: Dict[str, GraphNode] = {}
        for node in desc.nodes:
            nodedef = nodedefs.get(node.type)
            if nodedef is None:
                known = sorted(known_types if known_types is not None else nodedefs)
                raise fail(_missing_type(node.name, node.type, known, namespace), node.line)
            candidates = nodedef.matching(node.filter)
            if not candidates:
                raise fail(f"node '{node.name}': No matching node definition: filter {node.filter} "
                           f"matches none of the {len(nodedef.implementations)} implementation(s) of "
                           f"'{node.type}' (each filter key must equal a key of the resource section)",
                           node.line)
            nodes[node.name] = GraphNode(name=node.name, type=node.type, scaling=node.scaling,
                                         filter=node.filter, line=node.line, candidates=candidates,
                                         variables=merge_variables(desc.variables, node.variables),
                                         placement=node.placement)
        edges = [Edge(d.dependent, d.dependee, mappings=d.mappings) for d in desc.dependencies]
        graph = InfraGraph(infra_id=infra_id or str(uuid.uuid4()), infra_name=desc.name,
                           user_id=user_id or desc.user_id or '', nodes=nodes, edges=edges,
                           levels=[], variables=desc.variables, source=desc.source)
        _infer_edges(graph, nodedefs, fail)
        listed: Set[Tuple[str, str]] = set()
        for edge in graph.edges:
            if (edge.dependent, edge.dependee) not in listed:
                listed.add((edge.dependent, edge.dependee))
                nodes[edge.dependent].depends_on.append(edge.dependee)
        graph.levels = _levels(graph, desc)
    return graph


def _missing_type(node: str, type_: str, known: List[str], namespace: Optional[str]) -> str:
    """Why node ``node`` cannot be compiled: no definition of ``type_`` in ``namespace``; with
    a "did you mean" for a typo and the imported types (whole names, close ones first)."""
    import difflib
    close = difflib.get_close_matches(type_, known, n=3, cutoff=0.6)
    where = f" in namespace '{namespace}'" if namespace else ''
    message = (f"node '{node}': type '{type_}' has no imported node definition{where}"
               f'{suggestion(type_, known)}')
    if known:
        message += f' (imported types{" there" if namespace else ""}: {listing(known, first=close)}'
    else:
        message += f' (nothing is imported{" there" if namespace else ""} yet'
    if namespace:
        message += ('; node definitions are kept per user namespace: import the file defining '
                    f"'node_def:{type_}' with occopus-import in this namespace, or set namespace "
                    'in the configuration to the one that holds it)')
    else:
        message += f"; import the file defining 'node_def:{type_}' with occopus-import)"
    return message


class _Recorder:
    """Stand-in address helpers that record which nodes a template asks about."""

    def __init__(self) -> None:
        self.names: Set[str] = set()

    def _record(self, name: Any = None, *args: Any, **kwargs: Any) -> str:
        if isinstance(name, str) and name:
            self.names.add(name)
        return PLACEHOLDER_ADDRESS

    def _record_all(self, name: Any = None, *args: Any, **kwargs: Any) -> List[str]:
        return [self._record(name)]

    def helpers(self) -> Dict[str, Any]:
        return {'getip': self._record, 'getprivip': self._record, 'getipall': self._record_all,
                'cmd': lambda *args, **kwargs: ''}


def _infer_edges(graph: InfraGraph, nodedefs: Mapping[str, NodeDefinition], fail: Any) -> None:
    """Add an edge for every node whose address a node's templates ask for, unless the node
    already depends on it (directly or through others), with a warning.

    Nodes are taken in description order, and an edge added for one node counts for the nodes
    after it.  The templates of an implementation, and the names each template text asks for
    literally, are worked out once however many nodes share them; only the rendering (which
    depends on each node's variables) is done per node.
    """
    nodes = graph.nodes
    needs: Dict[str, List[str]] = {}   # dependent -> dependees, of the edges so far
    for edge in graph.edges:
        needs.setdefault(edge.dependent, []).append(edge.dependee)
    templates_of: Dict[Tuple[str, int], List[str]] = {}
    literal_in: Dict[str, Set[str]] = {}
    for node in nodes.values():
        nodedef = nodedefs[node.type]
        rendered: Set[str] = set()   # names asked for when rendering with the real variables
        literal: Set[str] = set()    # getip('x') anywhere, including branches not taken
        for index in node.candidates:
            impl = nodedef.implementations[index]
            texts = templates_of.get((node.type, index))
            if texts is None:
                texts = templates_of[node.type, index] = [
                    text for section, _, text in implementation_templates(impl)
                    if section != 'health_check'  # rendered with the instance's own address only
                    and ('{{' in text or '{%' in text)]
            if not texts:
                continue
            recorder = _Recorder()
            context = template_context(
                infra_id='<infra_id>', infra_name=graph.infra_name, user_id=graph.user_id, node=node,
                node_id='<node_id>', implementation=impl, mappings=graph.mappings(node.name),
                helpers=recorder.helpers())
            for text in texts:
                names = literal_in.get(text)
                if names is None:
                    names = literal_in[text] = set().union(
                        *templates.constant_calls(text, ADDRESS_HELPERS).values())
                literal |= names
                try:
                    templates.render(text, context)
                except TemplateError:
                    pass  # reported when the node is built or rendered with --render
            rendered |= recorder.names
        for name in sorted(name for name in rendered if name not in nodes):
            raise fail(f"node '{node.name}': its templates ask for the address of node '{name}' "
                       f"(getip/getprivip/getipall), but the infrastructure has no such node "
                       f'(nodes: {listing(list(nodes))})', node.line)
        wanted = sorted(name for name in rendered | literal if name in nodes and name != node.name)
        if not wanted:
            continue
        reach = _Reach(needs, node.name)
        for name in wanted:
            if not reach(name):
                graph.edges.append(Edge(node.name, name, inferred=True))
                needs.setdefault(node.name, []).append(name)
                reach.add(name)
                graph.warnings.append(
                    f"node '{node.name}' uses the address of '{name}' in its templates but does not "
                    f"depend on it: added the dependency [{node.name}, {name}]")


class _Reach:
    """Whether ``start`` depends on a node through ``needs``, directly or transitively.

    One depth-first walk from ``start``, resumed by each question and stopped as soon as the
    answer is known: asking about many nodes costs one walk, and the usual answer (a direct
    dependency) is found at once.
    """

    def __init__(self, needs: Mapping[str, List[str]], start: str) -> None:
        self.needs = needs
        self.seen = {start}
        self.stack = [start]

    def __call__(self, goal: str) -> bool:
        seen, stack, needs = self.seen, self.stack, self.needs
        while goal not in seen and stack:
            for dependee in needs.get(stack.pop(), ()):
                if dependee not in seen:
                    seen.add(dependee)
                    stack.append(dependee)
        return goal in seen

    def add(self, dependee: str) -> None:
        """``start`` now depends on ``dependee`` too."""
        if dependee not in self.seen:
            self.seen.add(dependee)
            self.stack.append(dependee)


def _levels(graph: InfraGraph, desc: InfraDescription) -> List[List[str]]:
    """Topological levels (Kahn), description order kept within a level: a node's level is
    one more than that of its latest dependee.  O(nodes + edges), plus sorting each level.

    :raises SchemaError: naming the nodes of a cycle.
    """
    position = {name: index for index, name in enumerate(graph.nodes)}
    dependents: Dict[str, List[str]] = {name: [] for name in graph.nodes}
    waiting: Dict[str, int] = {}   # node -> how many of its dependees are not placed yet
    for name, node in graph.nodes.items():
        waiting[name] = len(node.depends_on)   # depends_on lists each dependee once
        for dependee in node.depends_on:
            dependents[dependee].append(name)
    levels: List[List[str]] = []
    level = [name for name, count in waiting.items() if not count]
    placed: Set[str] = set()
    while level:
        levels.append(level)
        placed.update(level)
        ready = []
        for name in level:
            for dependent in dependents[name]:
                waiting[dependent] -= 1
                if not waiting[dependent]:
                    ready.append(dependent)
        ready.sort(key=position.__getitem__)
        level = ready
    if len(placed) < len(graph.nodes):
        remaining = {name: {d for d in node.depends_on if d not in placed}
                     for name, node in graph.nodes.items() if name not in placed}
        cycle = _find_cycle(remaining)
        inferred = {(e.dependent, e.dependee) for e in graph.edges if e.inferred}
        chain = cycle[0] + ''.join(
            f" -> {b}" + (f" (address used in {a}'s templates)" if (a, b) in inferred else '')
            for a, b in zip(cycle, cycle[1:]))
        members = set(cycle)
        lines = [d.line for d in desc.dependencies if d.line and d.dependent in members]
        raise SchemaError(f'Cycle detected in dependencies: {chain} (each node depends on the '
                          'next; remove one of these dependencies)',
                          source=desc.source, line=min(lines) if lines else None)
    return levels


def _find_cycle(remaining: Mapping[str, Set[str]]) -> List[str]:
    """One cycle among ``remaining`` (every node there has an unmet dependency)."""
    start = next(iter(remaining))
    path: List[str] = []
    seen: Dict[str, int] = {}
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = min(remaining[node])
    return path[seen[node]:] + [node]
