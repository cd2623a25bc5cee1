"""Where a node's next instance goes: among the implementations its ``filter`` allows, the ones
that are healthy, in the order its ``placement`` strategy says.

Each implementation (a resource section of a node definition) has a health record, shared in
Redis by every process and infrastructure that uses it (see :meth:`Store.implementation_health`):

* *closed* (no record): creates go to it as usual;
* *open* after a create on it failed for a reason that is not the template's or the
  description's (a cloud that refused, retries that ran out, an instance that failed or timed out
  while booting): it is skipped until ``open_until``, a cool-down that doubles with each failure
  in a row (from the configured ``retry_backoff`` up to :data:`MAX_COOL_DOWN`);
* *half-open* once the cool-down is over: one create may try it (the first to claim the probe);
  success closes it, failure opens it again for longer.

When every implementation of a node is open the node is not stopped: the one that reopens first
is used (a node with a single implementation behaves as if there were no records at all).

Everything here is pure: the time is always given, so that it is tested without waiting.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

from occo.errors import CloudError

MAX_COOL_DOWN = 300.0
#: how long a claimed half-open probe keeps others away (its create has this long to fail)
PROBE_HOLD = 600.0
CLOSED, OPEN, HALF_OPEN = 'closed', 'open', 'half-open'


@dataclass
class ImplementationHealth:
    """The health record of one implementation (no record: closed)."""

    failures: int = 0          # creates failed in a row
    last_failure: float = 0.0  # epoch seconds
    reason: str = ''           # why the last one failed
    open_until: float = 0.0    # skipped until then
    probe_until: float = 0.0   # a half-open probe is under way until then

    @classmethod
    def from_json(cls, data: Optional[Mapping[str, Any]]) -> 'ImplementationHealth':
        if not isinstance(data, Mapping):
            return cls()
        known = {k: data[k] for k in ('failures', 'last_failure', 'reason', 'open_until',
                                      'probe_until') if k in data}
        try:
            return cls(int(known.get('failures', 0)), float(known.get('last_failure', 0)),
                       str(known.get('reason', ''))[:500], float(known.get('open_until', 0)),
                       float(known.get('probe_until', 0)))
        except (TypeError, ValueError):
            return cls()

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    def state(self, now: float) -> str:
        if self.failures <= 0:
            return CLOSED
        return OPEN if now < self.open_until else HALF_OPEN

    def allows(self, now: float) -> bool:
        """Whether a create may go to it now (closed, or half-open with no probe under way)."""
        state = self.state(now)
        return state == CLOSED or (state == HALF_OPEN and self.probe_until <= now)

    def failed(self, now: float, reason: str, base: float,
               started: float = 0.0) -> 'ImplementationHealth':
        """The record after one more failed create (``started`` when its call was made): open
        for a cool-down that doubles with each failure in a row.  A create that was already
        under way when the implementation opened is not one more in a row: creates started
        together fail together."""
        if self.failures and started and started <= self.last_failure and now < self.open_until:
            return ImplementationHealth(self.failures, self.last_failure, reason[:500],
                                        self.open_until, self.probe_until)
        failures = self.failures + 1
        cool_down = min(MAX_COOL_DOWN, max(0.1, base) * 2 ** (failures - 1))
        return ImplementationHealth(failures, now, reason[:500], now + cool_down, 0.0)

    def probing(self, now: float) -> 'ImplementationHealth':
        """The record with a half-open probe claimed (others skip it meanwhile)."""
        return ImplementationHealth(self.failures, self.last_failure, self.reason,
                                    self.open_until, now + PROBE_HOLD)


def implementation_key(node_type: str, resource: Mapping[str, Any]) -> str:
    """The name of an implementation's health record: the node type and a digest of its
    (unrendered) resource section, which stays the same however the definitions are reordered
    or re-imported, and is shared by every infrastructure using the same cloud section."""
    text = json.dumps(resource, sort_keys=True, default=str, separators=(',', ':'))
    return f'{node_type}#{hashlib.sha256(text.encode()).hexdigest()[:12]}'


def counts_against(exc: BaseException, booting: bool = False) -> bool:
    """Whether a failed create says something about its implementation: the cloud refused it
    or did not answer (also after retries), or the instance failed or timed out while
    ``booting``; not a mistake in a template, the description or the credentials."""
    return booting or isinstance(exc, CloudError)


def healthy(candidates: Sequence[int], health: Mapping[int, ImplementationHealth],
            now: float) -> List[int]:
    """Those of ``candidates`` a create may go to now (no record, or one that allows it)."""
    return [c for c in candidates if health.get(c, ImplementationHealth()).allows(now)]


def choose(candidates: Sequence[int], strategy: str,
           health: Mapping[int, ImplementationHealth], live: Mapping[int, int], now: float,
           rng: random.Random, exclude: Sequence[int] = ()) -> int:
    """The implementation for a node's next instance.

    :param candidates: what the node's filter allows, in the definition's order.
    :param health: candidate -> its record (absent: closed).
    :param live: candidate -> its live instances (for ``spread``).
    :param exclude: candidates already tried for this instance (used only if nothing else is
        left).
    """
    left = [c for c in candidates if c not in exclude] or list(candidates)
    usable = healthy(left, health, now)
    if not usable:  # every one is open: the one that reopens first
        return min(left, key=lambda c: (health[c].open_until, left.index(c)))
    if strategy == 'ordered':
        return usable[0]
    if strategy == 'spread':
        fewest = min(live.get(c, 0) for c in usable)
        return rng.choice([c for c in usable if live.get(c, 0) == fewest])
    return rng.choice(usable)


def describe(node_type: str, index: int, resource: Mapping[str, Any]) -> str:
    """How messages and events name an implementation: ``web#1 (ec2 at https://...)``, with
    the resource's ``name`` if it has one."""
    where, name = resource.get('endpoint'), resource.get('name')
    kind = f"{resource.get('type', '?')}{f' {name}' if name else ''}"
    return f"{node_type}#{index} ({kind}{f' at {where}' if where else ''})"


