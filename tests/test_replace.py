"""Updates that change what a node's instances are made from: the plan shows them outdated,
and ``occopus-build -i ID --replace NODE`` replaces them one at a time."""
from __future__ import annotations

import json
import re

from conftest import write
from test_build import import_ok


def records(occo, infra_id):
    return sorted((json.loads(v) for v in occo.redis.hvals(f'{occo.prefix}{{{infra_id}}}:instances')),
                  key=lambda r: r['created_at'])


def test_changed_variables_show_as_outdated_and_replace_keeps_the_node_up(occo, tmp_path):
    write(tmp_path, {'nodes.yaml': "'node_def:web':\n  - resource: {type: dummy, boot_time: 0.2}\n"
                                   '    health_check: {ping: false}\n',
                     'v1.yaml': 'infra_name: r\nuser_id: u\nvariables: {colour: blue}\n'
                                'nodes: [{name: web, type: web, scaling: {min: 2, max: 2}}]\n',
                     'v2.yaml': 'infra_name: r\nuser_id: u\nvariables: {colour: green}\n'
                                'nodes: [{name: web, type: web, scaling: {min: 2, max: 2}}]\n'})
    import_ok(occo, tmp_path / 'nodes.yaml')
    assert occo.run('occopus-build', '-i', 'rep', tmp_path / 'v1.yaml').returncode == 0
    old = [r['node_id'] for r in records(occo, 'rep')]

    plan = occo.run('occopus-build', '--dry-run', '-i', 'rep', tmp_path / 'v2.yaml')
    assert plan.returncode == 0, plan.stderr
    assert ('web: create 0 instances (min 2, max 2; 2 kept, 2 of them outdated (its variables '
            'changed; --replace web replaces them))') in plan.stdout
    same = occo.run('occopus-build', '--dry-run', '-i', 'rep', tmp_path / 'v1.yaml')
    assert 'outdated' not in same.stdout

    result = occo.run('occopus-build', '-i', 'rep', '--replace', 'web', tmp_path / 'v2.yaml')
    assert result.returncode == 0, result.stderr
    steps = re.findall(r'^occopus-build: web/(\w+): (ready after|dropped)', result.stderr, re.M)
    # new one ready, then an old one dropped; twice: never fewer than 2 ready instances
    assert [kind for _, kind in steps] == ['ready after', 'dropped', 'ready after', 'dropped']
    assert [node_id for node_id, kind in steps if kind == 'dropped'] == [n[:8] for n in old]
    now = records(occo, 'rep')
    assert len(now) == 2 and not {r['node_id'] for r in now} & set(old)
    assert len(occo.dummy_cloud('rep')) == 2
    again = occo.run('occopus-build', '--dry-run', '-i', 'rep', tmp_path / 'v2.yaml')
    assert 'outdated' not in again.stdout


def test_a_replacement_that_fails_keeps_the_old_instance(occo, tmp_path):
    write(tmp_path, {'good.yaml': "'node_def:web':\n  - resource: {type: dummy}\n"
                                  '    health_check: {ping: false}\n',
                     'bad.yaml': "'node_def:web':\n  - resource: {type: dummy, fail_rate: 1}\n"
                                 '    health_check: {ping: false}\n',
                     'infra.yaml': 'infra_name: r\nuser_id: u\nnodes: [{name: web, type: web}]\n'})
    import_ok(occo, tmp_path / 'good.yaml')
    assert occo.run('occopus-build', '-i', 'keep', tmp_path / 'infra.yaml').returncode == 0
    [old] = records(occo, 'keep')
    import_ok(occo, tmp_path / 'bad.yaml')
    result = occo.run('occopus-build', '-i', 'keep', '--replace', 'web', tmp_path / 'infra.yaml')
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].endswith(f"web/{old['node_id'][:8]} keep running")
    assert [r['node_id'] for r in records(occo, 'keep')] == [old['node_id']]
    assert list(occo.dummy_cloud('keep')) == [old['instance_id']]


def test_replace_needs_a_live_infrastructure_and_a_known_node(occo, tmp_path):
    write(tmp_path, {'nodes.yaml': "'node_def:web':\n  - resource: {type: dummy}\n",
                     'infra.yaml': 'infra_name: r\nuser_id: u\nnodes: [{name: web, type: web}]\n'})
    import_ok(occo, tmp_path / 'nodes.yaml')
    fresh = occo.run('occopus-build', '--replace', 'web', tmp_path / 'infra.yaml')
    assert fresh.returncode == 2
    assert fresh.stderr.strip() == ('occopus-build: error: --replace goes with -i ID of a live '
                                    'infrastructure (not with --dry-run)')
    assert occo.run('occopus-build', '-i', 'kn', tmp_path / 'infra.yaml').returncode == 0
    wrong = occo.run('occopus-build', '-i', 'kn', '--replace', 'db', tmp_path / 'infra.yaml')
    assert wrong.returncode == 2
    assert wrong.stderr.splitlines()[-1] == ("occopus-build: error: --replace: infrastructure kn "
                                             "has no node 'db' (nodes: web)")
