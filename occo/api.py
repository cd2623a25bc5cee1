"""The facade: everything the command line, the REST service and Python users can do.

Callers build an :class:`Occopus` from a :class:`~occo.config.Config` and call its methods;
they never reach below this module.  Every method raises :class:`~occo.errors.OccoError`
subclasses with messages meant for the user.
"""
from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from occo import advice, plugins, templates
from occo.compiler import InfraGraph, compile_infra
from occo.config import AuthData, Config
from occo.descriptions.infra import (InfraDescription, load_infra_description,
                                     parse_infra_description_text)
from occo.descriptions.nodedefs import NodeDefinition, load_node_definitions
from occo.errors import (AuthError, BuildCancelled, BuildError, Conflict, DescriptionError,
                         LeaseHeld, LeaseLost, NotImplementedYet, OccoError, StoreError,
                         TeardownError, UnknownInfrastructure, UnknownNode, UsageError,
                         describe_error)
from occo.executor import Executor, Failure, uninterruptible
from occo.instances import InfraState, InfraStatus, Instance, State
from occo.leases import held
from occo.maintenance import PassResult, observe, pass_record, run_pass
from occo.plugins.base import has_templates
from occo.planner import DOWN, SET, UP, CreateNode, Plan, make_plan, node_specs, plan_from_state
from occo.fleet import PASS_STATUSES, Fleet
from occo.placement import Placer
from occo.resolution import Address, AddressBook, Resolver, implementation_of
from occo.runtime import Runtime, check_settings
from occo.store import MAX_PENDING_REQUESTS, WHO, Store, event


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
#: what a pass of the maintainer fleet can come to (callers count them)
PASS_STATUSES = PASS_STATUSES
PlanHook = Callable[[Plan, InfraGraph], None]
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
    instances: Dict[str, List[Instance]] = field(default_factory=dict)


def group_instances(graph: InfraGraph, records: Mapping[str, Mapping[str, Any]]
                    ) -> Dict[str, List[Instance]]:
    """Stored instance records by node name (build order), oldest first."""
    grouped: Dict[str, List[Instance]] = {name: [] for name in graph.order}
    for instance in sorted((Instance.from_json(r) for r in records.values()),
                           key=lambda i: i.created_at or 0):
        grouped.setdefault(instance.node, []).append(instance)
    return grouped


