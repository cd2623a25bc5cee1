"""Test fixtures: a real redis-server, isolated key prefixes, and running the commands.

The session starts a private ``redis-server`` on a free loopback port (one per pytest-xdist
worker), unless it runs in one process and ``OCCOPUS_TEST_REDIS_URL`` names one
(``python -m occo.localredis`` does).  Each
test gets its own key prefix and deletes only the keys under it: nothing is ever flushed.
Commands run as subprocesses with ``HOME`` pointing at the test's temporary folder, so the
user's own ``~/.occopus`` files are never read.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import pytest

from occo.localredis import LocalCluster, LocalSentinel, RedisServer
from occo.store import client_factory, registry_key, registry_shard

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

# Cloud peers (moto_server, the Keystone/Nova peer, podman's Docker API): session fixtures,
# started once per test process when a test asks for them.
pytest_plugins = ['peer_ec2', 'peer_nova', 'peer_docker', 'peer_rest', 'peer_azure', 'peer_cloudsigma',
                  'peer_cloudbroker', 'peer_chef']


#: Modules whose tests run against each kind of Redis (``topology``): one server, a primary
#: behind Sentinels, and a cluster of three primaries.  The others use one server.
ON_EVERY_TOPOLOGY = {'test_build', 'test_manage', 'test_replace', 'test_faults'}
TOPOLOGIES = ('single', 'sentinel', 'cluster')


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line('markers', 'one_redis: a slow test of one of those modules that is '
                                       'about clouds, not Redis: it runs against one server only')


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__ in ON_EVERY_TOPOLOGY and 'occo' in metafunc.fixturenames \
            and metafunc.definition.get_closest_marker('one_redis') is None:
        metafunc.parametrize('topology', TOPOLOGIES, indirect=True)


@pytest.fixture
def topology(request: pytest.FixtureRequest) -> str:
    """Which kind of Redis the test's ``occo`` uses (``single`` unless parametrised)."""
    return getattr(request, 'param', 'single')


@pytest.fixture(scope='session')
def sentinel_group() -> Iterator[LocalSentinel]:
    """A primary, two replicas and three Sentinels, for the whole test process."""
    with LocalSentinel() as group:
        yield group


@pytest.fixture(scope='session')
def cluster_group() -> Iterator[LocalCluster]:
    """A cluster of three primaries, for the whole test process."""
    with LocalCluster() as cluster:
        yield cluster


