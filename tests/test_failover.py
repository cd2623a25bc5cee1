"""Failover between a node's implementations, placement strategies, and backoff that follows
progress.  The implementations are dummy clouds with their own ``fail_rate``; everything is
checked through the commands and what they leave in Redis (records, events, health records)."""
from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import write
from occo.placement import (CLOSED, HALF_OPEN, MAX_COOL_DOWN, OPEN, ImplementationHealth,
                            choose)
from test_build import built_id, import_ok


def two_implementations(folder: Path, first: str = 'fail_rate: 1', second: str = '',
                        count: int = 10, placement: str = '') -> Path:
    """A node type with two dummy implementations (``flaky`` first, ``steady`` second) and an
    infrastructure of one node of ``count`` instances."""
    write(folder, {
        'nodes.yaml': "'node_def:web':\n"
                      f"  - resource: {{type: dummy, name: flaky, boot_time: 0.1{', ' + first if first else ''}}}\n"
                      '    health_check: {ping: false}\n'
                      f"  - resource: {{type: dummy, name: steady, boot_time: 0.1{', ' + second if second else ''}}}\n"
                      '    health_check: {ping: false}\n',
        'infra.yaml': 'infra_name: fo\nuser_id: u\nnodes:\n'
                      f'  - {{name: web, type: web, scaling: {{min: {count}, max: {count + 5}}}'
                      f"{', placement: {strategy: ' + placement + '}' if placement else ''}}}\n"})
    return folder


def records(occo, infra_id):
    return [json.loads(v) for v in occo.redis.hvals(f'{occo.prefix}{{{infra_id}}}:instances')]


def events(occo, infra_id, kind=None):
    found = [f for _, f in occo.redis.xrange(f'{occo.prefix}{{{infra_id}}}:events')]
    return [f for f in found if kind is None or f['event'] == kind]


def health_records(occo):
    return {k: json.loads(v) for k, v in occo.redis.hgetall(f'{occo.prefix}implementations').items()}


# -- the health record, without real time -----------------------------------------------------

def test_a_health_record_opens_half_opens_and_closes():
    record = ImplementationHealth()
    assert record.state(100.0) == CLOSED and record.allows(100.0)
    record = record.failed(100.0, 'quota exceeded', base=5, started=99.0)
    assert (record.state(100.0), record.allows(104.9)) == (OPEN, False)
    assert record.open_until == 105.0 and record.reason == 'quota exceeded'
    # a create that was under way when it opened does not count as one more in a row
    same = record.failed(101.0, 'quota exceeded', base=5, started=99.5)
    assert (same.failures, same.open_until) == (1, 105.0)
    assert record.state(105.0) == HALF_OPEN and record.allows(105.0)
    probing = record.probing(105.0)
    assert probing.state(106.0) == HALF_OPEN and not probing.allows(106.0)  # one probe only
    again = probing.failed(107.0, 'quota exceeded', base=5, started=105.0)
    assert (again.failures, again.open_until, again.probe_until) == (2, 117.0, 0.0)
    worst = again
    for n in range(20):
        worst = worst.failed(1000.0 * (n + 1), 'down', base=5, started=1000.0 * (n + 1))
    assert worst.open_until - worst.last_failure == MAX_COOL_DOWN
    assert ImplementationHealth.from_json(json.loads(json.dumps(worst.to_json()))) == worst
    assert ImplementationHealth.from_json({'failures': 'x'}) == ImplementationHealth()
    assert ImplementationHealth.from_json('garbage') == ImplementationHealth()


def test_choosing_skips_open_implementations_and_follows_the_strategy():
    rng = random.Random(7)
    now = 1000.0
    opened = ImplementationHealth().failed(now, 'down', 5, now)
    picks = Counter(choose([0, 1, 2], 'random', {1: opened}, {}, now, rng) for _ in range(300))
    assert set(picks) == {0, 2} and min(picks.values()) > 100
    assert choose([0, 1, 2], 'ordered', {0: opened}, {}, now, rng) == 1
    assert choose([0, 1, 2], 'ordered', {}, {}, now, rng) == 0
    assert choose([0, 1, 2], 'spread', {}, {0: 3, 1: 1, 2: 2}, now, rng) == 1
    assert choose([0, 1, 2], 'spread', {1: opened}, {0: 3, 1: 1, 2: 2}, now, rng) == 2
    # every one open: the one that reopens first; a single one is always used
    later = ImplementationHealth().failed(now, 'down', 50, now)
    assert choose([0, 1], 'random', {0: later, 1: opened}, {}, now, rng) == 1
    assert choose([0], 'random', {0: opened}, {}, now, rng) == 0
    # a retry leaves out what was tried, unless nothing else is left
    assert choose([0, 1], 'random', {}, {}, now, rng, exclude=[0]) == 1
    assert choose([0], 'random', {}, {}, now, rng, exclude=[0]) == 0


