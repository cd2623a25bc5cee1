"""The store against a real redis-server: fencing tokens that never repeat for an id, and calls
whose reply was lost (a TCP proxy that cuts the connection after Redis has run the command)
retried without harm."""
from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from typing import Iterator, List, Optional

import pytest
import redis

from occo.errors import LeaseHeld, LeaseLost
from occo.store import LOST_TAKEN, Store, event


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    prefix = f'storetest:{uuid.uuid4().hex[:12]}:'
    yield prefix
    raw = redis.Redis.from_url(redis_url)
    keys = list(raw.scan_iter(match=f'{prefix}*', count=1000))
    if keys:
        raw.delete(*keys)


@pytest.fixture
def store(redis_url: str, prefix: str) -> Store:
    return Store.connect(redis_url, prefix, retry_window=10)


def new_infra(store: Store, infra_id: str) -> None:
    assert store.create_infra(infra_id, {'infra_id': infra_id, 'n': uuid.uuid4().hex},
                              {'name': infra_id}, {'web': 1})


def event_names(store: Store, infra_id: str) -> List[str]:
    return [e['event'] for e in store.events(infra_id)]


def wait_for(condition, limit: float = 30.0) -> None:
    """Until ``condition()`` holds (a bound only: the tests assert outcomes, not durations)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, 'gave up waiting'
        time.sleep(0.05)


# -- fencing tokens -----------------------------------------------------------------------------

def test_tokens_grow_across_destroy_and_rebuild_of_the_same_id(store, prefix):
    raw = store.client
    new_infra(store, 'f')
    stalled = store.acquire_lease('f', 'stalled:1', ttl=1)  # then stopped (SIGSTOP) past its ttl
    wait_for(lambda: not raw.exists(f'{prefix}{{f}}:lease'))
    destroyer = store.acquire_lease('f', 'destroyer:2', ttl=30)
    store.under(destroyer).delete_infra('f')
    store.release_lease(destroyer)
    assert raw.keys(f'{prefix}*') == []  # the fence counter went with it
    new_infra(store, 'f')
    builder = store.acquire_lease('f', 'builder:3', ttl=30)
    assert int(builder.token) > int(destroyer.token) > int(stalled.token)

    stale = store.under(stalled)
    with pytest.raises(LeaseLost, match=LOST_TAKEN):
        stale.write('f', events=[event('stale_write')])
    assert stale.lost.is_set() and stale.lost_reason == LOST_TAKEN
    store.release_lease(stalled)
    assert not store.renew_lease(stalled)
    assert json.loads(raw.get(f'{prefix}{{f}}:lease'))['token'] == builder.token
    store.under(builder).write('f', events=[event('fresh_write')])
    assert 'stale_write' not in event_names(store, 'f') and 'fresh_write' in event_names(store, 'f')


def test_a_lease_lost_unseen_is_not_put_back_over_a_later_one(store, prefix):
    """The process thinks its lease still runs (it slept through it: the key is gone), but
    the id was destroyed and rebuilt meanwhile: the later lease's larger token forbids it."""
    raw = store.client
    new_infra(store, 'g')
    sleeper = store.acquire_lease('g', 'sleeper:1', ttl=60)
    raw.delete(f'{prefix}{{g}}:lease')
    destroyer = store.acquire_lease('g', 'destroyer:2', ttl=30)
    store.under(destroyer).delete_infra('g')
    store.release_lease(destroyer)
    new_infra(store, 'g')
    builder = store.acquire_lease('g', 'builder:3', ttl=30)
    store.release_lease(builder)
    view = store.under(sleeper)
    with pytest.raises(LeaseLost):
        view.write('g', events=[event('stale_write')])
    assert view.lost_reason == LOST_TAKEN and not raw.exists(f'{prefix}{{g}}:lease')
    assert 'stale_write' not in event_names(store, 'g')


def test_tokens_are_whole_strings_of_digits(store, prefix):
    new_infra(store, 't')
    lease = store.acquire_lease('t', 'a:1', ttl=30)
    stored = json.loads(store.client.get(f'{prefix}{{t}}:lease'))
    assert isinstance(lease.token, str) and lease.token.isdigit() and len(lease.token) >= 16
    assert stored['token'] == lease.token == store.client.get(f'{prefix}{{t}}:fence')
    with pytest.raises(LeaseHeld) as caught:
        store.acquire_lease('t', 'b:2', ttl=30)
    assert caught.value.token == lease.token and caught.value.holder == 'a:1'
    assert store.break_lease('t', lease.token)
    assert int(store.acquire_lease('t', 'b:2', ttl=30).token) > int(lease.token)


# -- replies lost on the way back ---------------------------------------------------------------

