"""Writing to one infrastructure's records from many threads, in few round trips."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from occo.instances import Instance
from occo.store import event


@dataclass
class _Batch:
    records: List[Dict[str, Any]] = field(default_factory=list)
    removed: List[str] = field(default_factory=list)
    events: List[Mapping[str, str]] = field(default_factory=list)
    durable: bool = False
    done: bool = False
    error: Optional[BaseException] = None


class GroupWriter:
    """Writes to one infrastructure from many threads, coalesced: a writer that finds a
    write under way queues its part for the next round trip, which one of the waiting writers
    makes for all of them.  Each writer returns once its own part is stored (or raises the
    error of the round trip that carried it), so crash safety is that of a write per
    instance at the cost of a write per batch.  A batch carrying a ``durable`` part (an intent
    record: see :meth:`occo.store.Store.write`) is durable as a whole."""

    def __init__(self, store: Any, infra_id: str) -> None:
        self.store, self.infra_id = store, infra_id
        self._cond = threading.Condition()
        self._open = _Batch()
        self._busy = False

    def write(self, records: Sequence[Dict[str, Any]] = (), removed: Sequence[str] = (),
              events: Sequence[Mapping[str, str]] = (), durable: bool = False) -> None:
        with self._cond:
            batch = self._open
            batch.durable = batch.durable or durable
            batch.records += records
            batch.removed += removed
            batch.events += events
            while not batch.done and self._busy:
                self._cond.wait()
            if not batch.done:  # lead: write this batch (and what joined it) in one go
                self._busy, self._open = True, _Batch()
                try:
                    self._cond.release()
                    try:
                        self.store.write(self.infra_id, records=batch.records,
                                         removed=batch.removed, events=batch.events,
                                         durable=batch.durable)
                    finally:
                        self._cond.acquire()
                except BaseException as exc:  # noqa: BLE001 - every writer of the batch hears it
                    batch.error = exc
                batch.done, self._busy = True, False
                self._cond.notify_all()
        if batch.error is not None:
            raise batch.error


class DroppedRecords:
    """Records of dropped instances, forgotten in batches (at most every FLUSH_EVERY seconds
    or FLUSH_SIZE instances while a teardown goes on, and at its end): a record that outlives
    its resource only makes a later destroy drop it again, which is harmless."""

    FLUSH_EVERY = 0.25
    FLUSH_SIZE = 500

    def __init__(self, writer: GroupWriter) -> None:
        self.writer = writer
        self._lock = threading.Lock()
        self._pending: List[Instance] = []
        self._last = time.monotonic()

    def add(self, instance: Instance) -> None:
        with self._lock:
            self._pending.append(instance)

    def flush(self, due_only: bool = False) -> None:
        with self._lock:
            if due_only and len(self._pending) < self.FLUSH_SIZE and \
                    time.monotonic() - self._last < self.FLUSH_EVERY:
                return
            batch, self._pending, self._last = self._pending, [], time.monotonic()
        if batch:
            self.writer.write(removed=[i.node_id for i in batch if not i.untracked],
                              events=[event('node_dropped', i.node, i.node_id) for i in batch])
