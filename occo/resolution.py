"""Resolution of a node instance: choose an implementation and render its templates.

The template context is the original's (reference §6.2): ``infra_id``, ``infra_name``,
``user_id``, ``name``, ``node_id``, ``type``, ``scaling``, ``filter``, ``variables`` (infra
variables deep-merged with the node's), ``mappings``, the sections of the chosen implementation,
names a config manager adds (``puppet``), and the helpers ``getip``, ``getprivip``, ``getipall``,
``cut`` and ``cmd``.  Templates run in the sandbox of :mod:`occo.templates`.
"""
from __future__ import annotations

import json
import random
import shlex
import subprocess
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from occo import plugins, templates
from occo.errors import TemplateError
from occo.plugins.contexts.base import RenderedContext, render_tree

#: Helpers that look up other nodes' addresses; a call makes a dependency.
ADDRESS_HELPERS = ('getip', 'getprivip', 'getipall')
CMD_TIMEOUT = 60


def cut(text: Any, start: Any = None, end: Any = None) -> str:
    """``text[start:end]``, e.g. ``cut(infra_id, 0, 4)``."""
    return str(text)[start:end]


def template_context(*, infra_id: str, infra_name: str, user_id: str, node: Any, node_id: str,
                     implementation: Any, mappings: Mapping[str, Any],
                     helpers: Mapping[str, Callable[..., Any]],
                     sections: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The names a template of ``node`` (a compiled graph node) can use.

    Node-description keys come first, then the implementation's sections (``sections``: a
    private copy of them, if the caller has one), then the fixed names and ``helpers``, so
    that a section can never shadow ``infra_id`` or ``getip``.
    """
    context: Dict[str, Any] = {
        'type': node.type, 'scaling': asdict(node.scaling), 'filter': node.filter,
        'variables': node.variables, 'mappings': mappings,
    }
    if sections is None:
        sections = asdict(implementation)
    context.update({section: value for section, value in sections.items() if value is not None})
    context.update(infra_id=infra_id, infra_name=infra_name, user_id=user_id, name=node.name,
                   node_id=node_id, cut=cut)
    context.update(helpers)
    return context


@dataclass
class Address:
    """The addresses of one instance as templates see them."""

    node_id: str
    addresses: List[str]
    private_address: Optional[str] = None


class AddressBook:
    """Addresses of the instances of one infrastructure, by node name, in creation order.

    Thread-safe: the executor adds instances while workers render templates.
    """

    def __init__(self, node_order: Sequence[str]) -> None:
        self._order = list(node_order)
        self._nodes: Dict[str, Dict[str, Address]] = {}  # node -> node id -> address, in order
        self._node_of: Dict[str, str] = {}
        self._lock = threading.Lock()
        self.warn: Callable[[str], None] = lambda message: None

    def add(self, node: str, address: Address) -> None:
        with self._lock:
            self._nodes.setdefault(node, {})[address.node_id] = address
            self._node_of[address.node_id] = node

    def remove(self, node_id: str) -> None:
        with self._lock:
            node = self._node_of.pop(node_id, None)
            if node is not None:
                self._nodes[node].pop(node_id, None)

    def _instances(self, helper: str, name: Any) -> List[Address]:
        with self._lock:
            if not name:  # the original answered a falsy name with the first node's address
                first = next((n for n in self._order if self._nodes.get(n)), None)
                if first is None:
                    raise TemplateError(f'{helper}() was called without a node name, and no node '
                                        'has an instance yet')
                self.warn(f"{helper}() was called without a node name (an undefined variable?); "
                          f"using node '{first}', as the original did")
                name = first
            found = [a for a in self._nodes.get(str(name), {}).values()
                     if a.addresses or a.private_address]
        if not found:
            raise TemplateError(f"{helper}('{name}'): node '{name}' has no instance with an address "
                                '(it must be built first: is a dependency on it missing?)')
        return found

    def getip(self, name: Any = None) -> str:
        """The first address of the first instance of node ``name``."""
        first = self._instances('getip', name)[0]
        return first.addresses[0] if first.addresses else first.private_address or ''

    def getprivip(self, name: Any = None) -> str:
        """The private address of the first instance of node ``name``."""
        first = self._instances('getprivip', name)[0]
        return first.private_address or (first.addresses[0] if first.addresses else '')

    def getipall(self, name: Any = None) -> List[str]:
        """The first address of every instance of node ``name``."""
        return [a.addresses[0] if a.addresses else a.private_address or ''
                for a in self._instances('getipall', name)]


def make_cmd(allow: bool) -> Callable[..., str]:
    """The ``cmd()`` helper: runs a command on *this* host, so it is refused unless allowed."""
    def cmd(command: Any = '', *args: Any) -> str:
        if not allow:
            raise TemplateError('cmd() is disabled because it runs a command on the Occopus host; '
                                'set allow_cmd: true in the configuration to allow it')
        argv = shlex.split(str(command)) + [str(a) for a in args]
        if not argv:
            raise TemplateError('cmd() needs a command')
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT,
                                    stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TemplateError(f'cmd({command!r}) could not run: {exc}') from None
        if result.returncode != 0:
            detail = (result.stderr.strip().splitlines() or [''])[-1]
            raise TemplateError(f'cmd({command!r}) exited with {result.returncode}'
                                + (f': {detail}' if detail else ''))
        return result.stdout.strip()
    return cmd


@dataclass
class Resolved:
    """A node instance ready to be created: the chosen implementation, rendered."""

    node: str
    node_id: str
    implementation: int
    resource: Dict[str, Any]
    context: RenderedContext
    config_management: Optional[Dict[str, Any]]
    health_check: Dict[str, Any] = field(default_factory=dict)
    #: what its inbound mappings give a config manager (see :func:`connections`)
    connections: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def resource_type(self) -> str:
        return self.resource['type']

    @property
    def config_manager_type(self) -> str:
        return (self.config_management or {}).get('type', 'dummy')


def connections(infra_id: str, mappings: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The original's ``attributes.connections`` of a node from its ``mappings``
    (:meth:`~occo.compiler.InfraGraph.mappings`): one entry per inbound attribute mapping,
    ``{source_role: '<infra_id>_<dependee>', source_attribute, destination_attribute}``."""
    found = []
    for dependee, items in (mappings.get('inbound') or {}).items():
        for item in items or ():
            pair = item.get('attributes') if isinstance(item, Mapping) else item
            if isinstance(pair, (list, tuple)) and len(pair) == 2:
                found.append({'source_role': f'{infra_id}_{dependee}',
                              'source_attribute': pair[0], 'destination_attribute': pair[1]})
    return found