class Occopus:
    """One user's view of Occopus: a configuration, credentials and the store they point to.

    :param warn: called with each warning (e.g. an inferred dependency) as soon as it arises;
        by default warnings go to the ``occo`` logger.
    """

    def __init__(self, config: Config, *, auth: Optional[AuthData] = None,
                 store: Optional[Store] = None, warn: Optional[Warn] = None) -> None:
        check_settings(config)
        templates.set_limits(config.limits.template_bytes, config.limits.template_seconds)
        self.config = config
        self.auth = auth or AuthData()
        self._store = store
        self.warn: Warn = warn or logging.getLogger('occo').warning

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store.connect(self.config.redis_url, self.config.redis_prefix,
                                        retry_window=self.config.redis_retry_window)
        return self._store

    # -- node definitions --------------------------------------------------------------------

    def import_nodes(self, path: str) -> ImportResult:
        """Check every node definition in the file at ``path``, then store them all at once.

        Nothing is stored if any definition is wrong.
        """
        definitions = load_node_definitions(path, max_size=self.config.limits.file_size)
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
                              user_id=desc.user_id or self.config.namespace, known_types=known,
                              namespace=self.config.namespace)
        for message in graph.warnings:
            self.warn(message)
        return graph, nodedefs

    def load_description(self, path: str) -> InfraDescription:
        """Load and check the infrastructure description at ``path`` (warnings are reported)."""
        desc = load_infra_description(path, limits=self.config.limits)
        for message in desc.warnings:
            self.warn(message)
        return desc

    def parse_description(self, text: str, source: str) -> InfraDescription:
        """Check an infrastructure description given as text (warnings are reported); it may
        not import files, since it names no folder to find them in."""
        desc = parse_infra_description_text(text, source, limits=self.config.limits)
        for message in desc.warnings:
            self.warn(message)
        return desc

    def dry_run(self, path: str, infra_id: Optional[str] = None) -> DryRun:
        """Check, compile and plan the infrastructure description at ``path``.

        Reads the node definitions; writes nothing and calls no cloud.
        """
        if infra_id is not None:
            check_infra_id(infra_id)
        graph, nodedefs = self.compile(self.load_description(path), infra_id)
        for message in advice.placeholders(graph, nodedefs) + advice.undefined_names(graph, nodedefs):
            self.warn(message)
        state = InfraState.from_store(self.store.load(graph.infra_id)) if infra_id else None
        if state is None:
            return DryRun(graph=graph, plan=self._with_health(
                make_plan(graph, resources_of(graph, nodedefs)), graph, nodedefs))
        # An update of a live infrastructure: what one pass would do, from the records alone.
        verdicts = {k: i.error or 'it failed' for k, i in state.instances.items()
                    if i.state == State.FAILED}
        plan, scaling = plan_from_state(graph, resources_of(graph, nodedefs), state.instances,
                                        state.targets, state.requests, verdicts=verdicts,
                                        specs=specs_of(graph, nodedefs))
        for warning in scaling.warnings:
            self.warn(warning)
        return DryRun(graph=graph, plan=self._with_health(plan, graph, nodedefs))

    def _with_health(self, plan: Plan, graph: InfraGraph,
                     nodedefs: Mapping[str, NodeDefinition]) -> Plan:
        """The plan, each candidate implementation of a node that has several with its health
        (see :mod:`occo.placement`)."""
        summary = self._placer(graph, nodedefs).summary()
        for node in plan.nodes:
            for candidate in node.candidates:
                entry = summary.get(node.name, {}).get(candidate['index'])
                if entry is not None:
                    candidate['health'] = {k: v for k, v in entry.items() if k != 'implementation'}
        return plan

    def _placer(self, graph: InfraGraph, nodedefs: Mapping[str, NodeDefinition]) -> Placer:
        """The implementations' health as builds and passes see it (read-only here)."""
        return Placer(self.store, graph, partial(implementation_of, graph, nodedefs),
                      self.config.retry_backoff)

    def render(self, path: str, infra_id: Optional[str] = None,
               addresses: Optional[Mapping[str, Any]] = None) -> List[RenderedNode]:
        """Render every node's contextualisation as a build would, without any cloud.

        ``addresses`` maps node names to the address (or list of addresses) that ``getip``,
        ``getprivip`` and ``getipall`` return; other nodes get placeholder addresses (node N of
        the description gets 192.0.2.N).  Each node's first candidate implementation is used.

        :raises TemplateError: naming the node, section and line of a template that fails.
        """
        if infra_id is not None:
            check_infra_id(infra_id)
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

    def _executor(self, store: Store, graph: InfraGraph, nodedefs: Mapping[str, Any],
                  parallelize: Optional[bool], parallelism: Optional[int], report: Warn,
                  records: Optional[Mapping[str, Instance]] = None) -> Executor:
        """An executor for ``graph`` writing through ``store`` (fenced under a lease); the
        address book starts with the ready instances among ``records``."""
        book = AddressBook(graph.order)
        book.warn = self.warn
        for instance in sorted((records or {}).values(), key=lambda i: i.created_at or 0):
            if instance.state == State.READY:
                book.add(instance.node, Address(instance.node_id, instance.addresses,
                                                instance.private_address))
        resolver = Resolver(graph, nodedefs, book, allow_cmd=self.config.allow_cmd)
        parallel = self.config.parallelize if parallelize is None else parallelize
        runtime = Runtime(self.config, self.auth, store, self.warn)
        return Executor(runtime, graph, resolver, parallel=parallel,
                        parallelism=parallelism or self.config.parallelism, report=report,
                        specs=specs_of(graph, nodedefs), records=records)

    def build(self, path: str, *, infra_id: Optional[str] = None,
              parallelize: Optional[bool] = None, parallelism: Optional[int] = None,
              report: Optional[Warn] = None, on_plan: Optional[PlanHook] = None,
              replace: Sequence[str] = (), text: Optional[str] = None,
              stop: Optional[threading.Event] = None,
              on_submitted: Optional[Callable[[str], None]] = None,
              on_failure: Optional[Callable[[BaseException], None]] = None) -> BuildResult:
        """Build the infrastructure described in ``path``: every node in dependency order,
        each instance waited for until it is ready.  If ``infra_id`` names an existing
        infrastructure, apply the changed description to it instead (see :meth:`update`;
        ``on_plan(plan, graph)`` then sees the plan before it is carried out).

        Transactional: on any error or interrupt (KeyboardInterrupt, which the CLI also raises
        for SIGTERM, or ``stop`` being set: :class:`BuildCancelled`) every resource created is
        dropped, dependents first, and the infrastructure is forgotten; then the exception
        propagates.

        :param text: the description itself (e.g. a REST request body; ``path`` then only
            names it in messages, and it may not import files).
        :param on_submitted: called with the infrastructure id once it is stored (state
            ``building``), before any cloud is asked.
        :param on_failure: called with the exception of a stored build that failed, before it
            is rolled back (it must not raise).
        """
        report = report or self.warn
        if infra_id is not None:
            check_infra_id(infra_id)
            if self.store.infra(infra_id) is not None:
                result = self.update(path, infra_id, parallelize=parallelize,
                                     parallelism=parallelism, report=report, on_plan=on_plan)
                if not replace:
                    return result
                return self.replace(infra_id, replace, parallelize=parallelize,
                                    parallelism=parallelism, report=report)
        if replace:
            raise UsageError('--replace goes with -i ID of a live infrastructure: there is nothing '
                             'to replace in a new one')
        desc = self.load_description(path) if text is None else self.parse_description(text, path)
        graph, nodedefs = self.compile(desc, infra_id)
        check_buildable(graph, nodedefs)
        check_credentials(graph, nodedefs, self.auth)
        now = round(time.time(), 3)
        summary = {'name': graph.infra_name, 'namespace': self.config.namespace,
                   'user_id': graph.user_id, 'created_at': now, 'state': InfraStatus.BUILDING.value}
        targets = {name: node.scaling.min for name, node in graph.nodes.items()}
        plan = make_plan(graph, resources_of(graph, nodedefs))
        with held(self.store, graph.infra_id, self.config.lease_ttl) as store:
            if not store.create_infra(graph.infra_id, self._record(graph, nodedefs, path, now),
                                      summary, targets):
                raise OccoError(f'infrastructure {graph.infra_id} already exists')
            executor = self._executor(store, graph, nodedefs, parallelize, parallelism, report)
            try:
                report(f'Submitted infrastructure: {graph.infra_id}')
                if on_submitted is not None:
                    on_submitted(graph.infra_id)
                executor.create_all(plan.creates, stop=stop)
                if stop is not None and stop.is_set():
                    raise BuildCancelled(f'the build of {graph.infra_id} was cancelled')
                store.set_infra_state(graph.infra_id, InfraStatus.READY, dict(summary, **counts(plan)))
                return BuildResult(graph, group_instances(graph, store.instances(graph.infra_id)))
            except BaseException as exc:
                if on_failure is not None:
                    on_failure(exc)  # told while the infrastructure still exists
                with uninterruptible(report):
                    self._roll_back(executor, exc, report)
                raise

    def _roll_back(self, executor: Executor, exc: BaseException, report: Warn) -> None:
        """Tear down a build that failed or was interrupted.  While the store can be trusted,
        everything recorded for the infrastructure (and found by its tags) is dropped and the
        infrastructure forgotten; once it cannot (Redis gone for good, or back without our
        records or our lease), exactly what this run made is dropped, from the executor's
        journal.  Raises what the user must hear if it is not ``exc`` itself."""
        store, infra_id = executor.store, executor.infra_id
        if store.lost.is_set() and _taken_over(store):
            raise LeaseLost(f'lost the lease on infrastructure {infra_id} to another process, '
                            'which manages it from now on') from None
        if not (store.lost.is_set() or isinstance(exc, (StoreError, LeaseLost))):
            report('Interrupted: tearing down what was built, then exiting'
                   if not isinstance(exc, Exception) else
                   f'Error occurred ({describe_error(exc)}), tearing down the infrastructure')
            try:
                self._tear_down(executor, report, fresh=True)
                report('The partially built infrastructure has been torn down.')
                return
            except (StoreError, LeaseLost) as failure:
                exc = failure
        raise self._abandon(executor, exc, report) from None

    def _abandon(self, executor: Executor, exc: BaseException, report: Warn) -> OccoError:
        """Drop what this run made without the store's help; the error that says so."""
        store, infra_id = executor.store, executor.infra_id
        what = (getattr(store, 'lost_reason', '') or describe_error(exc)) if store.lost.is_set() \
            else describe_error(exc)
        made = len(executor.journal)
        report(f'{what}; removing the {made} resource(s) this build made')
        store.retry_window = min(getattr(store, 'retry_window', 0) or 0, 2.0)  # it is down: fail fast
        failures = executor.tear_down_journal()
        if failures:
            names = ', '.join(f'{f.node}/{(f.node_id or "?")[:8]}' for f in failures[:10])
            more = f' and {len(failures) - 10} more' if len(failures) > 10 else ''
            return OccoError(f'build of {infra_id} stopped: {what}; could not remove {names}{more}: '
                             f'run occopus-destroy -i {infra_id} once Redis answers again')
        try:
            if store.infra(infra_id) is not None:
                store.delete_infra(infra_id)
        except OccoError:
            pass  # nothing of it is left in any cloud; the record goes with the next destroy
        return OccoError(f'build of {infra_id} stopped: {what}; the {made} resource(s) it made '
                         'were removed')

    def _record(self, graph: InfraGraph, nodedefs: Mapping[str, NodeDefinition], source: str,
                created_at: float) -> Dict[str, Any]:
        return {'infra_id': graph.infra_id, 'namespace': self.config.namespace,
                'created_at': created_at, 'updated_at': round(time.time(), 3), 'source': source,
                'graph': graph.to_json(),
                'nodedefs': {name: d.to_json() for name, d in nodedefs.items()}}

    def update(self, path: str, infra_id: str, *, parallelize: Optional[bool] = None,
               parallelism: Optional[int] = None, report: Optional[Warn] = None,
               on_plan: Optional[PlanHook] = None) -> BuildResult:
        """Apply a changed description to a live infrastructure in one pass: instances of
        removed nodes are dropped, new nodes created, targets re-clamped to the new limits.
        Existing instances are kept.  On an error the infrastructure keeps running (it is never
        torn down); the missing instances are retried by the next management pass.

        :raises BuildError: if some instances could not be created.
        """
        report = report or self.warn
        graph, nodedefs = self.compile(self.load_description(path), infra_id)
        check_buildable(graph, nodedefs)
        with held(self.store, infra_id, self.config.lease_ttl, wait=self.config.lease_ttl,
                  report=report) as store:
            state = InfraState.from_store(store.load(infra_id))
            if state is None:
                raise UnknownInfrastructure(infra_id)
            self._not_being_destroyed(infra_id)
            old = state.infra
            record = self._record(graph, nodedefs, path, old.get('created_at') or time.time())
            summary = dict(self.store.summary(infra_id), name=graph.infra_name)
            store.replace_infra(infra_id, record, summary, reason=f'description from {path}')
            report(f'Updating infrastructure: {infra_id}')
            result = self._pass(store, graph, nodedefs, state, parallelize=parallelize,
                                parallelism=parallelism, report=report, on_plan=on_plan)
            if result.failures:
                raise BuildError(result.failures, note='the infrastructure keeps running; '
                                 f'occopus-manage -i {infra_id} tries the missing instances again')
            return BuildResult(graph, group_instances(graph, store.instances(infra_id)))

    def replace(self, infra_id: str, nodes: Sequence[str], *, parallelize: Optional[bool] = None,
                parallelism: Optional[int] = None, report: Optional[Warn] = None) -> BuildResult:
        """Replace every instance of ``nodes`` one at a time, oldest first, from the node's
        current definition: a new instance is ready before the old one is dropped, so a node
        never has fewer ready instances than before, nor fewer than its minimum (as
        Terraform's ``-replace``).

        :raises BuildError: if a new instance cannot be made ready: it is dropped, and the old
            one and those not replaced yet keep running.
        """
        report = report or self.warn
        with held(self.store, check_infra_id(infra_id), self.config.lease_ttl,
                  wait=self.config.lease_ttl, report=report) as store:
            state = InfraState.from_store(store.load(infra_id))
            if state is None:
                raise UnknownInfrastructure(infra_id)
            self._not_being_destroyed(infra_id)
            graph, nodedefs = self._stored_graph(state.infra)
            unknown = [n for n in nodes if n not in graph.nodes]
            if unknown:
                raise UsageError(f"--replace: infrastructure {infra_id} has no node "
                                 f"{', '.join(repr(n) for n in unknown)} (nodes: {', '.join(graph.nodes)})")
            executor = self._executor(store, graph, nodedefs, parallelize, parallelism, report,
                                      records=state.instances)
            for name in dict.fromkeys(nodes):
                olds = sorted((i for i in state.instances.values()
                               if i.node == name and i.state != State.FAILED),
                              key=lambda i: i.created_at or 0)
                for number, old in enumerate(olds, 1):
                    report(f'{name}: replacing instance {number} of {len(olds)} ({old.short})')
                    self._replace_one(executor, graph, old, len(olds) - number)
            return BuildResult(graph, group_instances(graph, store.instances(infra_id)))

    def _replace_one(self, executor: Executor, graph: InfraGraph, old: Instance, left: int) -> None:
        """A new instance of ``old``'s node, ready, then ``old`` dropped."""
        keep = (f'{old.short}' + (f' and {left} more instance(s) not replaced yet' if left else '')
                + ' keep running')
        try:
            executor.create_all([CreateNode(old.node, tuple(graph.nodes[old.node].depends_on))])
        except BuildError as exc:
            executor.drop_failed(exc.failures)
            raise BuildError(exc.failures, note=keep) from None
        failures = executor.drop_all({old.node_id: old})
        if failures:
            raise BuildError(failures, note='its replacement is ready; occopus-manage drops the '
                             'surplus instance')

    def _tear_down(self, executor: Executor, report: Warn, forget_unreachable: bool = False,
                   fresh: bool = False) -> None:
        """Drop every instance of the infrastructure and forget it, also on the config
        managers that keep something per infrastructure (on those this run reached, for the
        rollback of a ``fresh`` build; on every one it uses, otherwise); if something cannot
        be dropped, keep the records (and the infrastructure) so that destroy can try again."""
        store, infra_id = executor.store, executor.infra_id
        # Creates this process gave up on may still return: wait for them (what they made is
        # dropped as they return), then look for anything of the infrastructure by its tags.
        out = executor.calls.wait_abandoned(self.config.call_timeout)
        records = _instances(store.instances(infra_id))
        failures = executor.drop_all(records, everything=True, forget_unasked=forget_unreachable)
        if not failures:
            failures = executor.forget_config(records, everything=not fresh)
        if out:
            failures.append(Failure('', None, f'{out} create call(s) given up on had not returned '
                                    f'after {self.config.call_timeout:g} s; what they make is '
                                    'found by its tags'))
        if failures:
            store.set_infra_state(infra_id, InfraStatus.DESTROY_FAILED, self.store.summary(infra_id),
                                  reason=str(failures[0]))
            raise TeardownError(_teardown_message(infra_id, failures))
        store.delete_infra(infra_id)

    def destroy(self, infra_id: str, *, parallelize: Optional[bool] = None,
                parallelism: Optional[int] = None, report: Optional[Warn] = None,
                forget_unreachable: bool = False) -> int:
        """Drop every instance of an infrastructure (dependents first; instances still being
        created are found by their tags) and forget it.  Returns how many were dropped.
        Waits (up to the lease ttl) for a management pass under way to finish.

        :raises OccoError: if the infrastructure is unknown.
        :raises TeardownError: if some resources could not be dropped (they stay recorded),
            or a cloud could not be asked for an instance whose create was under way (unless
            ``forget_unreachable``: for a cloud that is gone for good).
        """
        report = report or self.warn
        self._known(check_infra_id(infra_id))
        with held(self.store, infra_id, self.config.lease_ttl, wait=self.config.lease_ttl,
                  report=report) as store:
            record = self._known(infra_id)
            graph, nodedefs = self._stored_graph(record)
            instances = store.instances(infra_id)
            executor = self._executor(store, graph, nodedefs, parallelize, parallelism, report)
            with uninterruptible(report):
                # From here on no pass may build it up again, even if this destroy dies.
                store.set_infra_state(infra_id, InfraStatus.DESTROYING, self.store.summary(infra_id),
                                      quiet=True)
                self._tear_down(executor, report, forget_unreachable)
        return len(instances)

    def destroy_plan(self, infra_id: str, *, report: Optional[Warn] = None) -> List[Instance]:
        """What :meth:`destroy` would drop, without dropping anything or taking the lease:
        every recorded instance, and every resource the clouds hold tagged with the
        infrastructure's id that no record knows (``untracked``; a build killed between the
        cloud's create and the store's write).  Dependents come first, as destroy drops them.

        :raises OccoError: if the infrastructure is unknown or a cloud cannot be asked.
        """
        report = report or self.warn
        record = self._known(check_infra_id(infra_id))
        graph, nodedefs = self._stored_graph(record)
        executor = self._executor(self.store, graph, nodedefs, None, None, report)
        found = executor.teardown_records(_instances(self.store.instances(infra_id)))
        order = {name: i for i, name in enumerate(graph.order)}
        return sorted(found.values(), key=lambda i: (i.untracked, -order.get(i.node, -1), i.node_id))

    def _not_being_destroyed(self, infra_id: str) -> None:
        """:raises OccoError: if a destroy of the infrastructure began (and failed or died):
        building it up again would undo what it dropped."""
        if self.store.summary(infra_id).get('state') in (InfraStatus.DESTROYING, InfraStatus.DESTROY_FAILED):
            raise OccoError(f'infrastructure {infra_id} is being destroyed (a destroy began and '
                            f'did not finish): run occopus-destroy -i {infra_id} to finish it')

    def _known(self, infra_id: str) -> Dict[str, Any]:
        record = self.store.infra(infra_id)
        if record is None:
            if self.store.summary(infra_id):
                self.store.forget(infra_id)  # only a stale registry entry was left of it
            raise UnknownInfrastructure(infra_id)
        return record

    def _stored_graph(self, record: Mapping[str, Any]
                      ) -> Tuple[InfraGraph, Dict[str, NodeDefinition]]:
        """The stored graph, with the node definitions imported now (a re-import changes what
        new instances are made of) -- or the ones stored with it where a type is gone."""
        graph = InfraGraph.from_json(record['graph'])
        stored = {name: NodeDefinition.from_json(d) for name, d in record.get('nodedefs', {}).items()}
        types = sorted({n.type for n in graph.nodes.values()})
        current = self.store.get_node_definitions(record.get('namespace', self.config.namespace), types)
        nodedefs = {name: NodeDefinition.from_json(current[name]) if name in current else stored[name]
                    for name in types if name in current or name in stored}
        for node in graph.nodes.values():
            candidates = nodedefs[node.type].matching(node.filter) if node.type in nodedefs else []
            if not candidates and node.type in stored:
                self.warn(f"node '{node.name}': the imported definition of '{node.type}' no longer "
                          'matches its filter; using the one it was built with')
                nodedefs[node.type] = stored[node.type]
                candidates = stored[node.type].matching(node.filter)
            node.candidates = candidates
        return graph, nodedefs

    # -- management ---------------------------------------------------------------------------

    def manage_pass(self, infra_id: str, *, parallelize: Optional[bool] = None,
                    parallelism: Optional[int] = None, stop: Optional[threading.Event] = None,
                    report: Optional[Warn] = None) -> PassResult:
        """One management pass: heal, apply scaling requests, reconcile.

        :raises LeaseHeld: if another process is changing the infrastructure right now.
        :raises OccoError: if the infrastructure is unknown.
        """
        report = report or self.warn
        self._known(check_infra_id(infra_id))  # no lease (nor key) for an unknown id
        with held(self.store, infra_id, self.config.lease_ttl, report=report) as store:
            started = time.time()
            state = InfraState.from_store(store.load(infra_id))
            if state is None:
                raise UnknownInfrastructure(infra_id)
            self._not_being_destroyed(infra_id)
            graph, nodedefs = self._stored_graph(state.infra)
            result = self._pass(store, graph, nodedefs, state, parallelize=parallelize,
                                parallelism=parallelism, stop=stop, report=report)
            if not store.lost.is_set():
                store.record_pass(infra_id, pass_record(store.lease, started, result))
            if store.lost.is_set():  # its writes were refused: another process owns it now
                raise LeaseLost(f'lost the lease on infrastructure {infra_id}: '
                                f"{getattr(store, 'lost_reason', '') or 'it is no longer ours'}; "
                                'what this pass did not finish is left to the process that holds it')
            return result

    def _pass(self, store: Store, graph: InfraGraph, nodedefs: Mapping[str, NodeDefinition],
              state: InfraState, *, parallelize: Optional[bool],
              parallelism: Optional[int], report: Warn, stop: Optional[threading.Event] = None,
              on_plan: Optional[PlanHook] = None) -> PassResult:
        executor = self._executor(store, graph, nodedefs, parallelize, parallelism, report,
                                  records=state.instances)
        result = run_pass(executor, state, resources_of(graph, nodedefs),
                          retry_backoff=self.config.retry_backoff, stop=stop, report=report,
                          on_plan=on_plan, specs=executor.specs)
        summary = self.store.summary(graph.infra_id)
        new = dict(summary, name=graph.infra_name, state=result.state, **counts(result.plan))
        if new != summary:
            store.set_infra_state(graph.infra_id, result.state, new,
                                  quiet=summary.get('state') == result.state)
        return result

    def maintain(self, infra_id: str, *, interval: float, stop: threading.Event,
                 parallelize: Optional[bool] = None, parallelism: Optional[int] = None,
                 report: Optional[Warn] = None) -> None:
        """Management passes every ``interval`` seconds until ``stop`` is set or the
        infrastructure is destroyed.  Never gives up on a node, cloud or Redis error: it says
        what went wrong, records it in the event stream when it can, and tries again."""
        report = report or self.warn
        while not stop.is_set():
            try:
                self.manage_pass(infra_id, parallelize=parallelize, parallelism=parallelism,
                                 stop=stop, report=report)
            except LeaseHeld as exc:
                report(f'{exc.message}; trying again in {interval:g} s')
            except UnknownInfrastructure:
                report(f'infrastructure {infra_id} no longer exists; nothing left to manage')
                return
            except LeaseLost:
                raise  # another process manages it now: this one must not write any more
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the maintainer either
                reason = self.record_failed_pass(infra_id, exc)
                report(f'pass failed: {reason}; trying again in {interval:g} s')
            stop.wait(interval)

    def record_failed_pass(self, infra_id: str, exc: BaseException) -> str:
        """Record a ``pass_failed`` event (while the infrastructure exists and no other process
        holds its lease; never raises); returns why it failed, in one line."""
        reason = describe_error(exc)
        try:
            self.store.add_events(infra_id, [event('pass_failed', reason=reason)], if_exists=True)
        except OccoError:
            pass  # Redis itself is the problem; the next pass tries again
        return reason

    # -- background maintenance (occopus-manage --all, the REST service) ------------------------

    def attach(self, infra_id: str) -> None:
        """Mark an infrastructure as maintained again by the maintainer fleet
        (``occopus-manage --all -c``, the REST service); every one is, from its build on.

        :raises UnknownInfrastructure: if it does not exist.
        :raises Conflict: if it is maintained already.
        """
        self._mark(infra_id, True, 'is already being maintained')

    def detach(self, infra_id: str) -> None:
        """Leave an infrastructure alone in the maintainer fleet; it keeps running.

        :raises UnknownInfrastructure: if it does not exist.
        :raises Conflict: if it is not maintained.
        """
        self._mark(infra_id, False, 'is not maintained')

    def _mark(self, infra_id: str, maintained: bool, clash: str) -> None:
        was = self.store.set_maintained(check_infra_id(infra_id), maintained)
        if was is None:
            raise UnknownInfrastructure(infra_id)
        if was == maintained:
            raise Conflict(f'infrastructure {infra_id} {clash}')

    def fleet(self, *, interval: float, stop: threading.Event, parallelize: Optional[bool] = None,
              skip: Callable[[str], bool] = lambda infra_id: False,
              told: Optional[Callable[[str], None]] = None) -> Fleet:
        """A member of the maintainer fleet over this session (see :mod:`occo.fleet`):
        ``run()`` it, or make one ``pass_once(infra_id)``."""
        return Fleet(self, interval=interval, stop=stop, parallelize=parallelize, skip=skip,
                     told=told)

    def maintained(self) -> List[str]:
        """The ids of the infrastructures marked maintained, oldest first."""
        registry = self.store.infras()
        ids = sorted(registry, key=lambda i: registry[i].get('created_at', 0))
        return self.store.maintained(ids)

    # -- scaling -------------------------------------------------------------------------------

    def scale(self, infra_id: str, node: str, *, change: Optional[int] = None,
              target: Optional[int] = None, selector: Optional[str] = None) -> int:
        """Record a scaling request for the next management pass (atomically; no lease is
        needed, so it works while a maintainer runs).  Returns how many requests are pending.

        :raises OccoError: if the infrastructure or the node does not exist.
        """
        record = self._known(check_infra_id(infra_id))
        graph = InfraGraph.from_json(record['graph'])
        if node not in graph.nodes:
            raise UnknownNode(f"node '{node}' does not exist in infrastructure '{infra_id}' "
                            f"(nodes: {', '.join(graph.nodes)})")
        request: Dict[str, Any] = {'node': node, 'time': round(time.time(), 3), 'who': WHO}
        if target is not None:
            request.update(kind=SET, count=target)
        elif selector is not None:
            if not selector or len(selector) > 256:
                raise UsageError('a scale-down selector is an instance id or address (1 to 256 '
                                 f'characters), got {len(selector)}')
            request.update(kind=DOWN, count=1, selector=selector)
        elif change is not None and change > 0:
            request.update(kind=UP, count=change)
        elif change is not None:
            request.update(kind=DOWN, count=-change)
        else:
            raise UsageError('a scaling request needs a change, a target or a selector')
        pending = self.store.add_request(infra_id, request)
        if not pending:
            raise UnknownInfrastructure(infra_id, 'it was destroyed just now')
        if pending < 0:
            raise Conflict(f'infrastructure {infra_id} has {MAX_PENDING_REQUESTS} scaling requests '
                           'waiting for a management pass already; run one (or attach it) first')
        return pending

    # -- reports -------------------------------------------------------------------------------

    def list_infras(self) -> List[Dict[str, Any]]:
        """Every known infrastructure (the shared registry) with its nodes' instance counts."""
        registry = self.store.infras()
        instances = self.store.load_many(sorted(registry))
        result = []
        for infra_id, summary in sorted(registry.items(), key=lambda kv: kv[1].get('created_at', 0)):
            if instances[infra_id] is None:
                continue  # a registry entry outliving its record (a crash mid-destroy)
            nodes: Dict[str, Dict[str, int]] = {}
            for record in instances[infra_id].values():
                entry = nodes.setdefault(record.get('node', '?'), {'ready': 0, 'total': 0})
                entry['total'] += 1
                entry['ready'] += record.get('state') == State.READY
            result.append(dict(summary, infra_id=infra_id, nodes=dict(sorted(nodes.items()))))
        return result

    def report(self, infra_id: str, *, live: bool = True) -> Dict[str, Any]:
        """The state of every node and instance: the REST service's ``GET
        /infrastructures/<id>`` shape.  With ``live``, asks the clouds and runs the health
        checks (read-only: no lease is taken and nothing is written)."""
        state = InfraState.from_store(self.store.load(check_infra_id(infra_id)))
        if state is None:
            raise UnknownInfrastructure(infra_id)
        graph, nodedefs = self._stored_graph(state.infra)
        instances = state.instances
        verdicts: Dict[str, str] = {}
        if live:
            executor = self._executor(self.store, graph, nodedefs, None, None, self.warn)
            seen = observe(executor, instances, state.failtimes)
            instances = {**instances, **seen.updated}
            verdicts = seen.verdicts
        _, scaling = plan_from_state(graph, resources_of(graph, nodedefs), instances,
                                     state.targets, state.requests, verdicts=verdicts)
        by_node: Dict[str, List[Instance]] = {}
        for instance in sorted(instances.values(), key=lambda i: i.created_at or 0):
            by_node.setdefault(instance.node, []).append(instance)
        health = self._placer(graph, nodedefs).summary()
        result: Dict[str, Any] = {}
        for name in list(graph.order) + sorted(set(by_node) - set(graph.nodes)):
            records = by_node.get(name)
            if not records:
                continue
            node = graph.nodes.get(name)
            result[name] = {
                'instances': {i.node_id: {
                    'resource_address': _address(i),
                    'state': State.FAILED.value if i.node_id in verdicts else i.public_state()}
                    for i in records},
                'scaling': {'actual': len(records), 'target': scaling.targets.get(name, 0),
                            'min': node.scaling.min if node else 0,
                            'max': node.scaling.max if node else 0},
            }
            if name in health:  # several implementations: which one each instance is on
                for i in records:
                    entry = health[name].get(i.implementation)
                    if entry is not None:
                        result[name]['instances'][i.node_id]['implementation'] = entry['implementation']
                result[name]['implementations'] = [
                    dict(entry, index=index) for index, entry in sorted(health[name].items())]
        return result

    def events(self, infra_id: str, count: Optional[int] = None) -> List[Dict[str, Any]]:
        """The event stream of an infrastructure, oldest first."""
        self._known(check_infra_id(infra_id))
        return [_event_json(entry) for entry in self.store.events(infra_id, count)]


