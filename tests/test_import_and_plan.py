"""occopus-import stores definitions all-or-nothing; occopus-build --dry-run plans without
writing anything."""
from __future__ import annotations

import json
import re

import pytest

from conftest import CORPUS, EXAMPLES, write

DEFS = """\
'node_def:web':
  - resource: {type: dummy, name: small}
    contextualisation:
      type: cloudinit
      context_template: !yaml_import {url: 'file://ci.yaml'}
  - resource: {type: local, name: big}
    contextualisation:
      type: cloudinit
      context_template: !text_import {url: 'file://ci.txt'}
'node_def:db':
  - resource: {type: dummy}
    health_check: {ping: false, ports: [5432]}
"""


@pytest.fixture
def defs(tmp_path):
    return write(tmp_path, {'defs/nodes.yaml': DEFS, 'defs/ci.yaml': 'runcmd:\n- echo {{name}}\n',
                            'defs/ci.txt': '#cloud-config\nruncmd: [echo {{name}}]\n'}) / 'defs' / 'nodes.yaml'


def stored(occo):
    return {k: json.loads(v) for k, v in occo.redis.hgetall(f'{occo.prefix}nodedefs:occotest').items()}


def test_import_stores_json_per_type(occo, defs):
    result = occo.run('occopus-import', defs)
    assert (result.returncode, result.stdout, result.stderr) == (0, 'Successfully imported nodes: web, db\n', '')
    assert occo.keys() == [f'{occo.prefix}nodedefs:occotest']
    web = stored(occo)['web']
    assert web['source'] == str(defs)
    first, second = web['implementations']
    assert first['resource'] == {'type': 'dummy', 'name': 'small'}
    assert first['contextualisation']['context_template'] == {'runcmd': ['echo {{name}}']}
    assert second['contextualisation']['context_template'] == '#cloud-config\nruncmd: [echo {{name}}]\n'
    assert stored(occo)['db']['implementations'][0]['health_check'] == {'ping': False, 'ports': [5432]}


def test_reimport_replaces_its_types_and_keeps_others(occo, defs, tmp_path):
    assert occo.run('occopus-import', defs).returncode == 0
    other = write(tmp_path, {'other.yaml': "'node_def:db':\n  - resource: {type: dummy, name: v2}\n"})
    assert occo.run('occopus-import', other / 'other.yaml').returncode == 0
    assert stored(occo)['db']['implementations'][0]['resource'] == {'type': 'dummy', 'name': 'v2'}
    assert stored(occo)['web']['implementations'][0]['resource']['name'] == 'small'


def test_failed_import_changes_nothing(occo, defs, tmp_path):
    assert occo.run('occopus-import', defs).returncode == 0
    before = occo.snapshot()
    bad = write(tmp_path, {'bad.yaml': "'node_def:db':\n  - resource: {type: dummy, name: v3}\n"
                                       "'node_def:zzz':\n  - resource: {type: ec2}\n"}) / 'bad.yaml'
    result = occo.run('occopus-import', bad)
    assert result.returncode == 1
    assert result.stderr == (f"occopus-import: error: {bad}:4: in 'resource' section of node 'zzz'[0]: "
                             'Missing key(s): endpoint, regionname, image_id, instance_type '
                             "(resource type 'ec2' requires endpoint, regionname, image_id, instance_type)\n")
    assert occo.snapshot() == before


def plan_lines(stdout):
    return re.findall(r'^\s*\d+\. (\S+): create (\d+) instances? \(min (\d+), max (\d+)\)$', stdout, re.M)


def test_dry_run_prints_the_plan_and_writes_nothing(occo):
    assert occo.run('occopus-import', EXAMPLES / 'ping' / 'nodes' / 'node_definitions.yaml').returncode == 0
    before = occo.snapshot()
    result = occo.run('occopus-build', '--dry-run', '-i', 'my-chosen-id', EXAMPLES / 'ping' / 'infra-ping-local.yaml')
    assert result.returncode == 0, result.stderr
    assert result.stderr == ''
    assert occo.snapshot() == before
    assert result.stdout.splitlines()[0] == \
        "Plan for infrastructure 'ping-local' (dry run: nothing is created or stored)"
    assert plan_lines(result.stdout) == [('ping-receiver', '1', '1', '1'), ('ping-sender', '1', '1', '1')]
    assert '       depends on: ping-receiver\n' in result.stdout
    assert result.stdout.count('implementations: #1 local') == 2  # the filter keeps the local one
    assert result.stdout.endswith('2 nodes, 2 instances to create, in 2 dependency levels; '
                                  'the description is valid.\n')


@pytest.mark.skipif(not CORPUS.is_dir(), reason='tutorial corpus not found')
@pytest.mark.parametrize('tutorial, infra, expected', [
    ('autoscaling-dataavenue', 'infra_as_dataavenue.yaml',
     [('db', '1', '1', '1'), ('prometheus', '1', '1', '1'), ('da', '1', '1', '10'), ('lb', '1', '1', '5')]),
    ('flowbster-autodock-vina', 'infra-autodock-vina.yaml',
     [('COLLECTOR', '1', '1', '1'), ('VINA', '5', '5', '5'), ('GENERATOR', '1', '1', '1')]),
    ('hadoop-cluster', 'infra-hadoop-cluster.yaml',
     [('hadoop-master', '1', '1', '1'), ('hadoop-slave', '2', '2', '10')]),
])
def test_dry_run_orders_corpus_infrastructures(occo, tutorial, infra, expected):
    assert occo.run('occopus-import', CORPUS / tutorial / 'nodes' / 'node_definitions.yaml').returncode == 0
    result = occo.run('occopus-build', '--dry-run', CORPUS / tutorial / infra)
    assert result.returncode == 0, result.stderr
    assert plan_lines(result.stdout) == expected


def test_missing_auth_file_is_reported_at_once(occo):
    result = occo.run('occopus-build', '--dry-run', '--auth_data_path', 'nope.yaml',
                      EXAMPLES / 'ping' / 'infra-ping-dummy.yaml')
    assert result.returncode == 1
    assert result.stderr == ("occopus-build: error: Specified authentication file does not exist: "
                             "'nope.yaml'\n")


def test_warnings_are_printed_even_when_compiling_fails(occo, tmp_path):
    infra = write(tmp_path, {'i.yaml': 'infra_name: w\nnodes: [{name: a, type: not-imported}]\n'}) / 'i.yaml'
    result = occo.run('occopus-build', '--dry-run', infra)
    assert result.returncode == 1
    warning, error = result.stderr.splitlines()
    assert warning.startswith('occopus-build: warning: user_id is not defined')
    assert error.startswith(f"occopus-build: error: {infra}:2: node 'a': type 'not-imported' has no "
                            'imported node definition')