def implementation_of(graph: Any, nodedefs: Mapping[str, Any], node: str, index: int) -> Any:
    """Implementation ``index`` of the type of ``graph``'s node ``node`` (unrendered)."""
    return nodedefs[graph.nodes[node].type].implementations[index]


class Resolver:
    """Chooses implementations (filter, then random, for every new instance) and renders them."""

    def __init__(self, graph: Any, nodedefs: Mapping[str, Any], addresses: AddressBook, *,
                 allow_cmd: bool = False, rng: Optional[random.Random] = None) -> None:
        self.graph = graph
        self.nodedefs = nodedefs
        self.addresses = addresses
        self.cmd = make_cmd(allow_cmd)
        self.rng = rng or random.Random()
        self._snapshots: Dict[int, Tuple[Any, Optional[str]]] = {}

    def helpers(self) -> Dict[str, Callable[..., Any]]:
        return {'getip': self.addresses.getip, 'getprivip': self.addresses.getprivip,
                'getipall': self.addresses.getipall, 'cmd': self.cmd}

    def _sections(self, impl: Any) -> Dict[str, Any]:
        """A fresh copy of an implementation's sections for one render (a template may
        change what it is given); copied from JSON made once, which is faster than asdict."""
        key = id(impl)
        if key not in self._snapshots:
            try:
                self._snapshots[key] = (impl, json.dumps(asdict(impl)))
            except (TypeError, ValueError):  # not plain JSON data: copy it the slow way
                self._snapshots[key] = (impl, None)
        text = self._snapshots[key][1]
        return asdict(impl) if text is None else json.loads(text)

    def choose(self, node: str) -> int:
        """A random implementation among those the node's filter keeps."""
        return self.rng.choice(self.graph.nodes[node].candidates)

    def implementation(self, node: str, index: int) -> Any:
        """Implementation ``index`` of ``node``'s type (unrendered)."""
        return implementation_of(self.graph, self.nodedefs, node, index)

    def resolve(self, node: str, node_id: str, index: Optional[int] = None) -> Resolved:
        """Render the templates of implementation ``index`` (chosen at random if None).

        :raises TemplateError: naming the node, the section and the template line.
        """
        graph_node = self.graph.nodes[node]
        index = self.choose(node) if index is None else index
        impl = self.implementation(node, index)
        mappings = self.graph.mappings(node)
        links = connections(self.graph.infra_id, mappings)  # before a template can touch them
        context = template_context(
            infra_id=self.graph.infra_id, infra_name=self.graph.infra_name,
            user_id=self.graph.user_id, node=graph_node, node_id=node_id, implementation=impl,
            mappings=mappings, helpers=self.helpers(),
            sections=self._sections(impl))

        def renderer(section: str) -> Callable[..., str]:
            def render(text: str, what: str, extra: Optional[Mapping[str, Any]] = None,
                       whole_text: bool = False, fold: bool = False) -> str:
                names = dict(context, **extra) if extra else context
                return templates.render(text, names, what=f"node '{node}': {section}.{what}",
                                        keep_trailing_newline=not whole_text, fold=fold)
            return render

        # Each section is one template for the limits of rendered size and time: all of its
        # values together.
        with templates.budget():
            resource = render_tree(impl.resource, renderer('resource'), '')
        config_management = None
        if impl.config_management is not None:
            with templates.budget():
                config_management = render_tree(impl.config_management,
                                                renderer('config_management'), '')
        cm_class = plugins.plugin_class(plugins.CONFIG_MANAGERS, impl.config_manager_type)
        context.update(cm_class.template_variables(config_management))
        context_class = plugins.plugin_class(plugins.CONTEXTS, impl.context_type)
        try:
            with templates.budget():
                rendered = context_class.render(impl.contextualisation, renderer('contextualisation'))
        except TemplateError as exc:
            if exc.message.startswith(f"node '{node}'"):
                raise
            raise TemplateError(f"node '{node}': contextualisation.{exc.message}") from None
        return Resolved(node=node, node_id=node_id, implementation=index, resource=resource,
                        context=rendered, config_management=config_management,
                        health_check=dict(impl.health_check or {}),
                        connections=links)


