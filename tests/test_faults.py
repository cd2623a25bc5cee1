"""A slow and failing cloud, played by the dummy cloud's knobs: every cloud call bounded,
transient errors retried, calls limited per endpoint, drops walking the graph in reverse,
and what could not be dropped kept for the next destroy."""
from __future__ import annotations

import json
import re

import pytest

from conftest import write
from test_build import assert_gone, built_id, import_ok, one_node


def nodes_file(folder, **types):
    """Node definitions: type name -> the keys of its dummy resource."""
    lines = []
    for name, keys in types.items():
        extra = ''.join(f', {k}: {v}' for k, v in keys.items())
        lines += [f"'node_def:{name}':", f'  - resource: {{type: dummy{extra}}}',
                  '    health_check: {ping: false}']
    return write(folder, {'nodes.yaml': '\n'.join(lines) + '\n'}) / 'nodes.yaml'


def infra_file(folder, nodes, dependencies=()):
    lines = ['infra_name: faults', 'user_id: tester', 'nodes:']
    lines += [f'  - {{name: {name}, type: {kind}}}' for name, kind in nodes]
    if dependencies:
        lines += ['dependencies:'] + [f'  - [{a}, {b}]' for a, b in dependencies]
    return write(folder, {'infra.yaml': '\n'.join(lines) + '\n'}) / 'infra.yaml'


def test_a_create_call_that_hangs_fails_its_node_at_create_timeout_and_leaves_nothing(occo, tmp_path):
    infra = one_node(occo, tmp_path, 'slow', 'resource: {type: dummy, create_time: 40, create_timeout: 3}\n'
                     '    health_check: {ping: false}\n')
    result = occo.run('occopus-build', '-i', 'hung', infra, timeout=30)  # a hang fails the test
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "occopus-build: error: node 'slow' (instance " + re.search(
            r"node 'slow' \(instance (\w{8})\)", result.stderr).group(1) + "): the create call on "
        'dummy did not return within create_timeout (3 s); Occopus stopped waiting for it')
    assert_gone(occo, 'hung')


@pytest.mark.one_redis
def test_thirty_nodes_on_a_throttling_cloud_are_built(occo, tmp_path):
    import_ok(occo, nodes_file(tmp_path, flaky={'throttle_rate': 0.4}))
    infra = infra_file(tmp_path, [(f'n{i}', 'flaky') for i in range(30)])
    result = occo.run('occopus-build', '--parallelize', '-i', 'throttled', infra)
    built_id(result)
    assert len(occo.dummy_cloud('throttled')) == 30
    records = occo.redis.hvals(f'{occo.prefix}{{throttled}}:instances')
    assert len(records) == 30 and {json.loads(r)['state'] for r in records} == {'ready'}
    retries = [e for e in occo.run('occopus-manage', '--events', '-i', 'throttled').stdout.splitlines()
               if 'cloud_retry' in e]
    assert retries and all('throttled' in line for line in retries)
    assert 'try 2 in' in result.stderr
    destroyed = occo.run('occopus-destroy', '-i', 'throttled')  # drops are retried too
    assert destroyed.returncode == 0, destroyed.stderr
    assert_gone(occo, 'throttled')


def test_drops_walk_the_edges_reversed_so_a_slow_drop_holds_back_only_its_dependees(occo, tmp_path):
    # chain x: x2 depends on x1, and x2's drop is slow; chain y: y2 depends on y1.  Level by
    # level, y1 (bottom level) would wait for x2 (top level); walking the edges, it does not.
    import_ok(occo, nodes_file(tmp_path, slow={'drop_time': 2}, fast={},
                               medium={'drop_time': 0.5}))
    infra = infra_file(tmp_path, [('x1', 'fast'), ('x2', 'slow'), ('y1', 'medium'), ('y2', 'fast')],
                       [('x2', 'x1'), ('y2', 'y1')])
    built_id(occo.run('occopus-build', '--parallelize', '-i', 'chains', infra))
    result = occo.run('occopus-destroy', '--parallelize', '-i', 'chains')
    assert result.returncode == 0, result.stderr
    order = re.findall(r'^occopus-destroy: (\w+)/\w+: dropped', result.stderr, re.M)
    assert order.index('y2') < order.index('y1') < order.index('x2') < order.index('x1'), order
    assert_gone(occo, 'chains')


def test_calls_to_one_endpoint_are_limited(occo, tmp_path):
    config = write(tmp_path, {'cfg.yaml': 'endpoint_parallelism: 2\n'}) / 'cfg.yaml'
    import_ok(occo, nodes_file(tmp_path, e1={'create_time': 0.3, 'endpoint': 'e1'}))
    infra = infra_file(tmp_path, [(f'n{i}', 'e1') for i in range(6)])
    result = occo.run('occopus-build', '--cfg', config, '--parallelism', '6', '-i', 'limited', infra)
    built_id(result)
    calls = [(r['call_started'], r['created_at']) for r in occo.dummy_cloud('limited').values()]
    assert len(calls) == 6
    most = max(sum(1 for start, end in calls if start <= t < end) for t, _ in calls)
    assert most <= 2, calls


