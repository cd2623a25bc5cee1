"""The executor: applies a plan's creates and drops to the clouds.

Both walk the infrastructure's graph with :class:`~occo.walker.Walker`: an instance is created
the moment its own node's dependencies are ready (no level barriers), and dropped the moment
the instances that depend on it are gone (the same edges, reversed).  Sequential mode (the
default, as the original) handles one instance at a time in plan order, waiting for it to be
ready before the next; parallel mode runs up to ``parallelism`` creates or drops at once, and
an instance waiting to become ready holds no slot.

Every cloud call goes through :class:`~occo.calls.Calls`: bounded in time (``create_timeout``
covers a whole create, call included; ``call_timeout`` bounds states, drop and find), limited
per endpoint, transient errors retried with backoff (each retry is an event).

Readiness = the resource is running, its config manager is done, and its health checks pass
(:func:`occo.instances.judge` decides).  A :class:`~occo.monitor.Monitor` thread polls the
clouds for the instances being waited for, one batched call per (cloud, endpoint), backing off
with the time waited (an instance is seen ready within about a fifth of its wait; polls are
0.1 s to 10 s apart), runs health checks on a bounded pool, and writes what changed in one
round trip.

Instance records are written (state ``creating``) before a cloud is called, so a build killed
at any point leaves nothing untraceable; and the executor keeps its own journal of what the
clouds made in this run, so that it can tear exactly that down when Redis comes back empty or
the lease is gone.
"""
from __future__ import annotations

import copy
import json
import signal
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence,
                    Tuple)

from occo import health, plugins
from occo.calls import Calls
from occo.errors import (BuildError, CallTimeout, CloudError, ConfigError, LeaseLost, OccoError,
                         TransientCloudError, describe_error)
from occo.instances import (CloudState, Health, Instance, Judgement, ResourceStatus, State,
                            Verdict, create_timeout, judge)
from occo.plugins.base import has_templates
from occo.plugins.configmanagers.base import ConfigManager, Registration
from occo.placement import Placer, counts_against
from occo.plugins.resources.base import CreateRequest, Created
from occo.resolution import Address, Resolver
from occo.runtime import Runtime
from occo.store import event
from occo.monitor import Monitor, NotReady
from occo.walker import VertexTimeout, Walker
from occo.writer import DroppedRecords, GroupWriter

GRACE = 5.0  # seconds past a vertex's own limits before the walker gives up on it
Report = Callable[[str], None]


@dataclass
class Failure:
    """Why an instance of a node could not be created, made ready or dropped."""

    node: str
    node_id: Optional[str]
    reason: str
    #: its create was under way on a cloud that could not be asked for what it made
    unasked: bool = False

    def __str__(self) -> str:
        if not self.node:  # not about one node (a cloud that could not be asked)
            return self.reason
        instance = f' (instance {self.node_id[:8]})' if self.node_id else ''
        reason = self.reason
        if reason.startswith(f"node '{self.node}': "):
            reason = reason[len(f"node '{self.node}': "):]
        return f"node '{self.node}'{instance}: {reason}"


