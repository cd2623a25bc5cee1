"""The engine's parts on their own, without a subprocess: the graph walker, the judgement of
an instance, bounded and retried cloud calls, and the instance record."""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from occo.calls import Calls
from occo.errors import CallTimeout, CloudError, TransientCloudError
from occo.instances import (CloudState, Health, Instance, ResourceStatus, State, Verdict,
                            judge)
from occo.walker import VertexTimeout, Walker


# -- the walker ------------------------------------------------------------------------------

class Recorder:
    """Runs visits on a pool; each vertex takes ``seconds[v]`` and may fail; records the order
    of starts and ends and how many ran at once."""

    def __init__(self, seconds=None, failing=(), workers=8):
        self.seconds = seconds or {}
        self.failing = set(failing)
        self.pool = ThreadPoolExecutor(workers)
        self.log = []
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def visit(self, batch):
        return [self.pool.submit(self._run, v) for v in batch]

    def _run(self, vertex):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.log.append(('start', vertex))
        time.sleep(self.seconds.get(vertex, 0.01))
        with self.lock:
            self.running -= 1
            self.log.append(('end', vertex))
        if vertex in self.failing:
            raise RuntimeError(f'{vertex} broke')
        return vertex

    def index(self, kind, vertex):
        return self.log.index((kind, vertex))


def test_a_vertex_starts_when_its_own_dependencies_are_done_not_a_level():
    # a -> b (b waits for a); c is slow and independent: b must not wait for c
    rec = Recorder(seconds={'c': 0.5})
    result = Walker(['a', 'c', 'b'], {'b': ['a']}).walk(rec.visit)
    assert set(result.done) == {'a', 'b', 'c'}
    assert rec.index('start', 'b') > rec.index('end', 'a')
    assert rec.index('end', 'b') < rec.index('end', 'c')


def test_failures_skip_what_depends_on_them_and_nothing_else():
    rec = Recorder(failing={'a'})
    deps = {'b': ['a'], 'c': ['b'], 'd': []}
    result = Walker(['a', 'b', 'c', 'd'], deps).walk(rec.visit)
    assert isinstance(result.failed['a'], RuntimeError)
    assert result.skipped == {'b': ('a',), 'c': ('a',)}
    assert set(result.done) == {'d'}
    assert ('start', 'b') not in rec.log


def test_a_teardown_walk_goes_on_past_failures_in_reverse_order():
    rec = Recorder(failing={'top'})
    # drops walk the edges reversed: bottom waits for top
    result = Walker(['bottom', 'top'], {'bottom': ['top']}, skip_dependents=False).walk(rec.visit)
    assert set(result.done) == {'bottom'} and set(result.failed) == {'top'}
    assert rec.index('start', 'bottom') > rec.index('end', 'top')


def test_the_limit_bounds_visits_holding_a_slot():
    rec = Recorder(seconds={v: 0.05 for v in range(12)})
    result = Walker(list(range(12)), {}, limit=3).walk(rec.visit)
    assert len(result.done) == 12
    assert rec.most == 3


def test_a_released_slot_lets_the_next_vertex_start_while_the_first_is_not_done():
    started = []
    holders = {}

    def visit(batch):
        futures = []
        for vertex in batch:
            started.append(vertex)
            holders[vertex] = Future()
            futures.append(holders[vertex])
            walker.release(vertex)  # e.g. its cloud call returned; it now boots
        return futures
    walker = Walker(['a', 'b', 'c'], {}, limit=1)
    threading.Timer(0.3, lambda: [f.set_result(None) for f in list(holders.values())]).start()
    threading.Timer(0.5, lambda: [f.set_result(None) for f in list(holders.values()) if not f.done()]).start()
    result = walker.walk(visit)
    assert started == ['a', 'b', 'c'] and set(result.done) == {'a', 'b', 'c'}


def test_a_vertex_past_its_deadline_fails_and_is_abandoned():
    never = Future()
    result = Walker(['stuck', 'after'], {'after': ['stuck']},
                    deadline=lambda v: 0.2).walk(lambda batch: [never for _ in batch])
    assert isinstance(result.failed['stuck'], VertexTimeout)
    assert result.skipped == {'after': ('stuck',)}


def test_fail_fast_starts_nothing_more():
    rec = Recorder(failing={'a'})
    result = Walker(['a', 'b', 'c'], {}, limit=1, fail_fast=True).walk(rec.visit)
    assert set(result.failed) == {'a'} and result.unstarted == ['b', 'c']


