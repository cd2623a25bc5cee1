"""Session fixtures for the nova tests: a real protocol peer on loopback.

``nova_peer`` is the small Keystone v3 + Nova + Neutron + Cinder of :mod:`novapeer`, started
once per test process in a thread of its own on a free port of 127.0.0.1 and stopped at the
end of the session.  Each test works in a project of its own (``nova_project``), so that what
one test configures (delays, errors, quotas) or leaves behind never touches another.
"""
from __future__ import annotations

import uuid
from typing import Any, Dict, Iterator

import pytest

from novapeer import NovaPeer
from peerhttp import PeerAdmin


class PeerClient(PeerAdmin):
    """The test's side of the peer: its Keystone URL and its admin API (``/_peer/...``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.keystone = f'{url}/identity'

    def config(self, project: str, **settings: Any) -> None:
        """Set knobs for one project (build_delay, error, burst_503, quota_servers, ...)."""
        self._call('POST', '/_peer/config', dict(settings, project=project))

    def state(self, project: str) -> Dict[str, Any]:
        """The project's servers, volumes, floating IPs, ports and counted calls."""
        return self._call('GET', f'/_peer/state?project={project}')

    def app_credential(self, credential_id: str, secret: str, project: str) -> None:
        self._call('POST', '/_peer/app_credentials',
                   {'id': credential_id, 'secret': secret, 'project_id': project})

    def delete_server(self, server_id: str) -> None:
        """Delete a server behind Occopus' back."""
        self._call('POST', '/_peer/delete_server', {'id': server_id})


@pytest.fixture(scope='session')
def nova_peer() -> Iterator[PeerClient]:
    with NovaPeer() as peer:
        yield PeerClient(peer.url)


@pytest.fixture
def nova_project() -> str:
    """A project of the peer for this test alone."""
    return f'proj-{uuid.uuid4().hex[:12]}'
