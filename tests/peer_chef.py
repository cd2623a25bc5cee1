"""Session fixtures for the chef tests: Debian's goiardi in auth mode, and the organisation fake.

``goiardi`` is ``/usr/bin/goiardi -A`` (an in-memory Chef server that checks signatures; it has
no ``/organizations/`` URLs) on a free loopback port, with ``--conf-root`` in a temporary
folder where it writes ``admin.pem`` and ``chef-validator.pem`` on its first start; stopped at
the end of the session.  A thread stands in for chef-client checking in: it gives every node
without ``automatic.ohai_time`` one (and an ``fqdn``), except nodes in an environment listed in
``no_checkin``.  ``chef_peer`` is :class:`chefpeer.ChefPeer` (organisation prefix, X-Ops-Sign
1.3 and 1.0 checked), which checks nodes in itself when they are read.
"""
from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Set

import pytest

from chefpeer import ChefPeer
from occo.localredis import free_port, stop_process
from occo.plugins.configmanagers import chefapi
from occo.plugins.http import url_part

GOIARDI = '/usr/bin/goiardi'
START_TIMEOUT = 30.0
CHECKIN_EVERY = 0.2  # seconds between the stand-in chef-client's looks at the nodes


class Goiardi:
    """A private goiardi: ``url``, ``admin_pem`` (the admin user's key) and an API client."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix='goiardi-'))
        self.process: Optional[subprocess.Popen] = None
        self.url = ''
        self.admin_pem = ''
        self.no_checkin: Set[str] = set()
        self._stop = threading.Event()
        self._api: Any = None

    def __enter__(self) -> 'Goiardi':
        for _ in range(3):  # the free port may be taken between the probe and the bind
            port = free_port()
            with open(self.root / 'goiardi.log', 'ab') as log:
                self.process = subprocess.Popen(
                    [GOIARDI, '-A', f'--conf-root={self.root}', '-I', '127.0.0.1', '-P', str(port),
                     '-H', '127.0.0.1', '--log-level=error'],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.url = f'http://127.0.0.1:{port}'
            if self._started():
                self.admin_pem = (self.root / 'admin.pem').read_text()
                self._api = chefapi.ChefClient(self.url, chefapi.Signer(
                    'admin', chefapi.load_key(self.admin_pem), '1.0'), 10.0)
                threading.Thread(target=self._check_in, name='goiardi-checkin', daemon=True).start()
                return self
            stop_process(self.process)
        raise RuntimeError(f'goiardi did not start; see {self.root / "goiardi.log"}')

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        stop_process(self.process)

    def _started(self) -> bool:
        import requests
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if requests.get(f'{self.url}/nodes', timeout=2).status_code == 401 and \
                        (self.root / 'admin.pem').exists():
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.1)
        return False

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """A request as the admin user; None for a 404."""
        try:
            return self._api.request(method, path, body)
        except chefapi.ChefHTTPError as exc:
            if exc.status == 404:
                return None
            raise

    def names(self, kind: str, prefix: str = '') -> Set[str]:
        return {name for name in self.api('GET', kind) or {} if name.startswith(prefix)}

    def _check_in(self) -> None:
        while not self._stop.wait(CHECKIN_EVERY):
            try:
                for name in self.names('nodes'):
                    node: Dict[str, Any] = self.api('GET', f'nodes/{url_part(name)}') or {}
                    automatic = node.get('automatic') or {}
                    if automatic.get('ohai_time') or \
                            node.get('chef_environment') in self.no_checkin:
                        continue
                    node['automatic'] = dict(automatic, ohai_time=time.time(),
                                             fqdn=f'{name}.example.invalid')
                    self.api('PUT', f'nodes/{url_part(name)}', node)
            except Exception:  # noqa: BLE001 - a node deleted meanwhile: look again
                continue


@pytest.fixture(scope='session')
def goiardi() -> Iterator[Goiardi]:
    if not Path(GOIARDI).exists():
        pytest.skip('goiardi is not installed (apt-get install goiardi)')
    with Goiardi() as server:
        yield server


@pytest.fixture(scope='session')
def chef_peer() -> Iterator[ChefPeer]:
    with ChefPeer() as peer:
        yield peer
