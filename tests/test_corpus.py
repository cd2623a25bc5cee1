"""Every real user's file from the original documentation imports, validates and plans
unchanged (../shared/corpus/occopus-tutorials)."""
from __future__ import annotations

import json

import pytest

from conftest import CORPUS

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f'tutorial corpus not found at {CORPUS}')

TUTORIALS = sorted(p.parent.parent.name for p in CORPUS.glob('*/nodes/node_definitions.yaml')) \
    if CORPUS.is_dir() else []
INFRAS = sorted(str(p.relative_to(CORPUS)) for p in CORPUS.glob('*/*.yaml')
                if not p.parent.name.startswith('_')) if CORPUS.is_dir() else []
# Dependencies the original's tutorials leave implicit but their templates need (getip of a node
# built earlier in sequential order): the compiler adds them, with a warning.
INFERRED = {
    'puppet-solo-wordpress/infra-puppet-solo-wordpress.yaml': {('puppet-solo-wp', 'puppet-solo-mysql')},
}


def test_corpus_is_complete():
    assert len(TUTORIALS) >= 15 and len(INFRAS) >= 15


@pytest.mark.parametrize('tutorial', TUTORIALS)
def test_node_definitions_import(occo, tutorial):
    path = CORPUS / tutorial / 'nodes' / 'node_definitions.yaml'
    result = occo.run('occopus-import', path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ''
    assert result.stdout.startswith('Successfully imported nodes: ')
    names = result.stdout.strip().split(': ', 1)[1].split(', ')
    stored = occo.redis.hgetall(f'{occo.prefix}nodedefs:occotest')
    assert sorted(stored) == sorted(names)
    for name, value in stored.items():
        definition = json.loads(value)
        assert definition['type'] == name and definition['implementations']


@pytest.mark.parametrize('infra', INFRAS)
def test_infrastructure_dry_run(occo, infra):
    path = CORPUS / infra
    imported = occo.run('occopus-import', path.parent / 'nodes' / 'node_definitions.yaml')
    assert imported.returncode == 0, imported.stderr
    before = occo.snapshot()
    result = occo.run('occopus-build', '--dry-run', path)
    assert result.returncode == 0, result.stderr
    assert 'Traceback' not in result.stderr
    assert occo.snapshot() == before, 'a dry run must not write to Redis'
    assert result.stdout.rstrip().endswith('the description is valid.')
    expected = INFERRED.get(infra, set())
    for dependent, dependee in expected:
        assert (f"node '{dependent}' uses the address of '{dependee}' in its templates but does not "
                f'depend on it') in result.stderr
    placeholders = [line for line in result.stderr.splitlines()
                    if "still hold a tutorial's placeholder" in line]
    assert len(placeholders) <= 1  # one line says where the tutorial's placeholders are left
    assert result.stderr.count('warning:') == len(expected) + len(placeholders), result.stderr
