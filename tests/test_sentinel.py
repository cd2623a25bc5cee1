"""Redis Sentinel: a primary, a replica and three Sentinels on free loopback ports, started
for the test and stopped after it.  Occopus reaches the primary through a
``redis+sentinel://`` URL, builds on it, and after the primary is killed and a Sentinel has
promoted the replica, the same URL reaches the new primary with the records intact."""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator, List

import pytest
import redis

from conftest import write
from occo.localredis import RedisServer, free_port, redis_server_binary, stop_process
from test_build import built_id, dummy_infra, import_ok

SERVICE = 'occo'


class Sentinels:
    """``count`` Sentinels watching the primary at ``port`` (quorum 2, 1 s to call it down)."""

    def __init__(self, folder: Path, primary: int, count: int = 3) -> None:
        self.ports: List[int] = []
        self.processes: List[subprocess.Popen] = []
        for index in range(count):
            port = free_port()
            config = write(folder, {f'sentinel{index}.conf': (
                f'port {port}\nbind 127.0.0.1\ndir {folder}\n'
                f'sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n'
                f'sentinel down-after-milliseconds {SERVICE} 1000\n'
                f'sentinel failover-timeout {SERVICE} 5000\n'
                f'sentinel parallel-syncs {SERVICE} 1\n')}) / f'sentinel{index}.conf'
            self.processes.append(subprocess.Popen(
                [redis_server_binary(), str(config), '--sentinel'], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
            self.ports.append(port)
        deadline = time.monotonic() + 20
        for port in self.ports:
            while True:
                try:
                    redis.Redis(port=port, socket_timeout=1).ping()
                    break
                except redis.RedisError:
                    assert time.monotonic() < deadline, 'a Sentinel did not start'
                    time.sleep(0.1)

    @property
    def url(self) -> str:
        return 'redis+sentinel://' + ','.join(f'127.0.0.1:{p}' for p in self.ports) + f'/{SERVICE}/0'

    def primary_port(self) -> int:
        return int(redis.Redis(port=self.ports[0], decode_responses=True)
                   .sentinel_get_master_addr_by_name(SERVICE)[1])

    def stop(self) -> None:
        for process in self.processes:
            stop_process(process)


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[tuple]:
    if shutil.which('redis-server') is None and not Path('/usr/bin/redis-server').exists():
        pytest.skip('redis-server is not installed')
    (tmp_path / 'primary').mkdir()
    (tmp_path / 'replica').mkdir()
    primary = RedisServer(workdir=str(tmp_path / 'primary'))
    primary.start()
    replica = RedisServer(workdir=str(tmp_path / 'replica'),
                          args=['--replicaof', '127.0.0.1', str(primary.port)])
    replica.start()
    sentinels = Sentinels(tmp_path, primary.port)
    try:
        yield primary, replica, sentinels
    finally:
        sentinels.stop()
        replica.stop()
        primary.stop()


def test_a_build_through_sentinel_survives_a_failover(occo, tmp_path, sentinel):
    primary, replica, sentinels = sentinel
    occo.env['OCCOPUS_REDIS_URL'] = sentinels.url
    folder = dummy_infra(tmp_path / 'infra', 4)
    import_ok(occo, folder / 'nodes.yaml')
    assert built_id(occo.run('occopus-build', '-i', 'sentineled', folder / 'infra.yaml')) == 'sentineled'
    # the records reached the replica before the primary dies
    assert redis.Redis(port=primary.port).wait(1, 5000) == 1

    stop_process(primary.process, grace=0.1)  # the primary dies
    deadline = time.monotonic() + 30
    while sentinels.primary_port() != replica.port:
        assert time.monotonic() < deadline, 'no Sentinel promoted the replica'
        time.sleep(0.2)

    report = occo.run('occopus-manage', '-r', '-i', 'sentineled')
    assert report.returncode == 0, report.stderr
    assert report.stdout.count('(ready)') == 4
    destroyed = occo.run('occopus-destroy', '-i', 'sentineled')
    assert destroyed.returncode == 0, destroyed.stderr
    new_primary = redis.Redis(port=replica.port, decode_responses=True)
    assert not [k for k in new_primary.scan_iter(match=f'{occo.prefix}*') if 'sentineled' in k]
