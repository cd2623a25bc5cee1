"""Fixtures for the REST tests: ``occopus-rest-service`` started as a subprocess on a free
loopback port, with the test's environment (its own Redis key prefix and HOME), and stopped
at the end of the test."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
import requests

from conftest import serves, write
from occo.localredis import free_port, stop_process

START_TIMEOUT = 30.0


class RestService:
    """One ``occopus-rest-service`` process; :meth:`call` speaks to it over HTTP."""

    def __init__(self, occo: Any, config: str = '', env: Optional[Dict[str, str]] = None,
                 name: str = 'rest') -> None:
        self.occo = occo
        self.config = config
        self.env = env or {}
        self.name = name
        self.process: Optional[subprocess.Popen] = None
        self.port = 0
        self.url = ''
        self.token: Optional[str] = None

    def start(self) -> 'RestService':
        cfg = write(self.occo.home, {f'{self.name}.yaml': self.config or 'rest: {interval: 0.5}\n'})
        for _ in range(3):  # the free port may be taken between the probe and the bind
            self.port = free_port()
            self.url = f'http://127.0.0.1:{self.port}'
            log = open(self.occo.home / f'{self.name}.log', 'ab')
            self.process = subprocess.Popen(
                self.occo.command('occopus-rest-service') + ['--cfg', str(cfg / f'{self.name}.yaml'),
                                                             '--port', str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=dict(self.occo.env, **self.env),
                cwd=self.occo.home)
            log.close()
            if self._answers():
                return self
            stop_process(self.process)
        raise RuntimeError(f'occopus-rest-service did not start: {self.log()[-2000:]}')

    def _answers(self) -> bool:
        return serves(self.process, f'{self.url}/health', START_TIMEOUT)

    def log(self) -> str:
        path = Path(self.occo.home) / f'{self.name}.log'
        return path.read_text(errors='replace') if path.exists() else ''

    def stop(self) -> None:
        stop_process(self.process, grace=70)
        self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def call(self, method: str, path: str, *, token: Optional[str] = None, **options: Any
             ) -> requests.Response:
        headers = dict(options.pop('headers', {}) or {})
        token = token or self.token
        if token:
            headers['Authorization'] = f'Bearer {token}'
        return requests.request(method, f'{self.url}{path}', headers=headers,
                                timeout=options.pop('timeout', 120), **options)

    def wait_for(self, infra_id: str, check: Any, seconds: float = 60.0) -> Dict[str, Any]:
        """Poll ``GET /infrastructures/<id>`` until ``check(body)`` holds; returns the body."""
        deadline = time.monotonic() + seconds
        body: Dict[str, Any] = {}
        while time.monotonic() < deadline:
            answer = self.call('GET', f'/infrastructures/{infra_id}')
            body = answer.json()
            if answer.status_code == 200 and check(body):
                return body
            time.sleep(0.2)
        raise AssertionError(f'not reached in {seconds} s: {body}')


def states(body: Dict[str, Any]) -> Dict[str, List[str]]:
    """node -> the states of its instances, from a ``GET /infrastructures/<id>`` body."""
    return {node: sorted(i['state'] for i in entry['instances'].values()) for node, entry in body.items()}


@pytest.fixture
def rest(occo) -> Iterator[RestService]:
    """A started service (manage passes every 0.5 s), stopped after the test."""
    service = RestService(occo).start()
    try:
        yield service
    finally:
        service.stop()
