"""Multi-line variables in a ``!yaml_import`` template come out as the original's.

Occopus 1.10 dumped a YAML template to text and rendered that text as a whole, so YAML folded
the line breaks a substituted value brought: a single break became a space, a blank line one
line break.  The tutorials write SSH private keys in ``variables`` with a blank line between
their lines and rely on it.  We render each value on its own (a quote in a value cannot break
the YAML) and fold the substituted value's line breaks the same way.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import CORPUS, write
from occo import templates
from test_golden import meaning

CASE = CORPUS.parent / 'conformance' / 'multiline-variables'
SSH_KEYGEN = shutil.which('ssh-keygen')
needs_ssh_keygen = pytest.mark.skipif(SSH_KEYGEN is None, reason='ssh-keygen not found (Debian '
                                                                 'package openssh-client)')


def fold(template, **values):
    """A value of a YAML template, rendered as a build renders it."""
    return templates.render(template, values, keep_trailing_newline=True, fold=True)


# -- the folding rules -------------------------------------------------------------------------

def test_a_blank_line_becomes_one_line_break_and_a_single_break_a_space():
    assert fold('{{ v }}\n', v='a\n\nb\n\nc\n') == 'a\nb\nc\n'
    assert fold('{{ v }}', v='first\nsecond\nthird') == 'first second third'
    assert fold('{{ v }}', v='a\n\n\nb') == 'a\n\nb'            # n blank lines: n breaks
    assert fold('{{ v }}', v='a\n   \n\t\nb') == 'a\n\nb'         # blank-looking lines are blank
    assert fold('{{ v }}', v='a\r\n\r\nb\rc') == 'a\nb c'         # any line break style


def test_white_space_around_a_folded_break_goes_but_not_inside_a_line():
    assert fold('Layout {{ v }} at {{ s }}', v='    alpha  x\n      beta\n    gamma\n', s='site') \
        == 'Layout     alpha  x beta gamma at site'
    assert fold('<{{ v }}>', v='a   \n   b') == '<a b>'


def test_the_templates_own_line_breaks_and_spaces_are_kept():
    # In the original's dump these were \n escapes, which YAML does not fold.
    assert fold('Welcome\n  {{ v }}\n\n{% for i in [1, 2] %}{{ i }}\n{% endfor %}', v='x\ny\n') \
        == 'Welcome\n  x y\n\n1\n2\n'


def test_macros_and_set_blocks_keep_the_templates_breaks_and_fold_the_values():
    assert fold('{% macro m() %}a\nb {{ v }}{% endmacro %}{{ m() }}\n', v='x\ny\n') == 'a\nb x y\n'
    assert fold('{% set s %}1\n{{ v }}{% endset %}{{ s|replace("\n", ",") }}', v='x\ny') == '1\nx,y'


def test_the_space_a_break_would_leave_at_a_line_end_is_left_out():
    # The original kept a space before the template's next line break ("-----END ... ----- \n");
    # it means nothing, and without it a key comes out exactly as it was generated.
    assert fold('{{ v }}\n', v='last line\n') == 'last line\n'
    assert fold('{{ v }}', v='one\ntwo\n') == 'one two'
    assert fold('{{ v }}', v='\none') == 'one'


def test_the_ends_of_a_plain_scalar_lose_their_breaks_a_quoted_one_keeps_blank_lines():
    assert fold('echo {{ v }}', v='x\n\n\n') == 'echo x'           # dumped plain: ends trimmed
    assert fold('{{ v }}', v='x\n\n\n') == 'x\n\n'                  # dumped quoted ({{ first)


def test_values_stay_data():
    value = 'say "hi": it\'s {{ not a template }}\n# not a comment\n- not an item'
    rendered = fold('{{ v }}', v=value)
    assert rendered == 'say "hi": it\'s {{ not a template }} # not a comment - not an item'
    assert fold('C:\\work {{ v }}', v='a\\nb') == 'C:\\work a\\nb'  # no escapes are read


def test_no_folding_outside_yaml_templates():
    assert templates.render('{{ v }}\n', {'v': 'a\n\nb\n'}, keep_trailing_newline=True) == 'a\n\nb\n\n'


# -- the command line: the conformance case and a real key -----------------------------------

@pytest.mark.skipif(not CASE.is_dir(), reason=f'conformance case not found at {CASE}')
def test_conformance_multiline_variables_mean_what_the_original_sent(occo):
    golden = CASE / 'golden'
    assert occo.run('occopus-import', CASE / 'nodes' / 'node_definitions.yaml').returncode == 0
    result = occo.run('occopus-build', '--dry-run', '--render', '--format', 'json', '-i', 'INFRA_ID',
                      '--addresses', golden / 'addresses.yaml', CASE / 'infra-multiline.yaml')
    assert result.returncode == 0, result.stderr
    rendered = json.loads(result.stdout)
    assert list(rendered) == ['key-keeper', 'key-user']
    for node, text in rendered.items():
        original = (golden / f'{node}.userdata').read_text()
        assert text.startswith('#cloud-config\n')
        assert meaning(text) == meaning(original), f'{node} differs in meaning'
    keeper = yaml.safe_load(rendered['key-keeper'])
    files = {item['path']: item['content'] for item in keeper['write_files']}
    # The original's key, without the space it left before the final line break.
    original_key = {item['path']: item['content'] for item in
                    yaml.safe_load((golden / 'key-keeper.userdata').read_text())['write_files']}
    assert files['/home/deploy/.ssh/id_rsa'] == original_key['/home/deploy/.ssh/id_rsa'].replace(' \n', '\n')
    assert files['/home/deploy/.ssh/id_rsa'].count('\n') == 27
    assert files['/etc/fold/banner.txt'] == 'first banner line second banner line third banner line'
    assert keeper['runcmd'] == ['echo say "hi there" via C:\\work > /etc/fold/quoted.txt']
    assert keeper['final_message'] == ('Layout     alpha has four leading spaces beta has six leading '
                                       'spaces gamma has four leading spaces at fold-site-7')
    user = yaml.safe_load(rendered['key-user'])
    files = {item['path']: item['content'] for item in user['write_files']}
    assert files == {
        '/etc/fold/keeper.env': 'KEEPER_ADDRESS=10.77.89.124\nSITE=fold-site-7\n',
        '/etc/fold/layout.txt': '    alpha has four leading spaces beta has six leading spaces gamma '
                                'has four leading spaces\n',
        '/etc/fold/motd': 'Welcome to fold-site-7\nfirst banner line second banner line third banner '
                          'line\n',
    }
    assert user['runcmd'] == ["echo 'say \"hi there\" via C:\\work' > /etc/fold/quoted-again.txt",
                              'ping -c 1 10.77.89.124']


KEY_TEMPLATE = """\
#cloud-config
write_files:
- path: /home/deploy/.ssh/id_key
  content: |
    {{variables.deploy_private_key}}
  permissions: '0600'
