"""Test fixtures: a real redis-server, isolated key prefixes, and running the commands.

The session starts a private ``redis-server`` on a free loopback port, unless
``OCCOPUS_TEST_REDIS_URL`` names one (``.ci/run`` and ``python -m occo.localredis`` do).  Each
test gets its own key prefix and deletes only the keys under it: nothing is ever flushed.
Commands run as subprocesses with ``HOME`` pointing at the test's temporary folder, so the
user's own ``~/.occopus`` files are never read.
"""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest
import redis

from occo.localredis import RedisServer

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / 'shared' / 'corpus' / 'occopus-tutorials'
EXAMPLES = ROOT / 'examples'
BIN = Path(sys.executable).parent
MODULES = {
    'occopus-build': 'occo.cli.build', 'occopus-destroy': 'occo.cli.destroy',
    'occopus-manage': 'occo.cli.manage', 'occopus-scale': 'occo.cli.scale',
    'occopus-import': 'occo.cli.importer', 'occopus-rest-service': 'occo.cli.rest_service',
}
USER = 'occotest'


@pytest.fixture(scope='session')
def redis_url() -> Iterator[str]:
    url = os.environ.get('OCCOPUS_TEST_REDIS_URL')
    if url:
        yield url
        return
    with RedisServer() as server:
        yield server.url


class Occo:
    """One test's view of Occopus: its prefix, its environment, and a Redis client."""

    def __init__(self, redis_url: str, home: Path) -> None:
        self.redis_url = redis_url
        self.prefix = f'occotest:{uuid.uuid4().hex[:12]}:'
        self.home = home
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith('OCCOPUS_')}
        self.env.update(HOME=str(home), USER=USER, LOGNAME=USER, OCCOPUS_REDIS_URL=redis_url,
                        OCCOPUS_REDIS_PREFIX=self.prefix, PYTHONDONTWRITEBYTECODE='1')

    def command(self, name: str) -> List[str]:
        script = BIN / name
        if script.exists():
            return [str(script)]
        module = MODULES.get(name)
        if module is None:  # occopus-maintain
            return [sys.executable, '-c', 'import sys; from occo.cli.manage import maintain_main; '
                                          'sys.exit(maintain_main())']
        return [sys.executable, '-m', module]

    def run(self, name: str, *args: str, env: Optional[Dict[str, str]] = None,
            cwd: Optional[Path] = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run an Occopus command; returns the completed process (text output)."""
        return subprocess.run(self.command(name) + [str(a) for a in args], capture_output=True,
                              text=True, env=dict(self.env, **(env or {})), cwd=cwd or self.home,
                              timeout=timeout)

    def keys(self) -> List[str]:
        return sorted(self.redis.scan_iter(match=f'{self.prefix}*', count=1000))

    def snapshot(self) -> Dict[str, bytes]:
        """Every key of the database with its serialised value."""
        raw = redis.Redis.from_url(self.redis_url)
        return {key: raw.dump(key) for key in raw.scan_iter(count=1000)}

    def cleanup(self) -> None:
        keys = self.keys()
        if keys:
            self.redis.delete(*keys)


@pytest.fixture
def occo(redis_url: str, tmp_path: Path) -> Iterator[Occo]:
    home = tmp_path / 'home'
    home.mkdir()
    instance = Occo(redis_url, home)
    yield instance
    instance.cleanup()


def write(folder: Path, files: Dict[str, str]) -> Path:
    """Write ``files`` (relative name -> text) under ``folder``; returns ``folder``."""
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder
