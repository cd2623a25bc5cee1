"""Session fixtures for the cloudbroker tests: the CloudBroker platform of
:mod:`cloudbrokerpeer` on a free loopback port.

``cloudbroker_peer`` is started once per test process (one per pytest-xdist worker) in a
thread of its own and stopped at the end of the session.  Each test works in an account of its
own (``cloudbroker_account``), so that what one test configures (delays, faults, quotas) or
leaves behind never touches another.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List

import pytest

from cloudbrokerpeer import CloudBrokerPeer
from peerhttp import PeerAdmin


@dataclass(frozen=True)
class PeerAccount:
    email: str
    password: str


class PeerClient(PeerAdmin):
    """The test's side of the peer: its URL and its admin API (``/_peer/...``)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def account(self) -> PeerAccount:
        """A new account (its own instances and knobs)."""
        account = PeerAccount(f'user-{uuid.uuid4().hex[:10]}@example.org',
                              f'Pw-{uuid.uuid4().hex[:16]}')
        self._call('POST', '/_peer/accounts',
                   {'email': account.email, 'password': account.password})
        return account

    def config(self, account: PeerAccount, **settings: Any) -> None:
        """Set knobs of one account (start_delay, quota, faults, hostile, ...)."""
        self._call('POST', '/_peer/config', dict(settings, email=account.email))

    def state(self, account: PeerAccount) -> Dict[str, Any]:
        return self._call('GET', f'/_peer/state?email={account.email}')

    def instances(self, account: PeerAccount) -> List[Dict[str, Any]]:
        return self.state(account)['instances']

    def live(self, account: PeerAccount) -> List[Dict[str, Any]]:
        """The account's instances that are neither stopping nor halted."""
        return [i for i in self.instances(account) if i['status'] in ('starting', 'running')]

    def set_status(self, instance_id: str, status: str) -> None:
        self._call('POST', '/_peer/set_status', {'id': instance_id, 'status': status})


@pytest.fixture(scope='session')
def cloudbroker_peer() -> Iterator[PeerClient]:
    with CloudBrokerPeer() as peer:
        yield PeerClient(peer.url)


@pytest.fixture
def cloudbroker_account(cloudbroker_peer: PeerClient) -> PeerAccount:
    """An account of the peer for this test alone."""
    return cloudbroker_peer.account()
