"""Whole commands across a Redis outage: a build that rides one out, and a build whose Redis
comes back empty, which removes exactly what it made (no process, folder or resource left)."""
from __future__ import annotations

import json
import re
import time

import redis

from conftest import processes_of, write
from test_outages import private_redis  # noqa: F401 - the fixture


def wait_for(what, condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f'{what} did not happen'
        time.sleep(0.02)


def test_a_parallel_build_rides_out_redis_down_for_3_s(occo, tmp_path, private_redis):
    env = {'OCCOPUS_REDIS_URL': private_redis.url}
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    write(tmp_path, {'nodes.yaml': "'node_def:n':\n  - resource: {type: dummy, create_time: 0.4, "
                                   'boot_time: 0.5}\n    health_check: {ping: false}\n',
                     'infra.yaml': 'infra_name: outage\nuser_id: u\nnodes:\n' + ''.join(
                         f'  - {{name: n{i}, type: n}}\n' for i in range(50))})
    assert occo.run('occopus-import', tmp_path / 'nodes.yaml', env=env).returncode == 0
    build = occo.popen('occopus-build', '--parallelize', '-i', 'ride', tmp_path / 'infra.yaml', env=env)
    instances = f'{occo.prefix}{{ride}}:instances'
    wait_for('the first creates', lambda: client.hlen(instances) >= 10)
    private_redis.stop()
    private_redis.start_later(3.0)
    out, err = build.communicate(timeout=120)
    assert build.returncode == 0, err
    assert out.strip().splitlines()[-1] == 'ride'
    records = [json.loads(v) for v in client.hvals(instances)]
    assert len(records) == 50 and {r['state'] for r in records} == {'ready'}
    cloud = [json.loads(v) for v in client.hvals(f'{occo.prefix}dummycloud')]
    assert len(cloud) == 50
    destroyed = occo.run('occopus-destroy', '-i', 'ride', env=env)
    assert destroyed.returncode == 0, destroyed.stderr
    assert client.hlen(f'{occo.prefix}dummycloud') == 0


def test_a_local_build_whose_redis_restarts_empty_leaves_nothing_behind(occo, tmp_path, private_redis):
    env = {'OCCOPUS_REDIS_URL': private_redis.url}
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    template = ('{runcmd: ["sleep 1000 > /dev/null 2>&1 &", "setsid sleep 1001 > /dev/null 2>&1 &", '
                '"sleep 0.4"]}')
    write(tmp_path, {'nodes.yaml': "'node_def:svc':\n  - resource: {type: local}\n"
                                   '    contextualisation: {type: cloudinit, context_template: '
                                   f'{template}}}\n    health_check: {{ping: false}}\n',
                     'infra.yaml': 'infra_name: empty\nuser_id: u\nnodes:\n' + ''.join(
                         f'  - {{name: n{i}, type: svc}}\n' for i in range(8)) + 'dependencies:\n' + ''.join(
                         f'  - [n{i}, n{i - 1}]\n' for i in range(1, 8))})
    assert occo.run('occopus-import', tmp_path / 'nodes.yaml', env=env).returncode == 0
    build = occo.popen('occopus-build', '-i', 'gone', tmp_path / 'infra.yaml', env=env)
    instances = f'{occo.prefix}{{gone}}:instances'
    wait_for('three instances', lambda: sum(json.loads(v)['state'] == 'ready'
                                            for v in client.hvals(instances)) >= 3)
    assert processes_of('OCCOPUS_INFRA_ID=gone')
    private_redis.stop()
    private_redis.start(empty=True)
    out, err = build.communicate(timeout=120)
    assert build.returncode == 1
    last = err.splitlines()[-1]
    assert re.fullmatch(r'occopus-build: error: build of gone stopped: .*records.*; the \d+ '
                        r'resource\(s\) it made were removed', last), err
    assert processes_of('OCCOPUS_INFRA_ID=gone') == []
    root = occo.home / '.occopus' / 'local' / 'gone'
    assert not root.exists() or not list(root.iterdir())
    assert not [k for k in client.scan_iter(f'{occo.prefix}*') if 'gone' in k]