# -- in a build ----------------------------------------------------------------------------

def test_a_build_fails_over_from_an_implementation_whose_instances_fail(occo, tmp_path):
    folder = two_implementations(tmp_path, count=10)
    import_ok(occo, folder / 'nodes.yaml')
    result = occo.run('occopus-build', '--parallelize', '-i', 'fo', folder / 'infra.yaml')
    assert built_id(result) == 'fo'
    made = records(occo, 'fo')
    assert len(made) == 10 and {r['state'] for r in made} == {'ready'}
    assert {r['implementation'] for r in made} == {1}
    assert len(occo.dummy_cloud('fo')) == 10  # the failed ones were dropped
    failovers = events(occo, 'fo', 'failover')
    assert failovers, 'no create went to the failing implementation (seeded random: retry)'
    assert all(f['reason'].startswith('from web#0 (dummy flaky) to web#1 (dummy steady): the dummy '
                                      'cloud reports the resource failed (fail_rate)') for f in failovers)
    assert 'failing over from web#0 (dummy flaky) to web#1 (dummy steady)' in result.stderr
    (record,) = health_records(occo).values()
    assert record['failures'] == 1 and 'fail_rate' in record['reason']
    assert events(occo, 'fo', 'implementation_open')[0]['reason'].startswith('web#0 (dummy flaky): ')
    report = occo.run('occopus-manage', '-r', '-i', 'fo')
    assert report.stdout.count('(ready) on web#1 (dummy steady):') == 10
    assert 'web#0 (dummy flaky): open until ' in report.stdout
    plan = occo.run('occopus-build', '--dry-run', folder / 'infra.yaml')
    assert '#0 dummy (name=flaky health=open until ' in plan.stdout
    assert '#1 dummy (name=steady health=healthy)' in plan.stdout
    assert occo.run('occopus-destroy', '-i', 'fo').returncode == 0
    assert occo.dummy_cloud('fo') == {}


def test_the_rest_report_names_implementations_only_where_there_are_several(occo, rest, tmp_path):
    folder = two_implementations(tmp_path, count=4)
    import_ok(occo, folder / 'nodes.yaml')
    built_id(occo.run('occopus-build', '--parallelize', '-i', 'api', folder / 'infra.yaml'))
    body = rest.call('GET', '/infrastructures/api').json()
    assert {i['implementation'] for i in body['web']['instances'].values()} == {'web#1 (dummy steady)'}
    flaky, steady = body['web']['implementations']
    assert steady == {'index': 1, 'implementation': 'web#1 (dummy steady)', 'state': 'closed'}
    if flaky['state'] != 'closed':  # some create went to it (random placement)
        assert flaky['state'] == 'open' and flaky['failures'] == 1 and 'fail_rate' in flaky['reason']
    write(tmp_path / 'one', {'nodes.yaml': "'node_def:solo':\n  - resource: {type: dummy}\n"
                                           '    health_check: {ping: false}\n',
                             'infra.yaml': 'infra_name: s\nuser_id: u\nnodes: [{name: solo, type: solo}]\n'})
    import_ok(occo, tmp_path / 'one' / 'nodes.yaml')
    built_id(occo.run('occopus-build', '-i', 'solo', tmp_path / 'one' / 'infra.yaml'))
    solo = rest.call('GET', '/infrastructures/solo').json()['solo']
    assert set(solo) == {'instances', 'scaling'}
    assert [set(i) for i in solo['instances'].values()] == [{'resource_address', 'state'}]


@pytest.mark.parametrize('placement', ['{strategy: "\\x07bell"}', '{strategy: [spread]}',
                                       '{strategy: ' + 'x' * 100000 + '}', '7'])
def test_a_wrong_placement_in_a_rest_body_is_a_400_that_creates_nothing(occo, rest, tmp_path, placement):
    folder = two_implementations(tmp_path, first='', count=1)
    import_ok(occo, folder / 'nodes.yaml')
    before = occo.snapshot()
    body = f'infra_name: r\nuser_id: u\nnodes:\n  - {{name: web, type: web, placement: {placement}}}\n'
    answer = rest.call('POST', '/infrastructures/', data=body.encode())
    assert answer.status_code == 400, answer.text
    message = answer.json()['message']
    assert "placement" in message and "node 'web'" in message and len(message) < 300, message
    assert '\x07' not in message

    def data(snapshot):  # the service's own heartbeat changes by itself
        return {k: v for k, v in snapshot.items() if not k.endswith(b'maintainers')}
    assert data(occo.snapshot()) == data(before)


