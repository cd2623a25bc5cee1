"""occopus-manage and occopus-scale: healing, scaling, updates, leases, reports, events."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import processes_of, write
from occo.errors import LeaseLost
from occo.store import Store, event

NODES = """\
'node_def:web':
  - resource: {type: dummy, boot_time: 0}
    health_check: {ping: false}
'node_def:db':
  - resource: {type: dummy, boot_time: 0}
    health_check: {ping: false}
'node_def:flaky':
  - resource: {type: dummy, boot_time: 0, fail_rate: FAIL}
    health_check: {ping: false}
"""

INFRA = """\
infra_name: managed
user_id: tester
nodes:
  - {name: db, type: db}
  - {name: web, type: web, scaling: {min: 1, max: 5}}
dependencies: [[web, db]]
"""


@pytest.fixture
def infra(occo, tmp_path):
    """A built two-node infrastructure (web scales 1..5) with id 'm'."""
    write(tmp_path, {'nodes.yaml': NODES.replace('FAIL', '0'), 'infra.yaml': INFRA})
    assert occo.run('occopus-import', tmp_path / 'nodes.yaml').returncode == 0
    result = occo.run('occopus-build', '-i', 'm', tmp_path / 'infra.yaml')
    assert result.returncode == 0, result.stderr
    yield 'm'
    occo.run('occopus-destroy', '-i', 'm')


def records(occo, infra_id='m'):
    return [json.loads(v) for v in occo.redis.hgetall(f'{occo.prefix}{{{infra_id}}}:instances').values()]


def web_instances(occo):
    return sorted((r for r in records(occo) if r['node'] == 'web'), key=lambda r: r['created_at'])


def manage(occo, *args, **kwargs):
    result = occo.run('occopus-manage', '-i', 'm', *args, **kwargs)
    assert 'Traceback' not in result.stderr
    return result


def scale(occo, *args):
    result = occo.run('occopus-scale', '-i', 'm', '-n', 'web', *args)
    assert result.returncode == 0, result.stderr
    return result


def event_names(occo, infra_id='m'):
    return [e['event'] for _, e in occo.redis.xrange(f'{occo.prefix}{{{infra_id}}}:events')]


# -- healing -------------------------------------------------------------------------------------

def test_a_failed_resource_is_replaced_by_one_pass(occo, infra):
    [web] = web_instances(occo)
    cloud_key = f'{occo.prefix}dummycloud'
    resource = json.loads(occo.redis.hget(cloud_key, web['instance_id']))
    occo.redis.hset(cloud_key, web['instance_id'], json.dumps(dict(resource, state='failed')))
    result = manage(occo)
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'Managed infrastructure m: 1 instance created (1 ready), 1 dropped; ready\n'
    assert f"web/{web['node_id'][:8]}: dropping: the dummy cloud reports the resource failed" in result.stderr
    assert not occo.redis.hexists(cloud_key, web['instance_id'])  # destroyed, not just forgotten
    [new] = web_instances(occo)
    assert new['node_id'] != web['node_id'] and new['state'] == 'ready'
    assert len(occo.dummy_cloud('m')) == 2
    assert event_names(occo)[-4:] == ['node_failed', 'node_dropped', 'node_created', 'node_ready']


def test_a_shut_down_resource_is_destroyed_and_replaced(occo, infra):
    [web] = web_instances(occo)
    cloud_key = f'{occo.prefix}dummycloud'
    resource = json.loads(occo.redis.hget(cloud_key, web['instance_id']))
    occo.redis.hset(cloud_key, web['instance_id'], json.dumps(dict(resource, state='stopped')))
    assert manage(occo).returncode == 0
    assert not occo.redis.hexists(cloud_key, web['instance_id'])
    assert [r['node_id'] for r in web_instances(occo)] != [web['node_id']]


def test_a_healthy_pass_changes_nothing_but_its_own_record(occo, infra):
    before = occo.snapshot()
    result = manage(occo)
    assert result.returncode == 0
    assert result.stdout == 'Managed infrastructure m: 0 instances created (0 ready), 0 dropped; ready\n'
    after = occo.snapshot()
    ours = [k for k in after if k.endswith((b':fence', b':passes'))]
    assert {k: v for k, v in after.items() if k not in ours} == \
        {k: v for k, v in before.items() if k not in ours}
    (entry,) = occo.redis.xrange(f'{occo.prefix}{{m}}:passes')[-1:]
    record = entry[1]
    assert record['who'].endswith(f':{record["who"].rsplit(":", 1)[1]}') and record['state'] == 'ready'
    assert (record['created'], record['dropped'], record['failures']) == ('0', '0', '0')
    assert float(record['start']) <= float(record['end'])
    assert int(record['token']) > 0


def test_a_registry_of_an_earlier_version_is_moved_into_the_shards(occo, infra):
    entry = occo.registry('m')
    shard = next(k for k in occo.keys() if k.startswith(f'{occo.prefix}infras:'))
    occo.redis.hdel(shard, 'm')
    occo.redis.hset(f'{occo.prefix}infras', 'm', json.dumps(entry))  # as earlier versions kept it
    listed = occo.run('occopus-manage', '-l')
    assert listed.returncode == 0 and '\nm ' in listed.stdout, listed.stdout
    assert not occo.redis.exists(f'{occo.prefix}infras')
    assert occo.registry('m') == entry
    assert occo.run('occopus-manage', '-l').stdout == listed.stdout


# -- scaling -------------------------------------------------------------------------------------

def test_scaling_up_down_youngest_clamped_by_id_and_by_address(occo, infra):
    scale(occo, '-c', '2')
    assert manage(occo).returncode == 0
    webs = web_instances(occo)
    assert len(webs) == 3 and len(occo.dummy_cloud('m')) == 4

    out = scale(occo, '-c', '-1')
    assert "Scaling down node 'web' with 1 instances..." in out.stdout
    assert manage(occo).returncode == 0
    assert [r['node_id'] for r in web_instances(occo)] == [r['node_id'] for r in webs[:2]]  # youngest went

    out = scale(occo, '-s', '10')
    assert "Scaling node 'web' to 10 instances..." in out.stdout
    result = manage(occo)
    assert result.returncode == 0
    assert "Scaling: request(s) ignored, maximum count (5) reached for node 'web'" in result.stderr
    assert len(web_instances(occo)) == 5
    report = json.loads(manage(occo, '-r', '--format', 'json').stdout)
    assert report['web']['scaling'] == {'actual': 5, 'target': 5, 'min': 1, 'max': 5}

    victim = web_instances(occo)[1]
    scale(occo, '-f', victim['node_id'])
    assert manage(occo).returncode == 0
    assert victim['node_id'] not in [r['node_id'] for r in web_instances(occo)]
    assert not occo.redis.hexists(f'{occo.prefix}dummycloud', victim['instance_id'])

    victim = web_instances(occo)[0]
    out = scale(occo, '-f', victim['addresses'][0])
    assert f"filtered by '{victim['addresses'][0]}'" in out.stdout
    assert manage(occo).returncode == 0
    assert victim['node_id'] not in [r['node_id'] for r in web_instances(occo)]
    assert len(web_instances(occo)) == 3

    scale(occo, '-c', '-5')
    result = manage(occo)
    assert "Scaling: request(s) ignored, minimum count (1) reached for node 'web'" in result.stderr
    assert len(web_instances(occo)) == 1


def test_a_down_request_counts_once(occo, infra):
    """The original counted an unselected scale-down twice (reference §19): 3 - 1 must be 2."""
    scale(occo, '-s', '3')
    assert manage(occo).returncode == 0
    scale(occo, '-c', '-1')
    assert manage(occo).returncode == 0
    assert manage(occo).returncode == 0  # and a later pass does not count it again
    assert len(web_instances(occo)) == 2


def test_unknown_selector_is_ignored_with_a_warning(occo, infra):
    scale(occo, '-f', '10.9.9.9')
    result = manage(occo)
    assert result.returncode == 0
    assert "Scaling: no instance of node 'web' has the id or address '10.9.9.9'; request ignored" \
        in result.stderr
    assert len(web_instances(occo)) == 1


@pytest.mark.parametrize('args, message', [
    (['-c', '1', '-s', '2'], 'Too many arguments: -c and -s must not be used at the same time!'),
    (['-c', '1', '-f', 'x'], 'Too many arguments: -c and -f must not be used at the same time!'),
    (['-s', '1', '-f', 'x'], 'Too many arguments: -s and -f must not be used at the same time!'),
    ([], 'Too few arguments: at least -c, -s or -f must be specified!'),
    (['-c', 'lots'], 'Positive/negative number must be specified for argument -c!'),
    (['-c', '0'], 'Incorrect argument: value for -c must be different from zero!'),
    (['-s', 'x'], 'Positive number must be specified for argument -s!'),
    (['-s', '0'], 'Incorrect argument: value for -s must be greater than zero!'),
    (['-c', '\u0661'], 'Positive/negative number must be specified for argument -c!'),
    (['-c', '5_0'], 'Positive/negative number must be specified for argument -c!'),
    (['-c', ' 5'], 'Positive/negative number must be specified for argument -c!'),
    (['-s', '\u0663'], 'Positive number must be specified for argument -s!'),
    (['-f', ''], 'Incorrect argument: -f needs the node id or the address of the instance to '
                 'scale down (it was empty)'),
    (['-f', '  '], 'Incorrect argument: -f needs the node id or the address of the instance to '
                   'scale down (it was empty)'),
])
def test_scale_argument_rules(occo, infra, args, message):
    result = occo.run('occopus-scale', '-i', 'm', '-n', 'web', *args)
    assert result.returncode == 1
    assert result.stderr == f'occopus-scale: error: {message}\n'
    assert occo.redis.llen(f'{occo.prefix}{{m}}:requests') == 0


def test_scale_checks_the_infrastructure_and_the_node(occo, infra):
    result = occo.run('occopus-scale', '-i', 'nope', '-n', 'web', '-c', '1')
    assert result.returncode == 1 and 'Unknown infrastructure: "nope"' in result.stderr
    result = occo.run('occopus-scale', '-i', 'm', '-n', 'cache', '-c', '1')
    assert result.returncode == 1
    assert "node 'cache' does not exist in infrastructure 'm' (nodes: db, web)" in result.stderr


# -- updates with build -i -------------------------------------------------------------------------

def test_update_adds_and_removes_nodes_and_reclamps(occo, infra, tmp_path):
    scale(occo, '-s', '4')
    assert manage(occo).returncode == 0
    assert len(web_instances(occo)) == 4
    db_before = [r for r in records(occo) if r['node'] == 'db']
    changed = write(tmp_path, {'changed.yaml': INFRA.replace('{min: 1, max: 5}', '{min: 1, max: 2}')
                               .replace('  - {name: db, type: db}\n', '  - {name: db, type: db}\n'
                                        '  - {name: cache, type: db}\n')}) / 'changed.yaml'
    dry = occo.run('occopus-build', '--dry-run', '-i', 'm', changed)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count('  drop web/') == 2 and 'cache: create 1 instance' in dry.stdout
    assert len(web_instances(occo)) == 4  # the dry run changed nothing

    result = occo.run('occopus-build', '-i', 'm', changed)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Plan for infrastructure 'managed' (update of a live infrastructure)")
    assert result.stdout.strip().splitlines()[-1] == 'm'
    assert len(web_instances(occo)) == 2  # re-clamped to the new max
    assert [r for r in records(occo) if r['node'] == 'db'] == db_before  # untouched
    assert len([r for r in records(occo) if r['node'] == 'cache']) == 1

    removed = write(tmp_path, {'removed.yaml': INFRA.replace('  - {name: web, type: web, scaling: '
                                                             '{min: 1, max: 5}}\n', '')
                               .replace('dependencies: [[web, db]]\n', '')}) / 'removed.yaml'
    result = occo.run('occopus-build', '-i', 'm', removed)
    assert result.returncode == 0, result.stderr
    assert {r['node'] for r in records(occo)} == {'db'}
    assert len(occo.dummy_cloud('m')) == 1


def test_an_update_error_keeps_the_live_infrastructure(occo, infra, tmp_path):
    write(tmp_path, {'bad.yaml': NODES.replace('FAIL', '1')})
    assert occo.run('occopus-import', tmp_path / 'bad.yaml').returncode == 0
    before = occo.dummy_cloud('m')
    changed = write(tmp_path, {'changed.yaml': INFRA.replace(
        'dependencies: [[web, db]]', 'dependencies: [[web, db], [extra, db]]').replace(
        '  - {name: db, type: db}\n', '  - {name: db, type: db}\n  - {name: extra, type: flaky}\n')})
    changed = changed / 'changed.yaml'
    result = occo.run('occopus-build', '-i', 'm', changed)
    assert result.returncode == 1
    last = result.stderr.splitlines()[-1]
    assert "node 'extra'" in last and 'the infrastructure keeps running' in last
    assert occo.dummy_cloud('m') == before  # live nodes kept, the failed one dropped
    assert {r['node'] for r in records(occo)} == {'db', 'web'}


# -- reports, lists, events -----------------------------------------------------------------------

def test_list_report_output_filter_and_events(occo, infra, tmp_path):
    listed = occo.run('occopus-manage', '-l')
    assert listed.returncode == 0
    assert re.search(r'^m\s+managed\s+ready\s+db 1/1, web 1/1$', listed.stdout, re.M), listed.stdout
    assert json.loads(occo.run('occopus-manage', '-l', '--format', 'json').stdout)[0]['infra_id'] == 'm'

    report = manage(occo, '-r')
    assert report.returncode == 0
    lines = report.stdout.splitlines()
    assert lines[0] == 'Report list of nodes/instances/addresses:'
    assert lines[1] == 'db: (1 of target 1; min 1, max 1)'
    assert re.fullmatch(r'  [0-9a-f-]{36} \(ready\):', lines[2]) and lines[3].startswith('    198.18.')

    output = tmp_path / 'addresses.txt'
    saved = manage(occo, '-r', '-f', 'we', '-o', output)
    assert saved.returncode == 0 and saved.stdout == ''
    assert output.read_text() == f"{web_instances(occo)[0]['addresses'][0]}\n"

    events = manage(occo, '--events')
    assert events.returncode == 0
    assert re.search(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  \S+:\d+  node_ready  web/[0-9a-f]{8}$',
                     events.stdout, re.M), events.stdout


def test_manage_without_an_id(occo):
    result = occo.run('occopus-manage')
    assert result.returncode == 2 and 'No infra_id (-i) specified!' in result.stderr
    assert occo.run('occopus-manage', '-l').stdout == 'No active infrastructure!\n'
    result = occo.run('occopus-manage', '-i', 'ghost')
    assert result.returncode == 1 and 'Unknown infrastructure: "ghost"' in result.stderr


# -- leases -----------------------------------------------------------------------------------------

def store_of(occo) -> Store:
    return Store.connect(occo.redis_url, occo.prefix)


def test_a_second_manager_steps_aside_and_a_lease_expires(occo, infra):
    store = store_of(occo)
    lease = store.acquire_lease('m', 'otherhost:4242', ttl=1.5)
    result = manage(occo)
    assert result.returncode == 0
    assert re.search(r'infrastructure m is being changed by otherhost:4242 \(for \d+ s; its lease '
                     r'runs out in \d+ s unless renewed\); not managing it now', result.stderr)
    assert result.stdout == ''
    time.sleep(1.6)  # the holder died without giving it back: the lease runs out
    result = manage(occo)
    assert result.returncode == 0 and result.stdout.startswith('Managed infrastructure m')
    assert not store.renew_lease(lease)


def test_a_stale_holder_cannot_write(occo, infra):
    store = store_of(occo)
    old = store.acquire_lease('m', 'old:1', ttl=1)
    time.sleep(1.1)
    new = store.acquire_lease('m', 'new:2', ttl=30)
    assert new.token > old.token
    with pytest.raises(LeaseLost):
        store.under(old).write('m', events=[event('stale_write')])
    store.under(new).write('m', events=[event('fresh_write')])
    store.release_lease(new)
    assert 'stale_write' not in event_names(occo) and 'fresh_write' in event_names(occo)


def test_a_dead_local_holder_is_replaced_at_once(occo, infra):
    dead = subprocess.Popen(['true'])
    dead.wait()
    store = store_of(occo)
    store.acquire_lease('m', f'{__import__("socket").gethostname()}:{dead.pid}', ttl=60)
    result = manage(occo)
    assert result.returncode == 0, result.stderr
    assert 'which is no longer running, was taken over' in result.stderr


def test_two_cyclic_maintainers_never_exceed_the_target(occo, infra, tmp_path):
    cloud_key = f'{occo.prefix}dummycloud'
    seen = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen.append(sum(1 for v in occo.redis.hvals(cloud_key) if json.loads(v)['node'] == 'web'))
            time.sleep(0.005)
    watcher = threading.Thread(target=watch)
    watcher.start()
    maintainers = [occo.popen('occopus-manage', '-i', 'm', '-c', '-t', '0.2') for _ in range(2)]
    try:
        # targets: 1 -> 3 -> 5 (6 clamped to the max, warned) -> 4 -> 3 -> 2
        for args in (['-c', '2'], ['-c', '3'], ['-c', '-1'], ['-s', '3'], ['-c', '-1']):
            scale(occo, *args)
            time.sleep(0.3)
        deadline = time.monotonic() + 20
        while len(web_instances(occo)) != 2 or occo.redis.llen(f'{occo.prefix}{{m}}:requests'):
            assert time.monotonic() < deadline, 'the maintainers did not converge'
            time.sleep(0.1)
        time.sleep(0.6)  # a few more passes: still exactly the target
        assert len(web_instances(occo)) == 2
    finally:
        done.set()
        watcher.join()
        for process in maintainers:
            process.send_signal(signal.SIGTERM)
        outputs = [p.communicate(timeout=30) for p in maintainers]
    assert [p.returncode for p in maintainers] == [0, 0], outputs
    assert max(seen) <= 5, f'the dummy cloud held {max(seen)} web instances; the targets allowed 5'
    assert seen[-1] == 2
    assert "maximum count (5) reached" in ''.join(err for _, err in outputs)


def test_cyclic_maintainer_survives_failing_creates_and_converges(occo, infra, tmp_path):
    config = write(tmp_path, {'cfg.yaml': 'retry_backoff: 0.2\n'}) / 'cfg.yaml'
    write(tmp_path, {'bad.yaml': NODES.replace('FAIL', '0').replace(
        "'node_def:web':\n  - resource: {type: dummy, boot_time: 0}",
        "'node_def:web':\n  - resource: {type: dummy, boot_time: 0, fail_rate: 1}")})
    assert occo.run('occopus-import', tmp_path / 'bad.yaml').returncode == 0
    scale(occo, '-s', '3')
    maintainer = occo.popen('occopus-manage', '--cfg', config, '-i', 'm', '-c', '-t', '0.2')
    try:
        deadline = time.monotonic() + 20
        while event_names(occo).count('node_backoff') < 3:
            assert time.monotonic() < deadline, 'no failed creates were retried'
            assert maintainer.poll() is None, maintainer.communicate()
            time.sleep(0.1)
        assert len(web_instances(occo)) == 1  # failed instances are dropped, not kept
        assert all(json.loads(v)['state'] != 'failed' for v in occo.redis.hvals(f'{occo.prefix}dummycloud'))
        write(tmp_path, {'good.yaml': NODES.replace('FAIL', '0')})
        assert occo.run('occopus-import', tmp_path / 'good.yaml').returncode == 0  # failures stop
        deadline = time.monotonic() + 30
        while len([r for r in web_instances(occo) if r['state'] == 'ready']) != 3:
            assert time.monotonic() < deadline, 'the maintainer did not converge'
            assert maintainer.poll() is None, maintainer.communicate()
            time.sleep(0.1)
    finally:
        maintainer.send_signal(signal.SIGINT)
        out, err = maintainer.communicate(timeout=30)
    assert maintainer.returncode == 0, err
    assert 'pass(es) in a row made no instance ready; next try in' in err
    assert len(occo.dummy_cloud('m')) == 4


def test_cyclic_maintainer_stops_when_the_infrastructure_is_destroyed(occo, infra):
    maintainer = occo.popen('occopus-manage', '-i', 'm', '-c', '-t', '0.1')
    time.sleep(0.5)
    assert occo.run('occopus-destroy', '-i', 'm').returncode == 0
    out, err = maintainer.communicate(timeout=30)
    assert maintainer.returncode == 0
    assert 'infrastructure m no longer exists; nothing left to manage' in err


# -- health-based healing on the local backend ---------------------------------------------------------

HEALTH_NODES = """\
'node_def:server':
  - resource: {type: local}
    contextualisation:
      type: cloudinit
      context_template:
        runcmd:
          - python3 -m http.server 18080 --bind "$OCCOPUS_NODE_IP" > http.log 2>&1 &
    health_check: {ping: false, ports: [18080], timeout: 1}
