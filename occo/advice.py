"""What a dry run tells beyond "valid": values still holding a tutorial's placeholder, and
template names that nothing defines (the sandbox renders them as empty text).

Both are warnings, not errors: the original accepted such descriptions, and a placeholder in an
implementation a filter never chooses does no harm.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Iterator, List, Mapping, Set, Tuple

from occo import plugins, templates
from occo.compiler import InfraGraph
from occo.plugins.base import string_leaves

PLACEHOLDER = re.compile(r'replace_with_\w*', re.IGNORECASE)
SECTIONS = ('resource', 'contextualisation', 'config_management', 'health_check')
#: names every node template can use besides its sections (see occo.resolution.template_context)
CONTEXT_NAMES = frozenset({
    'type', 'scaling', 'filter', 'variables', 'mappings', 'infra_id', 'infra_name', 'user_id',
    'name', 'node_id', 'cut', 'getip', 'getprivip', 'getipall', 'cmd'} | set(SECTIONS))
#: names of health-check templates (urls, mysqldbs; see occo.health.template_context)
HEALTH_NAMES = frozenset({'ip', 'node_id', 'variables', 'instance_data'})
SHOWN = 8  # placeholders named in the warning; the rest are counted


def _leaves(graph: InfraGraph, nodedefs: Mapping[str, Any]) -> Iterator[Tuple[str, str, str, str]]:
    """(node, section, path, text) of every string of every candidate implementation."""
    for name, node in graph.nodes.items():
        definition = nodedefs.get(node.type)
        if definition is None:
            continue
        for index in node.candidates:
            impl = definition.implementations[index]
            for section in SECTIONS:
                value = getattr(impl, section, None)
                for path, text in string_leaves(value or {}):
                    yield name, section, '.'.join(str(p) for p in path), text


def placeholders(graph: InfraGraph, nodedefs: Mapping[str, Any]) -> List[str]:
    """One warning naming the values that still hold a tutorial's ``replace_with_...``
    placeholder (in the description's variables or the implementations a node may get)."""
    found: Dict[str, None] = {}
    for name, node in graph.nodes.items():
        for path, text in string_leaves(node.variables):
            if PLACEHOLDER.search(text):
                found[f"node '{name}' variables.{'.'.join(str(p) for p in path)}"] = None
    for name, section, path, text in _leaves(graph, nodedefs):
        if PLACEHOLDER.search(text):
            found[f"node '{name}' {section}.{path}"] = None
    if not found:
        return []
    places = list(found)
    more = f' and {len(places) - SHOWN} more' if len(places) > SHOWN else ''
    return [f"{len(places)} value(s) still hold a tutorial's placeholder (replace_with_...): "
            f"{', '.join(places[:SHOWN])}{more}; put your own values there before building"]


def undefined_names(graph: InfraGraph, nodedefs: Mapping[str, Any]) -> List[str]:
    """A warning per template name that nothing defines: an unknown top-level name, or a
    ``variables.X`` the node's variables do not have."""
    warnings: Dict[str, None] = {}
    for name, section, path, text in _leaves(graph, nodedefs):
        if '{' not in text:
            continue
        known = HEALTH_NAMES if section == 'health_check' else CONTEXT_NAMES | _cm_names(graph, nodedefs, name)
        try:
            names, variables = _used(text)
        except Exception:  # noqa: BLE001 - a syntax error is reported by the checks
            continue
        where = f"node '{name}': {section}.{path}"
        for unknown in sorted(names - known - _globals()):
            warnings[f"{where} uses '{unknown}', which no template name defines (it renders as "
                     'empty text)'] = None
        defined = graph.nodes[name].variables
        for missing in sorted(v for v in variables if v not in defined):
            warnings[f"{where} uses variables.{missing}, which the description does not define "
                     '(it renders as empty text)'] = None
    return list(warnings)


def _cm_names(graph: InfraGraph, nodedefs: Mapping[str, Any], node: str) -> Set[str]:
    names: Set[str] = set()
    definition = nodedefs.get(graph.nodes[node].type)
    for index in graph.nodes[node].candidates if definition else ():
        impl = definition.implementations[index]
        cls = plugins.plugin_class(plugins.CONFIG_MANAGERS, impl.config_manager_type)
        try:
            names |= set(cls.template_variables(impl.config_management))
        except Exception:  # noqa: BLE001 - an unrendered section: take what can be known
            continue
    return names


def _globals() -> Set[str]:
    return set(templates.environment().globals)


def _used(text: str) -> Tuple[Set[str], Set[str]]:
    """The undeclared top-level names of a template, and the literal ``X`` of each
    ``variables.X`` / ``variables['X']`` it reads."""
    from jinja2 import meta, nodes
    tree = templates.environment().parse(text)
    used = set(meta.find_undeclared_variables(tree))
    variables = set()
    for getattr_node in tree.find_all(nodes.Getattr):
        if isinstance(getattr_node.node, nodes.Name) and getattr_node.node.name == 'variables':
            variables.add(getattr_node.attr)
    for item in tree.find_all(nodes.Getitem):
        if (isinstance(item.node, nodes.Name) and item.node.name == 'variables'
                and isinstance(item.arg, nodes.Const) and isinstance(item.arg.value, str)):
            variables.add(item.arg.value)
    if 'variables' not in used:  # a template that defines its own 'variables'
        variables = set()
    return used, variables
