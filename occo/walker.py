"""The graph walker: visits vertices in dependency order, each as soon as its own
dependencies are done -- never level by level -- under one concurrency limit, with a deadline
per vertex, skipping what depends on a failure.  It knows nothing of clouds: what a visit does
is the caller's callback (as in Terraform's ``dag`` walker).  Creates walk a graph's edges;
drops walk the same edges reversed.

A visit returns a :class:`~concurrent.futures.Future` that completes when the vertex is done.
It holds one of the ``limit`` slots until it calls :meth:`Walker.release` (a create gives its
slot back once the cloud call returned, while the instance boots) or until it is done.

Cost: O(V + E) for the whole walk, plus O(log V) per vertex for the ready heap (which keeps
the callers' order among vertices ready at the same time) and the deadline heap.
"""
from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import (Callable, Deque, Dict, Generic, Hashable, Iterable, List, Mapping, Optional,
                    Sequence, Set, Tuple, TypeVar)

V = TypeVar('V', bound=Hashable)


class VertexTimeout(Exception):
    """A vertex was not done by its deadline (the walker stopped waiting for it)."""


@dataclass
class WalkResult(Generic[V]):
    """How a walk ended: results of done vertices, exceptions of failed ones, the failed
    vertices each skipped one waited for, and those left unstarted or unfinished (a stop, or
    ``fail_fast`` after a failure)."""

    done: Dict[V, object] = field(default_factory=dict)
    failed: Dict[V, BaseException] = field(default_factory=dict)
    skipped: Dict[V, Tuple[V, ...]] = field(default_factory=dict)
    unstarted: List[V] = field(default_factory=list)
    unfinished: List[V] = field(default_factory=list)


Visit = Callable[[Sequence[V]], List['Future[object]']]


