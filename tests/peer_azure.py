"""Session fixtures for the Azure tests: the HTTPS fake of Entra ID and ARM on loopback.

``azure_peer`` is :mod:`azurepeer` in a thread of this test process (one per pytest-xdist
worker) on a free port of 127.0.0.1, serving a certificate of a throw-away CA that the
fixture makes with ``cryptography``.  Occopus' subprocesses trust it through
``REQUESTS_CA_BUNDLE``: a file holding the system bundle (the file the environment already
names, else certifi's) and the test CA -- requests lets that variable override a session's
``verify``, so it must keep the system's CAs too.  Each test works in a subscription of its own
(``azure_subscription``).
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from azurepeer import CLIENT_ID, CLIENT_SECRET, AzurePeer, Cloud, make_ca_and_cert


@dataclass
class PeerInfo:
    """The test's side of the peer."""

    url: str
    cloud: Cloud
    ca: Path
    #: the system bundle plus the test CA: the REQUESTS_CA_BUNDLE of subprocesses
    bundle: Path
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET


def system_bundle() -> bytes:
    named = os.environ.get('REQUESTS_CA_BUNDLE') or os.environ.get('SSL_CERT_FILE')
    if named and Path(named).is_file():
        return Path(named).read_bytes()
    import certifi
    return Path(certifi.where()).read_bytes()


@pytest.fixture(scope='session')
def azure_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerInfo]:
    folder = tmp_path_factory.mktemp('azurepeer')
    ca, cert, key = make_ca_and_cert(folder)
    bundle = folder / 'bundle.pem'
    bundle.write_bytes(system_bundle().rstrip(b'\n') + b'\n' + ca.read_bytes())
    with AzurePeer(cert, key) as peer:
        yield PeerInfo(peer.url, peer.cloud, ca, bundle)


@pytest.fixture
def azure_subscription(azure_peer: PeerInfo) -> str:
    """A subscription of the peer for this test alone."""
    return str(uuid.uuid4())