@pytest.fixture(scope='session')
def redis_url() -> Iterator[str]:
    """The Redis of this test process.  Tests that compare the whole database before and
    after a command need it to themselves, so each pytest-xdist worker starts a private one
    even where ``OCCOPUS_TEST_REDIS_URL`` names a shared one."""
    url = os.environ.get('OCCOPUS_TEST_REDIS_URL')
    if url and not os.environ.get('PYTEST_XDIST_WORKER'):
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
        #: a client of the kind of Redis the URL names (one server, Sentinel, cluster)
        self.redis = client_factory(redis_url)[0](30.0)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith('OCCOPUS_')}
        # Health checks are off unless a test turns them on: the dummy cloud hands out fake
        # addresses that must never be contacted (local-backend addresses are loopback).
        self.env.update(HOME=str(home), USER=USER, LOGNAME=USER, OCCOPUS_REDIS_URL=redis_url,
                        OCCOPUS_REDIS_PREFIX=self.prefix, OCCOPUS_HEALTH_CHECKS='0',
                        PYTHONDONTWRITEBYTECODE='1')

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

    def popen(self, name: str, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
        """Start an Occopus command without waiting (text output on pipes)."""
        return subprocess.Popen(self.command(name) + [str(a) for a in args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=dict(self.env, **(env or {})),
                                cwd=self.home)

    def dummy_cloud(self, infra_id: Optional[str] = None) -> Dict[str, dict]:
        """The dummy cloud's resources (of one infrastructure, if given)."""
        resources = {k: json.loads(v) for k, v in self.redis.hgetall(f'{self.prefix}dummycloud').items()}
        return {k: v for k, v in resources.items() if infra_id is None or v['infra_id'] == infra_id}

    def registry(self, infra_id: str) -> Optional[dict]:
        """The registry entry of an infrastructure (in its shard), or None."""
        value = self.redis.hget(registry_key(self.prefix, registry_shard(infra_id)), infra_id)
        return json.loads(value) if value is not None else None

    def infra_keys(self, infra_id: str) -> List[str]:
        return [k for k in self.keys() if infra_id in k] + (
            [f'registry:{infra_id}'] if self.registry(infra_id) is not None else [])

    def keys(self) -> List[str]:
        return sorted(self.redis.scan_iter(match=f'{self.prefix}*', count=1000))

    def snapshot(self) -> Dict[bytes, object]:
        """Every key of the database with its content (compared by value: DUMP bytes change
        when Redis rehashes a hash, even if nothing was written)."""
        raw = self.redis
        readers = {'string': raw.get, 'hash': raw.hgetall, 'list': lambda k: raw.lrange(k, 0, -1),
                   'set': lambda k: sorted(raw.smembers(k)), 'stream': raw.xrange,
                   'zset': lambda k: raw.zrange(k, 0, -1, withscores=True)}
        return {key.encode(): (kind, readers[kind](key)) for key in raw.scan_iter(count=1000)
                for kind in [raw.type(key)]}

    def cleanup(self) -> None:
        for pid in processes_of(self.prefix_marker()):
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        keys = self.keys()
        if keys:
            self.redis.delete(*keys)

    def prefix_marker(self) -> str:
        return str(self.home)


@pytest.fixture
def occo(redis_url: str, tmp_path: Path, topology: str, request: pytest.FixtureRequest) -> Iterator[Occo]:
    home = tmp_path / 'home'
    home.mkdir()
    url = redis_url if topology == 'single' else request.getfixturevalue(f'{topology}_group').url
    instance = Occo(url, home)
    yield instance
    instance.cleanup()


def live_processes() -> Iterator[Tuple[int, Callable[[str], bytes]]]:
    """Live (non-zombie) processes other than this one, as ``(pid, read)``: ``read(name)`` is
    the content of ``/proc/<pid>/<name>`` (``b''`` once the process is gone)."""
    def reader(pid: str) -> Callable[[str], bytes]:
        def read(name: str) -> bytes:
            try:
                with open(f'/proc/{pid}/{name}', 'rb') as stream:
                    return stream.read()
            except OSError:
                return b''
        return read
    for entry in os.listdir('/proc'):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        stat = reader(entry)('stat')
        if not stat or stat.rsplit(b')', 1)[1].split()[:1] == [b'Z']:
            continue
        yield int(entry), reader(entry)


def processes_of(marker: str) -> List[int]:
    """Live (non-zombie) processes whose environment mentions ``marker`` (a local-backend
    instance carries OCCOPUS_INFRA_ID, OCCOPUS_NODE_ROOT under the test's HOME, ...)."""
    return [pid for pid, read in live_processes() if marker.encode() in read('environ')]


def records(occo: 'Occo', infra_id: str) -> List[Dict[str, Any]]:
    """The instance records of an infrastructure in Redis."""
    return [json.loads(v) for v in occo.redis.hvals(f'{occo.prefix}{{{infra_id}}}:instances')]


def failure_line(result: subprocess.CompletedProcess) -> str:
    """The last line of a command that failed: exit code 1, no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Traceback' not in result.stderr
    return result.stderr.rstrip().splitlines()[-1]


def chain_infra(occo: 'Occo', folder: Path, nodes: Dict[str, Dict[str, Any]],
                name: str = 't') -> Path:
    """Import one node type per node (``nodes``: node -> resource section; JSON is YAML) with
    a small cloud-init, and write an infrastructure of them, each node depending on the one
    before; returns the infrastructure file."""
    definitions = {f'node_def:{node}': [{'resource': section, 'contextualisation': {
        'type': 'cloudinit',
        'context_template': f'#cloud-config\nwrite_files: [{{path: /tmp/{node}, content: hi}}]\n'}}]
        for node, section in nodes.items()}
    names = list(nodes)
    text = f'infra_name: {name}\nuser_id: u\nnodes:\n' + ''.join(
        f'  - {{name: {n}, type: {n}}}\n' for n in names)
    if len(names) > 1:
        text += 'dependencies:\n' + ''.join(f'  - [{b}, {a}]\n' for a, b in zip(names, names[1:]))
    write(folder, {'nodes.yaml': json.dumps(definitions), 'infra.yaml': text})
    imported = occo.run('occopus-import', folder / 'nodes.yaml')
    assert imported.returncode == 0, imported.stderr
    return folder / 'infra.yaml'


def fill_in(path: Path, values: Mapping[str, str]) -> Path:
    """Replace each ``replace_with_<name>`` placeholder of a tutorial's file by its value
    (every one must be there: a tutorial that changed must not pass unnoticed)."""
    text = path.read_text()
    for name, value in values.items():
        assert f'replace_with_{name}' in text, name
        text = text.replace(f'replace_with_{name}', value)
    path.write_text(text)
    return path


def write(folder: Path, files: Dict[str, str]) -> Path:
    """Write ``files`` (relative name -> text) under ``folder``; returns ``folder``."""
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def kill_build_when(occo: 'Occo', held: 'threading.Event', *args: str) -> None:
    """Start ``occopus-build ARGS``, wait until ``held`` is set (a test proxy holds a cloud's
    answer: the resource exists, its record has no id yet) and SIGKILL the build."""
    build = occo.popen('occopus-build', *args)
    try:
        assert held.wait(60), build.communicate(timeout=5)
    finally:
        build.kill()
        build.communicate(timeout=30)


def destroy_listing(occo: 'Occo', infra_id: str, recorded: int, untracked: int) -> List[str]:
    """Run ``occopus-destroy --dry-run -i INFRA_ID``, check its exit code and its header line
    (how many recorded instances and untracked resources it would drop), and return the lines
    that list them (one per resource)."""
    listed = occo.run('occopus-destroy', '--dry-run', '-i', infra_id)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    plural = lambda n, noun: f'{n} {noun}{"" if n == 1 else "s"}'  # noqa: E731
    assert lines[0] == (f'dry run: nothing is dropped. occopus-destroy -i {infra_id} would drop '
                        f'{plural(recorded, "recorded instance")} and '
                        f'{plural(untracked, "resource")} no record knows:'), listed.stdout
    assert len(lines) == 1 + recorded + untracked, listed.stdout
    return lines[1:]


def serves(process: Optional[subprocess.Popen], url: str, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``url`` to answer 200 while ``process`` runs; False if the
    process ended or the time ran out."""
    import urllib.error
    import urllib.request
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is None or process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return True
        except (OSError, urllib.error.URLError):
            time.sleep(0.1)
    return False