runcmd:
- echo "{{variables.label}}" > /etc/label
"""

KEY_DEFS = """\
'node_def:keeper':
  - resource: {type: dummy}
    contextualisation:
      type: cloudinit
      context_template: !yaml_import
        url: file://cloud_init.yaml
    health_check: {ping: False}
"""


def tutorial_variable(name, text):
    """``text`` written as a tutorial writes a key: a block scalar with a blank line between
    every two lines."""
    lines = text.rstrip('\n').split('\n')
    return f'  {name}: |\n' + '\n\n'.join(f'    {line}' for line in lines) + '\n'


def loads(key_text, folder):
    """The public key ``ssh-keygen -y`` derives from ``key_text``, or None if it cannot."""
    path = folder / 'written_key'
    path.write_text(key_text)
    os.chmod(path, 0o600)
    result = subprocess.run([SSH_KEYGEN, '-y', '-f', str(path)], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    return result.stdout.split()[:2] if result.returncode == 0 else None


@needs_ssh_keygen
@pytest.mark.parametrize('kind', [['-t', 'ed25519'], ['-t', 'rsa', '-b', '2048', '-m', 'PEM']],
                         ids=['ed25519', 'rsa-pem'])
def test_a_key_written_the_tutorials_way_loads(occo, tmp_path, kind):
    keygen = subprocess.run([SSH_KEYGEN, '-q', *kind, '-N', '', '-C', '', '-f', str(tmp_path / 'key')],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert keygen.returncode == 0, keygen.stderr
    key = (tmp_path / 'key').read_text()
    public = (tmp_path / 'key.pub').read_text().split()[:2]
    write(tmp_path, {
        'cloud_init.yaml': KEY_TEMPLATE, 'defs.yaml': KEY_DEFS,
        'infra.yaml': 'infra_name: keys\nuser_id: u\nnodes: [{name: keeper, type: keeper}]\n'
                      'variables:\n' + tutorial_variable('deploy_private_key', key)
                      + '  label: \'say "hi": it\'\'s\'\n'})
    assert occo.run('occopus-import', tmp_path / 'defs.yaml').returncode == 0
    result = occo.run('occopus-build', '--dry-run', '--render', '--format', 'json',
                      tmp_path / 'infra.yaml')
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(json.loads(result.stdout)['keeper'])
    written = data['write_files'][0]['content']
    assert written == key
    assert loads(written, tmp_path) == public
    assert data['runcmd'] == ['echo "say "hi": it\'s" > /etc/label']  # a quote stays data
    if kind[1] == 'rsa':  # what rendering the value without folding wrote: 27 blank lines
        value = yaml.safe_load('variables:\n' + tutorial_variable('k', key))['variables']['k']
        assert value.count('\n\n') == 26 and loads(value + '\n', tmp_path) is None
