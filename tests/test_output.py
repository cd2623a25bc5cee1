"""What commands print for other programs: a build's result in JSON, event times as numbers,
no terminal escape codes in logs."""
from __future__ import annotations

import json
import subprocess

from conftest import EXAMPLES, write
from test_build import import_ok


def test_a_build_prints_its_result_in_json_when_asked(occo, tmp_path):
    write(tmp_path, {'nodes.yaml': "'node_def:web':\n  - resource: {type: dummy}\n",
                     'infra.yaml': 'infra_name: j\nuser_id: u\n'
                                   'nodes: [{name: web, type: web, scaling: {min: 2, max: 3}}]\n'})
    import_ok(occo, tmp_path / 'nodes.yaml')
    result = occo.run('occopus-build', '--format', 'json', '-i', 'js', tmp_path / 'infra.yaml')
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # stdout is the JSON document alone
    assert data['infra_id'] == 'js'
    web = data['nodes']['web']
    assert web['scaling'] == {'actual': 2, 'target': 2, 'min': 2, 'max': 3}
    assert {i['state'] for i in web['instances'].values()} == {'ready'}
    assert all(i['resource_address'].startswith('198.18.') for i in web['instances'].values())
    # the same shape as the report
    report = json.loads(occo.run('occopus-manage', '-r', '--format', 'json', '-i', 'js').stdout)
    assert report == data['nodes']


def test_event_times_are_numbers_like_instance_times(occo, tmp_path):
    write(tmp_path, {'nodes.yaml': "'node_def:web':\n  - resource: {type: dummy}\n",
                     'infra.yaml': 'infra_name: j\nuser_id: u\nnodes: [{name: web, type: web}]\n'})
    import_ok(occo, tmp_path / 'nodes.yaml')
    assert occo.run('occopus-build', '-i', 'ev', tmp_path / 'infra.yaml').returncode == 0
    events = json.loads(occo.run('occopus-manage', '--events', '--format', 'json', '-i', 'ev').stdout)
    assert events and all(isinstance(e['time'], float) for e in events)
    [record] = [json.loads(v) for v in occo.redis.hvals(f'{occo.prefix}{{ev}}:instances')]
    assert isinstance(record['created_at'], float)
    created = [e for e in events if e['event'] == 'node_created']
    assert abs(created[0]['time'] - record['created_at']) < 60


def test_the_demo_writes_no_escape_codes_into_a_pipe(occo, tmp_path):
    env = dict(occo.env, PATH=f"{occo.command('occopus-build')[0].rsplit('/', 1)[0]}:/usr/bin:/bin",
               OCCOPUS_HEALTH_CHECKS='1')
    result = subprocess.run(['bash', str(EXAMPLES / 'demo.sh')], capture_output=True, text=True,
                            env=env, cwd=occo.home, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '== occopus-import' in result.stdout
    assert '\x1b' not in result.stdout + result.stderr
