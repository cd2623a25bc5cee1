"""Infrastructure descriptions: loading, schema checks (reference §1, §16.1), typed objects."""
from __future__ import annotations

from collections.abc import Mapping  # isinstance() against typing.Mapping is several times slower
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from occo.descriptions.common import (control_problem, label_problem, listing, node_name_problem,
                                      schema_error, suggestion)
from occo.descriptions.loader import gc_paused, load_yaml_file, load_yaml_text, locate, to_plain
from occo.redact import excerpt
from occo.schema import Limits, is_int, join, type_name

TOP_KEYS = ('user_id', 'infra_name', 'nodes', 'dependencies', 'variables')
NODE_KEYS = ('name', 'type', 'scaling', 'filter', 'variables', 'placement')
#: how a node's next instance picks among the implementations its filter allows
PLACEMENT_STRATEGIES = ('random', 'ordered', 'spread')
SCALING_KEYS = ('min', 'max')


@dataclass(frozen=True)
class Scaling:
    """Instance-count limits of a node: ``1 <= min <= max``."""

    min: int = 1
    max: int = 1

    def clamp(self, count: int) -> int:
        return max(self.min, min(self.max, count))


@dataclass
class NodeDescription:
    """One entry of ``nodes:``: abstract, cloud-independent."""

    name: str
    type: str
    scaling: Scaling = field(default_factory=Scaling)
    filter: Dict[str, Any] = field(default_factory=dict)
    variables: Dict[str, Any] = field(default_factory=dict)
    line: Optional[int] = field(default=None, compare=False)
    #: ``placement: {strategy: ...}``: one of PLACEMENT_STRATEGIES
    placement: str = 'random'


@dataclass
class Dependency:
    """``dependent`` needs ``dependee`` (built first); ``mappings`` are Chef attribute mappings."""

    dependent: str
    dependee: str
    mappings: List[Dict[str, Any]] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)
    line: Optional[int] = field(default=None, compare=False)


@dataclass
class InfraDescription:
    """A checked infrastructure description."""

    name: str
    nodes: List[NodeDescription]
    user_id: Optional[str] = None
    dependencies: List[Dependency] = field(default_factory=list)
    variables: Dict[str, Any] = field(default_factory=dict)
    source: Optional[str] = field(default=None, compare=False)
    warnings: List[str] = field(default_factory=list, compare=False)


def load_infra_description(path: str, limits: Optional[Limits] = None) -> InfraDescription:
    """Load and check the infrastructure description file at ``path``.

    :param limits: file size and instance counts allowed (defaults unless given).
    :raises YAMLFileError: if the file cannot be read or parsed, or is over the size limit.
    :raises SchemaError: naming the file, line, node and key, if it breaks the schema or the
        limits.
    """
    limits = limits or Limits()
    with gc_paused():
        return parse_infra_description(load_yaml_file(path, max_size=limits.file_size), path, limits)


def parse_infra_description_text(text: str, source: str = '<input>',
                                 limits: Optional[Limits] = None) -> InfraDescription:
    """Like :func:`load_infra_description` for YAML text (e.g. a REST request body)."""
    limits = limits or Limits()
    with gc_paused():
        return parse_infra_description(load_yaml_text(text, source, max_size=limits.file_size),
                                       source, limits)


def parse_infra_description(data: Any, source: Optional[str] = None,
                            limits: Optional[Limits] = None) -> InfraDescription:
    """Check loaded YAML ``data`` against the infrastructure-description schema and
    ``limits`` (the defaults unless given)."""
    limits = limits or Limits()

    def fail(message: str, container: Any = data, *path: Any) -> None:
        raise schema_error(message, container, path, source)

    if data is None:
        fail('the file is empty; expected an infrastructure description with infra_name, user_id, '
             'nodes and (optionally) dependencies and variables')
    if not isinstance(data, Mapping):
        fail(f'expected an infrastructure description (a mapping with infra_name, nodes, ...), '
             f'got {type_name(data)}')
    warnings = []
    for key in data:
        if key not in TOP_KEYS:
            fail(f'unknown key {excerpt(key)} in infrastructure description{suggestion(key, TOP_KEYS)} '
                 f'(allowed: {join(TOP_KEYS)})',
                 data, key)
    if 'user_id' not in data:
        warnings.append('user_id is not defined in infrastructure description '
                        '(the namespace, by default your user name, is used instead)')
    elif not isinstance(data['user_id'], str):
        fail(f"user_id must be text, got {type_name(data['user_id'])}", data, 'user_id')
    elif control_problem(data['user_id'], 'user_id'):
        fail(control_problem(data['user_id'], 'user_id'), data, 'user_id')
    if 'infra_name' not in data:
        fail('infra_name must be defined in infrastructure description')
    problem = label_problem(data['infra_name'], 'infra_name')
    if problem:
        fail(problem, data, 'infra_name')
    if 'nodes' not in data:
        fail('nodes section must be defined in infrastructure description')
    raw_nodes = data['nodes']
    if not isinstance(raw_nodes, list) or not raw_nodes:
        fail(f'nodes must be a list of at least one node (name, type, ...), got {type_name(raw_nodes)}',
             data, 'nodes')
    nodes = [_parse_node(raw, raw_nodes, index, fail, warnings, limits)
             for index, raw in enumerate(raw_nodes)]
    seen: Dict[str, int] = {}
    total = 0
    for index, node in enumerate(nodes):
        if node.name in seen:
            fail(f"node name '{node.name}' is used twice (nodes {seen[node.name] + 1} and {index + 1}); "
                 'node names must be unique', raw_nodes, index, 'name')
        seen[node.name] = index
        total += node.scaling.min
    if total > limits.instances_per_infra:
        fail(f'the nodes need {total} instances together (the sum of their scaling min), more '
             f'than the limit of {limits.instances_per_infra} instances per infrastructure; '
             'raise limits.instances_per_infra in the configuration file to allow more',
             data, 'nodes')
    variables = _variables(data, fail)
    dependencies = _parse_dependencies(data, raw_nodes, set(seen), fail)
    return InfraDescription(name=data['infra_name'], user_id=data.get('user_id'), nodes=nodes,
                            dependencies=dependencies, variables=variables, source=source,
                            warnings=warnings)


