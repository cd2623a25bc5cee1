"""Watching created instances until each is ready, failed or timed out.

One :class:`Monitor` thread per create walk asks the clouds about the instances being waited
for -- one batched call per (cloud, endpoint), the endpoints at the same time -- backing off
with the time waited (an instance is seen ready within about a fifth of its wait; polls are
0.1 s to 10 s apart), runs health checks on a bounded pool, has each instance judged by
:func:`occo.instances.judge`, writes what changed in one round trip, and settles the future
the graph walker waits on.
"""
from __future__ import annotations

import heapq
import math
import threading
import time
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from occo.errors import OccoError
from occo.instances import (CloudState, Health, Instance, Judgement, ResourceStatus, Verdict,
                            create_timeout, judge)

if TYPE_CHECKING:
    from occo.executor import Executor

MIN_POLL = 0.1
MAX_POLL = 10.0
POLL_GRID = 0.05
HEALTH_POOL = 32
TELL_CHANGED = 5.0
TELL_SAME = 30.0


class NotReady(OccoError):
    """An instance failed, timed out or vanished before it was ready."""


def poll_interval(waited: float) -> float:
    """How long to wait before the next look: an eighth of the time waited so far (so an
    instance is seen ready well within a fifth of its wait), 0.1 s to 10 s."""
    return min(MAX_POLL, max(MIN_POLL, waited / 8))


def next_poll(now: float, started: float) -> float:
    """When to look again at an instance waited for since ``started`` (wall clock): after
    :func:`poll_interval`, rounded up to a 50 ms grid so that instances started at nearly the
    same time are asked about in the same batch."""
    return math.ceil((now + poll_interval(now - started)) / POLL_GRID) * POLL_GRID


@dataclass
class _Waiter:
    """An instance whose resource was created, watched until it is ready."""

    instance: Instance
    future: 'Future[Instance]'
    handler: Any
    endpoint: str
    timeout: float
    next_poll: float = 0.0
    health: Optional[Health] = None
    checking: bool = False
    last_reason: str = 'the resource is still pending'
    told: str = ''
    told_at: float = 0.0