class Placer:
    """Chooses implementations for the new instances of one infrastructure and keeps the
    implementations' health records up to date (in Redis, shared; a snapshot is read once,
    when the first instance is placed).

    :param implementation: (node, index) -> the implementation (its ``resource`` section).
    :param base: the first cool-down, in seconds (the configured ``retry_backoff``).
    :param live: node -> implementation index -> its live instances (for ``spread``).
    """

    def __init__(self, store: Any, graph: Any, implementation: Any, base: float,
                 live: Optional[Mapping[str, Mapping[int, int]]] = None,
                 rng: Optional[random.Random] = None, clock: Any = None) -> None:
        import threading
        import time
        self.store, self.graph, self.implementation, self.base = store, graph, implementation, base
        self.live: Dict[str, Dict[int, int]] = {n: dict(c) for n, c in (live or {}).items()}
        self.rng = rng or random.Random()
        self.clock = clock or time.time
        self._health: Optional[Dict[str, ImplementationHealth]] = None
        self._keys: Dict[Any, str] = {}
        self._lock = threading.Lock()

    def key(self, node: str, index: int) -> str:
        if (node, index) not in self._keys:
            self._keys[(node, index)] = implementation_key(
                self.graph.nodes[node].type, self.implementation(node, index).resource)
        return self._keys[(node, index)]

    def name(self, node: str, index: int) -> str:
        return describe(self.graph.nodes[node].type, index, self.implementation(node, index).resource)

    def _snapshot(self) -> Dict[str, ImplementationHealth]:
        if self._health is None:
            keys = [self.key(name, i) for name, node in self.graph.nodes.items()
                    if len(node.candidates) > 1 for i in node.candidates]
            stored = self.store.implementation_health(keys) if keys else {}
            self._health = {k: ImplementationHealth.from_json(v) for k, v in stored.items()}
        return self._health

    def health(self, node: str) -> Dict[int, ImplementationHealth]:
        """The candidates of ``node`` that have a health record (a single candidate never
        has one that matters: it is always used)."""
        candidates = self.graph.nodes[node].candidates
        if len(candidates) < 2:
            return {}
        with self._lock:
            snapshot = self._snapshot()
            return {i: snapshot[self.key(node, i)] for i in candidates
                    if self.key(node, i) in snapshot}

    def alternatives(self, node: str, tried: Sequence[int]) -> List[int]:
        """The candidates of ``node`` other than ``tried`` that a create may go to now."""
        rest = [c for c in self.graph.nodes[node].candidates if c not in tried]
        return healthy(rest, self.health(node), self.clock())

    def summary(self) -> Dict[str, Dict[int, Dict[str, Any]]]:
        """node -> candidate -> ``{implementation, state[, until, reason, failures]}`` for
        every node with more than one candidate (one round trip): what plans and reports
        show."""
        now = self.clock()
        summary: Dict[str, Dict[int, Dict[str, Any]]] = {}
        for name, node in self.graph.nodes.items():
            if len(node.candidates) < 2:
                continue
            health = self.health(name)
            for index in node.candidates:
                record = health.get(index, ImplementationHealth())
                entry: Dict[str, Any] = {'implementation': self.name(name, index),
                                         'state': record.state(now)}
                if record.failures:
                    entry.update(until=round(record.open_until, 3), reason=record.reason,
                                 failures=record.failures)
                summary.setdefault(name, {})[index] = entry
        return summary

    def choose(self, node: str, exclude: Sequence[int] = ()) -> int:
        """The implementation for a new instance of ``node`` (a half-open one is claimed for
        its probe: another process choosing at the same time does not get it too)."""
        graph_node = self.graph.nodes[node]
        candidates = graph_node.candidates
        tried = list(exclude)
        while True:
            now = self.clock()
            health = self.health(node)
            index = choose(candidates, graph_node.placement, health, self.live.get(node, {}),
                           now, self.rng, tried)
            record = health.get(index)
            if record is None or record.state(now) != HALF_OPEN or self._claim(node, index, now):
                break
            tried.append(index)  # another process took the probe
        with self._lock:
            counts = self.live.setdefault(node, {})
            counts[index] = counts.get(index, 0) + 1
        return index

    def _claim(self, node: str, index: int, now: float) -> bool:
        claimed: list = []

        def change(data: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
            record = ImplementationHealth.from_json(data)
            claimed[:] = [record.allows(now) and record.state(now) == HALF_OPEN]
            return record.probing(now).to_json() if claimed[0] else data
        written = self.store.change_implementation_health(self.key(node, index), change)
        self._remember(node, index, written)
        return bool(claimed and claimed[0])

    def failed(self, node: str, index: int, reason: str,
               started: float = 0.0) -> Optional[ImplementationHealth]:
        """Record a create on ``index`` (made at ``started``) that failed for ``reason``;
        returns the record if this failure opened the implementation (again), None if it was
        open already when the create started, or if the node has a single candidate (nothing
        is recorded then)."""
        self._forget_live(node, index)
        if len(self.graph.nodes[node].candidates) < 2:
            return None
        now = self.clock()
        counted: list = []

        def change(data: Optional[Dict[str, Any]]) -> Dict[str, Any]:
            before = ImplementationHealth.from_json(data)
            after = before.failed(now, reason, self.base, started)
            counted[:] = [after.failures > before.failures]
            return after.to_json()
        written = self.store.change_implementation_health(self.key(node, index), change)
        self._remember(node, index, written)
        return ImplementationHealth.from_json(written) if counted and counted[0] else None

    def succeeded(self, node: str, index: int) -> bool:
        """Record a create on ``index`` that became ready: a record it had is removed
        (closed); returns whether there was one."""
        if len(self.graph.nodes[node].candidates) < 2 or not self._health or \
                self.key(node, index) not in self._health:
            return False
        self.store.change_implementation_health(self.key(node, index), lambda data: None)
        self._remember(node, index, None)
        return True

    def _remember(self, node: str, index: int, written: Optional[Mapping[str, Any]]) -> None:
        with self._lock:
            snapshot = self._snapshot()
            if written is None:
                snapshot.pop(self.key(node, index), None)
            else:
                snapshot[self.key(node, index)] = ImplementationHealth.from_json(written)

    def _forget_live(self, node: str, index: int) -> None:
        with self._lock:
            counts = self.live.get(node, {})
            if counts.get(index):
                counts[index] -= 1
