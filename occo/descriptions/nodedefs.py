"""Node definitions: loading, schema checks (reference §2-§5, §7, §16.2), typed objects.

Each section is checked by the plugin its ``type`` names; the plugins own their keys.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from occo import health, plugins, templates
from occo.descriptions.common import control_problem, listing, schema_error, suggestion
from occo.descriptions.loader import MAX_FILE_SIZE, load_yaml_file, to_plain
from occo.errors import SchemaError
from occo.plugins.base import string_leaves
from occo.redact import excerpt
from occo.schema import Problem, join, type_name

PREFIX = 'node_def:'
SECTIONS = ('resource', 'config_management', 'contextualisation', 'health_check')
PLUGIN_SECTIONS = {
    'resource': (plugins.RESOURCES, 'resource type', "Missing key 'type'"),
    'config_management': (plugins.CONFIG_MANAGERS, 'config manager type', "Missing key 'type'!"),
    'contextualisation': (plugins.CONTEXTS, 'contextualisation type', "Missing key 'type'!"),
}
DEFAULT_CONTEXT = 'basic'
DEFAULT_CONFIG_MANAGER = 'dummy'


@dataclass
class Implementation:
    """One way of making a node: a resource on some cloud, and how to configure and check it."""

    resource: Dict[str, Any]
    contextualisation: Optional[Dict[str, Any]] = None
    config_management: Optional[Dict[str, Any]] = None
    health_check: Optional[Dict[str, Any]] = None

    @property
    def resource_type(self) -> str:
        return self.resource['type']

    @property
    def context_type(self) -> str:
        return (self.contextualisation or {}).get('type', DEFAULT_CONTEXT)

    @property
    def config_manager_type(self) -> str:
        return (self.config_management or {}).get('type', DEFAULT_CONFIG_MANAGER)

    def matches(self, node_filter: Mapping[str, Any]) -> bool:
        """True if every filter key is in the resource section with an equal value."""
        return all(key in self.resource and self.resource[key] == value
                   for key, value in node_filter.items())


@dataclass
class NodeDefinition:
    """``node_def:<type>``: a list of interchangeable implementations."""

    type: str
    implementations: List[Implementation]
    source: Optional[str] = field(default=None, compare=False)

    def matching(self, node_filter: Mapping[str, Any]) -> List[int]:
        """Indexes of the implementations that ``node_filter`` keeps."""
        return [i for i, impl in enumerate(self.implementations) if impl.matches(node_filter)]

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> 'NodeDefinition':
        return cls(type=data['type'], source=data.get('source'),
                   implementations=[Implementation(**impl) for impl in data['implementations']])


def load_node_definitions(path: str, max_size: int = MAX_FILE_SIZE) -> Dict[str, NodeDefinition]:
    """Load and check every node definition of the file at ``path`` (all or nothing).

    :param max_size: most bytes the file (with the files it imports) may hold.
    :raises YAMLFileError: if the file or a file it imports cannot be read or parsed, or is
        over ``max_size``.
    :raises SchemaError: for the first definition that breaks the schema.
    """
    return parse_node_definitions(load_yaml_file(path, max_size=max_size), path)


def parse_node_definitions(data: Any, source: Optional[str] = None) -> Dict[str, NodeDefinition]:
    """Check loaded YAML ``data``: a mapping of ``'node_def:<type>'`` to implementation lists."""
    if data is None:
        raise schema_error("the file is empty; expected node definitions ('node_def:<name>': "
                           'a list of implementations)', data, source=source)
    if not isinstance(data, Mapping):
        raise schema_error("expected node definitions ('node_def:<name>': a list of implementations), "
                           f'got {type_name(data)}', data, source=source)
    result = {}
    for key, value in data.items():
        if not isinstance(key, str) or not key.startswith(PREFIX) or key == PREFIX:
            raise schema_error(f"in node {excerpt(key)}: Node definition must begin with "
                               "'node_def:<nodename>'!", data, (key,), source)
        name = key[len(PREFIX):]
        problem = control_problem(name, 'node definition name')
        if problem:
            raise schema_error(problem, data, (key,), source)
        if not isinstance(value, list) or not value or not all(isinstance(i, Mapping) for i in value):
            raise schema_error(f"in node '{name}': Node definition has to be a list of dictionaries! "
                               '(one per implementation, each with a resource section)',
                               data, (key,), source)
        implementations = [_check_implementation(name, index, impl, source)
                           for index, impl in enumerate(value)]
        result[name] = NodeDefinition(type=name, implementations=implementations, source=source)
    return result


def _check_implementation(name: str, index: int, impl: Mapping[str, Any],
                          source: Optional[str]) -> Implementation:
    def fail(section: str, problem: Problem, container: Any = None) -> SchemaError:
        return schema_error(f"in '{section}' section of node '{name}'[{index}]: {problem.message}",
                            impl if container is None else container, problem.path, source)

    for key in impl:
        if key not in SECTIONS:
            raise schema_error(f"in node '{name}': Invalid section '{key}' "
                               f'(allowed: {join(SECTIONS)})', impl, (key,), source)
    if 'resource' not in impl:
        raise schema_error(f"in node '{name}'[{index}]: Missing 'resource' section! (every "
                           'implementation needs one, with at least its type)', impl, (), source)
    for section in SECTIONS:
        if section in impl and not isinstance(impl[section], Mapping):
            raise fail(section, Problem(f'the section must be a mapping, got {type_name(impl[section])}',
                                        (section,)))
    classes = {}
    sections = {section: impl[section] for section in SECTIONS if section in impl}
    for section, (group, what, missing_type) in PLUGIN_SECTIONS.items():
        if section not in impl:
            continue
        body = impl[section]
        if 'type' not in body:
            raise fail(section, Problem(missing_type), body)
        cls = plugins.plugin_class(group, body['type']) if isinstance(body['type'], str) else None
        if cls is None:
            known = plugins.plugin_names(group)
            raise fail(section, Problem(f"Unknown {what} {excerpt(body['type'])}"
                                        f"{suggestion(body['type'], known)} "
                                        f'(known: {listing(known)})', ('type',)), body)
        body = sections[section] = cls.without_blanks(body)
        problem = cls.check(body)
        if problem:
            raise fail(section, problem, body)
        classes[section] = cls
    if 'health_check' in impl:
        problem = health.check_section(impl['health_check'])
        if problem:
            raise fail('health_check', problem, impl['health_check'])
    problem = classes['resource'].check_context(sections.get('contextualisation'))
    if problem:
        context = sections.get('contextualisation')
        raise fail('contextualisation' if context is not None else 'resource', problem,
                   context if context is not None else sections['resource'])
    plain = Implementation(**{section: to_plain(body) for section, body in sections.items()})
    for section, path, text in _templates(plain, classes.get('contextualisation')):
        error = templates.syntax_error(text)
        if error is None:
            continue
        where = '.'.join(map(str, path))
        text_source = getattr(text, 'yaml_source', None)
        if text_source:  # a !text_import file: point at the line itself
            raise SchemaError(f"in '{section}' section of node '{name}'[{index}]: template syntax "
                              f'error in {where}: {error[1]}', source=text_source, line=error[0])
        raise fail(section, Problem(f'template syntax error in {where} (line {error[0]} of its '
                                    f'text): {error[1]}', path), impl[section])
    return plain


def _templates(impl: Implementation, context_cls: Any) -> Iterator[Tuple[str, Tuple[Any, ...], str]]:
    """Every Jinja template of an implementation: ``(section, path, text)``."""
    for section in ('resource', 'config_management'):
        for path, text in string_leaves(getattr(impl, section)):
            yield section, path, text
    if impl.contextualisation is not None:
        for path, text in context_cls.templates(impl.contextualisation):
            yield 'contextualisation', path, text
    if impl.health_check is not None:
        for path, text in health.templates(impl.health_check):
            yield 'health_check', path, text


def implementation_templates(impl: Implementation) -> Iterator[Tuple[str, Tuple[Any, ...], str]]:
    """Every Jinja template of a stored implementation: ``(section, path, text)``."""
    return _templates(impl, plugins.plugin_class(plugins.CONTEXTS, impl.context_type))
