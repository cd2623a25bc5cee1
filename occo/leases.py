"""Holding the lease of an infrastructure while changing it.

Every operation that changes an infrastructure (a build, a management pass, a destroy) holds
its lease: a Redis key set with NX and an expiry, renewed in the background while the work
goes on, carrying a fencing token that every write checks (see :meth:`Store.under`).  A second
process sees who holds it and steps aside or waits; a process that dies loses the lease when it
expires, and another can take over (at once, if the holder is a process of this host that no
longer runs).
"""
from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from occo.errors import LeaseHeld, OccoError
from occo.store import PID_NAMESPACE, WHO, Lease, Store


class _Keeper(threading.Thread):
    """Renews a lease every third of its ttl until stopped; sets ``lost`` if it is gone."""

    def __init__(self, store: Store, lease: Lease) -> None:
        super().__init__(name='occo-lease', daemon=True)
        self.store, self.lease = store, lease
        self.done = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.lease.ttl / 3):
            try:
                if not self.store.renew_lease(self.lease):
                    self.lost.set()  # no cloud call and no write may be made for it any more
                    return
            except OccoError:
                pass  # Redis is unreachable: writes fail too; try again at the next tick


def holder_is_dead(holder: str, namespace: str) -> bool:
    """True if ``holder`` (host:pid) is a process of this host and pid namespace that no
    longer runs.  Any other holder is only ever replaced when its lease expires."""
    host, _, pid = holder.rpartition(':')
    if (host != socket.gethostname() or not namespace or namespace != PID_NAMESPACE
            or not pid.isdigit() or int(pid) == os.getpid()):
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a zombie has stopped running too
        with open(f'/proc/{pid}/stat', 'rb') as stream:
            return stream.read().rsplit(b')', 1)[1].split()[0] == b'Z'
    except (OSError, IndexError):
        return False


def acquire(store: Store, infra_id: str, ttl: float, wait: float = 0.0,
            report: Optional[Callable[[str], None]] = None) -> Lease:
    """Take the lease, waiting up to ``wait`` seconds for its holder to give it back.

    :raises LeaseHeld: if it is still held after ``wait``.
    """
    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            return store.acquire_lease(infra_id, WHO, ttl)
        except LeaseHeld as held:
            if holder_is_dead(held.holder, held.namespace) and store.break_lease(infra_id, held.token):
                if report:
                    report(f'the lease of {held.holder}, which is no longer running, was taken over')
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            if report and not told:
                report(f'{held.message}; waiting up to {wait:.0f} s for it')
                told = True
            time.sleep(min(0.2, left))


@contextmanager
def held(store: Store, infra_id: str, ttl: float, wait: float = 0.0,
         report: Optional[Callable[[str], None]] = None) -> Iterator[Store]:
    """Hold the lease of ``infra_id`` for the duration; yields the store with every write to
    the infrastructure fenced by the lease's token."""
    lease = acquire(store, infra_id, ttl, wait, report)
    keeper = _Keeper(store, lease)
    keeper.start()
    try:
        yield store.under(lease, keeper.lost)
    finally:
        keeper.done.set()
        keeper.join()
        try:
            store.release_lease(lease)
        except OccoError:
            pass  # it expires on its own