def _variables(container: Mapping[str, Any], fail: Any, *path: Any) -> Dict[str, Any]:
    value = container.get('variables')
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        fail(f'variables must be a mapping of names to values, got {type_name(value)}',
             container, 'variables')
    _check_variable_names(value, fail)
    return to_plain(value)


def _check_variable_names(value: Any, fail: Any) -> None:
    """Refuse a variable name (a mapping key, at any depth) with a control character."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            for key, sub in item.items():
                problem = control_problem(key, 'variable name')
                if problem:
                    fail(problem, item, key)
                if isinstance(sub, (Mapping, list)):
                    stack.append(sub)
        elif isinstance(item, list):
            stack.extend(sub for sub in item if isinstance(sub, (Mapping, list)))


def _parse_node(raw: Any, raw_nodes: list, index: int, fail: Any, warnings: List[str],
                limits: Limits) -> NodeDescription:
    if not isinstance(raw, Mapping):
        fail(f'node {index + 1} must be a mapping with name and type, got {type_name(raw)}',
             raw_nodes, index)
    if 'name' not in raw:
        fail(f'missing key "name" in node {index + 1}', raw_nodes, index)
    problem = node_name_problem(raw['name'])
    if problem:
        fail(problem, raw, 'name')
    name = raw['name']
    for key in raw:
        if key not in NODE_KEYS:
            fail(f"unknown key {excerpt(key)} in node '{name}'{suggestion(key, NODE_KEYS)} "
                 f'(allowed: {join(NODE_KEYS)})', raw, key)
    if 'type' not in raw:
        fail(f"missing key \"type\" in node '{name}' (the name of an imported node definition)", raw)
    if not isinstance(raw['type'], str) or not raw['type']:
        fail(f"type of node '{name}' must be the name of a node definition, got "
             f"{type_name(raw['type'])}", raw, 'type')
    problem = control_problem(raw['type'], f"type of node '{name}'")
    if problem:
        fail(problem, raw, 'type')
    node_filter = raw.get('filter')
    if node_filter is None:
        node_filter = {}
    elif not isinstance(node_filter, Mapping):
        fail(f"unknown type of filter in node '{name}' - has to be a dict! "
             '(e.g. filter: {type: ec2, instance_type: m1.small})', raw, 'filter')
    return NodeDescription(name=name, type=raw['type'],
                           scaling=_parse_scaling(raw, name, fail, warnings, limits),
                           filter=to_plain(node_filter), variables=_variables(raw, fail),
                           line=getattr(raw, 'yaml_line', None),
                           placement=_parse_placement(raw, name, fail))


def _parse_placement(raw: Mapping[str, Any], name: str, fail: Any) -> str:
    """``placement: {strategy: random | ordered | spread}`` (absent: random)."""
    placement = raw.get('placement')
    if placement is None:
        return 'random'
    example = '(e.g. placement: {strategy: ordered})'
    if not isinstance(placement, Mapping):
        fail(f"placement of node '{name}' must be a mapping with a strategy {example}, got "
             f'{type_name(placement)}', raw, 'placement')
    for key in placement:
        if key != 'strategy':
            fail(f"unknown key {excerpt(key)} in placement of node '{name}' (allowed: strategy)",
                 placement, key)
    strategy = placement.get('strategy', 'random')
    if not isinstance(strategy, str) or strategy not in PLACEMENT_STRATEGIES:
        fail(f"placement strategy of node '{name}' must be one of {join(PLACEMENT_STRATEGIES)}, "
             f'got {excerpt(strategy)}', placement, 'strategy')
    return strategy


def _parse_scaling(raw: Mapping[str, Any], name: str, fail: Any, warnings: List[str],
                   limits: Limits) -> Scaling:
    scaling = raw.get('scaling')
    if scaling is None:
        return Scaling()
    if not isinstance(scaling, Mapping):
        fail(f"scaling of node '{name}' must be a mapping with min and/or max, "
             f'got {type_name(scaling)}', raw, 'scaling')
    for key in scaling:
        if key not in SCALING_KEYS:
            fail(f"unknown key {excerpt(key)} in scaling of node '{name}' (allowed: min, max)",
                 scaling, key)
    for key in SCALING_KEYS:
        if key in scaling and not (is_int(scaling[key]) and scaling[key] >= (0 if key == 'min' else 1)):
            fail(f"scaling {key} of node '{name}' must be a whole number >= 1"
                 f"{' (0 is taken as 1)' if key == 'min' else ''}, got {excerpt(scaling[key])}",
                 scaling, key)
        if key in scaling and scaling[key] > limits.instances_per_node:
            fail(f"scaling {key} of node '{name}' is {scaling[key]}, more than the limit of "
                 f'{limits.instances_per_node} instances per node; raise '
                 'limits.instances_per_node in the configuration file to allow more', scaling, key)
    low = max(scaling.get('min', 1), 1)  # min 0 means 1, as in the original: never zero instances
    high = scaling.get('max', low)
    if high < low:  # the original raises max to min; so do we, and say so
        where, line = locate(scaling, ('max',))
        at = f'{where}:{line}: ' if where and line else f'{where}: ' if where else ''
        warnings.append(f"{at}scaling of node '{name}': max ({high}) is less than min ({low}); "
                        f'max is taken as {low}')
        high = low
    return Scaling(min=low, max=high)


def _node_ref(ref: Any, by_identity: Dict[int, str]) -> Optional[str]:
    """A dependency end: a YAML alias of a node (same object) or the node's name."""
    if isinstance(ref, str):
        return ref
    if isinstance(ref, Mapping):
        return by_identity.get(id(ref)) or (ref.get('name') if isinstance(ref.get('name'), str) else None)
    return None