def test_destroy_reports_what_it_could_not_drop_and_a_rerun_finishes_the_job(occo, tmp_path):
    import_ok(occo, nodes_file(tmp_path, plain={}))
    infra = infra_file(tmp_path, [('a', 'plain'), ('b', 'plain')], [('b', 'a')])
    built_id(occo.run('occopus-build', '-i', 'stubborn', infra))
    cloud_key = f'{occo.prefix}dummycloud'
    [(locked_id, resource)] = [(k, v) for k, v in occo.dummy_cloud('stubborn').items() if v['node'] == 'a']
    occo.redis.hset(cloud_key, locked_id, json.dumps(dict(resource, state='locked')))

    result = occo.run('occopus-destroy', '-i', 'stubborn')
    assert result.returncode == 1
    last = result.stderr.splitlines()[-1]
    assert re.fullmatch(r"occopus-destroy: error: node 'a' \(instance \w{8}\): could not be dropped: "
                        rf'the dummy cloud refuses to drop {locked_id}: it is locked \(set its state '
                        r'to anything else to allow it\); they are still recorded: run '
                        r'occopus-destroy -i stubborn again once the cloud answers', last), last
    assert list(occo.dummy_cloud('stubborn')) == [locked_id]
    kept = [json.loads(v) for v in occo.redis.hvals(f'{occo.prefix}{{stubborn}}:instances')]
    assert [r['node'] for r in kept] == ['a']
    managed = occo.run('occopus-manage', '-i', 'stubborn')  # must not build b up again
    assert managed.returncode == 1
    assert managed.stderr.splitlines()[-1] == (
        'occopus-manage: error: infrastructure stubborn is being destroyed (a destroy began and '
        'did not finish): run occopus-destroy -i stubborn to finish it')
    assert list(occo.dummy_cloud('stubborn')) == [locked_id]

    occo.redis.hset(cloud_key, locked_id, json.dumps(dict(resource, state='running')))
    again = occo.run('occopus-destroy', '-i', 'stubborn')
    assert again.returncode == 0, again.stderr
    assert_gone(occo, 'stubborn')


def test_a_handler_gets_its_own_settings_section(occo, tmp_path):
    root = tmp_path / 'instances'
    config = write(tmp_path, {'cfg.yaml': f'resources:\n  local:\n    root: {root}\n'}) / 'cfg.yaml'
    infra = one_node(occo, tmp_path, 'l', "resource: {type: local}\n"
                     '    contextualisation: {type: cloudinit, context_template: {runcmd: [echo hi > hi.txt]}}\n'
                     '    health_check: {ping: false}\n')
    built_id(occo.run('occopus-build', '--cfg', config, '-i', 'rooted', infra))
    [folder] = list((root / 'rooted').iterdir())
    assert (folder / 'hi.txt').read_text() == 'hi\n'
    assert occo.run('occopus-destroy', '--cfg', config, '-i', 'rooted').returncode == 0
    assert not (root / 'rooted').exists()

    wrong = write(tmp_path, {'bad.yaml': 'resources:\n  local:\n    rot: /tmp/x\n'}) / 'bad.yaml'
    result = occo.run('occopus-build', '--cfg', wrong, '-i', 'wrong', infra)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f'occopus-build: error: {wrong}: resources.local: unknown setting(s) rot (resource type '
        'local takes root)')
    assert_gone(occo, 'wrong')


def test_a_second_signal_during_the_rollback_of_a_parallel_build_leaves_nothing(occo, tmp_path):
    import signal
    import time
    import_ok(occo, nodes_file(tmp_path, fast={'drop_time': 2}, slow={'create_time': 5}))
    infra = infra_file(tmp_path, [('a', 'fast'), ('b', 'slow')])
    build = occo.popen('occopus-build', '--parallelize', '-i', 'twice', infra)
    instances = f'{occo.prefix}{{twice}}:instances'
    deadline = time.monotonic() + 20
    while not any(json.loads(v)['state'] == 'ready' for v in occo.redis.hvals(instances)):
        assert time.monotonic() < deadline, 'a never became ready'
        time.sleep(0.02)
    build.send_signal(signal.SIGTERM)  # b's create call is under way
    time.sleep(0.3)
    build.send_signal(signal.SIGTERM)  # again, while the first one is being handled
    _, err = build.communicate(timeout=60)
    assert build.returncode == 130, err
    assert 'interrupting now would leave resources behind' in err
    assert_gone(occo, 'twice')


@pytest.mark.one_redis
def test_the_walker_gives_a_node_its_own_create_timeout(occo, tmp_path):
    # the configured default is far shorter than the node's own limit and its boot time
    config = write(tmp_path, {'cfg.yaml': 'create_timeout: 1\ncall_timeout: 0.5\n'}) / 'cfg.yaml'
    import_ok(occo, nodes_file(tmp_path, patient={'boot_time': 7.5, 'create_timeout': 30}))
    infra = infra_file(tmp_path, [('p', 'patient')])
    result = occo.run('occopus-build', '--cfg', config, '-i', 'patient', infra)
    built_id(result)
    assert occo.run('occopus-destroy', '-i', 'patient').returncode == 0
