"""Two occopus-rest-service replicas on one Redis (same key prefix), both maintaining the same
infrastructures with a pass every 0.5 s and a lease ttl of 3 s.

What is checked, in the dummy cloud itself (every resource it holds, sampled about every 50 ms
from a thread while the replicas work):

* for every infrastructure and node, the number of resources never exceeds a *ceiling*: the
  highest target that was in force since the last time the count settled. The ceiling is
  raised just before a scale-up or scale-to is requested, and lowered only once a scale-down
  has converged (resources above a lowered target are still there until they are dropped:
  that is not double work). Two replicas both creating for the same deficit would exceed it;
* no node ever has more resources than its ``scaling.max`` (``db``: exactly one at most);
* when the replica that holds a lease mid-pass is killed with SIGKILL, the survivor takes the
  infrastructure over (its pid becomes the lease holder; the dead one's lease had at most the
  ttl left), finishes what was under way, and a scale-up requested after the kill converges;
* after DELETE through the survivor nothing is left in the dummy cloud or in Redis.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

from conftest import write
from peer_rest import RestService, states
from test_build import import_ok

NODES = """\
'node_def:web':
  - resource: {type: dummy, boot_time: 1.0}
    health_check: {ping: false}
'node_def:db':
  - resource: {type: dummy, boot_time: 0.2}
    health_check: {ping: false}
"""
MAX = 4
INFRA = f"""\
infra_name: replicated
user_id: someone@example.org
nodes:
  - {{name: db, type: db}}
  - {{name: web, type: web, scaling: {{min: 1, max: {MAX}}}}}
dependencies:
  - [web, db]
"""
CONFIG = 'rest: {interval: 0.5}\nlease_ttl: 3\n'
LEASE_TTL = 3.0


class Sampler(threading.Thread):
    """Counts the dummy cloud's resources per infrastructure and node every ~50 ms, checks
    them against the ceilings, and notes who holds each infrastructure's lease."""

    def __init__(self, occo, infras: List[str]) -> None:
        super().__init__(daemon=True)
        self.occo, self.infras = occo, infras
        self.lock = threading.Lock()
        self.ceiling: Dict[Tuple[str, str], int] = {(i, n): 1 for i in infras for n in ('db', 'web')}
        self.violations: List[str] = []
        self.samples = 0
        self.holders: List[Tuple[float, str, str]] = []  # (when, infra, holder pid)
        self.done = threading.Event()

    def set_ceiling(self, infra: str, node: str, value: int) -> None:
        with self.lock:
            self.ceiling[infra, node] = value

    def run(self) -> None:
        while not self.done.wait(0.05):
            counts: Dict[Tuple[str, str], int] = {}
            for resource in self.occo.dummy_cloud().values():
                key = (resource['infra_id'], resource['node'])
                counts[key] = counts.get(key, 0) + 1
            leases = self.occo.redis.mget([f'{self.occo.prefix}{{{i}}}:lease' for i in self.infras])
            now = time.monotonic()
            with self.lock:
                self.samples += 1
                for (infra, node), count in counts.items():
                    allowed = min(self.ceiling.get((infra, node), 0), 1 if node == 'db' else MAX)
                    if count > allowed:
                        self.violations.append(f'{infra[:8]}/{node}: {count} resources, at most '
                                               f'{allowed} allowed (sample {self.samples})')
                for infra, lease in zip(self.infras, leases):
                    if lease:
                        self.holders.append((now, infra, json.loads(lease)['holder'].rpartition(':')[2]))


def web_ready(count: int):
    return lambda body: states(body).get('web') == ['ready'] * count and states(body).get('db') == ['ready']


def holder_of(occo, infra: str) -> Optional[str]:
    lease = occo.redis.get(f'{occo.prefix}{{{infra}}}:lease')
    return json.loads(lease)['holder'].rpartition(':')[2] if lease else None


@pytest.fixture
def replicas(occo, tmp_path: Path):
    import_ok(occo, write(tmp_path, {'nodes.yaml': NODES}) / 'nodes.yaml')
    started: List[RestService] = []
    try:
        for name in ('a', 'b'):
            started.append(RestService(occo, CONFIG, name=name).start())
        yield started
    finally:
        for service in started:
            service.stop()


