"""Redis outages ridden out: a private redis-server (AOF on) that a test stops, starts again with
its data, or starts again empty, while a store or a held lease is in use."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List

import pytest
import redis

from occo.errors import LeaseLost, StoreError
from occo.leases import held
from occo.localredis import RedisServer
from occo.store import LOST_RECORDS_GONE, Store, event

ROOT = Path(__file__).resolve().parent.parent
PREFIX = 'outage:'
OUTAGE = 3.0  # seconds Redis stays down in the tests that ride one out


class PrivateRedis:
    """A redis-server of one test, with an append-only file: stop it, start it again with the
    same data (or with none) on the same port."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir()
        self.workdir = workdir
        self.server = RedisServer(workdir=str(workdir),
                                  args=['--appendonly', 'yes', '--appendfsync', 'always'])
        self.server.start()
        self.url = self.server.url
        self._timers: List[threading.Timer] = []

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

    def stop(self) -> None:
        """SIGTERM: Redis finishes its append-only file and exits."""
        self.server.stop(remove=False)

    def start(self, empty: bool = False) -> None:
        """Start it again (on the same port); ``empty``: without the data it had."""
        if empty:
            shutil.rmtree(self.workdir / 'appendonlydir', ignore_errors=True)
            for name in ('appendonly.aof', 'dump.rdb'):
                (self.workdir / name).unlink(missing_ok=True)
        self.server.start()
        assert self.server.url == self.url, 'the port was taken while Redis was down'

    def start_later(self, delay: float, empty: bool = False) -> threading.Timer:
        timer = threading.Timer(delay, self.start, kwargs={'empty': empty})
        self._timers.append(timer)
        timer.start()
        return timer

    def close(self) -> None:
        for timer in self._timers:
            timer.join()
        self.server.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / 'redis')
    yield server
    server.close()


def lease_in_redis(private_redis: PrivateRedis, infra_id: str) -> dict:
    value = private_redis.client().get(f'{PREFIX}{{{infra_id}}}:lease')
    return json.loads(value) if value else {}


def new_infra(store: Store, infra_id: str) -> None:
    assert store.create_infra(infra_id, {'infra_id': infra_id}, {'name': infra_id}, {'web': 1})


def wait_for(condition, limit: float = 30.0) -> None:
    """Until ``condition()`` holds (a bound only: the tests assert outcomes, not durations)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, 'gave up waiting'
        time.sleep(0.1)


# -- store calls --------------------------------------------------------------------------------

def test_a_write_made_while_redis_is_down_lands_once_it_is_back(private_redis):
    store = Store.connect(private_redis.url, PREFIX, retry_window=30)
    new_infra(store, 'w')
    lease = store.acquire_lease('w', 'test:1', ttl=60)
    private_redis.stop()
    restart = private_redis.start_later(OUTAGE)
    store.put_node_definitions('team', {'web': {'resource': {'type': 'dummy'}}})
    restart.join()
    # A fenced write: its Lua script (unknown to the restarted server) is loaded again.
    store.under(lease).write('w', events=[event('after_the_outage')])
    raw = private_redis.client()
    assert json.loads(raw.hget(f'{PREFIX}nodedefs:team', 'web')) == {'resource': {'type': 'dummy'}}
    assert [e['event'] for e in store.events('w')] == ['infra_created', 'after_the_outage']


def test_redis_down_longer_than_the_window_is_one_clear_line(private_redis):
    store = Store.connect(private_redis.url, PREFIX, retry_window=1)
    store.infras()
    private_redis.stop()
    with pytest.raises(StoreError) as caught:
        store.infras()
    message = str(caught.value)
    assert message.startswith(f'cannot reach Redis at {private_redis.url} for 1 s: ')
    assert '\n' not in message and 'Traceback' not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_waiting_for_redis_gives_way_to_ctrl_c(private_redis):
    program = ('import sys; from occo.store import Store\n'
               f'store = Store.connect({private_redis.url!r}, retry_window=600)\n'
               'store.infras()\n'  # Redis answered once: from now on an outage is waited out
               'print("answered", flush=True)\n'
               'sys.stdin.readline()\n'
               'store.infras()\n')
    child = subprocess.Popen([sys.executable, '-c', program], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert child.stdout.readline() == 'answered\n'
        private_redis.stop()
        child.stdin.write('go\n')
        child.stdin.flush()
        time.sleep(1)  # well inside the 600 s window: it is retrying by now
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert 'KeyboardInterrupt' in stderr and 'cannot reach Redis' not in stderr


# -- leases -------------------------------------------------------------------------------------

def test_a_held_lease_survives_an_outage_with_its_token(private_redis):
    store = Store.connect(private_redis.url, PREFIX)
    new_infra(store, 'l')
    with held(store, 'l', ttl=10) as view:
        token = view.lease.token
        private_redis.stop()
        time.sleep(OUTAGE)
        private_redis.start()
        raw = private_redis.client()
        left = [raw.pttl(f'{PREFIX}{{l}}:lease')]

        def renewed() -> bool:
            left.append(raw.pttl(f'{PREFIX}{{l}}:lease'))
            return left[-1] > left[-2]
        wait_for(renewed)  # by the keeper, after the outage
        assert lease_in_redis(private_redis, 'l')['token'] == token
        view.write('l', events=[event('still_ours')])
        assert not view.lost.is_set() and view.lost_reason == ''
    assert 'still_ours' in [e['event'] for e in store.events('l')]
    assert lease_in_redis(private_redis, 'l') == {}  # given back at the end


def test_redis_back_empty_under_a_held_lease_loses_it_for_that_reason(private_redis):
    store = Store.connect(private_redis.url, PREFIX)
    new_infra(store, 'e')
    with held(store, 'e', ttl=6) as view:
        private_redis.stop()
        private_redis.start(empty=True)
        assert view.lost.wait(30)
        assert view.lost_reason == LOST_RECORDS_GONE
        with pytest.raises(LeaseLost, match="Redis came back without this infrastructure's records"):
            view.write('e', events=[event('too_late')])
    assert private_redis.client().keys(f'{PREFIX}*') == []


def test_a_lease_key_redis_lost_is_put_back_with_the_same_token(private_redis):
    store = Store.connect(private_redis.url, PREFIX)
    new_infra(store, 'k')
    raw = private_redis.client()
    lease_key = f'{PREFIX}{{k}}:lease'
    with held(store, 'k', ttl=10) as view:
        token = view.lease.token
        raw.delete(lease_key)  # as if restored from a snapshot taken before the lease
        wait_for(lambda: raw.exists(lease_key))  # the keeper put it back
        assert lease_in_redis(private_redis, 'k')['token'] == token
        raw.delete(lease_key, f'{PREFIX}{{k}}:fence')
        view.write('k', events=[event('written_after_a_loss')])  # the write puts it back itself
        assert lease_in_redis(private_redis, 'k')['token'] == token
        assert int(raw.get(f'{PREFIX}{{k}}:fence')) >= int(token)
        assert not view.lost.is_set()
    assert 'written_after_a_loss' in [e['event'] for e in store.events('k')]


def test_a_redis_that_never_answered_is_reported_at_once_not_after_the_window(private_redis):
    private_redis.stop()
    store = Store.connect(private_redis.url, PREFIX, retry_window=600)
    with pytest.raises(StoreError) as caught:  # a wrong URL, not an outage: no 600 s wait
        store.infras()
    assert str(caught.value).startswith(f'cannot reach Redis at {private_redis.url} for 2 s: ')