def test_stop_starts_nothing_more():
    stop = threading.Event()
    rec = Recorder()

    def visit(batch):
        stop.set()
        return rec.visit(batch)
    result = Walker(['a', 'b'], {}, limit=1).walk(visit, stop)
    assert set(result.done) == {'a'} and result.unstarted == ['b']


def test_ties_keep_the_order_given():
    rec = Recorder(workers=1)
    Walker(['x3', 'x1', 'x2'], {}, limit=1).walk(rec.visit)
    assert [v for kind, v in rec.log if kind == 'start'] == ['x3', 'x1', 'x2']


# -- judging an instance ---------------------------------------------------------------------

def instance(**changes) -> Instance:
    base = Instance(node_id='n-1', node='web', instance_id='r-1', state=State.PENDING,
                    created_at=1000.0)
    for key, value in changes.items():
        setattr(base, key, value)
    return base


RUNNING = ResourceStatus(CloudState.RUNNING, ['10.0.0.1'])


@pytest.mark.parametrize('case, kwargs, verdict, reason', [
    ('running, no checks', dict(status=RUNNING), Verdict.READY, None),
    ('running, checks to run', dict(status=RUNNING, wants_health=True), Verdict.CHECK, None),
    ('checks pass', dict(status=RUNNING, wants_health=True, health=Health()), Verdict.READY, None),
    ('checks fail for a while', dict(status=RUNNING, wants_health=True,
                                     health=Health('port 80 closed', failing_since=1009.0, limit=5)),
     Verdict.PENDING, 'health check: port 80 closed'),
    ('checks fail past their limit', dict(status=RUNNING, wants_health=True,
                                          health=Health('port 80 closed', failing_since=1000.0, limit=5)),
     Verdict.FAILED, 'health check failing for 10 s: port 80 closed'),
    ('checks can never pass', dict(status=RUNNING, wants_health=True,
                                   health=Health('ping is not installed', never=True)),
     Verdict.FAILED, 'ping is not installed'),
    ('configuring', dict(status=RUNNING, configured=False), Verdict.PENDING,
     'its config manager is not done yet'),
    ('cloud says failed', dict(status=ResourceStatus(CloudState.FAILED, reason='quota')),
     Verdict.FAILED, 'quota'),
    ('cloud says gone', dict(status=ResourceStatus(CloudState.SHUTDOWN)), Verdict.GONE,
     'the resource is shutdown'),
    ('pending in time', dict(status=ResourceStatus(CloudState.PENDING), timeout=60),
     Verdict.PENDING, 'the resource is pending'),
    ('pending too long', dict(status=ResourceStatus(CloudState.PENDING), timeout=5),
     Verdict.TIMED_OUT, 'not ready after 5 s (the resource is pending; create_timeout bounds the wait)'),
    ('cloud not asked, too long', dict(status=None, timeout=5), Verdict.TIMED_OUT,
     'not ready after 5 s (the resource is still pending; create_timeout bounds the wait)'),
])
def test_judge(case, kwargs, verdict, reason):
    judged = judge(instance(), now=1010.0, **kwargs)
    assert (judged.verdict, judged.reason) == (verdict, reason), case


def test_a_ready_instance_stays_ready_while_the_cloud_is_unsure():
    ready = instance(state=State.READY)
    assert judge(ready, None, timeout=1, now=5000.0).verdict == Verdict.PENDING
    assert judge(ready, ResourceStatus(CloudState.PENDING), timeout=1, now=5000.0).verdict == Verdict.PENDING


def test_records_without_a_resource_or_marked_failed_are_final():
    assert judge(instance(instance_id=None), None).verdict == Verdict.GONE
    failed = judge(instance(state=State.FAILED, error='boom'), RUNNING)
    assert (failed.verdict, failed.reason) == (Verdict.FAILED, 'boom')


def test_instance_records_round_trip_and_tolerate_odd_input():
    original = instance(addresses=['1.2.3.4'], extra={'root': '/x'}, error='e', ready_at=1.5)
    assert Instance.from_json(original.to_json()) == original
    odd = Instance.from_json({'node_id': 'a', 'node': 'b', 'state': 'weird', 'unknown_key': 1,
                              'addresses': None})
    assert odd.state == State.CREATING and odd.addresses == []


# -- cloud calls -----------------------------------------------------------------------------

