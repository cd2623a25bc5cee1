"""The facade: everything the command line, the REST service and Python users can do.

Callers build an :class:`Occopus` from a :class:`~occo.config.Config` and call its methods;
they never reach below this module.  Every method raises :class:`~occo.errors.OccoError`
subclasses with messages meant for the user.
"""
from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from occo.compiler import InfraGraph, compile_infra
from occo.config import AuthData, Config
from occo.descriptions.infra import InfraDescription, load_infra_description
from occo.descriptions.nodedefs import NodeDefinition, load_node_definitions
from occo.errors import DescriptionError, NotImplementedYet, OccoError, TeardownError, UsageError
from occo.executor import Executor, Failure, uninterruptible
from occo.planner import Plan, make_plan
from occo.resolution import Address, AddressBook, Resolver
from occo.runtime import Runtime
from occo.store import Store


@dataclass
class ImportResult:
    """What ``occopus-import`` stored."""

    names: List[str]
    namespace: str
    source: str


@dataclass
class RenderedNode:
    """A node's contextualisation as its instances would receive it."""

    node: str
    implementation: int
    resource_type: str
    text: str


def load_addresses(path: str) -> Dict[str, Any]:
    """A YAML file of node name -> address (or list of addresses), for rendering.

    :raises DescriptionError: if the file cannot be read or is not such a mapping.
    """
    from occo.descriptions.loader import load_yaml_file, to_plain
    data = load_yaml_file(path)
    if data is None:  # only comments: no address given
        return {}
    if not isinstance(data, Mapping) or not all(
            isinstance(v, (str, list)) and (not isinstance(v, list) or all(isinstance(i, str) for i in v))
            for v in data.values()):
        raise DescriptionError('expected a mapping of node names to an address or a list of '
                               'addresses, e.g. "web: 10.0.0.5"', source=path)
    return to_plain(data)


def placeholder_addresses(graph: InfraGraph, given: Mapping[str, Any]) -> AddressBook:
    """An address book for rendering without a cloud: ``given`` node name -> address (or list),
    and 192.0.2.N (TEST-NET-1, never routed) for node N of the description otherwise.

    :raises DescriptionError: if ``given`` names a node the infrastructure does not have.
    """
    unknown = sorted(set(given) - set(graph.nodes))
    if unknown:
        raise DescriptionError(f"addresses are given for node(s) {', '.join(unknown)}, which the "
                               f"infrastructure does not have (nodes: {', '.join(graph.nodes)})")
    book = AddressBook(graph.order)
    for number, name in enumerate(graph.nodes, 1):
        value = given.get(name, f'192.0.2.{number % 254 or 254}')
        values = [str(v) for v in value] if isinstance(value, list) else [str(value)]
        for index, address in enumerate(values):
            node_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f'occopus:placeholder:{name}:{index}'))
            book.add(name, Address(node_id, [address], address))
    return book


@dataclass
class DryRun:
    """A compiled infrastructure and the plan that would build it."""

    graph: InfraGraph
    plan: Plan


Warn = Callable[[str], None]
INFRA_ID = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$')


def check_infra_id(infra_id: str) -> str:
    """:raises UsageError: unless ``infra_id`` is 1-128 letters, digits, '.', '_' or '-'."""
    if not INFRA_ID.match(infra_id):
        raise UsageError(f'invalid infrastructure id {infra_id!r}: use 1-128 letters, digits, '
                         "'.', '_' or '-' (starting with a letter or digit)")
    return infra_id


@dataclass
class BuildResult:
    """A built infrastructure: its graph and its ready instances (by node, in build order)."""

    graph: InfraGraph
    instances: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)


def group_instances(graph: InfraGraph, records: Mapping[str, Mapping[str, Any]]
                    ) -> Dict[str, List[Dict[str, Any]]]:
    """Instance records by node name (build order), oldest first."""
    grouped: Dict[str, List[Dict[str, Any]]] = {name: [] for name in graph.order}
    for record in sorted(records.values(), key=lambda r: r.get('created_at') or 0):
        grouped.setdefault(record.get('node', '?'), []).append(dict(record))
    return grouped