def test_a_single_implementation_changes_nothing(occo, tmp_path):
    write(tmp_path, {'nodes.yaml': "'node_def:web':\n  - resource: {type: dummy, fail_rate: 1}\n"
                                   '    health_check: {ping: false}\n',
                     'infra.yaml': 'infra_name: one\nuser_id: u\nnodes: [{name: web, type: web}]\n'})
    import_ok(occo, tmp_path / 'nodes.yaml')
    result = occo.run('occopus-build', '-i', 'one', tmp_path / 'infra.yaml')
    assert result.returncode == 1
    assert 'failing over' not in result.stderr
    assert health_records(occo) == {} and occo.dummy_cloud('one') == {}


def test_ordered_placement_is_a_preference_list_and_spread_evens_out(occo, tmp_path):
    folder = two_implementations(tmp_path / 'o', first='', count=6, placement='ordered')
    import_ok(occo, folder / 'nodes.yaml')
    built_id(occo.run('occopus-build', '--parallelize', '-i', 'ordered', folder / 'infra.yaml'))
    assert Counter(r['implementation'] for r in records(occo, 'ordered')) == {0: 6}
    folder = two_implementations(tmp_path / 's', first='', count=6, placement='spread')
    built_id(occo.run('occopus-build', '-i', 'spread', folder / 'infra.yaml'))
    assert Counter(r['implementation'] for r in records(occo, 'spread')) == {0: 3, 1: 3}


@pytest.mark.parametrize('placement, message', [
    ('[ordered]', "placement of node 'web' must be a mapping with a strategy (e.g. placement: "
                  '{strategy: ordered}), got a list'),
    ('{strategy: fastest}', "placement strategy of node 'web' must be one of random, ordered, "
                            "spread, got 'fastest'"),
    ('{strategy: 3}', "placement strategy of node 'web' must be one of random, ordered, spread, got 3"),
    ('{order: spread}', "unknown key 'order' in placement of node 'web' (allowed: strategy)"),
])
def test_a_wrong_placement_is_one_line_naming_the_node(occo, tmp_path, placement, message):
    write(tmp_path, {'infra.yaml': 'infra_name: p\nuser_id: u\nnodes:\n'
                                   f'  - {{name: web, type: web, placement: {placement}}}\n'})
    result = occo.run('occopus-build', '--dry-run', tmp_path / 'infra.yaml')
    assert result.returncode == 1
    assert result.stderr.endswith(f'{message}\n') and result.stderr.count('\n') == 1, result.stderr


# -- under a maintainer ---------------------------------------------------------------------

def test_a_maintained_infrastructure_moves_to_the_implementation_that_recovered(occo, tmp_path):
    config = write(tmp_path, {'cfg.yaml': 'retry_backoff: 0.5\n'}) / 'cfg.yaml'
    folder = two_implementations(tmp_path, first='fail_rate: 1', count=4)
    import_ok(occo, folder / 'nodes.yaml')
    built_id(occo.run('occopus-build', '--cfg', config, '--parallelize', '-i', 'mv',
                      folder / 'infra.yaml'))
    assert {r['implementation'] for r in records(occo, 'mv')} == {1}
    # the healthy one starts failing (its instances too), the other one recovers
    two_implementations(tmp_path, first='', second='fail_rate: 1', count=4)
    import_ok(occo, folder / 'nodes.yaml')
    for resource_id, resource in occo.dummy_cloud('mv').items():
        occo.redis.hset(f'{occo.prefix}dummycloud', resource_id, json.dumps(dict(resource, state='failed')))
    maintainer = occo.popen('occopus-manage', '--cfg', config, '-i', 'mv', '-c', '-t', '0.3')
    try:
        deadline = time.monotonic() + 30
        while True:
            made = records(occo, 'mv')
            if len(made) == 4 and {(r['implementation'], r['state']) for r in made} == {(0, 'ready')}:
                break
            assert time.monotonic() < deadline, made
            assert maintainer.poll() is None, maintainer.communicate()
            time.sleep(0.1)
        moved = time.monotonic()
        occo.redis.config_resetstat()
        time.sleep(1.5)  # about five passes over a healthy infrastructure
        calls = sum(v['calls'] for k, v in occo.redis.info('commandstats').items()
                    if k not in ('cmdstat_info', 'cmdstat_config|resetstat'))
    finally:
        maintainer.send_signal(signal.SIGINT)
        out, err = maintainer.communicate(timeout=30)
    assert maintainer.returncode == 0, err
    passes = [f for _, f in occo.redis.xrange(f'{occo.prefix}{{mv}}:passes')]
    print(f'\nmoved over in {len(passes)} passes; {calls} Redis commands in 1.5 s afterwards '
          f'(moved {moved - deadline + 30:.1f} s after the maintainer started)')
    assert len(passes) <= 15, len(passes)
    assert calls < 400, calls  # no tight loop: a handful of passes of about 25 commands
    assert any(f['reason'].startswith('from web#1 (dummy steady) to web#0 (dummy flaky)')
               for f in events(occo, 'mv', 'failover')) or \
        any(e['event'] == 'implementation_open' and e['reason'].startswith('web#1')
            for e in events(occo, 'mv'))
    assert len(occo.dummy_cloud('mv')) == 4