class LossyProxy:
    """A TCP proxy in front of Redis that can lose the reply to one command: the command
    reaches Redis and runs, then the connection is cut before its reply gets back."""

    def __init__(self, target: str) -> None:
        pool_kwargs = redis.Redis.from_url(target).connection_pool.connection_kwargs
        self.target = (pool_kwargs['host'], pool_kwargs['port'])
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.url = f'redis://127.0.0.1:{self.listener.getsockname()[1]}/0'
        self.marker: Optional[bytes] = None
        self.lost = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def lose_reply_to(self, marker: bytes) -> None:
        """Cut the connection that sends the next command containing ``marker``, once Redis
        has answered it."""
        self.marker = marker

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            cut = threading.Event()
            threading.Thread(target=self._up, args=(client, server, cut), daemon=True).start()
            threading.Thread(target=self._down, args=(client, server, cut), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, cut: threading.Event) -> None:
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                with self.lock:
                    if self.marker and self.marker in data:
                        self.marker = None
                        cut.set()
                server.sendall(data)
        except OSError:
            pass
        self._close(client, server)

    def _down(self, client: socket.socket, server: socket.socket, cut: threading.Event) -> None:
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    break
                if cut.is_set():
                    with self.lock:
                        self.lost += 1
                    break
                client.sendall(data)
        except OSError:
            pass
        self._close(client, server)

    @staticmethod
    def _close(*sockets: socket.socket) -> None:
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def lossy(redis_url: str, prefix: str) -> Iterator[Store]:
    proxy = LossyProxy(redis_url)
    store = Store.connect(proxy.url, prefix, retry_window=10)
    store.proxy = proxy
    yield store
    store.client.close()
    proxy.close()


def test_an_acquire_whose_reply_was_lost_is_ours_on_retry(lossy, store, prefix):
    store.acquire_lease('warm-up', 'x:1', ttl=1)  # the script is known to Redis: no NOSCRIPT
    new_infra(lossy, 'a')
    lossy.proxy.lose_reply_to(b'EVALSHA')
    lease = lossy.acquire_lease('a', 'me:1', ttl=30)
    assert lossy.proxy.lost == 1
    assert json.loads(store.client.get(f'{prefix}{{a}}:lease'))['token'] == lease.token
    lossy.under(lease).write('a', events=[event('ours')])
    with pytest.raises(LeaseHeld):  # another acquire of the same process is not ours
        lossy.acquire_lease('a', 'me:1', ttl=30)


def test_a_create_whose_reply_was_lost_is_no_clash(lossy, store, prefix):
    lossy.infras()  # connected: the next SET is the create's
    lossy.proxy.lose_reply_to(b'\r\nNX\r\n')
    new_infra(lossy, 'c')
    assert lossy.proxy.lost == 1
    assert store.infra('c')['infra_id'] == 'c' and event_names(store, 'c') == ['infra_created']


def test_requests_consumed_in_a_write_whose_reply_was_lost_are_consumed_once(lossy, store, prefix):
    new_infra(lossy, 'r')
    lossy.proxy.lose_reply_to(b'EVALSHA')  # the request's script: it is not appended twice
    assert lossy.add_request('r', {'node': 'web', 'kind': 'up', 'count': 1}) == 1
    assert lossy.proxy.lost == 1
    assert lossy.add_request('r', {'node': 'web', 'kind': 'up', 'count': 2}) == 2
    lease = lossy.acquire_lease('r', 'me:1', ttl=30)
    view = lossy.under(lease)
    assert [r['count'] for r in view.load('r')['requests']] == [1, 2]
    lossy.add_request('r', {'node': 'web', 'kind': 'up', 'count': 3})  # arrives meanwhile
    lossy.proxy.lose_reply_to(b'EVALSHA')
    view.write('r', consumed_requests=2, events=[event('consumed')])
    assert lossy.proxy.lost == 2
    assert [r['count'] for r in store.load('r')['requests']] == [3]


def test_a_destroy_whose_reply_was_lost_still_succeeds(lossy, store, prefix):
    new_infra(lossy, 'd')
    lease = lossy.acquire_lease('d', 'me:1', ttl=30)
    view = lossy.under(lease)
    lossy.proxy.lose_reply_to(b'EVALSHA')
    view.delete_infra('d')
    assert lossy.proxy.lost == 1 and not view.lost.is_set()
    view.release_lease(lease)
    assert store.client.keys(f'{prefix}*') == []


def test_scaling_requests_wait_in_a_bounded_list(store, monkeypatch):
    new_infra(store, 'capped')
    monkeypatch.setattr('occo.store.MAX_PENDING_REQUESTS', 2)
    assert [store.add_request('capped', {'node': 'web', 'kind': 'up', 'count': n}) for n in (1, 2, 3)] \
        == [1, 2, -1]
    assert [r['count'] for r in store.load('capped')['requests']] == [1, 2]
