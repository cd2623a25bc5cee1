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

import copy
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from occo.errors import BuildError
from occo.executor import Executor, Failure
from occo.instances import (CloudState, Health, InfraState, InfraStatus, Instance, Judgement, ResourceStatus, State,
                            Verdict, create_timeout, judge)
from occo.planner import Plan, alive_by_node, plan_from_state
from occo.store import PLACE, WHO, Lease, event

HEALTH_POOL = 32
MAX_BACKOFF = 300.0
Report = Callable[[str], None]


@dataclass
class Observation:
    """What a pass learned about the instances before planning."""

    verdicts: Dict[str, str] = field(default_factory=dict)       # node id -> why replace it
    updated: Dict[str, Instance] = field(default_factory=dict)   # instances that changed
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
    state: InfraStatus = InfraStatus.READY


def pass_record(lease: Lease, started: float, result: PassResult) -> Dict[str, str]:
    """The record of a pass in the infrastructure's pass stream: who made it (host:pid, and a
    digest of its place, since pids repeat across hosts and containers), under which lease
    token, when, and what it did."""
    import hashlib
    return {'who': WHO, 'place': hashlib.sha256(PLACE.encode()).hexdigest()[:12],
            'token': lease.token, 'start': f'{started:.3f}', 'end': f'{time.time():.3f}',
            'created': str(result.created), 'dropped': str(result.dropped),
            'failures': str(len(result.failures)),
            'state': getattr(result.state, 'value', str(result.state))}


def observe(executor: Executor, instances: Mapping[str, Instance],
            failtimes: Mapping[str, float], *, now: Optional[float] = None) -> Observation:
    """Ask the clouds (one batch per cloud and endpoint) and the health checks about every
    instance, and judge each (:func:`occo.instances.judge`)."""
    now = time.time() if now is None else now
    seen = Observation()
    runtime = executor.runtime
    groups: Dict[Tuple[str, str], List[Instance]] = {}
    for node_id, instance in instances.items():
        if instance.state == State.FAILED or not instance.instance_id:
            seen.verdicts[node_id] = judge(instance, None, now=now).reason or 'it failed'
        else:
            handler = runtime.handler(instance.resource_type)
            groups.setdefault((instance.resource_type, handler.endpoint(instance.resource)),
                              []).append(instance)
    to_check: List[Tuple[Instance, Any]] = []
    for (resource_type, _), group in groups.items():
        handler = runtime.handler(resource_type)
        statuses = executor.states(handler, group)
        if group and all(isinstance(statuses.get(i.node_id), str) for i in group):
            seen.events.append(event('cloud_error', reason=f'{resource_type}: '
                                     f'{statuses[group[0].node_id]}'))
        for instance in group:
            status = statuses.get(instance.node_id)
            if not isinstance(status, ResourceStatus):
                continue  # not asked this time: keep it as it is
            changed = copy.deepcopy(instance)
            if status.addresses:
                changed.addresses = list(status.addresses)
            if status.private_address:
                changed.private_address = status.private_address
            verdict = _judge(executor, changed, status, handler, None, now)
            if verdict.verdict == Verdict.CHECK:
                to_check.append((changed, handler))
                continue
            _conclude(changed, instance, verdict, now, seen)
    _check_health(executor, to_check, failtimes, now, seen)
    for node_id in seen.verdicts:
        seen.updated.pop(node_id, None)
    return seen


def _judge(executor: Executor, instance: Instance, status: ResourceStatus, handler: Any,
           outcome: Optional[Health], now: float) -> Judgement:
    cm_type = instance.config_management.get('type', 'dummy')
    return judge(instance, status,
                 configured=executor.runtime.config_manager(cm_type).ready(instance),
                 wants_health=executor.wants_health(instance, handler), health=outcome,
                 timeout=create_timeout(instance, executor.create_timeout), now=now)


def _conclude(changed: Instance, stored: Instance, verdict: Judgement, now: float,
              seen: Observation) -> None:
    if verdict.final:
        seen.verdicts[changed.node_id] = verdict.reason or 'it failed'
        return
    if verdict.verdict == Verdict.READY and changed.state != State.READY:
        changed.state, changed.ready_at = State.READY, round(now, 3)
        seen.events.append(event('node_ready', changed.node, changed.node_id))
    if changed.to_json() != stored.to_json():
        seen.updated[changed.node_id] = changed


def _check_health(executor: Executor, checks: List[Tuple[Instance, Any]],
                  failtimes: Mapping[str, float], now: float, seen: Observation) -> None:
    """Run the health checks of many instances concurrently, time their failures and judge."""
    if not checks:
        return

    def check(instance: Instance) -> Health:
        return executor.check_health(instance, failtimes.get(instance.node_id))

    with ThreadPoolExecutor(min(HEALTH_POOL, len(checks)), thread_name_prefix='occo-health') as pool:
        outcomes = list(pool.map(check, [instance for instance, _ in checks]))
    for (instance, handler), outcome in zip(checks, outcomes):
        node_id = instance.node_id
        if outcome.reason is None and node_id in failtimes:
            seen.cleared.append(node_id)
            seen.events.append(event('node_healthy', instance.node, node_id))
        elif outcome.reason is not None and node_id not in failtimes:
            seen.failtimes[node_id] = now
            seen.events.append(event('node_unhealthy', instance.node, node_id, outcome.reason))
        status = ResourceStatus(CloudState.RUNNING, list(instance.addresses), instance.private_address)
        stored = copy.deepcopy(instance)
        _conclude(instance, stored, _judge(executor, instance, status, handler, outcome, now), now, seen)
        if instance.state != stored.state:
            seen.updated[node_id] = instance