def _parse_dependencies(data: Mapping[str, Any], raw_nodes: list, names: set,
                        fail: Any) -> List[Dependency]:
    raw_deps = data.get('dependencies')
    if raw_deps is None:
        return []
    if not isinstance(raw_deps, list):
        fail(f'dependencies must be a list of [dependent, dependee] pairs, got {type_name(raw_deps)}',
             data, 'dependencies')
    by_identity = {id(raw): raw['name'] for raw in raw_nodes}
    result = []
    for index, raw in enumerate(raw_deps):
        number = index + 1
        mappings: List[Dict[str, Any]] = []
        extra: Dict[str, Any] = {}
        if isinstance(raw, Mapping):
            if 'connection' not in raw:
                fail(f'undefined connection in dependency {number} '
                     '(expected connection: [dependent, dependee])', raw_deps, index)
            pair = raw['connection']
            mappings = _parse_mappings(raw, number, fail)
            extra = to_plain({k: v for k, v in raw.items() if k not in ('connection', 'mappings')})
            where = (raw, 'connection')
        else:
            pair, where = raw, (raw_deps, index)
        if not isinstance(pair, list) or len(pair) != 2:
            fail(f'dependency {number} must be a pair [dependent, dependee] of node names or '
                 f'aliases (e.g. [*S, *R]), got {type_name(pair)}', *where)
        ends = [_node_ref(ref, by_identity) for ref in pair]
        for ref, end in zip(pair, ends):
            if end is None:
                fail(f'dependency {number} must name nodes (by name or YAML alias), '
                     f'got {type_name(ref)}', *where)
            problem = control_problem(end, f'dependency {number} names node')
            if problem:
                fail(problem, *where)
            if end not in names:
                fail(f"dependency {number} names node {excerpt(end)}, which is not declared in nodes"
                     f"{suggestion(end, names)} (declared: {listing(sorted(names))})", *where)
        if ends[0] == ends[1]:
            fail(f"dependency {number}: node '{ends[0]}' cannot depend on itself", *where)
        result.append(Dependency(dependent=ends[0], dependee=ends[1], mappings=mappings, extra=extra,
                                 line=locate(raw_deps, (index,))[1]))
    return result


def _parse_mappings(raw: Mapping[str, Any], number: int, fail: Any) -> List[Dict[str, Any]]:
    """Normalise Chef attribute mappings to ``{attributes: [src, dst], synch: bool, ...}``."""
    items = raw.get('mappings')
    if items is None:
        return []
    if not isinstance(items, list):
        fail(f'mappings of dependency {number} must be a list', raw, 'mappings')
    result = []
    for index, item in enumerate(items):
        if isinstance(item, list):
            item = {'attributes': item}
        if not isinstance(item, Mapping) or not isinstance(item.get('attributes'), list) \
                or len(item['attributes']) != 2 or not all(isinstance(a, str) for a in item['attributes']):
            fail(f'mapping {index + 1} of dependency {number} must be [source, destination] or '
                 "{attributes: [source, destination], synch: false}", raw['mappings'], index)
        if not isinstance(item.get('synch', False), bool):
            fail(f'synch of mapping {index + 1} of dependency {number} must be true or false',
                 raw['mappings'], index)
        result.append(dict(to_plain(item), synch=item.get('synch', False)))
    return result