class Monitor:
    """Watches created instances until each is ready, failed or timed out, and settles the
    future the walker waits on.  One thread; cloud calls batched per (cloud, endpoint)."""

    def __init__(self, executor: 'Executor') -> None:
        self.executor = executor
        self._cond = threading.Condition()
        self._waiters: Dict[str, _Waiter] = {}
        self._due: List[Tuple[float, str]] = []  # (next poll, node id) heap
        self._checked: List[Tuple[_Waiter, Health]] = []
        self._stopped = False
        self._health = ThreadPoolExecutor(HEALTH_POOL, thread_name_prefix='occo-health')
        self._thread = threading.Thread(target=self._run, name='occo-monitor', daemon=True)
        self._thread.start()

    def watch(self, instance: Instance) -> 'Future[Instance]':
        """Wait for ``instance`` (created, with a resource id) to become ready."""
        handler = self.executor.runtime.handler(instance.resource_type)
        waiter = _Waiter(instance, Future(), handler, handler.endpoint(instance.resource),
                         create_timeout(instance, self.executor.create_timeout))
        with self._cond:
            self._waiters[instance.node_id] = waiter
            heapq.heappush(self._due, (0.0, instance.node_id))
            self._cond.notify()
        return waiter.future

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join()
        self._health.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and not self._checked and not (
                        self._due and self._due[0][0] <= time.time()):
                    wait = self._due[0][0] - time.time() if self._due else None
                    self._cond.wait(None if wait is None else min(max(wait, 0.0), MAX_POLL))
                if self._stopped:
                    return
                now = time.time()
                due = []
                while self._due and self._due[0][0] <= now:
                    _, node_id = heapq.heappop(self._due)
                    waiter = self._waiters.get(node_id)
                    if waiter is not None and not waiter.checking:
                        due.append(waiter)
                checked, self._checked = self._checked, []
            try:
                self._look(due, checked)
            except BaseException as exc:  # noqa: BLE001 - the store failed: so did they
                for waiter in due + [w for w, _ in checked]:
                    self._settle(waiter, exc)

    def _look(self, due: List[_Waiter], checked: List[Tuple[_Waiter, Health]]) -> None:
        """Ask the clouds about ``due`` instances (one call per cloud and endpoint), judge
        them and those whose health checks just ended, and write what changed at once."""
        now = time.time()
        judged: List[Tuple[_Waiter, Judgement]] = []
        for waiter, outcome in checked:
            waiter.checking, waiter.health = False, outcome
            judged.append((waiter, self._judge(waiter, CloudState.RUNNING, now, health=outcome)))
        groups: Dict[Tuple[int, str], List[_Waiter]] = {}
        for waiter in due:
            groups.setdefault((id(waiter.handler), waiter.endpoint), []).append(waiter)
        for group, statuses in zip(groups.values(), self._ask(list(groups.values()))):
            for waiter in group:
                status = statuses.get(waiter.instance.node_id)
                if isinstance(status, ResourceStatus):
                    if status.addresses:
                        waiter.instance.addresses = list(status.addresses)
                    if status.private_address:
                        waiter.instance.private_address = status.private_address
                    judged.append((waiter, self._judge(waiter, status.state, now, status)))
                else:  # not asked this time (status: why), or left out
                    judgement = self._judge(waiter, None, now)
                    if status and judgement.verdict == Verdict.PENDING:
                        judgement = Judgement(Verdict.PENDING, status)
                    judged.append((waiter, judgement))
        done = self.executor.finish([(w.instance, j) for w, j in judged if
                                     j.verdict not in (Verdict.PENDING, Verdict.CHECK)])
        for waiter, judgement in judged:
            if judgement.verdict == Verdict.CHECK:
                self._check(waiter)
            elif judgement.verdict == Verdict.PENDING:
                waiter.last_reason = judgement.reason or waiter.last_reason
                self._tell(waiter, now)
                with self._cond:
                    limit = waiter.instance.created_at + waiter.timeout + 0.01
                    heapq.heappush(self._due, (min(next_poll(now, waiter.instance.created_at),
                                                   limit), waiter.instance.node_id))
        for waiter, judgement in judged:
            if waiter.instance.node_id in done:
                self._settle(waiter, None if judgement.verdict == Verdict.READY
                             else NotReady(judgement.reason or 'it failed'))

    def _ask(self, groups: List[List[_Waiter]]) -> List[Dict[str, Any]]:
        """The states of each group (one cloud and endpoint), asked at the same time so that
        one slow endpoint does not hold back the others."""
        def ask(group: List[_Waiter]) -> Dict[str, Any]:
            return self.executor.states(group[0].handler, [w.instance for w in group])
        if len(groups) <= 1:
            return [ask(group) for group in groups]
        return list(self._health.map(ask, groups))

    def _judge(self, waiter: _Waiter, state: Optional[CloudState], now: float,
               status: Optional[ResourceStatus] = None, health: Optional[Health] = None
               ) -> Judgement:
        """Judge a waiter from a fresh cloud ``state`` (health checks then run again) or from
        the ``health`` checks that just ended."""
        instance = waiter.instance
        if status is None and state is not None:
            status = ResourceStatus(state, list(instance.addresses), instance.private_address)
        runtime = self.executor.runtime
        cm_type = (instance.config_management or {}).get('type', 'dummy')
        configured = status is not None and status.state == CloudState.RUNNING and \
            runtime.config_manager(cm_type).ready(instance)
        return judge(instance, status, configured=configured,
                     wants_health=self.executor.wants_health(instance, waiter.handler),
                     health=health,
                     timeout=waiter.timeout, now=now)

    def _check(self, waiter: _Waiter) -> None:
        waiter.checking = True
        since = waiter.health.failing_since if waiter.health else None

        def run() -> None:
            outcome = self.executor.check_health(waiter.instance, since)
            with self._cond:
                self._checked.append((waiter, outcome))
                self._cond.notify()
        self._health.submit(run)

    def _settle(self, waiter: _Waiter, exc: Optional[BaseException]) -> None:
        with self._cond:
            self._waiters.pop(waiter.instance.node_id, None)
        try:
            if exc is None:
                waiter.future.set_result(waiter.instance)
            else:
                waiter.future.set_exception(exc)
        except InvalidStateError:
            pass  # the walker gave up on it (its deadline) meanwhile

    def _tell(self, waiter: _Waiter, now: float) -> None:
        """Say why an instance is still not ready: when the reason changes (at most every
        TELL_CHANGED seconds) and every TELL_SAME seconds if it does not."""
        since = now - (waiter.told_at or waiter.instance.created_at)
        if (waiter.last_reason != waiter.told and since >= TELL_CHANGED) or since >= TELL_SAME:
            self.executor.report(f'{waiter.instance.short}: still waiting after '
                                 f'{now - waiter.instance.created_at:.0f} s: {waiter.last_reason}')
            waiter.told, waiter.told_at = waiter.last_reason, now
