"""The maintainer fleet: every infrastructure marked maintained gets a management pass every
interval, from whichever of the running maintainers (``occopus-manage --all -c``, REST service
replicas) it falls to, on one host or many.

There is no coordinator.  Each member says it is alive in Redis (a heartbeat that lapses after
``member_ttl``), and every member computes the same sharing from the same two lists: the
maintained infrastructures, ordered by a digest of their ids, are dealt round the live members,
ordered by id.  So each member works on ``ceil(N / members)`` infrastructures at most, a member
that joins or leaves moves the dealing at once, and one that dies without leaving drops out
when its heartbeat lapses.

The sharing decides who *tries*; the per-infrastructure leases decide who *works*: a pass holds
the infrastructure's lease, so while members disagree (one has not yet seen another join, or a
pass of the previous owner is still under way) the second one finds the lease held, skips, and
tries again when that lease would run out.  No infrastructure is ever worked on by two at once.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Set

from occo.errors import LeaseHeld, LeaseLost, OccoError, UnknownInfrastructure, describe_error
from occo.store import WHO

log = logging.getLogger('occo.fleet')

#: passes run side by side in one member (over different infrastructures)
PASS_WORKERS = 4
#: a member's heartbeat lapses after this part of the lease ttl: a member that died without a
#: word is dropped from the sharing well within one lease period
MEMBER_TTL_SHARE = 0.5
#: heartbeats (each a look at the fleet and at the maintained infrastructures) per member ttl
BEATS_PER_TTL = 3
#: ... but never more often than this (seconds): a look costs a command per infrastructure
MIN_LOOK_EVERY = 0.2


def deal(infra_ids: Sequence[str], members: Sequence[str]) -> Dict[str, List[str]]:
    """Who tries which infrastructure: ``infra_ids`` ordered by a digest of their ids, dealt
    round ``members`` ordered by id (each gets the floor or the ceiling of N / members)."""
    ordered = sorted(infra_ids, key=lambda i: (zlib.crc32(i.encode('utf-8', 'surrogatepass')), i))
    names = sorted(members)
    dealt: Dict[str, List[str]] = {name: [] for name in names}
    for index, infra_id in enumerate(ordered):
        dealt[names[index % len(names)]].append(infra_id)
    return dealt


@dataclass
class PassOutcome:
    """What one pass of the fleet came to."""

    infra_id: str
    status: str            # CHANGED, UNCHANGED, HELD, GONE or FAILED
    line: str = ''         # what to tell (CHANGED, FAILED)


CHANGED, UNCHANGED, HELD, GONE, FAILED = 'changed', 'unchanged', 'held', 'gone', 'failed'
#: every status a pass can come to, in the order a summary tells them
PASS_STATUSES = (CHANGED, UNCHANGED, HELD, GONE, FAILED)


class Fleet:
    """One member of the maintainer fleet over ``session`` (an :class:`occo.api.Occopus`).

    :param interval: seconds between two passes over one infrastructure.
    :param stop: set to stop (the passes under way stop after the action under way).
    :param skip: infrastructures this member must leave alone for now (the REST service skips
        those it is building).
    :param told: called with each pass that did something or failed, and with each change of
        the sharing.
    """

    def __init__(self, session: Any, *, interval: float, stop: threading.Event,
                 parallelize: Optional[bool] = None, workers: int = PASS_WORKERS,
                 skip: Callable[[str], bool] = lambda infra_id: False,
                 told: Optional[Callable[[str], None]] = None) -> None:
        self.session = session
        self.store = session.store
        self.interval = interval
        self.stop = stop
        self.parallelize = parallelize
        self.skip = skip
        self.told = told or (lambda line: log.info('%s', line))
        self.member = f'{WHO}/{uuid.uuid4().hex[:8]}'
        self.member_ttl = max(0.3, session.config.lease_ttl * MEMBER_TTL_SHARE)
        self.tick = max(MIN_LOOK_EVERY, min(interval, self.member_ttl / BEATS_PER_TTL))
        self._next_look = 0.0
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix='occo-pass')
        self._lock = threading.Lock()
        self._passing: Set[str] = set()
        self._due: Dict[str, float] = {}   # infra id -> monotonic time of its next pass
        self._members: List[str] = [self.member]
        self._share: List[str] = []

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> None:
        """Maintain this member's share until ``stop`` is set; then finish the passes under way
        and leave the fleet (the others take the share over at once)."""
        try:
            while not self.stop.is_set():
                self.round()
                # the next look, or the next pass due, whichever comes first
                wake = min([self._next_look] + [self._due.get(i, 0.0) for i in self._share])
                self.stop.wait(max(0.01, wake - time.monotonic()))
        finally:
            self._pool.shutdown(wait=True)
            try:
                self.store.heartbeat(self.member, {}, 0)
            except OccoError:
                pass  # the heartbeat lapses on its own

    def round(self) -> None:
        """Look at the fleet (every ``tick``), then start the passes that are due."""
        now = time.monotonic()
        if now >= self._next_look:
            self._next_look = now + self.tick
            self.look()
        for infra_id in self._share:
            if self._due.get(infra_id, 0.0) > now:
                continue
            if self.skip(infra_id) or not self._start(infra_id, now):
                self._due[infra_id] = now + self.tick  # look again at the next heartbeat

    def look(self) -> None:
        """Say we are alive, see who else is and what is maintained, and take our share."""
        try:
            members = self.store.heartbeat(self.member, {'who': WHO, 'interval': self.interval},
                                           self.member_ttl)
            maintained = self.session.maintained()
        except OccoError as exc:
            self.told(f'cannot see the fleet or the maintained infrastructures: '
                      f'{describe_error(exc)}; trying again')
            return
        names = sorted(set(members) | {self.member})
        share = deal(maintained, names)[self.member]
        if names != self._members or len(share) != len(self._share):
            self.told(f'{self.member}: maintaining {len(share)} of {len(maintained)} '
                      f"infrastructures with {len(names)} maintainer{'s' if len(names) > 1 else ''}")
        self._members, self._share = names, share
        for infra_id in [i for i in list(self._due) if i not in share]:
            self._due.pop(infra_id, None)

    def _start(self, infra_id: str, now: float) -> bool:
        """Start a pass over ``infra_id``; False if its last pass is still running."""
        with self._lock:
            if infra_id in self._passing:
                return False
            self._passing.add(infra_id)
        self._due[infra_id] = now + self.interval
        try:
            self._pool.submit(self._pass, infra_id)
        except RuntimeError:  # shutting down
            with self._lock:
                self._passing.discard(infra_id)
        return True

    def _pass(self, infra_id: str) -> None:
        try:
            outcome = self.pass_once(infra_id)
            if outcome.line:
                self.told(outcome.line)
        finally:
            with self._lock:
                self._passing.discard(infra_id)

    def pass_once(self, infra_id: str) -> PassOutcome:
        """One pass over ``infra_id`` (never raises: a failure is told and recorded)."""
        report = lambda line: log.info('%s: %s', infra_id, line)  # noqa: E731
        try:
            result = self.session.manage_pass(infra_id, parallelize=self.parallelize,
                                              stop=self.stop, report=report)
        except LeaseHeld as held:
            # another process works on it: try again when its lease would run out
            self._due[infra_id] = time.monotonic() + min(self.interval, held.left + 0.05)
            return PassOutcome(infra_id, HELD)
        except (UnknownInfrastructure, LeaseLost):
            return PassOutcome(infra_id, GONE)  # gone, or taken over by another process
        except Exception as exc:  # noqa: BLE001 - a pass never stops the maintainer
            reason = self.session.record_failed_pass(infra_id, exc)
            return PassOutcome(infra_id, FAILED, f'{infra_id}: pass failed: {reason}')
        if not (result.created or result.dropped or result.failures):
            return PassOutcome(infra_id, UNCHANGED)
        line = (f'{infra_id}: {result.created} created ({result.ready} ready), '
                f'{result.dropped} dropped; {getattr(result.state, "value", result.state)}')
        if result.failures:
            line += f"; failed: {'; '.join(str(f) for f in result.failures)}"
        return PassOutcome(infra_id, FAILED if result.failures else CHANGED, line)

    @property
    def share(self) -> List[str]:
        """The infrastructures this member tries, as of its last look."""
        return list(self._share)