def check_buildable(graph: InfraGraph, nodedefs: Mapping[str, NodeDefinition]) -> None:
    """:raises NotImplementedYet: before anything is created, if a node could get an
    implementation this release cannot build (a cloud or config manager that is only checked,
    planned and rendered so far); a filter can choose the buildable ones."""
    for node in graph.nodes.values():
        for index in node.candidates:
            impl = nodedefs[node.type].implementations[index]
            for group, name in ((plugins.RESOURCES, impl.resource_type),
                                (plugins.CONFIG_MANAGERS, impl.config_manager_type)):
                cls = plugins.plugin_class(group, name)
                if not getattr(cls, 'buildable', False):
                    raise NotImplementedYet(
                        f"node '{node.name}': implementation #{index} of '{node.type}' uses "
                        f'{cls.describe()}, which can be checked, planned and rendered but not yet '
                        'built in this release (a filter can choose another implementation)',
                        source=graph.source, line=node.line)


def check_credentials(graph: InfraGraph, nodedefs: Mapping[str, NodeDefinition],
                      auth: AuthData) -> None:
    """:raises AuthError: before anything is created, naming the node, if none of a node's
    implementations on a cloud (or with a config manager) that needs credentials has an
    auth-data entry (or one matches ambiguously).  Sections with templates are left to the
    call that sees them rendered."""
    for node in graph.nodes.values():
        implementations = [nodedefs[node.type].implementations[i] for i in node.candidates]
        _check_node_credentials(graph, node, auth, 'config_management', plugins.CONFIG_MANAGERS,
                                [impl.config_management for impl in implementations])
        _check_node_credentials(graph, node, auth, 'resource', plugins.RESOURCES,
                                [impl.resource for impl in implementations])


