"""The executor: applies a plan's creates and drops to the clouds.

Creates start the moment their own node's dependencies are ready -- there are no level
barriers.  Sequential mode (the default, as the original) handles one instance at a time in
plan order, waiting for it to be ready before the next; parallel mode runs up to
``parallelism`` cloud calls at once, and an instance waiting to become ready holds no slot.

Readiness = the resource is running, its config manager is done, and its health checks pass.
Polling backs off with the time waited (an instance is seen ready within about a fifth of the
time it has waited, polls are 0.1 s to 10 s apart), states are asked per handler in one batch,
health checks run concurrently on a bounded pool, and every wait is bounded by the create
timeout.  Instance records are written (state ``creating``) before a cloud is called, so a build
killed at any point leaves nothing untraceable.
"""
from __future__ import annotations

import math
import signal
import threading
import time
import uuid
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from occo import health, plugins
from occo.errors import BuildError, LeaseLost, describe_error
from occo.plugins.resources.base import FAILED, RUNNING, SHUTDOWN, CreateRequest
from occo.resolution import Address, Resolver
from occo.runtime import Runtime
from occo.store import event

MIN_POLL = 0.1
MAX_POLL = 10.0
HEALTH_POOL = 32
TELL_CHANGED = 5.0
TELL_SAME = 30.0
Report = Callable[[str], None]


@dataclass
class Failure:
    """Why an instance of a node could not be created, made ready or dropped."""

    node: str
    node_id: Optional[str]
    reason: str

    def __str__(self) -> str:
        instance = f' (instance {self.node_id[:8]})' if self.node_id else ''
        reason = self.reason
        if reason.startswith(f"node '{self.node}': "):
            reason = reason[len(f"node '{self.node}': "):]
        return f"node '{self.node}'{instance}: {reason}"


POLL_GRID = 0.05


def poll_interval(waited: float) -> float:
    """How long to wait before the next look: an eighth of the time waited so far (so an
    instance is seen ready well within a fifth of its wait), 0.1 s to 10 s."""
    return min(MAX_POLL, max(MIN_POLL, waited / 8))


def next_poll(now: float, started: float) -> float:
    """When to look again at an instance waited for since ``started``: after
    :func:`poll_interval`, rounded up to a 50 ms grid so that instances started at nearly the
    same time are asked about in the same batch."""
    return math.ceil((now + poll_interval(now - started)) / POLL_GRID) * POLL_GRID


