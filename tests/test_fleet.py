"""The maintainer fleet: ``occopus-manage --all`` over every infrastructure marked maintained,
several ``--all -c`` members sharing them, each on a "host" of its own.

A host is simulated by separate PID, network and UTS namespaces (``unshare``) where this
machine allows it (as root it does): each member then runs as pid 1 under a host name of its
own, reaching Redis through a unix socket (its network namespace has no way to the test's
loopback).  Elsewhere the members are separate process trees told apart by ``OCCOPUS_HOST_ID``.
Everything is checked from what the members leave in Redis: the pass stream of every
infrastructure (who, under which lease token, from when to when).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from conftest import Occo, write
from occo.fleet import deal
from occo.localredis import RedisServer
from test_build import dummy_infra, import_ok

INTERVAL = 1.0
LEASE_TTL = 3.0
INFRAS = 30
MEMBERS = 3


def namespaces_work() -> bool:
    """Whether members can run in namespaces of their own (``OCCOPUS_TEST_NO_UNSHARE=1`` tries
    the fallback of distinct host ids on a machine where they could)."""
    if os.geteuid() != 0 or shutil.which('unshare') is None or os.environ.get('OCCOPUS_TEST_NO_UNSHARE'):
        return False
    probe = subprocess.run(['unshare', '--pid', '--net', '--uts', '--fork', '--mount-proc', 'true'],
                           capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.fixture
def fleet_occo(tmp_path: Path) -> Iterator[Occo]:
    """An Occo on a private Redis reached through a unix socket (which every namespace sees)."""
    socket_path = tmp_path / 'redis.sock'
    (tmp_path / 'redis').mkdir()
    server = RedisServer(workdir=str(tmp_path / 'redis'),
                         args=['--unixsocket', str(socket_path), '--unixsocketperm', '700'])
    server.start()
    home = tmp_path / 'home'
    home.mkdir()
    occo = Occo(f'unix://{socket_path}?db=0', home)
    write(home, {'.occopus/occopus_config.yaml': f'lease_ttl: {LEASE_TTL}\n'})
    try:
        yield occo
    finally:
        occo.cleanup()
        server.stop()


def build_many(occo: Occo, folder: Path, count: int) -> List[str]:
    """``count`` maintained infrastructures of one dummy node, built side by side."""
    dummy_infra(folder, nodes=1)
    import_ok(occo, folder / 'nodes.yaml')
    ids = [f'f{i:02d}' for i in range(count)]
    for batch in range(0, count, 10):
        builds = [occo.popen('occopus-build', '-i', infra_id, folder / 'infra.yaml')
                  for infra_id in ids[batch:batch + 10]]
        for build in builds:
            out, err = build.communicate(timeout=120)
            assert build.returncode == 0, err
    return ids


def passes(occo: Occo, infra_id: str) -> List[Dict[str, str]]:
    return [fields for _, fields in occo.redis.xrange(f'{occo.prefix}{{{infra_id}}}:passes')]


def member(occo: Occo, host: str, isolated: bool) -> subprocess.Popen:
    """``occopus-manage --all -c`` on a host of its own."""
    command = occo.command('occopus-manage') + ['--all', '-c', '-t', str(INTERVAL)]
    env = dict(occo.env) if isolated else dict(occo.env, OCCOPUS_HOST_ID=host)
    if isolated:
        command = ['unshare', '--pid', '--net', '--uts', '--fork', '--mount-proc', '--kill-child',
                   'sh', '-c', f'hostname {host} && exec "$@"', 'sh'] + command
    return subprocess.Popen(command, env=env, cwd=occo.home, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.mark.parametrize('infras, members', [(30, 3), (31, 3), (100, 7), (2, 5), (0, 2)])
def test_the_dealing_is_fair_and_the_same_whatever_the_order(infras, members):
    ids = [f'infra-{n}' for n in range(infras)]
    names = [f'host{n}:1/{n:08x}' for n in range(members)]
    dealt = deal(ids, names)
    assert sorted(i for share in dealt.values() for i in share) == sorted(ids)
    assert max(map(len, dealt.values())) - min(map(len, dealt.values())) <= 1
    assert max(map(len, dealt.values())) == -(-infras // members)
    assert deal(list(reversed(ids)), list(reversed(names))) == dealt


def test_every_build_is_maintained_until_it_is_detached(occo, tmp_path):
    ids = build_many(occo, tmp_path, 2)
    result = occo.run('occopus-manage', '--all')
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == \
        'Managed 2 infrastructures: 0 changed, 2 unchanged, 0 held by another process, 0 failed'
    assert [len(passes(occo, i)) for i in ids] == [1, 1]

    detached = occo.run('occopus-manage', '-i', ids[0], '--detach')
    assert detached.returncode == 0, detached.stderr
    assert detached.stdout == f'Infrastructure {ids[0]} is no longer maintained by occopus-manage --all\n'
    again = occo.run('occopus-manage', '-i', ids[0], '--detach')
    assert (again.returncode, again.stderr) == (
        1, f'occopus-manage: error: infrastructure {ids[0]} is not maintained\n')
    occo.redis.hdel(f'{occo.prefix}dummycloud', *occo.dummy_cloud(ids[1]))  # a lost instance
    result = occo.run('occopus-manage', '--all')
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == \
        'Managed 1 infrastructure: 1 changed, 0 unchanged, 0 held by another process, 0 failed'
    assert f'{ids[1]}: 1 created (1 ready), 1 dropped; ready' in result.stdout
    assert [len(passes(occo, i)) for i in ids] == [1, 2]
    assert occo.run('occopus-manage', '-i', ids[0], '--attach').returncode == 0
    assert occo.run('occopus-manage', '--all').stdout.startswith('Managed 2 infrastructures')


def test_garbage_in_the_member_list_takes_no_share(occo, tmp_path):
    ids = build_many(occo, tmp_path, 2)
    far = int(time.time() * 1000) + 10 * 86400 * 1000
    occo.redis.hset(f'{occo.prefix}maintainers', mapping={
        'junk': 'not a deadline', 'far-future': f'{far} {{}}', 'not-json': f'{far // 10 ** 3} [1',
        'binary': '\x00' * 10000})
    member = occo.popen('occopus-manage', '--all', '-c', '-t', '0.3')
    time.sleep(2.5)
    member.send_signal(signal.SIGTERM)
    out, err = member.communicate(timeout=30)
    assert member.returncode == 0, err
    assert 'maintaining 2 of 2 infrastructures with 1 maintainer\n' in out
    assert all(len(passes(occo, i)) >= 3 for i in ids), [len(passes(occo, i)) for i in ids]
    assert occo.redis.hgetall(f'{occo.prefix}maintainers') == {}  # it left, the junk is gone


@pytest.mark.parametrize('args, message', [
    (['--all', '-i', 'x'], '--all manages every maintained infrastructure: leave out -i, -l, -r and --events'),
    (['--all', '-r'], '--all manages every maintained infrastructure: leave out -i, -l, -r and --events'),
    (['--attach'], '--attach and --detach go with -i ID'),
    (['-i', 'x', '--attach', '--detach'], 'give either --attach or --detach'),
])
def test_fleet_options_that_do_not_go_together(occo, args, message):
    result = occo.run('occopus-manage', *args)
    assert (result.returncode, result.stderr) == (2, f'occopus-manage: error: {message}\n')


def test_attach_of_an_unknown_infrastructure(occo):
    result = occo.run('occopus-manage', '-i', 'nope', '--attach')
    assert result.returncode == 1
    assert result.stderr.startswith('occopus-manage: error: Unknown infrastructure: "nope"')


def test_a_lease_of_another_host_is_never_broken_only_waited_out(occo, tmp_path):
    """The holder's pid does not run here, but it is another host's pid: only expiry counts."""
    (infra_id,) = build_many(occo, tmp_path, 1)
    dead = subprocess.Popen(['true'])
    dead.wait()
    holder = f'{socket.gethostname()}:{dead.pid}'
    took = subprocess.run(
        [sys.executable, '-c',
         'import sys; from occo.store import Store; '
         f'Store.connect(sys.argv[1], sys.argv[2]).acquire_lease({infra_id!r}, {holder!r}, 2.0)',
         occo.redis_url, occo.prefix],
        env=dict(occo.env, OCCOPUS_HOST_ID='another-host'), capture_output=True, text=True)
    assert took.returncode == 0, took.stderr
    result = occo.run('occopus-manage', '-i', infra_id)
    assert result.returncode == 0
    assert f'is being changed by {holder}' in result.stderr and 'taken over' not in result.stderr
    time.sleep(2.1)
    result = occo.run('occopus-manage', '-i', infra_id)
    assert result.returncode == 0 and result.stderr == '', result.stderr


def test_three_members_share_thirty_infrastructures_and_take_over_from_a_dead_one(fleet_occo, tmp_path):
    occo = fleet_occo
    isolated = namespaces_work()
    ids = build_many(occo, tmp_path, INFRAS)
    hosts = [f'host{n}' for n in range(MEMBERS)]
    members = {host: member(occo, host, isolated) for host in hosts}
    try:
        time.sleep(4 * INTERVAL)                       # all have joined and the dealing settled
        steady = time.time()
        time.sleep(6 * INTERVAL)
        killed_host = hosts[0]
        os.killpg(members[killed_host].pid, signal.SIGKILL)
        killed_at = time.time()
        members[killed_host].wait(10)
        time.sleep(LEASE_TTL + 4 * INTERVAL)
        after = time.time()
        time.sleep(4 * INTERVAL)
    finally:
        for process in members.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        codes = {host: process.wait(30) for host, process in members.items()}
    assert [codes[h] for h in hosts[1:]] == [0, 0], [p.stderr.read() for p in members.values()]

    records = {infra_id: passes(occo, infra_id) for infra_id in ids}
    places = {r['place'] for rs in records.values() for r in rs}
    assert len(places) == MEMBERS, 'each member is a place of its own'
    if isolated:
        assert {r['who'] for rs in records.values() for r in rs} == {f'{h}:1' for h in hosts}

    # Never two at once: each infrastructure's passes follow one another, each under a larger
    # lease token than the one before.
    for infra_id, rs in records.items():
        for before, later in zip(rs, rs[1:]):
            assert float(later['start']) >= float(before['end']), (infra_id, before, later)
            assert int(later['token']) > int(before['token'])

    def window(start, end):
        return {infra_id: [r for r in rs if start <= float(r['start']) < end]
                for infra_id, rs in records.items()}

    def shares(found):
        held: Dict[str, set] = {}
        for infra_id, rs in found.items():
            for r in rs:
                held.setdefault(r['place'], set()).add(infra_id)
        return {place: len(infras) for place, infras in held.items()}

    def largest_gap(found, start, end):
        gaps = []
        for rs in found.values():
            starts = [start] + [float(r['start']) for r in rs] + [end]
            gaps.append(max(b - a for a, b in zip(starts, starts[1:])))
        return max(gaps)

    # With three members, each infrastructure gets a pass every interval, each member from
    # one place holds 10 (the fair share, at most 11).
    calm = window(steady, killed_at)
    assert max(shares(calm).values()) <= INFRAS // MEMBERS + 1, shares(calm)
    assert len(shares(calm)) == MEMBERS
    gap = largest_gap(calm, steady, killed_at)
    assert gap <= INTERVAL + 0.5, gap

    # The dead member's infrastructures are maintained again within one lease period.
    killed_who = (f'{killed_host}:1' if isolated
                  else f'{socket.gethostname()}:{members[killed_host].pid}')
    killed_place = {r['place'] for rs in calm.values() for r in rs if r['who'] == killed_who}
    assert len(killed_place) == 1, killed_place
    orphans = [infra_id for infra_id, rs in calm.items() if rs and rs[-1]['place'] in killed_place]
    assert orphans, 'the killed member had a share'
    takeover = max(min(float(r['start']) for r in records[infra_id] if float(r['start']) > killed_at)
                   - killed_at for infra_id in orphans)
    print(f'\ntakeover after SIGKILL: {takeover:.2f} s (lease ttl {LEASE_TTL:g} s), '
          f'largest gap between passes with 3 members: {gap:.2f} s (interval {INTERVAL:g} s), '
          f'namespaces: {isolated}')
    assert takeover <= LEASE_TTL, takeover
    survivors = window(after, time.time() + 1)
    assert max(shares(survivors).values()) <= INFRAS // (MEMBERS - 1) + 1, shares(survivors)
    assert largest_gap(survivors, after, after + 3 * INTERVAL) <= INTERVAL + 0.5