def _check_node_credentials(graph: InfraGraph, node: Any, auth: AuthData, part: str,
                            group: str, sections: Sequence[Optional[Mapping[str, Any]]]) -> None:
    """:raises AuthError: naming the node, if none of ``sections`` (its implementations'
    ``part`` sections, plugins of ``group``) has the credentials its plugin needs; one that
    needs none, or has templates, or has them, is enough."""
    missing = []
    for section in sections:
        cls = plugins.plugin_class(group, (section or {}).get('type', 'dummy'))
        if not section or not getattr(cls, 'needs_credentials', False) or has_templates(section):
            return  # this one needs none, or cannot be told before it is rendered
        try:
            found = auth.find(part, section)
        except AuthError as exc:
            raise AuthError(f"node '{node.name}': {exc.message}", source=exc.source) from None
        if found is not None:
            return
        missing.append(cls.no_credentials(section))
    if missing:
        raise AuthError(f"node '{node.name}': {missing[0].message}", source=graph.source,
                        line=node.line)


def resources_of(graph: InfraGraph, nodedefs: Mapping[str, NodeDefinition]
                 ) -> Dict[str, List[Dict[str, Any]]]:
    """Node name -> the resource section of each implementation of its type."""
    return {name: [impl.resource for impl in nodedefs[node.type].implementations]
            for name, node in graph.nodes.items() if node.type in nodedefs}


