"""Session fixtures for the cloudsigma tests: a real protocol peer on loopback.

``cloudsigma_peer`` is the small CloudSigma API 2.0 of :mod:`cloudsigmapeer`, started once per
test process (one per pytest-xdist worker) in a thread of its own on a free port of 127.0.0.1
and stopped at the end of the session.  Each test works in an account of its own
(``cloudsigma_account``), so that what one test configures (delays, faults, quotas) or leaves
behind never touches another.
"""
from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Any, Dict, Iterator

import pytest

from cloudsigmapeer import CloudSigmaPeer
from peerhttp import PeerAdmin


@dataclass(frozen=True)
class Login:
    """An account of the peer (the password is the secret the tests look for)."""

    email: str
    password: str


class PeerClient(PeerAdmin):
    """The test's side of the peer: its API base and its admin API (``/_peer/...``)."""

    def __init__(self, peer: CloudSigmaPeer) -> None:
        self._peer = peer
        self.url = peer.url
        self.api = peer.api  # http://127.0.0.1:PORT/api/2.0/

    def account(self) -> Login:
        """A new account of its own."""
        login = Login(f'u-{uuid.uuid4().hex[:10]}@example.com', f'Pw-{uuid.uuid4().hex[:16]}')
        self._call('POST', '/_peer/accounts', {'email': login.email, 'password': login.password})
        return login

    def config(self, login: Login, **settings: Any) -> None:
        """Set knobs of one account (clone_delay, stick_drive, fail, lose, hostile, hold...)."""
        self._call('POST', '/_peer/config', dict(settings, account=login.email))

    def state(self, login: Login) -> Dict[str, Any]:
        """The account's servers (with their decoded user data), drives and counted calls."""
        return self._call('GET', f'/_peer/state?account={login.email}')

    def held(self, login: Login) -> threading.Event:
        """Set once the peer holds an answer of the account's ``hold`` route."""
        return self._peer.cloud.accounts[login.email].held

    def release(self, login: Login) -> None:
        self._call('POST', f'/_peer/release?account={login.email}')


@pytest.fixture(scope='session')
def cloudsigma_peer() -> Iterator[PeerClient]:
    with CloudSigmaPeer() as peer:
        yield PeerClient(peer)


@pytest.fixture
def cloudsigma_account(cloudsigma_peer: PeerClient) -> Login:
    """An account of the peer for this test alone."""
    return cloudsigma_peer.account()