@contextmanager
def uninterruptible(report: Report) -> Iterator[None]:
    """Hold off SIGINT and SIGTERM (with a notice) while resources are being torn down:
    interrupting a teardown would leak them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def notice(signum: int, frame: Any) -> None:
        report('still tearing down; interrupting now would leave resources behind, please wait')
    previous = {sig: signal.signal(sig, notice) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class _Waiter:
    """An instance whose resource was created, being watched until it is ready."""

    record: Dict[str, Any]
    handler: Any
    started: float
    deadline: float
    timeout: float
    next_poll: float
    health_check: Dict[str, Any]
    health_failing_since: Optional[float] = None
    last_reason: str = 'the resource is still pending'
    checking: Optional[Future] = None
    told: str = ''
    told_at: float = 0.0


class Executor:
    """Creates and drops node instances of one infrastructure.

    :param report: receives one line per step worth telling the user.
    """

    def __init__(self, runtime: Runtime, graph: Any, resolver: Resolver, *, parallel: bool,
                 parallelism: int, report: Report) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.graph = graph
        self.infra_id = graph.infra_id
        self.resolver = resolver
        self.parallel = parallel
        self.parallelism = max(1, parallelism) if parallel else 1
        self.report = report
        self.health_checks = runtime.config.health_checks
        self.created = 0  # resources the clouds made (whether or not they became ready)
        self._count = threading.Lock()

    # -- creating --------------------------------------------------------------------------

    def create_all(self, creates: Sequence[Any], *, fail_fast: bool = True,
                   stop: Optional[threading.Event] = None,
                   watch: Sequence[Dict[str, Any]] = ()) -> List[Dict[str, Any]]:
        """Create one instance per action of ``creates`` (plan order) and wait until each is
        ready; returns the ready instance records.

        :param fail_fast: once an instance fails, start nothing more (a build, which will be
            torn down); otherwise go on with every action that does not wait for a failed node
            (a management pass).
        :param stop: once set, start nothing more, let the cloud calls under way finish, and
            return without waiting for instances to become ready (they stay ``pending``).
        :param watch: records of instances created earlier and not ready yet: they are waited
            for like new ones, and their nodes' dependents wait for them.
        :raises BuildError: listing every instance that failed (and actions skipped because
            they wait for one); what was created is left for the caller to drop or keep.
        """
        pool = ThreadPoolExecutor(self.parallelism, thread_name_prefix='occo-create')
        checks = ThreadPoolExecutor(HEALTH_POOL, thread_name_prefix='occo-health')
        try:
            return self._run(deque(creates), pool, checks, fail_fast, stop, watch)
        finally:
            checks.shutdown(wait=False, cancel_futures=True)
            pool.shutdown(wait=True, cancel_futures=True)  # cloud calls under way end first

    def _run(self, queue: deque, pool: ThreadPoolExecutor, checks: ThreadPoolExecutor,
             fail_fast: bool, stop: Optional[threading.Event],
             watch: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
        unready = Counter(action.node for action in queue)
        launched: Dict[Future, Any] = {}
        waiting: Dict[str, _Waiter] = {}
        for record in watch:
            unready[record['node']] += 1
            waiting[record['node_id']] = self._waiter(dict(record), time.monotonic())
        failures: List[Failure] = []
        failed_nodes: set = set()
        ready: List[Dict[str, Any]] = []
        while queue or launched or waiting:
            now = time.monotonic()
            writes: List[Dict[str, Any]] = []
            events: List[Dict[str, str]] = []
            progressed = False
            stopping = stop is not None and stop.is_set()
            giving_up = bool(failures) and fail_fast
            if stopping or giving_up:
                queue.clear()  # start nothing new, let the cloud calls under way finish
            if (stopping or giving_up) and not launched:
                # Whatever is still becoming ready stays pending: the next pass (stop) watches
                # it, or the caller's rollback (a failed build) drops it; no reason to wait.
                break
            doomed = [a for a in queue if any(d in failed_nodes for d in a.depends_on)]
            while doomed:  # they wait for a node whose instance failed: never startable
                for action in doomed:
                    queue.remove(action)
                    failed_nodes.add(action.node)
                    broken = ', '.join(d for d in action.depends_on if d in failed_nodes)
                    failures.append(Failure(action.node, None, f'not created: it depends on '
                                            f'{broken}, whose instance could not be made ready'))
                doomed = [a for a in queue if any(d in failed_nodes for d in a.depends_on)]
            starting = self._launchable(queue, unready, launched, waiting)
            if starting:
                # Recorded (state creating) before any cloud is asked: a build killed from here
                # on leaves records that destroy follows to the resources, by their tags.
                records = [self._creating(action.node) for action in starting]
                self.store.put_instances(self.infra_id, records)
                for action, record in zip(starting, records):
                    queue.remove(action)
                    future = pool.submit(self._create, record)
                    launched[future] = (action.node, record['node_id'])

            for future in [f for f in launched if f.done()]:
                node, node_id = launched.pop(future)
                progressed = True
                try:
                    record = future.result()
                except Exception as exc:  # noqa: BLE001 - a plugin or template failure
                    failure = Failure(node, node_id, describe_error(exc))
                    failures.append(failure)
                    failed_nodes.add(node)
                    events.append(event('node_failed', node, node_id, failure.reason))
                    self.report(f'{node}/{node_id[:8]}: failed: {failure.reason}')
                    continue
                waiting[node_id] = self._waiter(record, now)
                self.report(f"{node}/{node_id[:8]}: created {record['instance_id']} on "
                            f"{record['resource_type']}; waiting for it to become ready")

            def finish(waiter: _Waiter, reason: Optional[str]) -> None:
                record = waiter.record
                waiting.pop(record['node_id'])
                waited = time.monotonic() - waiter.started
                if reason is None:
                    record.update(state='ready', ready_at=round(time.time(), 3))
                    unready[record['node']] -= 1
                    self.resolver.addresses.add(record['node'], Address(
                        record['node_id'], record['addresses'], record.get('private_address')))
                    ready.append(record)
                    events.append(event('node_ready', record['node'], record['node_id']))
                    where = ', '.join(record['addresses']) or 'no address'
                    self.report(f"{record['node']}/{record['node_id'][:8]}: ready after "
                                f'{waited:.1f} s ({where})')
                else:
                    record.update(state='failed', error=reason)
                    failures.append(Failure(record['node'], record['node_id'], reason))
                    failed_nodes.add(record['node'])
                    events.append(event('node_failed', record['node'], record['node_id'], reason))
                    self.report(f"{record['node']}/{record['node_id'][:8]}: failed: {reason}")
                writes.append(record)

            for waiter in [w for w in waiting.values() if w.checking and w.checking.done()]:
                progressed = True
                outcome, waiter.checking = waiter.checking, None
                reason, never = outcome.result()
                if never:
                    finish(waiter, reason)
                    continue
                if reason is None:
                    finish(waiter, None)
                    continue
                waiter.health_failing_since = waiter.health_failing_since or now
                waiter.last_reason = f'health check: {reason}'
                self._tell(waiter, now)
                failing = now - waiter.health_failing_since
                limit = waiter.health_check.get('timeout', health.DEFAULT_TIMEOUT)
                if failing >= limit:
                    finish(waiter, f'health check failing for {failing:.0f} s: {reason}')
                else:
                    waiter.next_poll = next_poll(now, waiter.started)

            for handler, group in _by_handler(_due(waiting.values(), now)):
                try:
                    statuses = handler.states([w.record for w in group])
                except Exception as exc:  # noqa: BLE001 - a cloud error: try again later
                    statuses = {}
                    for waiter in group:
                        waiter.last_reason = f'cannot read its state: {describe_error(exc)}'
                for waiter in group:
                    status = statuses.get(waiter.record['node_id'])
                    if status is None:
                        waiter.next_poll = next_poll(now, waiter.started)
                        continue
                    if status.addresses:
                        waiter.record['addresses'] = list(status.addresses)
                    if status.private_address:
                        waiter.record['private_address'] = status.private_address
                    if status.state in (FAILED, SHUTDOWN):
                        finish(waiter, status.reason or f'the resource is {status.state}')
                    elif status.state == RUNNING and self._configured(waiter):
                        if self._needs_health_check(waiter):
                            waiter.checking = checks.submit(self._check_health, waiter.record,
                                                            dict(waiter.health_check))
                        else:
                            finish(waiter, None)
                    else:
                        waiter.last_reason = (f'the resource is {status.state}'
                                              + (f': {status.reason}' if status.reason else ''))
                        self._tell(waiter, now)
                        waiter.next_poll = next_poll(now, waiter.started)

            for waiter in [w for w in waiting.values() if now >= w.deadline]:
                finish(waiter, f'not ready after {waiter.timeout:.0f} s ({waiter.last_reason}; '
                               'create_timeout bounds the wait)')

            if writes or events:
                self.store.put_instances(self.infra_id, writes, events)
                progressed = progressed or bool(writes)
            if not (queue or launched or waiting):
                break
            self._sleep(now, progressed, launched, waiting)
        if failures:
            raise BuildError(failures)
        return ready

    def _tell(self, waiter: _Waiter, now: float) -> None:
        """Say why an instance is still not ready: when the reason changes (at most every
        TELL_CHANGED seconds) and every TELL_SAME seconds if it does not."""
        since = now - (waiter.told_at or waiter.started)
        if (waiter.last_reason != waiter.told and since >= TELL_CHANGED) or since >= TELL_SAME:
            record = waiter.record
            self.report(f"{record['node']}/{record['node_id'][:8]}: still waiting after "
                        f'{now - waiter.started:.0f} s: {waiter.last_reason}')
            waiter.told, waiter.told_at = waiter.last_reason, now

    def _waiter(self, record: Dict[str, Any], now: float) -> _Waiter:
        """Watch a created instance until it is ready, within its create timeout (counted from
        its creation)."""
        timeout = float(record['resource'].get('create_timeout') or self.runtime.config.create_timeout)
        age = max(0.0, time.time() - (record.get('created_at') or time.time()))
        return _Waiter(record, self.runtime.handler(record['resource_type']), started=now - age,
                       deadline=now - age + timeout, timeout=timeout, next_poll=now,
                       health_check=record.get('health_check') or {})

    def _launchable(self, queue: deque, unready: Counter, launched: Mapping[Future, Any],
                    waiting: Mapping[str, _Waiter]) -> List[Any]:
        """The actions to start now.  Sequential: the first startable one once nothing else is
        in flight.  Parallel: every action whose own dependencies are ready, up to the free
        slots (waiting instances hold none)."""
        def ready(action: Any) -> bool:
            return not any(unready[dependee] for dependee in action.depends_on)
        if not self.parallel:  # one at a time, in plan order
            if launched or waiting:
                return []
            return next(([action] for action in queue if ready(action)), [])
        free = self.parallelism - len(launched)
        chosen: List[Any] = []
        blocked = set()
        for action in queue:
            if len(chosen) >= free:
                break
            if action.node in blocked:
                continue
            if ready(action):
                chosen.append(action)
            else:
                blocked.add(action.node)  # its other instances wait for the same nodes
        return chosen

    def _sleep(self, now: float, progressed: bool, launched: Mapping[Future, Any],
               waiting: Mapping[str, _Waiter]) -> None:
        if progressed:
            return  # something changed: look again at once (dependents may start)
        polls = [w.next_poll for w in waiting.values() if w.checking is None]
        deadlines = [w.deadline for w in waiting.values()]
        until = min(polls + deadlines) - now if polls or deadlines else MAX_POLL
        futures = list(launched) + [w.checking for w in waiting.values() if w.checking]
        timeout = max(0.0, min(until, MAX_POLL))
        if futures:
            wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
        else:
            time.sleep(timeout)

    def _creating(self, node: str) -> Dict[str, Any]:
        """The record of a new instance, before anything is rendered or created: its
        implementation is chosen (filter, then random) and its cloud known."""
        index = self.resolver.choose(node)
        resource = self.resolver.implementation(node, index).resource
        return {'node_id': str(uuid.uuid4()), 'node': node, 'infra_id': self.infra_id,
                'state': 'creating', 'implementation': index, 'resource_type': resource['type'],
                'resource': {'type': resource['type']}, 'instance_id': None, 'addresses': [],
                'private_address': None, 'created_at': round(time.time(), 3)}

    def _create(self, record: Dict[str, Any]) -> Dict[str, Any]:
        """Resolve and create one recorded instance; runs in a worker."""
        node, node_id = record['node'], record['node_id']
        resolved = self.resolver.resolve(node, node_id, record['implementation'])
        self.runtime.config_manager(resolved.config_manager_type).prepare(
            self.infra_id, node, node_id, resolved.config_management)
        handler = self.runtime.handler(resolved.resource_type)
        record = dict(record, resource=resolved.resource, health_check=resolved.health_check,
                      config_management=resolved.config_management)
        self._check_lease()
        created = handler.create(CreateRequest(
            infra_id=self.infra_id, infra_name=self.graph.infra_name, node=node, node_id=node_id,
            resource=resolved.resource, context=resolved.context))
        record.update(state='pending', instance_id=created.instance_id,
                      addresses=list(created.addresses), private_address=created.private_address)
        if created.extra:
            record['extra'] = created.extra
        with self._count:
            self.created += 1
        try:
            self.store.put_instances(self.infra_id, [record], [
                event('node_created', node, node_id, f'{resolved.resource_type} {created.instance_id}')])
        except BaseException:
            # Not recorded (the lease was lost, Redis went away...): never leave it untraceable.
            try:
                handler.drop(record)
            except Exception:  # noqa: BLE001 - still tagged: destroy finds it
                pass
            raise
        return record

    def _check_lease(self) -> None:
        """:raises LeaseLost: if our lease ran out (another process owns the infrastructure
        now): no cloud may be called on its behalf any more."""
        lost = getattr(self.store, 'lost', None)
        if lost is not None and lost.is_set():
            raise LeaseLost('the lease on this infrastructure is no longer ours')

    def _configured(self, waiter: _Waiter) -> bool:
        record = waiter.record
        cm_type = (record.get('config_management') or {}).get('type', 'dummy')
        return self.runtime.config_manager(cm_type).ready(record)

    def _needs_health_check(self, waiter: _Waiter) -> bool:
        return self.health_checks and health.has_checks(waiter.record, waiter.handler)

    def _check_health(self, record: Mapping[str, Any], section: Mapping[str, Any]
                      ) -> Tuple[Optional[str], bool]:
        node = self.graph.nodes.get(record['node'])
        return health.check_record(dict(record, health_check=section),
                                   node.variables if node else {})

    # -- dropping --------------------------------------------------------------------------

    def drop_all(self, records: Mapping[str, Mapping[str, Any]], *,
                 everything: bool = False) -> List[Failure]:
        """Drop the resources of ``records`` (node id -> instance record), dependents before
        dependees, and forget them.  Records still ``creating`` are matched to the resource the
        cloud made for them through its tags.  With ``everything`` (a teardown: ``records`` is
        then every record of the infrastructure) the clouds are also asked for resources no
        record knows at all, and those are dropped too.  Returns the instances that could not
        be dropped (their records are kept)."""
        records = {key: dict(record) for key, record in records.items()}
        self._match_tags(records, everything)
        levels = [list(level) for level in reversed(self.graph.levels)]
        known = {name for level in levels for name in level}
        orphans = sorted({r.get('node', '?') for r in records.values() if r.get('node') not in known})
        failures: List[Failure] = []
        with ThreadPoolExecutor(self.parallelism, thread_name_prefix='occo-drop') as pool:
            for level in ([orphans] if orphans else []) + levels:
                batch = [r for r in records.values() if r.get('node', '?') in level]
                if not batch:
                    continue
                results = list(pool.map(self._drop, batch))
                dropped = [r for r, reason in zip(batch, results) if reason is None]
                failures += [Failure(r.get('node', '?'), r.get('node_id'), reason)
                             for r, reason in zip(batch, results) if reason is not None]
                for record in dropped:
                    self.resolver.addresses.remove(record['node_id'])
                self.store.remove_instances(
                    self.infra_id, [r['node_id'] for r in dropped if not r.get('untracked')],
                    [event('node_dropped', r.get('node'), r['node_id']) for r in dropped])
        return failures

    def _match_tags(self, records: Dict[str, Dict[str, Any]], everything: bool) -> None:
        """Give id-less records the id of the resource their cloud holds for them (a build
        killed between the cloud's answer and the record's update); with ``everything``, also
        add resources of the infrastructure that no record knows."""
        waiting = {key: r for key, r in records.items() if not r.get('instance_id')}
        types = {r['resource_type'] for r in waiting.values() if r.get('resource_type')}
        if everything:
            types |= {r['resource_type'] for r in records.values() if r.get('resource_type')}
            types |= self._candidate_types()
        known_ids = {r['instance_id'] for r in records.values() if r.get('instance_id')}
        for resource_type in sorted(types):
            for found in self.runtime.handler(resource_type).find(self.infra_id):
                if found['instance_id'] in known_ids:
                    continue
                record = waiting.get(found.get('node_id'))
                if record is not None and not record.get('instance_id'):
                    record['instance_id'] = found['instance_id']
                elif everything:
                    key = f"untracked:{found['instance_id']}"
                    records[key] = dict(found, node_id=found.get('node_id') or found['instance_id'],
                                        resource_type=resource_type, untracked=True)
                known_ids.add(found['instance_id'])

    def _candidate_types(self) -> set:
        """Every resource type an instance of this infrastructure could have been made on."""
        types = set()
        for node in self.graph.nodes.values():
            for index in node.candidates:
                try:
                    types.add(self.resolver.implementation(node.name, index).resource['type'])
                except (KeyError, IndexError):
                    continue
        return {t for t in types if getattr(plugins.plugin_class(plugins.RESOURCES, t), 'buildable', False)}

    def _drop(self, record: Mapping[str, Any]) -> Optional[str]:
        node, node_id = record.get('node', '?'), record.get('node_id', '?')
        try:
            self._check_lease()
            if record.get('instance_id'):
                self.runtime.handler(record['resource_type']).drop(record)
            cm_type = (record.get('config_management') or {}).get('type', 'dummy')
            self.runtime.config_manager(cm_type).drop(record)
        except Exception as exc:  # noqa: BLE001 - reported, the record is kept
            reason = f'could not be dropped: {describe_error(exc)}'
            self.report(f'{node}/{node_id[:8]}: {reason}')
            return reason
        what = record.get('instance_id') or 'nothing created yet'
        self.report(f'{node}/{node_id[:8]}: dropped ({what})')
        return None


def _due(waiters: Iterable[_Waiter], now: float) -> List[_Waiter]:
    """The instances to look at now."""
    return [w for w in waiters if w.checking is None and w.next_poll <= now]


def _by_handler(waiters: Sequence[_Waiter]) -> List[Any]:
    groups: Dict[int, List[_Waiter]] = {}
    handlers: Dict[int, Any] = {}
    for waiter in waiters:
        groups.setdefault(id(waiter.handler), []).append(waiter)
        handlers[id(waiter.handler)] = waiter.handler
    return [(handlers[key], group) for key, group in groups.items()]


__all__ = ['BuildError', 'Executor', 'Failure', 'poll_interval', 'uninterruptible']