"""


def test_an_instance_failing_its_health_checks_past_the_timeout_is_replaced(occo, tmp_path):
    write(tmp_path, {'nodes.yaml': HEALTH_NODES,
                     'infra.yaml': 'infra_name: h\nuser_id: u\nnodes: [{name: server, type: server}]\n'})
    assert occo.run('occopus-import', tmp_path / 'nodes.yaml').returncode == 0
    env = {'OCCOPUS_HEALTH_CHECKS': '1'}
    assert occo.run('occopus-build', '-i', 'h', tmp_path / 'infra.yaml', env=env).returncode == 0
    [old] = records(occo, 'h')
    for pid in processes_of(f"OCCOPUS_NODE_ID={old['node_id']}"):
        try:
            __import__('os').kill(pid, signal.SIGKILL)  # the service dies, the "VM" lives on
        except ProcessLookupError:
            pass
    first = occo.run('occopus-manage', '-i', 'h', env=env)
    assert first.returncode == 0, first.stderr
    assert [r['node_id'] for r in records(occo, 'h')] == [old['node_id']]  # timed, not yet failed
    assert 'node_unhealthy' in event_names(occo, 'h')
    time.sleep(1.1)
    second = occo.run('occopus-manage', '-i', 'h', env=env)
    assert second.returncode == 0, second.stderr
    assert re.search(r'dropping: health check failing for \d+ s: port 18080 of 127[\d.]+ is not open',
                     second.stderr)
    [new] = records(occo, 'h')
    assert new['node_id'] != old['node_id'] and new['state'] == 'ready'
    assert processes_of(f"OCCOPUS_NODE_ID={old['node_id']}") == []
    assert occo.run('occopus-destroy', '-i', 'h').returncode == 0


def test_managing_an_unknown_id_leaves_nothing_behind(occo):
    before = occo.snapshot()
    result = occo.run('occopus-manage', '-i', 'nope')
    assert result.returncode == 1 and 'Unknown infrastructure: "nope"' in result.stderr
    assert occo.snapshot() == before


# -- regressions found in review ----------------------------------------------------------------

def test_a_failed_create_in_a_pass_drops_nothing_else(occo, infra, tmp_path):
    write(tmp_path, {'cmd.yaml': NODES.replace('FAIL', '0').replace(
        "'node_def:web':\n  - resource: {type: dummy, boot_time: 0}\n",
        "'node_def:web':\n  - resource: {type: dummy, boot_time: 0}\n    contextualisation:\n"
        "      type: cloudinit\n      context_template: \"#cloud-config\\nruncmd: ['{{ cmd(\\\"date\\\") }}']\"\n")})
    assert occo.run('occopus-import', tmp_path / 'cmd.yaml').returncode == 0
    before = occo.dummy_cloud('m')
    scale(occo, '-c', '1')
    result = manage(occo)
    assert result.returncode == 1
    assert 'cmd() is disabled' in result.stderr
    assert occo.dummy_cloud('m') == before  # the healthy db and web are untouched
    assert len(records(occo)) == 2


def test_a_build_that_lost_its_lease_leaves_nothing_untraceable(occo, tmp_path):
    write(tmp_path, {'cfg.yaml': 'lease_ttl: 1\n',
                     'nodes.yaml': "'node_def:slow':\n  - resource: {type: dummy, create_time: 4}\n",
                     'infra.yaml': 'infra_name: ll\nuser_id: u\nnodes: [{name: a, type: slow}]\n'})
    assert occo.run('occopus-import', tmp_path / 'nodes.yaml').returncode == 0
    build = occo.popen('occopus-build', '--cfg', tmp_path / 'cfg.yaml', '-i', 'll', tmp_path / 'infra.yaml')
    time.sleep(1.5)
    build.send_signal(signal.SIGSTOP)  # stuck inside its cloud call, its lease runs out
    time.sleep(2)
    taken = occo.run('occopus-manage', '--cfg', tmp_path / 'cfg.yaml', '-i', 'll')
    assert taken.returncode == 0, taken.stderr  # another process took over and built the node
    build.send_signal(signal.SIGCONT)
    out, err = build.communicate(timeout=30)
    assert build.returncode == 1
    assert 'lost the lease on infrastructure ll to another process' in err
    cloud = occo.dummy_cloud('ll')
    assert len(cloud) == 1  # the stale build dropped what it made; the new holder's is intact
    assert [r['instance_id'] for r in records(occo, 'll')] == list(cloud)
    assert occo.run('occopus-destroy', '-i', 'll').returncode == 0
    assert occo.dummy_cloud('ll') == {}


def test_getip_never_returns_an_instance_dropped_in_the_same_pass(occo, tmp_path):
    write(tmp_path, {'nodes.yaml': "'node_def:db':\n  - resource: {type: local}\n    health_check: {ping: false}\n"
                                   "'node_def:web':\n  - resource: {type: local}\n    health_check: {ping: false}\n"
                                   '    contextualisation:\n      type: cloudinit\n'
                                   "      context_template: {write_files: [{path: /db.txt, content: \"{{ getip('db') }}\"}]}\n",
                     'infra.yaml': 'infra_name: g\nuser_id: u\nnodes:\n  - {name: db, type: db}\n'
                                   '  - {name: web, type: web, scaling: {min: 1, max: 3}}\n'})
    assert occo.run('occopus-import', tmp_path / 'nodes.yaml').returncode == 0
    assert occo.run('occopus-build', '-i', 'g', tmp_path / 'infra.yaml').returncode == 0
    [old_db] = [r for r in records(occo, 'g') if r['node'] == 'db']
    root = occo.home / '.occopus' / 'local' / 'g'
    (root / old_db['node_id'] / '.occopus' / 'status').write_text('failed by the test\n')
    assert occo.run('occopus-scale', '-i', 'g', '-n', 'web', '-c', '1').returncode == 0
    assert occo.run('occopus-manage', '-i', 'g').returncode == 0
    [new_db] = [r for r in records(occo, 'g') if r['node'] == 'db']
    assert new_db['node_id'] != old_db['node_id']
    webs = sorted((r for r in records(occo, 'g') if r['node'] == 'web'), key=lambda r: r['created_at'])
    assert (root / webs[-1]['node_id'] / 'db.txt').read_text() == new_db['addresses'][0]
    assert occo.run('occopus-destroy', '-i', 'g').returncode == 0


def test_a_stale_maintainer_cannot_touch_a_rebuilt_infrastructure_with_the_same_id(occo, tmp_path):
    """A maintainer stalled (SIGSTOP) past its lease while the infrastructure is destroyed and
    built again under the same id: tokens never repeat, so on waking it is refused and exits
    non-zero, and the new maintainer and the rebuilt infrastructure are untouched."""
    cfg = write(tmp_path, {'cfg.yaml': 'lease_ttl: 1\n'}) / 'cfg.yaml'
    write(tmp_path, {'nodes.yaml': "'node_def:web':\n  - resource: {type: dummy, create_time: 2}\n",
                     'infra.yaml': 'infra_name: st\nuser_id: u\n'
                                   'nodes: [{name: web, type: web, scaling: {min: 1, max: 5}}]\n'})
    assert occo.run('occopus-import', tmp_path / 'nodes.yaml').returncode == 0
    assert occo.run('occopus-build', '--cfg', cfg, '-i', 'st', tmp_path / 'infra.yaml').returncode == 0
    assert occo.run('occopus-scale', '-i', 'st', '-n', 'web', '-c', '1').returncode == 0
    lease_key = f'{occo.prefix}{{st}}:lease'
    stale = occo.popen('occopus-manage', '--cfg', cfg, '-i', 'st', '-c', '-t', '0.5')
    deadline = time.monotonic() + 20
    while not (f':{stale.pid}"' in (occo.redis.get(lease_key) or '')
               and any(r['state'] == 'creating' for r in records(occo, 'st'))):
        assert time.monotonic() < deadline, 'the maintainer never started creating'
        time.sleep(0.02)
    stale.send_signal(signal.SIGSTOP)  # stuck inside its create call, holding the lease
    try:
        while occo.redis.exists(lease_key):  # its lease runs out
            assert time.monotonic() < deadline + 10, 'the stale lease never expired'
            time.sleep(0.05)
        assert occo.run('occopus-destroy', '--cfg', cfg, '-i', 'st').returncode == 0
        rebuilt = occo.run('occopus-build', '--cfg', cfg, '-i', 'st', tmp_path / 'infra.yaml')
        assert rebuilt.returncode == 0, rebuilt.stderr
        fresh = occo.popen('occopus-manage', '--cfg', cfg, '-i', 'st', '-c', '-t', '0.5')
    finally:
        stale.send_signal(signal.SIGCONT)
    _, stale_err = stale.communicate(timeout=60)
    time.sleep(1.5)  # a few passes of the new maintainer after the stale one woke up
    fresh.send_signal(signal.SIGTERM)
    _, fresh_err = fresh.communicate(timeout=60)
    assert stale.returncode == 1, stale_err
    assert 'lease on infrastructure st' in stale_err.splitlines()[-1], stale_err
    assert fresh.returncode == 0, fresh_err
    assert 'lease' not in fresh_err
    # the rebuilt infrastructure has its declared instance, and nothing of the stale process
    assert len(occo.dummy_cloud('st')) == 1
    assert [r['instance_id'] for r in records(occo, 'st')] == list(occo.dummy_cloud('st'))
    events = occo.redis.xrange(f'{occo.prefix}{{st}}:events')
    assert not [e for _, e in events if e.get('who', '').endswith(f':{stale.pid}')]
    assert not occo.redis.hgetall(f'{occo.prefix}{{st}}:backoff')
    assert occo.run('occopus-destroy', '-i', 'st').returncode == 0


@pytest.mark.parametrize('value', ['0', '-1', 'nan', 'inf', '0.05', 'abc', ''])
def test_a_cyclic_interval_must_be_finite_and_at_least_a_tenth_of_a_second(occo, infra, value):
    before = occo.snapshot()
    result = occo.run('occopus-manage', '-i', 'm', '-c', f'-t={value}', timeout=30)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith('occopus-manage: error: argument -t/--interval: must be a ')
    assert f"got '{value}'" in line
    assert occo.snapshot() == before  # no pass ran