@contextmanager
def uninterruptible(report: Report, deliver: bool = False) -> Iterator[None]:
    """Hold off SIGINT and SIGTERM (with a notice) while resources are being torn down:
    interrupting a teardown would leak them.  With ``deliver``, a signal received meanwhile is
    held, not dropped: the handler that was in place gets it once the block ends (a
    maintainer asked to stop then stops)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: List[int] = []

    def notice(signum: int, frame: Any) -> None:
        held.append(signum)
        report('still tearing down; interrupting now would leave resources behind, please wait')
    previous = {sig: signal.signal(sig, notice) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if deliver and held and callable(previous[held[0]]):
            previous[held[0]](held[0], None)


def seconds(value: float) -> str:
    return f'{value:g} s'


# -- the executor --------------------------------------------------------------------------

Vertex = Tuple[str, Any]  # ('c', index) a create, ('w', node id) a watched instance,
#                           ('d', key) a drop, ('n', node name) all of a node's vertices


@dataclass
class _Walk:
    """The vertices and dependencies of one walk, with the instance behind each vertex."""

    order: List[Vertex] = field(default_factory=list)
    depends_on: Dict[Vertex, List[Vertex]] = field(default_factory=dict)
    instances: Dict[Vertex, Instance] = field(default_factory=dict)


class Executor:
    """Creates and drops node instances of one infrastructure.

    :param report: receives one line per step worth telling the user.
    """

    def __init__(self, runtime: Runtime, graph: Any, resolver: Resolver, *, parallel: bool,
                 parallelism: int, report: Report,
                 specs: Optional[Mapping[str, Mapping[str, str]]] = None,
                 records: Optional[Mapping[str, Instance]] = None) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.graph = graph
        self.infra_id = graph.infra_id
        self.resolver = resolver
        self.parallel = parallel
        self.parallelism = max(1, parallelism) if parallel else 1
        self.report = report
        #: node name -> what its instances are made from now (recorded in each new one)
        self.specs = dict(specs or {})
        config = runtime.config
        self.health_checks = config.health_checks
        self.create_timeout = config.create_timeout
        self.call_timeout = config.call_timeout
        self.calls = Calls(endpoint_limit=config.endpoint_parallelism)
        self.writer = GroupWriter(self.store, self.infra_id)
        #: what the clouds made in this run and was not dropped since (node id -> instance):
        #: torn down from here when the store cannot be trusted any more
        self.journal: Dict[str, Instance] = {}
        self.created = 0  # resources the clouds made (whether or not they became ready)
        #: node ids whose create call the cloud refused for good, or never received: nothing
        #: was made for them (see :func:`made_nothing`)
        self.refused: set = set()
        #: node ids whose registration with their config manager was refused for good or
        #: never sent: it left nothing to drop there
        self.unregistered: set = set()
        #: config-manager sections this run's registrations may have reached, by key
        self.touched: Dict[str, Tuple[str, Dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._halted = threading.Event()
        live: Dict[str, Dict[int, int]] = {}
        for record in (records or {}).values():
            counts = live.setdefault(record.node, {})
            counts[record.implementation] = counts.get(record.implementation, 0) + 1
        #: chooses implementations and keeps their health records (see occo.placement)
        self.placer = Placer(self.store, graph, resolver.implementation, config.retry_backoff,
                             live=live, rng=resolver.rng)

    # -- cloud calls -----------------------------------------------------------------------

    def _call(self, what: str, instance: Optional[Instance], fn: Callable[[], Any], *,
              handler: Any, resource: Mapping[str, Any], seconds_: Optional[float] = None,
              limit: Optional[str] = None, **options: Any) -> Any:
        """A bounded, retried cloud call; each retry is told and recorded as an event.  Bounded
        by ``call_timeout`` unless ``seconds_`` (and ``limit``, the setting it comes from) say
        otherwise."""
        if seconds_ is None:
            seconds_, limit = self.call_timeout, f'call_timeout ({seconds(self.call_timeout)})'

        def retried(call: str, reason: str, attempt: int, wait: float) -> None:
            text = f'{call}: {reason}; try {attempt + 1} in {wait:.1f} s'
            self.report(f'{instance.short}: {text}' if instance else text)
            try:
                self.store.add_events(self.infra_id, [event(
                    'cloud_retry', instance.node if instance else None,
                    instance.node_id if instance else None, text)])
            except OccoError:
                pass  # an event is not worth failing the call for
        return self.calls.call(what, fn, seconds=seconds_, limit=limit, on_retry=retried,
                               endpoint=(handler.type, handler.endpoint(resource)), **options)

    def states(self, handler: Any, instances: List[Instance]) -> Dict[str, Any]:
        """States of ``instances`` (one cloud and endpoint) by node id: a ResourceStatus, or
        the text of why the cloud could not be asked this time (asked again later)."""
        try:
            return self._call(f'the states call on {handler.type}', None,
                              lambda: handler.states(instances), handler=handler,
                              resource=instances[0].resource, retry=False)
        except Exception as exc:  # noqa: BLE001 - a cloud error: try again at the next poll
            reason = f'cannot read its state: {describe_error(exc)}'
            return {i.node_id: reason for i in instances}

    def wants_health(self, instance: Instance, handler: Any) -> bool:
        return self.health_checks and health.has_checks(instance, handler)

    def check_health(self, instance: Instance, failing_since: Optional[float]) -> Health:
        node = self.graph.nodes.get(instance.node)
        return health.observe(instance, node.variables if node else {}, failing_since, time.time())

    # -- creating --------------------------------------------------------------------------

    def create_all(self, creates: Sequence[Any], *, fail_fast: bool = True,
                   stop: Optional[threading.Event] = None,
                   watch: Sequence[Instance] = ()) -> List[Instance]:
        """Create one instance per action of ``creates`` (plan order) and wait until each is
        ready; returns the ready instances.

        :param fail_fast: once an instance fails, start nothing more (a build, which will be
            torn down); otherwise go on with every action that does not wait for a failed node
            (a management pass).
        :param stop: once set, start nothing more, let the cloud calls under way finish, and
            return without waiting for instances to become ready (they stay ``pending``).
        :param watch: instances created earlier and not ready yet: they are waited for like
            new ones, and their nodes' dependents wait for them.
        :raises BuildError: listing every instance that failed (and actions skipped because
            they wait for one); what was created is left for the caller to drop or keep.
        """
        walk = self._create_walk(creates, watch)
        walker: Walker[Vertex] = Walker(walk.order, walk.depends_on,
                                        limit=self.parallelism if self.parallel else 1,
                                        deadline=lambda v: self._deadline(walk, v),
                                        fail_fast=fail_fast)
        monitor = Monitor(self)
        pool = ThreadPoolExecutor(self.parallelism, thread_name_prefix='occo-create')
        self._booting: set = set()  # sequential mode: vertices whose call returned
        self._halted = threading.Event()

        def halt() -> None:  # stopping: instances still booting need not be waited for
            self._halted.set()
            for vertex in list(self._booting):
                walker.release(vertex)
        try:
            result = walker.walk(lambda batch: self._visit(walk, walker, monitor, pool, batch),
                                 stop, on_halt=halt)
        except BaseException:
            self.calls.abandon_all()  # interrupted: stop waiting for the calls under way
            raise
        finally:
            with uninterruptible(self.report, deliver=True):  # a Ctrl+C must not skip this
                pool.shutdown(wait=True, cancel_futures=True)  # bounded: calls have deadlines
                monitor.stop()
        failures = self._failures(walk, result, skipped=not fail_fast)
        ready = [walk.instances[v] for v in walk.order if v in result.done and v[0] != 'n']
        if failures:
            raise BuildError(failures, ready=ready)
        return ready

    def _create_walk(self, creates: Sequence[Any], watch: Sequence[Instance]) -> _Walk:
        """Vertices: one per create action and per watched instance, plus one per node that
        is done when all of that node's are; a create waits for its dependees' node vertices."""
        walk = _Walk()
        members: Dict[str, List[Vertex]] = {}
        for instance in watch:
            vertex = ('w', instance.node_id)
            walk.order.append(vertex)
            walk.instances[vertex] = instance
            members.setdefault(instance.node, []).append(vertex)
        for index, action in enumerate(creates):
            vertex = ('c', index)
            walk.order.append(vertex)
            walk.depends_on[vertex] = [('n', d) for d in action.depends_on]
            members.setdefault(action.node, []).append(vertex)
        self._actions = {('c', i): a for i, a in enumerate(creates)}
        for node, vertices in members.items():
            walk.order.append(('n', node))
            walk.depends_on[('n', node)] = vertices
        return walk

    def _deadline(self, walk: _Walk, vertex: Vertex) -> Optional[float]:
        """The walker's backstop: a vertex's own limits plus a grace (the monitor and the
        call runner give the precise, well-worded failures before it)."""
        instance = walk.instances.get(vertex)
        if instance is None:
            return None
        limit = create_timeout(instance, self.create_timeout)
        left = limit - max(0.0, time.time() - instance.created_at)
        node = self.graph.nodes.get(instance.node)
        if node is not None and len(node.candidates) > 1:  # room for one failover
            left += limit + self.call_timeout
        return max(0.0, left) + self.call_timeout + GRACE

    def _visit(self, walk: _Walk, walker: Walker, monitor: Monitor, pool: ThreadPoolExecutor,
               batch: Sequence[Vertex]) -> List['Future[Any]']:
        """Start the vertices of ``batch``: creates run on the pool (each is recorded, state
        ``creating``, before its cloud is asked); watched instances go to the monitor."""
        walk.instances.update({v: self._creating(self._actions[v].node) for v in batch if v[0] == 'c'})
        futures: List['Future[Any]'] = []
        for vertex in batch:
            if vertex[0] == 'n':
                futures.append(_done(None))
            elif vertex[0] == 'w':
                self._booting.add(vertex)
                if self.parallel:
                    walker.release(vertex)  # waiting holds no slot
                futures.append(monitor.watch(walk.instances[vertex]))
            else:
                futures.append(self._start_create(walk, vertex, walker, monitor, pool))
        return futures

    def _start_create(self, walk: _Walk, vertex: Vertex, walker: Walker,
                      monitor: Monitor, pool: ThreadPoolExecutor) -> 'Future[Any]':
        """Create the instance of ``vertex``; if it fails on its implementation for a reason
        that is the cloud's (see :func:`occo.placement.counts_against`), it is dropped and
        its node tries once more on another healthy implementation (a failover)."""
        outcome: 'Future[Any]' = Future()
        tried: List[int] = []

        def give_up(exc: BaseException) -> None:
            if not outcome.done():
                outcome.set_exception(exc)

        def failed(instance: Instance, exc: BaseException, booting: bool) -> None:
            try:
                retry = self._failover(instance, exc, booting, tried)
            except BaseException as error:  # noqa: BLE001 - the walker must hear of it
                give_up(error if isinstance(error, LeaseLost) else exc)
                return
            if retry is None:
                give_up(exc)
                return
            walk.instances[vertex] = retry
            try:
                pool.submit(work, retry)
            except RuntimeError:  # shutting down
                give_up(exc)

        def watched(instance: Instance, future: 'Future[Any]') -> None:
            exc = future.exception()
            if exc is None:
                if not outcome.done():
                    outcome.set_result(future.result())
            elif isinstance(exc, NotReady):
                try:  # not on the monitor's thread: a failover drops and creates
                    pool.submit(failed, instance, exc, True)
                except RuntimeError:  # shutting down
                    give_up(exc)
            else:
                _chain(future, outcome)

        def work(instance: Instance) -> None:
            tried.append(instance.implementation)
            try:
                resolved = self._resolve(instance)
                # Recorded, with the rendered resource section (the endpoint to ask), before
                # any cloud is asked: a build killed from here on leaves a record that destroy
                # follows to the resource, by its tags.
                self.writer.write([instance.to_json()], durable=True)
                created = self._create(instance, resolved)
            except BaseException as exc:  # noqa: BLE001 - the walker reports it
                failed(instance, exc, booting=False)
                return
            finally:
                self._booting.add(vertex)
                if self.parallel or self._halted.is_set():
                    walker.release(vertex)  # the call is over: booting holds no slot
            if created is not None:  # ready at once
                outcome.set_result(created)
                return
            monitor.watch(instance).add_done_callback(lambda f: watched(instance, f))
        pool.submit(work, walk.instances[vertex])
        return outcome

    def _failover(self, instance: Instance, exc: BaseException, booting: bool,
                  tried: List[int]) -> Optional[Instance]:
        """Record a failed create against its implementation; if the node may try another
        one (once per instance, never while stopping, only where the failed create certainly
        left nothing but what is dropped here), drop what it left and return the record of the
        new instance to create."""
        if not counts_against(exc, booting):
            return None
        node, index = instance.node, instance.implementation
        reason = describe_error(exc)
        events = []
        opened = self.placer.failed(node, index, reason, instance.created_at or 0.0)
        if opened is not None:
            events.append(event('implementation_open', node, instance.node_id,
                                f'{self.placer.name(node, index)}: {reason}; skipped until '
                                f"{time.strftime('%H:%M:%S', time.localtime(opened.open_until))}"))
        others = self.placer.alternatives(node, tried)
        clean = (booting and instance.instance_id) or instance.node_id in self.refused
        if len(tried) > 1 or not others or not clean or self._halted.is_set() \
                or self.store.lost is not None and self.store.lost.is_set():
            if events:
                self.writer.write(events=events)
            return None
        if instance.instance_id:
            self._forget_created(self.runtime.handler(instance.resource_type), instance)
        retry = self._creating(node, exclude=tried)
        text = (f'from {self.placer.name(node, index)} to '
                f'{self.placer.name(node, retry.implementation)}: {reason}')
        events += [event('node_dropped', node, instance.node_id, 'failed over'),
                   event('failover', node, retry.node_id, text)]
        self.writer.write(removed=[instance.node_id], events=events)
        self.report(f'{instance.short}: failing over {text}')
        return retry

    def _creating(self, node: str, exclude: Sequence[int] = ()) -> Instance:
        """The record of a new instance, before anything is rendered or created: its
        implementation is chosen (filter, health, placement: see :mod:`occo.placement`) and
        its cloud known."""
        index = self.placer.choose(node, exclude)
        resource = self.resolver.implementation(node, index).resource
        known = {'type': resource['type']}
        if isinstance(resource.get('create_timeout'), (int, float)):  # the walker's deadline
            known['create_timeout'] = resource['create_timeout']
        return Instance(node_id=str(uuid.uuid4()), node=node, infra_id=self.infra_id,
                        state=State.CREATING, implementation=index,
                        resource_type=resource['type'], resource=known,
                        created_at=round(time.time(), 3), spec=dict(self.specs.get(node) or {}))

    def _resolve(self, instance: Instance) -> Any:
        """Render what one recorded instance is made of (no cloud is asked) and keep its
        resource section, health checks and config management with it."""
        resolved = self.resolver.resolve(instance.node, instance.node_id, instance.implementation)
        instance.resource = resolved.resource
        instance.health_check = resolved.health_check or {}
        instance.config_management = resolved.config_management or {}
        return resolved

    def _create(self, instance: Instance, resolved: Any) -> Optional[Instance]:
        """Create one recorded, resolved instance (in a worker); returns it if the cloud says
        it is ready at once, else None (the monitor waits for it)."""
        node, node_id = instance.node, instance.node_id
        self._prepare(instance, resolved)
        handler = self.runtime.handler(resolved.resource_type)
        timeout = create_timeout(instance, self.create_timeout)
        instance.created_at = round(time.time(), 3)  # the create timeout counts from the call
        self._check_lease()
        request = CreateRequest(infra_id=self.infra_id, infra_name=self.graph.infra_name,
                                node=node, node_id=node_id, resource=resolved.resource,
                                context=resolved.context)

        reached = threading.Event()  # an attempt whose request may have reached the cloud

        def attempt() -> Created:
            request.attempts += 1
            try:
                return handler.create(request)
            except BaseException as exc:
                if not made_nothing(exc):
                    reached.set()
                raise
        try:
            created: Created = self._call(
                f'the create call on {handler.type}', instance, attempt,
                handler=handler, resource=resolved.resource, seconds_=timeout,
                limit=f'create_timeout ({seconds(timeout)})', cancelled=request.cancelled,
                on_late=lambda late: self._drop_late(handler, instance, late))
        except BaseException as exc:
            if made_nothing(exc) and not reached.is_set():
                with self._lock:
                    self.refused.add(node_id)
            raise
        instance.state = State.PENDING
        instance.instance_id = created.instance_id
        instance.addresses = list(created.addresses)
        instance.private_address = created.private_address
        instance.extra = dict(created.extra)
        with self._lock:
            self.created += 1
            self.journal[node_id] = instance
        events = [event('node_created', node, node_id, f'{handler.type} {created.instance_id}')]
        ready = None
        if created.state is not None:
            cm_type = instance.config_management.get('type', 'dummy')
            status = ResourceStatus(created.state, list(created.addresses), created.private_address)
            verdict = judge(instance, status, configured=created.state == CloudState.RUNNING
                            and self.runtime.config_manager(cm_type).ready(instance),
                            wants_health=self.wants_health(instance, handler), timeout=timeout)
            if verdict.verdict == Verdict.READY:
                ready = instance
        try:
            if ready is not None:
                self.finish([(instance, Judgement(Verdict.READY))], events)
            else:
                self.writer.write([instance.to_json()], events=events, durable=True)
        except BaseException:
            # Not recorded (the lease was lost, Redis went away...): never leave it untraceable.
            self._forget_created(handler, instance)
            raise
        if ready is None:
            self.report(f'{instance.short}: created {created.instance_id} on {handler.type}; '
                        'waiting for it to become ready')
        return ready

    def _prepare(self, instance: Instance, resolved: Any) -> None:
        """Register the instance with its config manager (bounded, retried) before its
        resource is created.  Remembers the services it may have reached (a rolled-back build
        forgets the infrastructure there) and the instances it certainly left nothing for."""
        manager = self.runtime.config_manager(resolved.config_manager_type)
        if type(manager).prepare is ConfigManager.prepare:
            return  # nothing to register (dummy, puppet_solo): no call, no thread
        section = dict(resolved.config_management or {})
        registration = Registration(
            infra_id=self.infra_id, infra_name=self.graph.infra_name, node=instance.node,
            node_id=instance.node_id, section=section,
            attributes=copy.deepcopy(resolved.context.attributes or {}),
            connections=copy.deepcopy(resolved.connections))
        reached = threading.Event()

        def attempt() -> None:
            try:
                manager.prepare(registration)
            except BaseException as exc:
                if not made_nothing(exc):
                    reached.set()
                raise
            reached.set()
        self._check_lease()
        try:
            self._call(f'the registration with {manager.type}', instance, attempt,
                       handler=manager, resource=section)
        except BaseException as exc:
            if made_nothing(exc) and not reached.is_set():
                with self._lock:
                    self.unregistered.add(instance.node_id)
            raise
        finally:
            if reached.is_set() and manager.keeps_infra:
                with self._lock:
                    self.touched[_section_key(manager.type, section)] = (manager.type, section)

    def forget_config(self, records: Mapping[str, Instance], *, everything: bool) -> List[Failure]:
        """Tell the config managers that keep something per infrastructure (Chef's
        environment and roles) to forget this one: on the services this run's registrations
        reached and, with ``everything`` (a destroy), on every service of ``records``' and of
        the graph's implementations.  Returns what could not be forgotten."""
        with self._lock:
            sections = dict(self.touched)
        if everything:
            found = [i.config_management for i in records.values() if i.config_management]
            for node in self.graph.nodes.values():
                for index in node.candidates:
                    try:
                        impl = self.resolver.implementation(node.name, index)
                        found.append(impl.config_management)
                    except (KeyError, IndexError):
                        continue
            for section in found:
                cm_type = (section or {}).get('type', 'dummy')
                if section and not has_templates(section) and \
                        getattr(plugins.plugin_class(plugins.CONFIG_MANAGERS, cm_type),
                                'keeps_infra', False):
                    sections.setdefault(_section_key(cm_type, section), (cm_type, dict(section)))
        by_service: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
        for cm_type, section in sections.values():
            manager = self.runtime.config_manager(cm_type)
            by_service.setdefault((cm_type, manager.endpoint(section)), []).append(section)
        failures = []
        for (cm_type, endpoint), group in sorted(by_service.items()):
            manager = self.runtime.config_manager(cm_type)
            try:
                self._call(f'forgetting the infrastructure on {cm_type}', None,
                           lambda: manager.forget_infra(self.infra_id, group), handler=manager,
                           resource=group[0])
            except Exception as exc:  # noqa: BLE001 - reported and kept for a later destroy
                reason = (f'what {cm_type} keeps for the infrastructure could not be removed: '
                          f'{describe_error(exc)}')
                self.report(f'warning: {reason}')
                failures.append(Failure('', None, reason))
        return failures

    def _drop_late(self, handler: Any, instance: Instance, created: Created) -> None:
        """A create the engine stopped waiting for returned after all: drop what it made."""
        late = Instance(node_id=instance.node_id, node=instance.node, infra_id=self.infra_id,
                        resource_type=handler.type, resource=instance.resource,
                        instance_id=created.instance_id, extra=dict(created.extra))
        self._call(f'the drop call on {handler.type}', late, lambda: handler.drop(late),
                   handler=handler, resource=late.resource)
        self.report(f'{late.short}: the late create made {created.instance_id}; dropped it')

    def _forget_created(self, handler: Any, instance: Instance) -> None:
        try:
            self._call(f'the drop call on {handler.type}', instance, lambda: handler.drop(instance),
                       handler=handler, resource=instance.resource)
        except Exception:  # noqa: BLE001 - still tagged: destroy finds it
            return
        with self._lock:
            self.journal.pop(instance.node_id, None)

    def finish(self, judged: Sequence[Tuple[Instance, Judgement]],
               events: Sequence[Mapping[str, str]] = ()) -> set:
        """Record instances that became ready or failed (one round trip), tell the user, and
        make ready ones' addresses known to templates; returns their node ids."""
        now = time.time()
        records, told = [], list(events)
        for instance, judgement in judged:
            if judgement.verdict == Verdict.READY:
                instance.state, instance.ready_at = State.READY, round(now, 3)
                told.append(event('node_ready', instance.node, instance.node_id))
                if self.placer.succeeded(instance.node, instance.implementation):
                    told.append(event('implementation_closed', instance.node, instance.node_id,
                                      f'{self.placer.name(instance.node, instance.implementation)}'
                                      ': a create on it succeeded'))
            else:
                instance.state, instance.error = State.FAILED, judgement.reason
                told.append(event('node_failed', instance.node, instance.node_id, judgement.reason))
            records.append(instance.to_json())
        if records or told:
            self.writer.write(records, events=told)
        for instance, judgement in judged:
            if judgement.verdict == Verdict.READY:
                self.resolver.addresses.add(instance.node, Address(
                    instance.node_id, instance.addresses, instance.private_address))
                where = ', '.join(instance.addresses) or 'no address'
                self.report(f'{instance.short}: ready after {now - instance.created_at:.1f} s '
                            f'({where})')
            else:
                self.report(f'{instance.short}: failed: {judgement.reason}')
        return {instance.node_id for instance, _ in judged}

    def _failures(self, walk: _Walk, result: Any, skipped: bool) -> List[Failure]:
        """Failed creates (and, with ``skipped``, those skipped because they wait for a failed
        one), in plan order, each naming its node."""
        failures = []
        for vertex in walk.order:
            if vertex[0] == 'n':
                continue
            node = walk.instances[vertex].node if vertex in walk.instances else self._actions[vertex].node
            node_id = walk.instances[vertex].node_id if vertex in walk.instances else None
            if vertex in result.failed:
                exc = result.failed[vertex]
                reason = ('it took longer than its create_timeout and the calls allowed'
                          if isinstance(exc, VertexTimeout) else describe_error(exc))
                if not isinstance(exc, NotReady):
                    self.report(f'{node}/{(node_id or "?")[:8]}: failed: {reason}')
                failures.append(Failure(node, node_id, reason))
            elif skipped and vertex in result.skipped:
                broken = sorted({self._node_of(walk, v) for v in result.skipped[vertex]})
                failures.append(Failure(node, None, f"not created: it depends on "
                                        f"{', '.join(broken)}, whose instance could not be made ready"))
        return failures

    def _node_of(self, walk: _Walk, vertex: Vertex) -> str:
        if vertex[0] == 'n':
            return vertex[1]
        instance = walk.instances.get(vertex)
        return instance.node if instance else self._actions[vertex].node

    def _check_lease(self) -> None:
        """:raises LeaseLost: if our lease ran out (another process owns the infrastructure
        now): no cloud may be called on its behalf any more."""
        lost = getattr(self.store, 'lost', None)
        if lost is not None and lost.is_set():
            raise LeaseLost('the lease on this infrastructure is no longer ours')

    # -- dropping --------------------------------------------------------------------------

    def drop_all(self, records: Mapping[str, Instance], *, everything: bool = False,
                 forget_unasked: bool = False) -> List[Failure]:
        """Drop the resources of ``records`` (key -> instance) and forget them: an instance
        as soon as every instance that depends on it is gone.  Records still ``creating`` are
        matched to the resource the cloud made for them through its tags.  With ``everything``
        (a teardown: ``records`` is then every record of the infrastructure) the clouds are
        also asked for resources no record knows at all, and those are dropped too.  Returns
        the instances that could not be dropped (their records are kept), and -- unless
        ``forget_unasked`` -- those whose create was under way on a cloud that could not be
        asked for them."""
        records = dict(records)
        unasked = self._match_tags(records, everything)
        if forget_unasked:  # the user's choice: the cloud that could not be asked is gone
            for failure in unasked:
                self.report(f"warning: node '{failure.node}' (instance {failure.node_id}): "
                            f'{failure.reason}; forgetting it (--forget-unreachable): what it '
                            f'made, if anything, stays tagged with {self.infra_id}')
            unasked = []
        kept = {f.node_id for f in unasked}
        records = {key: i for key, i in records.items() if i.node_id not in kept}
        walk = self._drop_walk(records)
        walker: Walker[Vertex] = Walker(walk.order, walk.depends_on, limit=self.parallelism,
                                        deadline=lambda v: None if v[0] == 'n' else
                                        self.call_timeout + GRACE, skip_dependents=False)
        gone = DroppedRecords(self.writer)
        with ThreadPoolExecutor(self.parallelism, thread_name_prefix='occo-drop') as pool:
            def visit(batch: Sequence[Vertex]) -> List['Future[Any]']:
                gone.flush(due_only=True)
                return [_done(None) if v[0] == 'n' else pool.submit(self._drop, walk.instances[v], gone)
                        for v in batch]
            try:
                result = walker.walk(visit)
            finally:
                gone.flush()
        failures = unasked
        for vertex, exc in result.failed.items():
            instance = walk.instances[vertex]
            reason = f'could not be dropped: {describe_error(exc)}'
            self.report(f'{instance.short}: {reason}')
            failures.append(Failure(instance.node, instance.node_id, reason))
        return failures

    def teardown_records(self, records: Mapping[str, Instance]) -> Dict[str, Instance]:
        """What a teardown of the infrastructure would drop: ``records`` (every record it has)
        with id-less ones matched to their resources by tag, plus every tagged resource no
        record knows (``untracked``).  Asks the clouds; changes nothing."""
        records = {key: copy.copy(instance) for key, instance in records.items()}
        self._match_tags(records, everything=True)
        for instance in records.values():
            if 'what' not in instance.extra and instance.resource_type:
                instance.extra = dict(instance.extra,
                                      what=self.runtime.handler(instance.resource_type).noun)
        return records

    def drop_failed(self, failures: Sequence[Failure]) -> List[Failure]:
        """Drop what the instances of ``failures`` left in the clouds (from their stored
        records: a failed instance may still hold a resource)."""
        failed = {f.node_id for f in failures if f.node_id}
        if not failed:
            return []
        leftovers = {key: Instance.from_json(record)
                     for key, record in self.store.instances(self.infra_id).items() if key in failed}
        return self.drop_all(leftovers) if leftovers else []

    def _drop_walk(self, records: Mapping[str, Instance]) -> _Walk:
        """A drop waits for the node vertices of the nodes that depend on its own."""
        walk = _Walk()
        members: Dict[str, List[Vertex]] = {}
        for key, instance in records.items():
            vertex = ('d', key)
            walk.order.append(vertex)
            walk.instances[vertex] = instance
            members.setdefault(instance.node, []).append(vertex)
        dependents: Dict[str, List[str]] = {}
        for name, node in self.graph.nodes.items():
            for dependee in node.depends_on:
                dependents.setdefault(dependee, []).append(name)
        for vertex in list(walk.order):
            walk.depends_on[vertex] = [('n', d) for d in dependents.get(walk.instances[vertex].node, ())
                                       if d in members]
        for node, vertices in members.items():
            walk.order.append(('n', node))
            walk.depends_on[('n', node)] = vertices
        return walk

    def _drop(self, instance: Instance, gone: DroppedRecords) -> None:
        self._check_lease()
        self.drop_resource(instance)
        self.resolver.addresses.remove(instance.node_id)
        gone.add(instance)
        what = instance.instance_id or 'nothing created yet'
        self.report(f'{instance.short}: dropped ({what})')

    def drop_resource(self, instance: Instance) -> None:
        """Drop one instance's resource (bounded, retried) and its config manager's part.

        :raises OccoError: if the cloud would not drop it in time.
        """
        if instance.instance_id:
            handler = self.runtime.handler(instance.resource_type)
            self._call(f'the drop call on {handler.type}', instance, lambda: handler.drop(instance),
                       handler=handler, resource=instance.resource)
        cm_type = (instance.config_management or {}).get('type', 'dummy')
        manager = self.runtime.config_manager(cm_type)
        if instance.node_id not in self.unregistered and \
                type(manager).drop is not ConfigManager.drop:
            self._call(f'the drop call on {manager.type}', instance, lambda: manager.drop(instance),
                       handler=manager, resource=instance.config_management)
        with self._lock:
            self.journal.pop(instance.node_id, None)

    def _match_tags(self, records: Dict[str, Instance], everything: bool) -> List[Failure]:
        """Give id-less records the id of the resource their cloud holds for them (a build
        killed between the cloud's answer and the record's update); with ``everything``, also
        add resources of the infrastructure that no record knows.

        Each endpoint is asked on its own (a ``find`` per endpoint of each type), so one that
        cannot be asked does not stop the others; it is warned about, and the failures
        returned name the records whose create was under way there (what they made is not
        known, so they must not be forgotten)."""
        waiting = {i.node_id: i for i in records.values() if not i.instance_id}
        sections = self._sections(records.values() if everything else waiting.values(), everything)
        known_ids = {i.instance_id for i in records.values() if i.instance_id}
        unasked: List[Failure] = []
        for resource_type in sorted(sections):
            handler = self.runtime.handler(resource_type)
            groups: Dict[str, List[Dict[str, Any]]] = {}
            for section in sections[resource_type].values():
                groups.setdefault(handler.endpoint(section), []).append(section)
            failed: Dict[str, str] = {}
            for endpoint, resources in sorted(groups.items()):
                try:
                    found = self._call(f'the find call on {resource_type}', None,
                                       lambda: handler.find(self.infra_id, resources),
                                       handler=handler, resource=resources[0])
                except Exception as exc:  # noqa: BLE001 - a cloud (or handler) that cannot be asked
                    failed[endpoint] = describe_error(exc)
                    self.report(f'warning: cannot look for resources tagged with infrastructure '
                                f'{self.infra_id} on {resource_type}: {failed[endpoint]}; what a '
                                'killed build may have left there is not removed')
                    continue
                self._adopt(records, waiting, known_ids, resource_type, found, everything)
            if failed:
                unasked += [Failure(i.node, i.node_id, 'its create call was under way and its '
                                    'resource cannot be looked up by its tags: '
                                    + failed.get(handler.endpoint(i.resource), next(iter(failed.values()))),
                                    unasked=True)
                            for i in records.values() if not i.instance_id and not i.untracked
                            and i.state == State.CREATING and i.resource_type == resource_type
                            and i.node_id not in self.refused
                            and (handler.endpoint(i.resource) in failed
                                 or handler.endpoint(i.resource) not in groups)]
        return unasked

    def _adopt(self, records: Dict[str, Instance], waiting: Mapping[str, Instance],
               known_ids: set, resource_type: str, found: Sequence[Any], everything: bool) -> None:
        """Give id-less records the resources found for them; with ``everything``, add those
        no record knows as untracked records."""
        for entry in found:
            if entry.instance_id in known_ids:
                continue
            record = waiting.get(entry.node_id or '')
            if record is not None and not record.instance_id:
                record.instance_id = entry.instance_id
                record.resource = {**entry.resource, **record.resource}
                record.extra.update(entry.extra)
            elif everything:
                records[f'untracked:{resource_type}:{entry.instance_id}'] = Instance(
                    node_id=entry.node_id or entry.instance_id, node=entry.node or '?',
                    infra_id=self.infra_id, resource_type=resource_type,
                    resource=dict(entry.resource), instance_id=entry.instance_id,
                    extra=dict(entry.extra, what=entry.what), untracked=True)
            known_ids.add(entry.instance_id)

    def _sections(self, instances: Iterable[Instance], everything: bool
                  ) -> Dict[str, Dict[str, Dict[str, Any]]]:
        """The distinct resource sections to look for tagged resources with, by type: those
        of ``instances`` and, with ``everything``, those of every implementation a node of
        the infrastructure may use (buildable types only)."""
        found: Dict[str, Dict[str, Dict[str, Any]]] = {}

        def add(resource_type: str, section: Mapping[str, Any]) -> None:
            # an implementation whose endpoint is a template names no endpoint to ask
            if resource_type and self._buildable(resource_type) and not has_templates(section):
                found.setdefault(resource_type, {})[
                    json.dumps(section, sort_keys=True, default=str)] = dict(section)
        for instance in instances:
            add(instance.resource_type, instance.resource)
        if everything:
            for node in self.graph.nodes.values():
                for index in node.candidates:
                    try:
                        section = self.resolver.implementation(node.name, index).resource
                    except (KeyError, IndexError):
                        continue
                    add(section.get('type', ''), section)
        return found

    @staticmethod
    def _buildable(resource_type: str) -> bool:
        return getattr(plugins.plugin_class(plugins.RESOURCES, resource_type), 'buildable', False)

    # -- when the store cannot be trusted ----------------------------------------------------

    def tear_down_journal(self) -> List[Failure]:
        """Drop everything the clouds made in this run (dependents first) without touching
        the store: for when Redis came back empty or the lease is gone.  Returns what could
        not be dropped."""
        self.calls.wait_abandoned(self.call_timeout)
        with self._lock:
            journal = dict(self.journal)
        failures = []
        order = {name: i for i, name in enumerate(self.graph.order)}
        for instance in sorted(journal.values(), key=lambda i: -order.get(i.node, -1)):
            try:
                self.drop_resource(instance)
                self.report(f'{instance.short}: dropped ({instance.instance_id})')
            except Exception as exc:  # noqa: BLE001 - reported below
                failures.append(Failure(instance.node, instance.node_id,
                                        f'could not be dropped: {describe_error(exc)}'))
        return failures


def _section_key(cm_type: str, section: Mapping[str, Any]) -> str:
    return json.dumps([cm_type, section], sort_keys=True, default=str)


def made_nothing(exc: BaseException) -> bool:
    """Whether a create call that raised ``exc`` certainly made nothing: the cloud refused it
    for good (a handler removes what a refused create had made), the credentials were missing,
    or the request never reached the cloud.  Not so for a time-out or a transient error whose
    retries ran out: the cloud may have acted on an attempt whose answer was lost."""
    if isinstance(exc, CallTimeout):
        return False
    if isinstance(exc, TransientCloudError):
        return exc.unsent
    return isinstance(exc, (CloudError, ConfigError))


def _done(value: Any) -> 'Future[Any]':
    future: 'Future[Any]' = Future()
    future.set_result(value)
    return future


def _chain(source: 'Future[Any]', target: 'Future[Any]') -> None:
    if target.done():
        return
    exc = source.exception()
    if exc is None:
        target.set_result(source.result())
    else:
        target.set_exception(exc)


__all__ = ['BuildError', 'Executor', 'Failure', 'uninterruptible']