def held_back(backoff: Mapping[str, Mapping[str, Any]], now: float) -> Dict[str, str]:
    """Nodes whose creates wait for their retry time, with why."""
    return {node: f"{entry['failures']} pass(es) in a row made no instance ready; next try in "
                  f"{entry['next_at'] - now:.0f} s"
            for node, entry in backoff.items() if entry.get('next_at', 0) > now}


def run_pass(executor: Executor, state: InfraState, resources: Mapping[str, Any], *,
             retry_backoff: float, stop: Optional[threading.Event] = None, report: Report,
             on_plan: Optional[Callable[[Plan, Any], None]] = None,
             specs: Optional[Mapping[str, Mapping[str, str]]] = None) -> PassResult:
    """One pass over the infrastructure ``executor`` works on, from its loaded ``state``.
    Writes go through the executor's (fenced) store."""
    store, graph = executor.store, executor.graph
    infra_id = graph.infra_id
    now = time.time()
    seen = observe(executor, state.instances, state.failtimes, now=now)
    current = {**state.instances, **seen.updated}
    held = held_back(state.backoff, now)
    plan, scaling = plan_from_state(graph, resources, current, state.targets, state.requests,
                                    verdicts=seen.verdicts, held=held, specs=specs)
    if on_plan:
        on_plan(plan, graph)
    result = PassResult(plan, warnings=list(scaling.warnings))
    for warning in scaling.warnings:
        report(warning)
    events = seen.events + [event('scaling', reason=w) for w in scaling.warnings]
    events += [event('node_failed', current[d.node_id].node, d.node_id, d.reason)
               for d in plan.drops if d.node_id in seen.verdicts]
    targets = scaling.targets if scaling.targets != state.targets else None
    store.write(infra_id, records=[i.to_json() for i in seen.updated.values()], targets=targets,
                failtimes=seen.failtimes, cleared=seen.cleared,
                consumed_requests=scaling.consumed, events=events)

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
        dropped = {d.node_id for d in plan.drops}
        becoming = [i for node in alive_by_node(current, seen.verdicts).values() for i in node
                    if i.state != State.READY and i.instance_id and i.node_id not in dropped]
        ready, failures = _create(executor, plan, stop, becoming)
        result.ready = len(ready)
        result.created = executor.created
        result.failures += failures
        _backoff(store, infra_id, {i.node for i in ready}, failures, state.backoff,
                 retry_backoff, report)
    elif not plan.creates and state.backoff and not held:  # every node is at its target
        store.write(infra_id, backoff_cleared=list(state.backoff))
    missing = sum(n.target - n.existing for n in plan.nodes) - result.ready
    result.state = InfraStatus.READY if not result.failures and missing <= 0 else InfraStatus.DEGRADED
    return result


def _create(executor: Executor, plan: Plan, stop: Optional[threading.Event],
            becoming: List[Instance]) -> Tuple[List[Instance], List[Failure]]:
    """Create what the plan says (dependents also wait for the instances still ``becoming``
    ready); failed instances are dropped at once.  Returns the new instances that became
    ready, and the failures."""
    old = {b.node_id for b in becoming}
    try:
        ready = executor.create_all(plan.creates, fail_fast=False, stop=stop, watch=becoming)
        return [i for i in ready if i.node_id not in old], []
    except BuildError as exc:
        failures, ready = exc.failures, exc.ready
    executor.drop_failed(failures)
    return [i for i in ready if i.node_id not in old], failures


def _backoff(store: Any, infra_id: str, succeeded: set, failures: List[Failure],
             backoff: Mapping[str, Mapping[str, Any]], base: float, report: Report) -> None:
    """Back off the nodes whose creates all failed in this pass (the wait doubles with each
    such pass in a row); a node an instance of which became ready made progress: its wait
    is cleared, even if some of its creates failed."""
    now = time.time()
    # not those that waited for a failed one, nor those that made progress
    failed = {f.node for f in failures if f.node_id} - succeeded
    entries, events = {}, []
    for node in sorted(failed):
        count = int((backoff.get(node) or {}).get('failures', 0)) + 1
        delay = min(MAX_BACKOFF, base * 2 ** (count - 1))
        entries[node] = {'failures': count, 'next_at': now + delay}
        reason = f'{count} pass(es) in a row made no instance ready; next try in {delay:.0f} s'
        events.append(event('node_backoff', node, reason=reason))
        report(f'{node}: {reason}')
    cleared = [node for node in succeeded if node in backoff]
    store.write(infra_id, backoff=entries, backoff_cleared=cleared, events=events)
