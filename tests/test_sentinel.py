"""Redis Sentinel: a primary, two replicas and three Sentinels on free loopback ports
(:class:`occo.localredis.LocalSentinel`), started for each test and stopped after it.  Occopus
reaches the primary through a ``redis+sentinel://`` URL; the primary is killed (SIGKILL, as a
crash) after a build, in the middle of a 50-node parallel build, and under a running
``occopus-manage --all -c``, and a Sentinel promotes a replica each time."""
from __future__ import annotations

import json
import signal
import time
from typing import Iterator

import pytest

from conftest import Occo, write
from occo.localredis import LocalSentinel, RedisServerError
from test_build import built_id, dummy_infra, import_ok


@pytest.fixture
def sentinel(occo: Occo) -> Iterator[LocalSentinel]:
    group = LocalSentinel()
    try:
        group.start()
    except RedisServerError as exc:
        group.stop()
        pytest.skip(str(exc))
    try:
        yield group
    finally:
        group.stop()


def on_sentinel(occo: Occo, group: LocalSentinel) -> Occo:
    """``occo`` pointed at the primary the Sentinels name (the test's own client tries a
    command again after a failover, as Occopus does)."""
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry
    from redis.sentinel import Sentinel
    changed = Occo(group.url, occo.home)
    changed.prefix = occo.prefix
    changed.redis = Sentinel([('127.0.0.1', s.port) for s in group.sentinels]).master_for(
        group.service, decode_responses=True, socket_timeout=10,
        retry=Retry(ExponentialBackoff(cap=1.0), 30))
    changed.env.update(OCCOPUS_REDIS_URL=group.url, OCCOPUS_REDIS_PREFIX=occo.prefix)
    return changed


def promoted(group: LocalSentinel, killed, seconds: float = 60) -> None:
    """Wait until a replica is promoted and the failover is over (every Sentinel agrees and
    the other replica follows the new primary): Sentinel may still choose another replica
    before that, and what was written meanwhile would be lost, by Redis' design."""
    deadline = time.monotonic() + seconds
    while group.primary() is killed or not group.settled():
        assert time.monotonic() < deadline, 'no Sentinel promoted a replica'
        time.sleep(0.2)


def test_a_build_through_sentinel_survives_a_failover(occo, tmp_path, sentinel):
    occo = on_sentinel(occo, sentinel)
    folder = dummy_infra(tmp_path / 'infra', 4)
    import_ok(occo, folder / 'nodes.yaml')
    waits = lambda: occo.redis.info('commandstats').get('cmdstat_wait', {}).get('calls', 0)  # noqa: E731
    before = waits()
    assert built_id(occo.run('occopus-build', '-i', 'sentineled', folder / 'infra.yaml')) == 'sentineled'
    # the lease grant, the intent record of each node and each node's dummy resource waited
    # for a replica
    assert waits() - before >= 1 + 4 * 2, waits() - before
    assert occo.redis.wait(2, 5000) == 2  # the records reached the replicas before the primary dies

    promoted(sentinel, sentinel.kill_primary())
    report = occo.run('occopus-manage', '-r', '-i', 'sentineled')
    assert report.returncode == 0, report.stderr
    assert report.stdout.count('(ready)') == 4
    destroyed = occo.run('occopus-destroy', '-i', 'sentineled')
    assert destroyed.returncode == 0, destroyed.stderr
    assert occo.infra_keys('sentineled') == [] and occo.dummy_cloud('sentineled') == {}


def test_the_primary_killed_during_a_fifty_node_parallel_build(occo, tmp_path, sentinel):
    occo = on_sentinel(occo, sentinel)
    folder = dummy_infra(tmp_path / 'infra', 50, boot_time=1.5)
    import_ok(occo, folder / 'nodes.yaml')
    build = occo.popen('occopus-build', '--parallelize', '-i', 'fifty', folder / 'infra.yaml')
    deadline = time.monotonic() + 60
    while len(occo.dummy_cloud('fifty')) < 10:  # under way: some made, most still to come
        assert time.monotonic() < deadline and build.poll() is None, build.communicate()
        time.sleep(0.05)
    made_before = len(occo.dummy_cloud('fifty'))
    killed = sentinel.kill_primary()
    out, err = build.communicate(timeout=120)
    assert build.returncode == 0, err
    assert out.strip().splitlines()[-1] == 'fifty'
    assert sentinel.primary() is not killed
    assert made_before < 50, 'the primary died after the build had made every node'

    resources = occo.dummy_cloud('fifty')
    assert len(resources) == 50 and {r['state'] for r in resources.values()} == {'running'}
    records = [json.loads(v) for v in occo.redis.hvals(f'{occo.prefix}{{fifty}}:instances')]
    assert len(records) == 50 and {r['state'] for r in records} == {'ready'}
    assert sorted(r['instance_id'] for r in records) == sorted(resources)
    assert occo.registry('fifty')['state'] == 'ready'
    destroyed = occo.run('occopus-destroy', '-i', 'fifty')
    assert destroyed.returncode == 0, destroyed.stderr
    assert occo.dummy_cloud('fifty') == {}


def test_a_fleet_member_keeps_going_through_a_failover(occo, tmp_path, sentinel):
    occo = on_sentinel(occo, sentinel)
    write(occo.home, {'.occopus/occopus_config.yaml': 'lease_ttl: 3\n'})
    folder = dummy_infra(tmp_path / 'infra', 2)
    import_ok(occo, folder / 'nodes.yaml')
    for infra_id in ('m1', 'm2'):
        built_id(occo.run('occopus-build', '-i', infra_id, folder / 'infra.yaml'))
    maintainer = occo.popen('occopus-manage', '--all', '-c', '-t', '0.5')
    try:
        time.sleep(1.5)
        killed = sentinel.kill_primary()
        killed_at = time.time()
        promoted(sentinel, killed)
        lost = next(iter(occo.dummy_cloud('m2')))
        occo.redis.hdel(f'{occo.prefix}dummycloud', lost)  # an instance lost out of band
        deadline = time.monotonic() + 30
        while lost in {r.get('instance_id') for r in map(json.loads, occo.redis.hvals(
                f'{occo.prefix}{{m2}}:instances'))} or len(occo.dummy_cloud('m2')) != 2:
            assert time.monotonic() < deadline, 'the lost instance was not replaced'
            assert maintainer.poll() is None, maintainer.communicate()
            time.sleep(0.2)
        for infra_id in ('m1', 'm2'):
            after = [f for _, f in occo.redis.xrange(f'{occo.prefix}{{{infra_id}}}:passes')
                     if float(f['start']) > killed_at]
            assert after, f'no pass over {infra_id} after the failover'
    finally:
        maintainer.send_signal(signal.SIGTERM)
        out, err = maintainer.communicate(timeout=60)
    assert maintainer.returncode == 0, err
    assert 'm2: 1 created (1 ready), 1 dropped; ready' in out