def test_a_call_that_overruns_is_abandoned_cancelled_and_its_late_result_handed_on():
    calls = Calls(endpoint_limit=2)
    cancelled = threading.Event()
    late = []
    gate = threading.Event()

    def slow():
        gate.wait(5)
        return 'made-it'
    with pytest.raises(CallTimeout) as caught:
        calls.call('the create call on dummy', slow, seconds=0.2, limit='create_timeout (0.2 s)',
                   cancelled=cancelled, on_late=late.append)
    assert str(caught.value) == ('the create call on dummy did not return within create_timeout '
                                 '(0.2 s); Occopus stopped waiting for it')
    assert cancelled.is_set()
    gate.set()
    assert calls.wait_abandoned(5) == 0
    assert late == ['made-it']


def test_transient_errors_are_retried_and_told():
    calls = Calls(endpoint_limit=1)
    attempts = []
    told = []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise TransientCloudError('throttled')
        return 'ok'
    assert calls.call('the states call', flaky, seconds=30, limit='x',
                      on_retry=lambda *args: told.append(args)) == 'ok'
    assert len(attempts) == 3
    assert [(what, reason, attempt) for what, reason, attempt, _ in told] == [
        ('the states call', 'throttled', 1),
        ('the states call', 'throttled', 2)]


def test_permanent_errors_are_not_retried_and_transient_ones_give_up_with_the_deadline():
    calls = Calls(endpoint_limit=1)
    attempts = []

    def refused():
        attempts.append(1)
        raise CloudError('no such image')
    with pytest.raises(CloudError, match='no such image'):
        calls.call('create', refused, seconds=30, limit='x')
    assert len(attempts) == 1

    def always_throttled():
        raise TransientCloudError('throttled')
    with pytest.raises(TransientCloudError):
        calls.call('create', always_throttled, seconds=0.5, limit='x')

    # No retry starts so late that it could only end by being given up: the caller hears the
    # cloud's own last answer (here: the request never reached it), never a time-out.
    def refused_connection():
        time.sleep(0.02)
        raise TransientCloudError('connection refused', unsent=True)
    for _ in range(10):
        with pytest.raises(TransientCloudError) as info:
            calls.call('create', refused_connection, seconds=0.4, limit='x')
        assert not isinstance(info.value, CallTimeout) and info.value.unsent


def test_calls_per_endpoint_are_limited():
    calls = Calls(endpoint_limit=2)
    lock = threading.Lock()
    running = {'e1': 0, 'e2': 0}
    most = {'e1': 0, 'e2': 0}

    def work(endpoint):
        with lock:
            running[endpoint] += 1
            most[endpoint] = max(most[endpoint], running[endpoint])
        time.sleep(0.05)
        with lock:
            running[endpoint] -= 1
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda e: calls.call('c', lambda: work(e), seconds=30, limit='x',
                                           endpoint=e), ['e1', 'e2'] * 6))
    assert most == {'e1': 2, 'e2': 2}


def test_a_handler_makes_one_client_per_endpoint_and_credentials_for_the_whole_run():
    from occo.plugins.resources.base import HandlerContext, ResourceHandler

    class Counting(ResourceHandler):
        type = 'counting'
        made = []

        def make_client(self, endpoint, credentials):
            self.made.append((endpoint, dict(credentials or {})))
            return object()
    handler = Counting(HandlerContext())
    with ThreadPoolExecutor(8) as pool:
        clients = list(pool.map(lambda _: handler.client('https://a', {'key': 'k1'}), range(32)))
    assert len({id(c) for c in clients}) == 1
    assert handler.client('https://a', {'key': 'k2'}) is not clients[0]
    assert handler.client('https://b', {'key': 'k1'}) is not clients[0]
    assert handler.client('https://a', {'key': 'k1'}) is clients[0]
    assert Counting.made == [('https://a', {'key': 'k1'}), ('https://a', {'key': 'k2'}),
                             ('https://b', {'key': 'k1'})]
    assert Counting.endpoint({'type': 'counting', 'endpoint': 'https://a'}) == 'https://a'


def test_a_signal_held_off_while_a_walk_winds_down_is_delivered_afterwards_not_lost():
    """A maintainer asked to stop while a pass shuts its pool down must still stop."""
    import signal
    from occo.executor import uninterruptible
    told, got = [], []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        with uninterruptible(told.append, deliver=True):
            signal.raise_signal(signal.SIGINT)
            assert got == []  # held off inside
        assert got == [signal.SIGINT] and len(told) == 1
        with uninterruptible(told.append):  # a teardown: told, and not delivered
            signal.raise_signal(signal.SIGINT)
        assert got == [signal.SIGINT] and len(told) == 2
    finally:
        signal.signal(signal.SIGINT, previous)