def test_two_replicas_never_double_create_and_one_takes_over_from_a_killed_one(occo, replicas):
    a, b = replicas
    infras = []
    for _ in range(3):
        answer = a.call('POST', '/infrastructures/', data=INFRA.encode())
        assert answer.status_code == 200, answer.text
        infras.append(answer.json()['infraid'])
    sampler = Sampler(occo, infras)
    sampler.start()
    try:
        for infra in infras:  # built by a, maintained by whichever replica gets the lease
            b.wait_for(infra, web_ready(1))

        # scale up through both replicas, one of them past the node's max
        for infra in infras:
            sampler.set_ceiling(infra, 'web', 3)
        assert a.call('POST', f'/infrastructures/{infras[0]}/scaleto/web/3').status_code == 200
        assert b.call('POST', f'/infrastructures/{infras[1]}/scaleto/web/3').status_code == 200
        assert b.call('POST', f'/infrastructures/{infras[2]}/scaleup/web/2').status_code == 200
        for infra, service in zip(infras, (b, a, a)):
            service.wait_for(infra, web_ready(3))
        sampler.set_ceiling(infras[0], 'web', MAX)
        assert a.call('POST', f'/infrastructures/{infras[0]}/scaleup/web/10').status_code == 200
        body = b.wait_for(infras[0], web_ready(MAX))
        assert body['web']['scaling']['target'] == MAX  # clamped to the max

        # scale down through both: by count, to a target, and one instance by its id
        victim = sorted(b.call('GET', f'/infrastructures/{infras[1]}').json()['web']['instances'])[0]
        assert b.call('POST', f'/infrastructures/{infras[0]}/scaleto/web/1').status_code == 200
        assert a.call('POST', f'/infrastructures/{infras[1]}/scaledown/web/{victim}').status_code == 200
        assert a.call('POST', f'/infrastructures/{infras[1]}/scaledown/web').status_code == 200
        assert b.call('POST', f'/infrastructures/{infras[2]}/scaledown/web').status_code == 200
        assert a.call('POST', f'/infrastructures/{infras[2]}/scaledown/web').status_code == 200
        for infra in infras:
            body = a.wait_for(infra, web_ready(1))
            sampler.set_ceiling(infra, 'web', 1)
        assert victim not in a.call('GET', f'/infrastructures/{infras[1]}').json()['web']['instances']
        holders_before_kill: Set[str] = {pid for _, _, pid in sampler.holders}

        # kill the replica that holds a lease in the middle of a pass that creates
        for infra in infras:
            sampler.set_ceiling(infra, 'web', 3)
            assert b.call('POST', f'/infrastructures/{infra}/scaleto/web/3').status_code == 200
        pids = {str(a.process.pid): a, str(b.process.pid): b}
        deadline = time.monotonic() + 30
        held: Dict[str, str] = {}
        while not held:
            assert time.monotonic() < deadline, 'no replica was seen holding a lease'
            held = {infra: pid for infra in infras if (pid := holder_of(occo, infra)) in pids}
            time.sleep(0.02)
        dead_pid = next(iter(held.values()))
        dead = pids[dead_pid]
        survivor = b if dead is a else a
        its = [infra for infra, pid in held.items() if pid == dead_pid]
        ttl_left = [occo.redis.pttl(f'{occo.prefix}{{{infra}}}:lease') for infra in its]
        dead.kill()
        killed_at = time.monotonic()
        assert all(ms <= LEASE_TTL * 1000 for ms in ttl_left), ttl_left

        # a scale-up requested after the kill converges, on every infrastructure
        for infra in infras:
            sampler.set_ceiling(infra, 'web', MAX)
            assert survivor.call('POST', f'/infrastructures/{infra}/scaleup/web').status_code == 200
        for infra in infras:
            survivor.wait_for(infra, web_ready(MAX), seconds=90)
        survivor_pid = str(survivor.process.pid)
        taken = {infra: min((when for when, i, pid in sampler.holders
                             if i == infra and pid == survivor_pid and when >= killed_at), default=None)
                 for infra in its}
        assert all(when is not None for when in taken.values()), taken
        takeover = max(when - killed_at for when in taken.values())
        print(f'takeover after SIGKILL: {takeover:.2f} s (lease ttl {LEASE_TTL:g} s); '
              f'{sampler.samples} samples; lease holders seen before the kill: '
              f'{sorted(holders_before_kill)} of {sorted(pids)}')

        for infra in infras:
            assert survivor.call('DELETE', f'/infrastructures/{infra}').json() == {'infraid': infra}
    finally:
        sampler.done.set()
        sampler.join(5)
    assert not sampler.violations, sampler.violations[:20]
    assert sampler.samples > 50
    for infra in infras:
        assert occo.dummy_cloud(infra) == {} and occo.infra_keys(infra) == []
        assert survivor.call('GET', f'/infrastructures/{infra}').status_code == 404
    assert survivor.call('GET', '/infrastructures/').json() == {'infrastructures': []}
    assert 'Traceback' not in survivor.log(), survivor.log()[-3000:]