class Walker(Generic[V]):
    """Walks ``vertices`` (in the order given: ties between ready vertices keep it), where
    ``depends_on[v]`` lists the vertices ``v`` waits for.

    :param limit: visits holding a slot at once (None: no limit).
    :param deadline: seconds a vertex may take from its visit (None: no deadline); a vertex
        past it fails with :class:`VertexTimeout` and its future is abandoned.
    :param skip_dependents: a failure skips every vertex that (transitively) depends on it;
        otherwise dependencies only order the walk (a teardown goes on past failures).
    :param fail_fast: after the first failure start nothing more, and return once no visit
        holds a slot (the rest are returned ``unfinished``).
    """

    def __init__(self, vertices: Sequence[V], depends_on: Mapping[V, Iterable[V]], *,
                 limit: Optional[int] = None,
                 deadline: Optional[Callable[[V], Optional[float]]] = None,
                 skip_dependents: bool = True, fail_fast: bool = False) -> None:
        self.order = {v: i for i, v in enumerate(vertices)}
        self.waits: Dict[V, int] = {v: 0 for v in vertices}
        self.dependents: Dict[V, List[V]] = {v: [] for v in vertices}
        for vertex in vertices:
            for dependee in set(depends_on.get(vertex, ())):
                if dependee in self.order:
                    self.waits[vertex] += 1
                    self.dependents[dependee].append(vertex)
        self.limit = limit
        self.deadline = deadline
        self.skip_dependents = skip_dependents
        self.fail_fast = fail_fast
        self._cond = threading.Condition()
        self._finished: Deque[V] = deque()
        self._holding: Set[V] = set()

    def release(self, vertex: V) -> None:
        """Give back ``vertex``'s slot before it is done (e.g. its cloud call returned)."""
        with self._cond:
            if vertex in self._holding:
                self._holding.discard(vertex)
                self._cond.notify_all()

    def walk(self, visit: Visit, stop: Optional[threading.Event] = None,
             on_halt: Optional[Callable[[], None]] = None) -> WalkResult[V]:
        """Visit every vertex; ``visit(batch)`` starts the vertices of ``batch`` (all ready
        now) and returns one future per vertex.  With ``stop`` set (or after a failure, with
        ``fail_fast``), nothing more is started, ``on_halt()`` is called once (to release
        slots that need not be waited for), and the walk returns once no visit holds a slot."""
        result: WalkResult[V] = WalkResult()
        ready: List[Tuple[int, V]] = [(self.order[v], v) for v, n in self.waits.items() if n == 0]
        heapq.heapify(ready)
        running: Dict[V, 'Future[object]'] = {}
        deadlines: List[Tuple[float, int, V]] = []
        closed: Set[V] = set()  # done, failed or skipped
        halted = False
        while True:
            halting = not halted and (bool(stop is not None and stop.is_set()) or (
                self.fail_fast and bool(result.failed)))
            if halting:
                halted = True
                if on_halt is not None:
                    on_halt()
            with self._cond:
                if halted and not self._holding:
                    break
                free = len(ready) if self.limit is None else self.limit - len(self._holding)
                batch = [heapq.heappop(ready)[1] for _ in range(min(free, len(ready)))] if not halted else []
                self._holding.update(batch)
            if batch:
                futures = visit(batch)
                now = time.monotonic()
                for vertex, future in zip(batch, futures):
                    running[vertex] = future
                    seconds = self.deadline(vertex) if self.deadline else None
                    if seconds is not None:
                        heapq.heappush(deadlines, (now + seconds, self.order[vertex], vertex))
                    future.add_done_callback(lambda _f, v=vertex: self._finish(v))
            if not running and not ready:
                break
            with self._cond:
                if not self._finished and not batch:
                    waits = [0.2] if stop is not None else []  # look at ``stop`` now and then
                    if deadlines:
                        waits.append(max(0.0, deadlines[0][0] - time.monotonic()))
                    self._cond.wait(timeout=min(waits) if waits else None)
                finished = list(self._finished)
                self._finished.clear()
            for vertex in finished:
                future = running.pop(vertex, None)
                if future is None or vertex in closed:
                    continue
                self.release(vertex)
                exc = future.exception() if not future.cancelled() else VertexTimeout('cancelled')
                self._close(vertex, exc, future, result, ready, closed)
            now = time.monotonic()
            while deadlines and deadlines[0][0] <= now:
                _, _, vertex = heapq.heappop(deadlines)
                if vertex in running and not running[vertex].done():  # done: seen next round
                    future = running.pop(vertex)
                    future.cancel()
                    self.release(vertex)
                    self._close(vertex, VertexTimeout('not done by its deadline'), None, result,
                                ready, closed)
        result.unstarted = [v for v in self.order if v not in closed and v not in running]
        result.unfinished = list(running)
        return result

    def _finish(self, vertex: V) -> None:
        with self._cond:
            self._finished.append(vertex)
            self._cond.notify_all()

    def _close(self, vertex: V, exc: Optional[BaseException], future: 'Optional[Future[object]]',
               result: WalkResult[V], ready: List[Tuple[int, V]], closed: Set[V]) -> None:
        closed.add(vertex)
        if exc is None:
            result.done[vertex] = future.result() if future is not None else None
        else:
            result.failed[vertex] = exc
            if self.skip_dependents:
                self._skip(vertex, result, closed)
                return
        for dependent in self.dependents[vertex]:
            self.waits[dependent] -= 1
            if self.waits[dependent] == 0 and dependent not in closed:
                heapq.heappush(ready, (self.order[dependent], dependent))

    def _skip(self, failed: V, result: WalkResult[V], closed: Set[V]) -> None:
        """Skip everything downstream of ``failed`` (each vertex once: O(V + E) in all)."""
        todo = deque(self.dependents[failed])
        while todo:
            vertex = todo.popleft()
            if vertex in closed:
                continue  # skipped already (it names the first failure it waited for)
            closed.add(vertex)
            result.skipped[vertex] = (failed,)
            todo.extend(self.dependents[vertex])