def _event_json(entry: Mapping[str, str]) -> Dict[str, Any]:
    """An event as JSON: its ``time`` in epoch seconds as a number, as ``created_at`` and
    ``ready_at`` of instances are (the stream keeps text)."""
    shown: Dict[str, Any] = dict(entry)
    try:
        shown['time'] = round(float(entry.get('time', '')), 3)
    except ValueError:
        pass
    return shown


def specs_of(graph: InfraGraph, nodedefs: Mapping[str, NodeDefinition]) -> Dict[str, Dict[str, str]]:
    """What each node's instances are made from now (see :func:`occo.planner.node_specs`)."""
    return node_specs(graph, {name: d.to_json() for name, d in nodedefs.items()})


def counts(plan: Plan) -> Dict[str, int]:
    """Instance counts for the registry summary."""
    return {'instances': sum(n.target for n in plan.nodes), 'nodes': len(plan.nodes)}


def _address(instance: Instance) -> Any:
    """The original's ``resource_address``: one address, a list of them, or ''."""
    if len(instance.addresses) > 1:
        return list(instance.addresses)
    return instance.address()


def _instances(records: Mapping[str, Mapping[str, Any]]) -> Dict[str, Instance]:
    return {key: Instance.from_json(record) for key, record in records.items()}


def _taken_over(store: Store) -> bool:
    """True if our lease was lost to another process (which then owns the infrastructure and
    what we made for it), rather than to Redis losing our records."""
    return bool(getattr(store, 'taken_over', False))


def _teardown_message(infra_id: str, failures: List[Failure]) -> str:
    more = f' and {len(failures) - 1} more' if len(failures) > 1 else ''
    gone = (' (or with --forget-unreachable if that cloud is gone for good)'
            if any(f.unasked for f in failures) else '')
    return (f'{failures[0]}{more}; they are still recorded: run occopus-destroy -i {infra_id} '
            f'again once the cloud answers{gone}')
