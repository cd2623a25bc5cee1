"""What a VM receives means the same as what the original Occopus sent.

For the tutorials whose renderings by Occopus 1.10 are kept beside them (``golden/``), render
every node with the same fixed addresses and compare by meaning, as GOLDEN.md explains: strip
the ``#cloud-config`` line, parse the YAML, strip whitespace at the start of every line inside
each string and at both ends, and compare the structures.
"""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import CORPUS

# Where the original's own pipeline (dump, wrap at 80 columns, Redis round trip) changed the text
# beyond the whitespace GOLDEN.md's comparison ignores: (golden text, what the template says).
ORIGINAL_ARTIFACTS = {
    ('autoscaling-dataavenue', 'prometheus'): [('node=\\"da\\" , infra_id', 'node=\\"da\\", infra_id')],
}

GOLDEN = sorted(p.parent.parent.name for p in CORPUS.glob('*/golden/meta.yaml')) if CORPUS.is_dir() else []
pytestmark = pytest.mark.skipif(not GOLDEN, reason=f'tutorial corpus not found at {CORPUS}')


def clean(value):
    if isinstance(value, str):
        return '\n'.join(line.lstrip() for line in value.split('\n')).strip()
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def meaning(text):
    body = text.split('\n', 1)[1] if text.startswith('#cloud-config') else text
    try:
        data = yaml.safe_load(body)
    except yaml.YAMLError:
        data = None
    return clean(data if isinstance(data, (dict, list)) else text)


@pytest.mark.parametrize('tutorial', GOLDEN)
def test_rendering_means_what_the_original_sent(occo, tutorial):
    folder = CORPUS / tutorial
    meta = yaml.safe_load((folder / 'golden' / 'meta.yaml').read_text())
    assert occo.run('occopus-import', folder / 'nodes' / 'node_definitions.yaml').returncode == 0
    # The golden texts were normalised: the infrastructure id reads INFRA_ID.
    result = occo.run('occopus-build', '--dry-run', '--render', '--format', 'json', '-i', 'INFRA_ID',
                      '--addresses', folder / 'golden' / 'addresses.yaml', folder / meta['infra_file'])
    if meta['status'] != 'ok':
        # The original rejected this template once rendered (see meta.yaml); ours must either
        # render text that parses or say clearly which node and line fails.
        assert result.returncode == 0 or ("node '" in result.stderr and 'line' in result.stderr)
        if result.returncode == 0:
            for text in json.loads(result.stdout).values():
                yaml.safe_load(text)
        return
    assert result.returncode == 0, result.stderr
    rendered = json.loads(result.stdout)
    assert list(rendered) == list(dict.fromkeys(meta['node_order_of_creation']))
    for node, facts in meta['nodes'].items():
        golden = (folder / 'golden' / facts['file']).read_text()
        for artifact, intended in ORIGINAL_ARTIFACTS.get((tutorial, node), []):
            assert artifact in golden
            golden = golden.replace(artifact, intended)
        assert rendered[node].startswith('#cloud-config') == facts['starts_with_cloud_config']
        assert meaning(rendered[node]) == meaning(golden), f'{tutorial}/{node} differs in meaning'
