"""One management pass: bring a live infrastructure back to its declared shape.

A pass reads everything in one round trip, asks each cloud for the states of its instances in
one batch, runs health checks concurrently, and decides:

* instances the cloud reports failed or shut down, whose health checks have failed for longer
  than their ``timeout`` (timed from the first failure), that stayed pending beyond
  ``create_timeout``, or whose creation was interrupted, are dropped (destroyed, not just
  forgotten) and replaced;
* scaling requests move the targets (see :mod:`occo.planner`);
* surplus instances are dropped (selected ones, else the youngest), missing ones created;
* instances of nodes no longer in the description are dropped.

It never dies of one bad node or one cloud error: failures are recorded as events, failed
instances dropped at once, and a node whose creates keep failing is retried with exponential
backoff instead of in a tight loop.  A pass over a healthy infrastructure writes nothing.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from occo import health
from occo.errors import BuildError, describe_error
from occo.executor import Executor, Failure
from occo.plugins.resources.base import FAILED, PENDING, RUNNING, SHUTDOWN
from occo.planner import Plan, apply_requests, make_plan
from occo.store import event

HEALTH_POOL = 32
MAX_BACKOFF = 300.0
Report = Callable[[str], None]


@dataclass
class Observation:
    """What a pass learned about the instances before planning."""

    verdicts: Dict[str, str] = field(default_factory=dict)       # node id -> why replace it
    updated: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # records that changed
    failtimes: Dict[str, float] = field(default_factory=dict)    # first failures to record
    cleared: List[str] = field(default_factory=list)             # failures that ended
    events: List[Dict[str, str]] = field(default_factory=list)


@dataclass
class PassResult:
    """What a pass did."""

    plan: Plan
    created: int = 0   # resources the clouds made in this pass
    ready: int = 0     # of those, instances that became ready before the pass ended
    dropped: int = 0
    failures: List[Failure] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    state: str = 'ready'


def observe(executor: Executor, instances: Mapping[str, Dict[str, Any]],
            failtimes: Mapping[str, float], *, health_checks: bool, create_timeout: float,
            now: Optional[float] = None) -> Observation:
    """Ask the clouds (one batch per handler) and the health checks about every instance."""
    now = time.time() if now is None else now
    seen = Observation()
    runtime = executor.runtime
    live: Dict[str, List[Dict[str, Any]]] = {}
    for node_id, record in instances.items():
        if record.get('state') == 'failed':
            seen.verdicts[node_id] = record.get('error') or 'it failed'
        elif not record.get('instance_id'):
            seen.verdicts[node_id] = 'its creation was interrupted before the cloud answered'
        else:
            live.setdefault(record['resource_type'], []).append(record)
    to_check: List[Dict[str, Any]] = []
    for resource_type, records in live.items():
        try:
            statuses = runtime.handler(resource_type).states(records)
        except Exception as exc:  # noqa: BLE001 - a cloud error: keep the instances, try again
            seen.events.append(event('cloud_error', reason=f'{resource_type}: {describe_error(exc)}'))
            continue
        for record in records:
            status = statuses.get(record['node_id'])
            if status is None:
                continue
            changed = dict(record)
            if status.addresses:
                changed['addresses'] = list(status.addresses)
            if status.private_address:
                changed['private_address'] = status.private_address
            if status.state in (FAILED, SHUTDOWN):
                seen.verdicts[record['node_id']] = status.reason or f'the resource is {status.state}'
            elif status.state == PENDING and record.get('state') != 'ready':
                limit = float(record['resource'].get('create_timeout') or create_timeout)
                if now - (record.get('created_at') or now) > limit:
                    seen.verdicts[record['node_id']] = f'not ready after {limit:.0f} s'
            elif status.state == RUNNING:
                cm_type = (record.get('config_management') or {}).get('type', 'dummy')
                if not runtime.config_manager(cm_type).ready(record):
                    pass  # configuring: still becoming ready
                elif health_checks and health.has_checks(record, runtime.handler(resource_type)):
                    to_check.append(changed)
                elif record.get('state') != 'ready':
                    changed.update(state='ready', ready_at=round(now, 3))
                    seen.events.append(event('node_ready', record['node'], record['node_id']))
            if changed != record:
                seen.updated[record['node_id']] = changed
    _check_health(executor, to_check, failtimes, now, seen)
    for node_id in seen.verdicts:
        seen.updated.pop(node_id, None)
    return seen


def _check_health(executor: Executor, records: List[Dict[str, Any]],
                  failtimes: Mapping[str, float], now: float, seen: Observation) -> None:
    """Run the health checks of many instances concurrently and time their failures."""
    if not records:
        return

    def check(record: Dict[str, Any]) -> Optional[str]:
        node = executor.graph.nodes.get(record['node'])
        return health.check_record(record, node.variables if node else {})[0]

    with ThreadPoolExecutor(min(HEALTH_POOL, len(records)), thread_name_prefix='occo-health') as pool:
        results = list(pool.map(check, records))
    for record, reason in zip(records, results):
        node_id = record['node_id']
        if reason is None:
            if node_id in failtimes:
                seen.cleared.append(node_id)
                seen.events.append(event('node_healthy', record['node'], node_id))
            if record.get('state') != 'ready':
                record.update(state='ready', ready_at=round(now, 3))
                seen.events.append(event('node_ready', record['node'], node_id))
                seen.updated[node_id] = record
            continue
        first = failtimes.get(node_id)
        if first is None:
            seen.failtimes[node_id] = now
            seen.events.append(event('node_unhealthy', record['node'], node_id, reason))
            first = now
        limit = (record.get('health_check') or {}).get('timeout', health.DEFAULT_TIMEOUT)
        if now - first >= limit:
            seen.verdicts[node_id] = f'health check failing for {now - first:.0f} s: {reason}'


def held_back(backoff: Mapping[str, Mapping[str, Any]], now: float) -> Dict[str, str]:
    """Nodes whose creates wait for their retry time, with why."""
    return {node: f"{entry['failures']} create(s) failed in a row; next try in "
                  f"{entry['next_at'] - now:.0f} s"
            for node, entry in backoff.items() if entry.get('next_at', 0) > now}


def run_pass(executor: Executor, state: Mapping[str, Any], resources: Mapping[str, Any], *,
             health_checks: bool, create_timeout: float, retry_backoff: float,
             stop: Optional[threading.Event] = None, report: Report,
             on_plan: Optional[Callable[[Plan, Any], None]] = None) -> PassResult:
    """One pass over the infrastructure ``executor`` works on, from its loaded ``state``
    (see :meth:`Store.load`).  Writes go through the executor's (fenced) store."""
    store, graph = executor.store, executor.graph
    infra_id = graph.infra_id
    now = time.time()
    instances = state['instances']
    seen = observe(executor, instances, state['failtimes'], health_checks=health_checks,
                   create_timeout=create_timeout, now=now)
    current = {**instances, **seen.updated}
    alive: Dict[str, List[Dict[str, Any]]] = {}
    for record in sorted(current.values(), key=lambda r: r.get('created_at') or 0):
        if record['node_id'] not in seen.verdicts:
            alive.setdefault(record.get('node', ''), []).append(record)
    scaling = apply_requests(graph, state['targets'], state['requests'], alive)
    held = held_back(state['backoff'], now)
    plan = make_plan(graph, resources, current, scaling.targets, verdicts=seen.verdicts,
                     selected=scaling.selected, held=held)
    if on_plan:
        on_plan(plan, graph)
    result = PassResult(plan, warnings=list(scaling.warnings))
    for warning in scaling.warnings:
        report(warning)
    events = seen.events + [event('scaling', reason=w) for w in scaling.warnings]
    events += [event('node_failed', current[d.node_id].get('node'), d.node_id, d.reason)
               for d in plan.drops if d.node_id in seen.verdicts]
    targets = scaling.targets if scaling.targets != state['targets'] else None
    store.write(infra_id, records=seen.updated.values(), targets=targets, failtimes=seen.failtimes,
                cleared=seen.cleared, consumed_requests=scaling.consumed, events=events)

    if plan.drops:
        for drop in plan.drops:
            report(f'{drop.node}/{drop.node_id[:8]}: dropping: {drop.reason}')
        failures = executor.drop_all({d.node_id: current[d.node_id] for d in plan.drops})
        result.failures += failures
        result.dropped = len(plan.drops) - len(failures)
    for name, why in held.items():
        if any(n.name == name and n.waiting for n in plan.nodes):
            report(f'{name}: not creating yet: {why}')
    if plan.creates and not (stop and stop.is_set()):
        becoming = [r for node in alive.values() for r in node
                    if r.get('state') != 'ready' and r.get('instance_id')
                    and r['node_id'] not in {d.node_id for d in plan.drops}]
        result.ready, failures = _create(executor, plan, stop, becoming)
        result.created = executor.created
        result.failures += failures
        _backoff(store, infra_id, plan, failures, state['backoff'], retry_backoff, report)
    elif state['backoff'] and not held:
        store.write(infra_id, backoff_cleared=list(state['backoff']))
    missing = sum(n.target - n.existing for n in plan.nodes) - result.ready
    result.state = 'ready' if not result.failures and missing <= 0 else 'degraded'
    return result


