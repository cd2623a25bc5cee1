"""Holding the lease of an infrastructure while changing it.

Every operation that changes an infrastructure (a build, a management pass, a destroy) holds
its lease: a Redis key set with NX and an expiry, renewed in the background while the work
goes on, carrying a fencing token that every write checks (see :meth:`Store.under`).  A second
process sees who holds it and steps aside or waits; a process that dies loses the lease when it
expires, and another can take over (at once, if the holder is a process of this host that no
longer runs).

A Redis outage does not cost the lease while it lasts less than the lease would: the keeper
keeps trying, renews it with the same token once Redis answers, and puts back a lease key that
a restarted Redis lost (see :meth:`Store.keep_lease`).  Otherwise the yielded store's ``lost``
is set and its ``lost_reason`` says why.
"""
from __future__ import annotations

import os
import socket
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional

from occo.errors import LeaseHeld, OccoError
from occo.store import PLACE, SOCKET_TIMEOUT, WHO, Lease, Store

#: how often (and how long at most) the holder waits for a lease held by another process
WAIT_STEP = 0.2


class _Keeper(threading.Thread):
    """Renews the lease of ``view`` (a store under it) every third of its ttl until stopped;
    ``view.lost`` is set once it is gone.  Each renewal is short: a client (shared by the
    keepers of one store) whose every socket wait is a small part of the ttl, tried again until
    Redis answers or the lease runs out by our own clock."""

    def __init__(self, view: Store) -> None:
        super().__init__(name='occo-lease', daemon=True)
        ttl = view.lease.ttl
        self.view = view.with_timeout(max(0.5, min(SOCKET_TIMEOUT, ttl / 6)))
        self.interval = ttl / 3
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            if not self.view.keep_lease(interrupt=self.done):
                return  # no cloud call and no write may be made for it any more


def holder_is_dead(holder: str, place: str) -> bool:
    """True if ``holder`` (host:pid) is a process of this place (host id, boot and pid
    namespace: :data:`~occo.store.PLACE`) that no longer runs.  Any other holder is only ever
    replaced when its lease expires: a pid means nothing on another host, after a reboot or in
    another container."""
    host, _, pid = holder.rpartition(':')
    if (host != socket.gethostname() or not place or place != PLACE
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
    import tenacity

    def attempt() -> Lease:
        try:
            return store.acquire_lease(infra_id, WHO, ttl)
        except LeaseHeld as held:
            if not (holder_is_dead(held.holder, held.namespace)
                    and store.break_lease(infra_id, held.token)):
                raise
            if report:
                report(f'the lease of {held.holder}, which is no longer running, was taken over')
            return store.acquire_lease(infra_id, WHO, ttl)

    told: List[bool] = []

    def waiting(state: tenacity.RetryCallState) -> None:
        if report and not told:
            report(f'{state.outcome.exception().message}; waiting up to {wait:.0f} s for it')
            told.append(True)

    return tenacity.Retrying(retry=tenacity.retry_if_exception_type(LeaseHeld),
                             stop=tenacity.stop_after_delay(wait), wait=tenacity.wait_fixed(WAIT_STEP),
                             before_sleep=waiting, reraise=True)(attempt)


@contextmanager
def held(store: Store, infra_id: str, ttl: float, wait: float = 0.0,
         report: Optional[Callable[[str], None]] = None) -> Iterator[Store]:
    """Hold the lease of ``infra_id`` for the duration; yields the store with every write to
    the infrastructure fenced by the lease's token.  Once the lease is lost, the yielded
    store's ``lost`` is set and its ``lost_reason`` says why; its fenced writes raise
    :class:`~occo.errors.LeaseLost`."""
    lease = acquire(store, infra_id, ttl, wait, report)
    view = store.under(lease)
    keeper = _Keeper(view)
    keeper.start()
    try:
        yield view
    finally:
        keeper.done.set()
        keeper.join()
        try:
            view.release_lease(lease)
        except OccoError:
            pass  # it expires on its own