def test_backoff_grows_only_without_progress(occo, tmp_path):
    """Half of the creates fail on the only implementation: every pass makes progress, so
    the node is never held back; a node whose every create fails still backs off."""
    config = write(tmp_path, {'cfg.yaml': 'retry_backoff: 1\n'}) / 'cfg.yaml'
    write(tmp_path, {'nodes.yaml': "'node_def:half':\n  - resource: {type: dummy, fail_rate: 0.5}\n"
                                   '    health_check: {ping: false}\n',
                     'infra.yaml': 'infra_name: b\nuser_id: u\nnodes:\n'
                                   '  - {name: half, type: half, scaling: {min: 1, max: 10}}\n'})
    import_ok(occo, tmp_path / 'nodes.yaml')
    for _ in range(10):  # the build needs its one instance to come up
        result = occo.run('occopus-build', '--cfg', config, '-i', 'b', tmp_path / 'infra.yaml')
        if result.returncode == 0:
            break
    assert result.returncode == 0, result.stderr
    assert occo.run('occopus-scale', '-i', 'b', '-n', 'half', '-s', '6').returncode == 0
    maintainer = occo.popen('occopus-manage', '--cfg', config, '-i', 'b', '-c', '-t', '0.2')
    try:
        deadline = time.monotonic() + 30
        while sum(r['state'] == 'ready' for r in records(occo, 'b')) < 6:
            assert time.monotonic() < deadline, records(occo, 'b')
            time.sleep(0.1)
    finally:
        maintainer.send_signal(signal.SIGINT)
        maintainer.communicate(timeout=30)
    # The count grows by one (and the wait doubles) over passes in a row that made no new
    # instance ready, and starts again at 1 after one that did.
    last, seen = 0, []
    for entry in events(occo, 'b', 'node_backoff'):
        count = int(entry['reason'].split()[0])
        seen.append(entry['reason'])
        assert count in (1, last + 1), seen
        assert entry['reason'] == (f'{count} pass(es) in a row made no instance ready; '
                                   f'next try in {2 ** (count - 1)} s'), seen
        last = count


def test_a_node_whose_every_create_fails_backs_off_to_the_cap(occo):
    """The wait doubles with each pass without progress, up to MAX_BACKOFF, in Redis."""
    from occo.maintenance import MAX_BACKOFF, _backoff
    from occo.executor import Failure
    from occo.store import Store
    store = Store.connect(occo.redis_url, occo.prefix)
    told = []
    waits = []
    entries = {}
    for _ in range(12):
        started = time.time()
        _backoff(store, 'cap', set(), [Failure('web', 'n1', 'refused')], entries, 1.0, told.append)
        entries = {k: json.loads(v) for k, v in occo.redis.hgetall(f'{occo.prefix}{{cap}}:backoff').items()}
        waits.append(round(entries['web']['next_at'] - started))
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, MAX_BACKOFF, MAX_BACKOFF, MAX_BACKOFF]
    assert told[-1] == f'web: 12 pass(es) in a row made no instance ready; next try in {MAX_BACKOFF:.0f} s'
    _backoff(store, 'cap', {'web'}, [Failure('web', 'n2', 'refused')], entries, 1.0, told.append)
    assert occo.redis.hgetall(f'{occo.prefix}{{cap}}:backoff') == {}  # progress clears it