class Occopus:
    """One user's view of Occopus: a configuration, credentials and the store they point to.

    :param warn: called with each warning (e.g. an inferred dependency) as soon as it arises;
        by default warnings go to the ``occo`` logger.
    """

    def __init__(self, config: Config, *, auth: Optional[AuthData] = None,
                 store: Optional[Store] = None, warn: Optional[Warn] = None) -> None:
        self.config = config
        self.auth = auth or AuthData()
        self._store = store
        self.warn: Warn = warn or logging.getLogger('occo').warning

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store.connect(self.config.redis_url, self.config.redis_prefix)
        return self._store

    # -- node definitions --------------------------------------------------------------------

    def import_nodes(self, path: str) -> ImportResult:
        """Check every node definition in the file at ``path``, then store them all at once.

        Nothing is stored if any definition is wrong.
        """
        definitions = load_node_definitions(path)
        self.store.put_node_definitions(
            self.config.namespace, {name: d.to_json() for name, d in definitions.items()})
        return ImportResult(names=list(definitions), namespace=self.config.namespace, source=path)

    def node_definitions(self, types: List[str]) -> Dict[str, NodeDefinition]:
        """The imported definitions of ``types`` (absent ones are left out)."""
        stored = self.store.get_node_definitions(self.config.namespace, types)
        return {name: NodeDefinition.from_json(data) for name, data in stored.items()}

    # -- infrastructures ---------------------------------------------------------------------

    def compile(self, desc: InfraDescription, infra_id: Optional[str] = None
                ) -> Tuple[InfraGraph, Dict[str, NodeDefinition]]:
        """Compile ``desc`` against the imported node definitions of its types; returns the
        graph and those definitions."""
        types = sorted({node.type for node in desc.nodes})
        nodedefs = self.node_definitions(types)
        known = None
        if len(nodedefs) < len(types):  # the compiler names the node; list what is imported
            known = self.store.node_definition_types(self.config.namespace)
        graph = compile_infra(desc, nodedefs, infra_id=infra_id,
                              user_id=desc.user_id or self.config.namespace, known_types=known)
        for message in graph.warnings:
            self.warn(message)
        return graph, nodedefs

    def load_description(self, path: str) -> InfraDescription:
        """Load and check the infrastructure description at ``path`` (warnings are reported)."""
        desc = load_infra_description(path)
        for message in desc.warnings:
            self.warn(message)
        return desc

    def dry_run(self, path: str, infra_id: Optional[str] = None) -> DryRun:
        """Check, compile and plan the infrastructure description at ``path``.

        Reads the node definitions; writes nothing and calls no cloud.
        """
        graph, nodedefs = self.compile(self.load_description(path), infra_id)
        resources = {name: [impl.resource for impl in nodedefs[node.type].implementations]
                     for name, node in graph.nodes.items()}
        return DryRun(graph=graph, plan=make_plan(graph, resources))

    def render(self, path: str, infra_id: Optional[str] = None,
               addresses: Optional[Mapping[str, Any]] = None) -> List[RenderedNode]:
        """Render every node's contextualisation as a build would, without any cloud.

        ``addresses`` maps node names to the address (or list of addresses) that ``getip``,
        ``getprivip`` and ``getipall`` return; other nodes get placeholder addresses (node N of
        the description gets 192.0.2.N).  Each node's first candidate implementation is used.

        :raises TemplateError: naming the node, section and line of a template that fails.
        """
        graph, nodedefs = self.compile(self.load_description(path), infra_id)
        book = placeholder_addresses(graph, addresses or {})
        book.warn = self.warn
        resolver = Resolver(graph, nodedefs, book, allow_cmd=self.config.allow_cmd)
        result = []
        for name in graph.order:
            node_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f'occopus:{graph.infra_id}:{name}'))
            resolved = resolver.resolve(name, node_id, graph.nodes[name].candidates[0])
            result.append(RenderedNode(name, resolved.implementation, resolved.resource_type,
                                       resolved.context.text()))
        return result

    # -- build and destroy -------------------------------------------------------------------

    def _runtime(self) -> Runtime:
        return Runtime(self.config, self.auth, self.store, self.warn)

    def _executor(self, runtime: Runtime, graph: InfraGraph, nodedefs: Mapping[str, Any],
                  parallelize: Optional[bool], parallelism: Optional[int], report: Warn,
                  records: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Executor:
        book = AddressBook(graph.order)
        book.warn = self.warn
        for record in sorted((records or {}).values(), key=lambda r: r.get('created_at') or 0):
            if record.get('state') == 'ready':
                book.add(record['node'], Address(record['node_id'], record.get('addresses') or [],
                                                 record.get('private_address')))
        resolver = Resolver(graph, nodedefs, book, allow_cmd=self.config.allow_cmd)
        parallel = self.config.parallelize if parallelize is None else parallelize
        return Executor(runtime, graph, resolver, parallel=parallel,
                        parallelism=parallelism or self.config.parallelism, report=report)

    def build(self, path: str, *, infra_id: Optional[str] = None,
              parallelize: Optional[bool] = None, parallelism: Optional[int] = None,
              report: Optional[Warn] = None) -> BuildResult:
        """Build the infrastructure described in ``path``: every node in dependency order,
        each instance waited for until it is ready.

        Transactional: on any error or interrupt (KeyboardInterrupt, which the CLI also raises
        for SIGTERM) every resource created is dropped, dependents first, and the
        infrastructure is forgotten; then the exception propagates.
        """
        report = report or self.warn
        if infra_id is not None:
            check_infra_id(infra_id)
        graph, nodedefs = self.compile(self.load_description(path), infra_id)
        if self.store.infra(graph.infra_id) is not None:
            raise NotImplementedYet(f'infrastructure {graph.infra_id} already exists; updating an '
                                    'existing infrastructure is not implemented in this release')
        now = round(time.time(), 3)
        summary = {'name': graph.infra_name, 'namespace': self.config.namespace,
                   'user_id': graph.user_id, 'created_at': now, 'state': 'building'}
        record = {'infra_id': graph.infra_id, 'namespace': self.config.namespace,
                  'created_at': now, 'source': path, 'graph': graph.to_json(),
                  'nodedefs': {name: d.to_json() for name, d in nodedefs.items()}}
        targets = {name: node.scaling.min for name, node in graph.nodes.items()}
        if not self.store.create_infra(graph.infra_id, record, summary, targets):
            raise OccoError(f'infrastructure {graph.infra_id} already exists')
        report(f'Submitted infrastructure: {graph.infra_id}')
        runtime = self._runtime()
        executor = self._executor(runtime, graph, nodedefs, parallelize, parallelism, report)
        resources = {name: [impl.resource for impl in nodedefs[node.type].implementations]
                     for name, node in graph.nodes.items()}
        plan = make_plan(graph, resources)
        try:
            executor.create_all(plan.creates)
        except BaseException as exc:
            report('Interrupted: tearing down what was built, then exiting'
                   if not isinstance(exc, Exception) else
                   f'Error occurred ({exc}), tearing down the infrastructure')
            with uninterruptible(report):
                self._tear_down(executor, graph, report)
            report('The partially built infrastructure has been torn down.')
            raise
        self.store.set_infra_state(graph.infra_id, 'ready', summary)
        return BuildResult(graph, group_instances(graph, self.store.instances(graph.infra_id)))

    def _tear_down(self, executor: Executor, graph: InfraGraph, report: Warn) -> None:
        """Drop every instance of the infrastructure and forget it; if some cannot be dropped,
        keep their records (and the infrastructure) so that destroy can try again."""
        failures = executor.drop_all(self.store.instances(graph.infra_id))
        if failures:
            self.store.set_infra_state(graph.infra_id, 'destroy_failed',
                                       self.store.infras().get(graph.infra_id, {}),
                                       reason=str(failures[0]))
            raise TeardownError(_teardown_message(graph.infra_id, failures))
        self.store.delete_infra(graph.infra_id)

    def destroy(self, infra_id: str, *, parallelize: Optional[bool] = None,
                parallelism: Optional[int] = None, report: Optional[Warn] = None) -> int:
        """Drop every instance of an infrastructure (dependents first; instances still being
        created are found by their tags) and forget it.  Returns how many were dropped.

        :raises OccoError: if the infrastructure is unknown.
        :raises TeardownError: if some resources could not be dropped (they stay recorded).
        """
        report = report or self.warn
        record = self.store.infra(check_infra_id(infra_id))
        if record is None:
            raise OccoError(f'Unknown infrastructure: "{infra_id}" (occopus-manage -l lists the '
                            'known ones)')
        graph = InfraGraph.from_json(record['graph'])
        nodedefs = {name: NodeDefinition.from_json(d) for name, d in record.get('nodedefs', {}).items()}
        instances = self.store.instances(infra_id)
        executor = self._executor(self._runtime(), graph, nodedefs, parallelize, parallelism, report)
        with uninterruptible(report):
            self._tear_down(executor, graph, report)
        return len(instances)


def _teardown_message(infra_id: str, failures: List[Failure]) -> str:
    more = f' and {len(failures) - 1} more' if len(failures) > 1 else ''
    return (f'{failures[0]}{more}; they are still recorded: run occopus-destroy -i {infra_id} '
            'again once the cloud answers')