def _create(executor: Executor, plan: Plan, stop: Optional[threading.Event],
            becoming: List[Dict[str, Any]]) -> Tuple[int, List[Failure]]:
    """Create what the plan says (dependents also wait for the instances still ``becoming``
    ready); failed instances are dropped at once.  Returns how many new ones became ready."""
    try:
        ready = executor.create_all(plan.creates, fail_fast=False, stop=stop, watch=becoming)
        return len([r for r in ready if r['node_id'] not in {b['node_id'] for b in becoming}]), []
    except BuildError as exc:
        failures = exc.failures
    failed_ids = {f.node_id for f in failures if f.node_id}
    leftovers = {node_id: record for node_id, record in executor.store.instances(
        executor.infra_id).items() if node_id in failed_ids}
    if leftovers:
        executor.drop_all(leftovers)
    return len(plan.creates) - len(failures), failures


def _backoff(store: Any, infra_id: str, plan: Plan, failures: List[Failure],
             backoff: Mapping[str, Mapping[str, Any]], base: float, report: Report) -> None:
    """Count failed creates per node in a row and set their next try; clear nodes that
    succeeded."""
    now = time.time()
    failed = {f.node for f in failures if f.node_id}  # not those that waited for a failed one
    entries, events = {}, []
    for node in sorted(failed):
        count = int((backoff.get(node) or {}).get('failures', 0)) + 1
        delay = min(MAX_BACKOFF, base * 2 ** (count - 1))
        entries[node] = {'failures': count, 'next_at': now + delay}
        reason = f'{count} create(s) failed in a row; next try in {delay:.0f} s'
        events.append(event('node_backoff', node, reason=reason))
        report(f'{node}: {reason}')
    created = {action.node for action in plan.creates} - failed
    cleared = [node for node in created if node in backoff]
    store.write(infra_id, backoff=entries, backoff_cleared=cleared, events=events)
