"""Hostile or broken input and what new users trip on (issue 8, points 3, 4, 5, 11, 15, 16, 17).

Each failing case runs the real command and checks the exit code, the exact line the user sees,
that no raw control character and no traceback reaches the terminal, and that Redis is left
byte-for-byte unchanged.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, Optional

import pytest

import test_malformed as fixtures
from conftest import Occo, write
from occo import plugins

NODES = """\
'node_def:web':
  - resource: {type: dummy}
'node_def:db':
  - resource: {type: dummy}
"""

INFRA = """\
infra_name: demo
user_id: somebody@example.com
nodes:
  - &W
    name: web
    type: web
    scaling: {min: 1, max: 2}
  - &D
    name: db
    type: db
dependencies:
  - [*W, *D]
variables:
  greeting: hello
"""

RAW_CONTROLS = re.compile('[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]')


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def fails(occo: Occo, command: str, *args: object, env: Optional[Dict[str, str]] = None) -> str:
    """Run a command that must fail on its input: exit 1, one escaped line on stderr and nothing
    on stdout, no traceback, Redis unchanged.  Returns the line (without its newline)."""
    before = occo.snapshot()
    result = occo.run(command, *args, env=env)
    report = f'exit {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}'
    assert result.returncode == 1, report
    assert result.stdout == '', report
    assert 'Traceback' not in result.stderr, report
    assert result.stderr.endswith('\n') and result.stderr.count('\n') == 1, report
    assert not RAW_CONTROLS.search(result.stderr), report
    assert occo.snapshot() == before, 'Redis changed'
    return result.stderr[:-1]


@pytest.fixture
def imported(occo: Occo, tmp_path: Path) -> Path:
    """The test's folder, with NODES imported."""
    write(tmp_path, {'setup/nodes.yaml': NODES})
    result = occo.run('occopus-import', tmp_path / 'setup' / 'nodes.yaml')
    assert result.returncode == 0, result.stderr
    return tmp_path


def dry_run_fails(occo: Occo, folder: Path, text: str, *, name: str = 'infra.yaml') -> str:
    path = folder / name
    path.write_text(text)
    return fails(occo, 'occopus-build', '--dry-run', path).replace(str(folder), '@')


# -- 3: control characters -------------------------------------------------------------------

# (as written in a double-quoted YAML string, as quoted in the message, as named in it)
CONTROLS = [('\\e', '\\x1b', '\\x1b'), ('\\r', '\\r', '\\x0d'), ('\\0', '\\x00', '\\x00'),
            ('\\u202e', '\\u202e', '\\u202e'), ('\\u2066', '\\u2066', '\\u2066'),
            ('\\x85', '\\x85', '\\x85'), ('\\x9b', '\\x9b', '\\x9b'), ('\\b', '\\x08', '\\x08')]


@pytest.mark.parametrize('written, quoted, shown', CONTROLS)
def test_control_character_in_infra_name(occo, imported, written, quoted, shown):
    line = dry_run_fails(occo, imported, edit(INFRA, 'infra_name: demo', f'infra_name: "de{written}mo"'))
    assert line == (f"occopus-build: error: @/infra.yaml:1: infra_name 'de{quoted}mo' contains the "
                    f'control character {shown}; names must be printable text')


@pytest.mark.parametrize('where, old, new, line, message', [
    ('node name', 'name: web', 'name: "w\\eb"', 5, "node 'w\\x1bb' contains the control character \\x1b"),
    ('node type', 'type: db', 'type: "d\\u202eb"', 10,
     "type of node 'db' 'd\\u202eb' contains the control character \\u202e"),
    ('dependency', '[*W, *D]', '[*W, "d\\rb"]', 12,
     "dependency 1 names node 'd\\rb' contains the control character \\x0d"),
    ('variable name', 'greeting: hello', '"gr\\eeting": hello', 14,
     "variable name 'gr\\x1beting' contains the control character \\x1b"),
    ('user_id', 'user_id: somebody@example.com', 'user_id: "some\\u2067body"', 2,
     "user_id 'some\\u2067body' contains the control character \\u2067"),
])
def test_control_characters_in_names_are_refused(occo, imported, where, old, new, line, message):
    shown = dry_run_fails(occo, imported, edit(INFRA, old, new))
    assert shown == f'occopus-build: error: @/infra.yaml:{line}: {message}; names must be printable text'


def test_control_character_in_node_definition_name(occo, tmp_path):
    path = write(tmp_path, {'nodes.yaml': '"node_def:w\\eb":\n  - resource: {type: dummy}\n'}) / 'nodes.yaml'
    line = fails(occo, 'occopus-import', path)
    assert line == (f"occopus-import: error: {path}:1: node definition name 'w\\x1bb' contains the "
                    'control character \\x1b; names must be printable text')


def test_every_message_is_escaped(occo, imported):
    """Messages that quote something the user typed (a file name here) escape it too."""
    name = imported / 'no\x1b[2Jsuch\u202e.yaml'
    line = fails(occo, 'occopus-build', '--dry-run', name)
    assert line == (f'occopus-build: error: {imported}/no\\x1b[2Jsuch\\u202e.yaml: cannot read file: '
                    'No such file or directory')


def test_warnings_are_escaped(occo, imported):
    path = imported / 'we\x1bird.yaml'
    path.write_text(edit(INFRA, 'scaling: {min: 1, max: 2}', 'scaling: {min: 3, max: 2}'))
    result = occo.run('occopus-build', '--dry-run', path)
    assert result.returncode == 0, result.stderr
    assert not RAW_CONTROLS.search(result.stderr)
    assert f'{imported}/we\\x1bird.yaml:7: scaling of node' in result.stderr


def test_usage_errors_are_escaped(occo):
    result = occo.run('occopus-build', 'x.yaml', '--bogus\x1b[31m')
    assert result.returncode == 2
    assert not RAW_CONTROLS.search(result.stderr)
    assert 'unrecognized arguments: --bogus\\x1b[31m' in result.stderr


def test_node_name_starting_with_a_dash_is_refused(occo, imported):
    line = dry_run_fails(occo, imported, edit(INFRA, 'name: web', 'name: -rf').replace('[*W, *D]', '[-rf, db]'))
    assert line == ("occopus-build: error: @/infra.yaml:5: node '-rf' cannot start with '-': "
                    'occopus-scale -n and -f could not address it (they would read it as an option)')


def test_trailing_newline_in_a_name_is_refused(occo, imported):
    line = dry_run_fails(occo, imported, edit(INFRA, 'infra_name: demo', 'infra_name: "demo\\n"'))
    assert line == ("occopus-build: error: @/infra.yaml:1: infra_name 'demo\\n' contains the control "
                    'character \\x0a; names must be printable text')


# -- 4: NUL and ESC bytes in a YAML file -----------------------------------------------------

@pytest.mark.parametrize('byte, shown', [('\x00', '\\x00'), ('\x1b', '\\x1b'), ('\x7f', '\\x7f')])
def test_control_byte_in_a_yaml_file(occo, imported, byte, shown):
    text = edit(INFRA, 'greeting: hello', f'greeting: hel{byte}lo')
    line = dry_run_fails(occo, imported, text)
    assert line == (f'occopus-build: error: @/infra.yaml:14: the control character {shown} at column '
                    '16 is not allowed in a YAML file (write it as an escape inside double quotes, '
                    'e.g. "\\e", or remove it)')


def test_control_byte_in_node_definitions_and_imported_files(occo, tmp_path):
    path = write(tmp_path, {'nodes.yaml': "'node_def:a':\n  - resource: {type: dummy, name: \"x\x00\"}\n"}) / 'nodes.yaml'
    line = fails(occo, 'occopus-import', path)
    assert line.startswith(f'occopus-import: error: {path}:2: the control character \\x00 at column 37 ')
    write(tmp_path, {'main.yaml': "'node_def:a': !yaml_import {url: file://part.yaml}\n",
                     'part.yaml': '- resource:\n    type: dummy\n    name: "\x1b[31m"\n'})
    line = fails(occo, 'occopus-import', tmp_path / 'main.yaml')
    assert line.startswith(f'occopus-import: error: {tmp_path}/part.yaml:3: the control character \\x1b ')


def test_nul_in_an_import_url(occo, tmp_path):
    path = write(tmp_path, {'nodes.yaml': "'node_def:a': !yaml_import {url: \"file://a\\0b\"}\n"}) / 'nodes.yaml'
    line = fails(occo, 'occopus-import', path)
    assert line == (f"occopus-import: error: {path}:1: !yaml_import URL 'file://a\\x00b' contains the "
                    'control character \\x00; a file name must be printable text')


# -- 5: limits -------------------------------------------------------------------------------

def _limits_config(folder: Path, text: str) -> Path:
    return write(folder, {'limits.yaml': text}) / 'limits.yaml'


@pytest.mark.parametrize('command', [['--dry-run'], []])
def test_instances_per_node_limit(occo, imported, command):
    path = imported / 'infra.yaml'
    path.write_text(edit(INFRA, 'scaling: {min: 1, max: 2}', 'scaling: {min: 100000000}'))
    line = fails(occo, 'occopus-build', *command, path)
    assert line == (f"occopus-build: error: {path}:7: scaling min of node 'web' is 100000000, more "
                    'than the limit of 10000 instances per node; raise limits.instances_per_node in '
                    'the configuration file to allow more')
    path.write_text(edit(INFRA, 'scaling: {min: 1, max: 2}', 'scaling: {min: 1, max: 10001}'))
    assert 'scaling max of node' in fails(occo, 'occopus-build', *command, path)


def test_instances_per_infrastructure_limit(occo, imported):
    nodes = ''.join(f'  - {{name: n{i}, type: db, scaling: {{min: 10000}}}}\n' for i in range(11))
    path = imported / 'infra.yaml'
    path.write_text(f'infra_name: big\nuser_id: u\nnodes:\n{nodes}')
    line = fails(occo, 'occopus-build', '--dry-run', path)
    assert line == (f'occopus-build: error: {path}:3: the nodes need 110000 instances together (the '
                    'sum of their scaling min), more than the limit of 100000 instances per '
                    'infrastructure; raise limits.instances_per_infra in the configuration file '
                    'to allow more')


def test_instance_limits_are_configurable(occo, imported):
    config = _limits_config(imported, 'limits: {instances_per_node: 3, instances_per_infra: 4}\n')
    path = imported / 'infra.yaml'
    path.write_text(edit(INFRA, 'scaling: {min: 1, max: 2}', 'scaling: {min: 4}'))
    line = fails(occo, 'occopus-build', '--cfg', config, '--dry-run', path)
    assert 'more than the limit of 3 instances per node' in line
    path.write_text(edit(INFRA, 'scaling: {min: 1, max: 2}', 'scaling: {min: 3}'))
    path.write_text(edit(INFRA, 'scaling: {min: 1, max: 2}', 'scaling: {min: 3, max: 3}').replace(
        '    type: db\n', '    type: db\n    scaling: {min: 2}\n'))
    line = fails(occo, 'occopus-build', '--cfg', config, '--dry-run', path)
    assert 'the nodes need 5 instances together' in line and 'limit of 4 instances per' in line
    path.write_text(edit(INFRA, 'scaling: {min: 1, max: 2}', 'scaling: {min: 3}'))
    ok = occo.run('occopus-build', '--cfg', config, '--dry-run', path)
    assert ok.returncode == 0, ok.stderr


def test_file_size_limit(occo, imported):
    big = imported / 'big.yaml'
    with open(big, 'w') as stream:  # 11 MB that would not even parse: refused before parsing
        stream.write('infra_name: [\n')
        line = '# ' + 'x' * 1021 + '\n'
        stream.write(line * (11 * 1024))
    shown = fails(occo, 'occopus-build', '--dry-run', big)
    assert shown == (f'occopus-build: error: {big}: it is 11.0 MB, more than the limit of 10 MB for a '
                     'description or node-definition file; raise limits.file_size in the '
                     'configuration file to allow it')
    shown = fails(occo, 'occopus-import', big)
    assert shown.startswith(f'occopus-import: error: {big}: it is 11.0 MB, more than the limit of 10 MB')
    config = _limits_config(imported, 'limits: {file_size: 1 KB}\n')
    text = INFRA + '#' * 2000 + '\n'
    path = write(imported, {'infra.yaml': text}) / 'infra.yaml'
    shown = fails(occo, 'occopus-build', '--cfg', config, '--dry-run', path)
    assert 'more than the limit of 1 KB for a description' in shown
    # an imported file counts too
    write(imported, {'n.yaml': "'node_def:a': !yaml_import {url: file://part.yaml}\n",
                     'part.yaml': '- resource: {type: dummy}\n' + '#' * 2000 + '\n'})
    shown = fails(occo, 'occopus-import', '--cfg', config, imported / 'n.yaml')
    assert shown.startswith(f"occopus-import: error: {imported}/n.yaml:1: !yaml_import cannot read "
                            f"'{imported}/part.yaml': it is 2.0 KB, more than the limit of 1 KB")
    write(imported, {'part.yaml': '- resource: {type: dummy}\n' + '#' * 980 + '\n'})  # over 1 KB with n.yaml
    shown = fails(occo, 'occopus-import', '--cfg', config, imported / 'n.yaml')
    assert shown.startswith(f"occopus-import: error: {imported}/n.yaml:1: !yaml_import cannot read "
                            f"'{imported}/part.yaml': with the files read before it, it is more "
                            'than the limit of 1 KB')


@pytest.mark.parametrize('text, message', [
    ('limits: {instances_per_node: 0}\n',
     "'limits.instances_per_node' must be a whole number of instances >= 1, got 0"),
    ('limits: {instances_per_infra: many}\n',
     "'limits.instances_per_infra' must be a whole number of instances >= 1, got 'many'"),
    ('limits: {file_size: lots}\n',
     """'limits.file_size' must be a size: a whole number of bytes, or text such as "20 MB", got 'lots'"""),
    ('limits: {files: 1}\n', "unknown key 'files' in 'limits' (allowed: file_size, instances_per_infra, "
                             'instances_per_node, template_bytes, template_seconds)'),
])
def test_limits_settings_are_checked(occo, imported, text, message):
    config = _limits_config(imported, text)
    line = fails(occo, 'occopus-build', '--cfg', config, '--dry-run', imported / 'infra.yaml')
    assert line == f'occopus-build: error: {config}:1: {message}'


def test_limits_settings_are_read(tmp_path):
    from occo.config import load_config
    path = write(tmp_path, {'c.yaml': 'limits: {file_size: 20 MB, instances_per_node: 50}\n'}) / 'c.yaml'
    limits = load_config(str(path), environ={}).limits
    assert (limits.file_size, limits.instances_per_node, limits.instances_per_infra) == \
        (20 * 1024 * 1024, 50, 100000)


# -- 11: a short excerpt of a wrong value ----------------------------------------------------

def test_wrong_file_is_quoted_in_short(occo, imported):
    line = fails(occo, 'occopus-build', '--dry-run', '/etc/passwd')
    assert line.startswith('occopus-build: error: /etc/passwd')
    assert len(line) < 250, line
    assert '…' in line or len(Path('/etc/passwd').read_text()) < 60


def test_long_values_are_quoted_in_short(occo, imported):
    line = dry_run_fails(occo, imported, edit(INFRA, 'infra_name: demo', f'infra_name: {"x" * 5000}'))
    assert line == f"occopus-build: error: @/infra.yaml:1: infra_name '{'x' * 59}… is too long (at most 63 characters)"
    line = dry_run_fails(occo, imported, edit(INFRA, 'scaling: {min: 1, max: 2}', f'scaling: {{min: {"y" * 500}}}'))
    assert line == ("occopus-build: error: @/infra.yaml:7: scaling min of node 'web' must be a whole number "
                    f">= 1 (0 is taken as 1), got '{'y' * 59}…")


# -- 15: typos -------------------------------------------------------------------------------

def test_mistyped_node_type(occo, imported):
    line = dry_run_fails(occo, imported, edit(INFRA, 'type: web', 'type: wbe'))
    assert line == ("occopus-build: error: @/infra.yaml:4: node 'web': type 'wbe' has no imported node "
                    "definition in namespace 'occotest' (did you mean 'web'?) (imported types there: "
                    "web, db; node definitions are kept per user namespace: import the file defining "
                    "'node_def:wbe' with occopus-import in this namespace, or set namespace in the "
                    'configuration to the one that holds it)')


def test_known_types_are_listed_whole_with_the_close_ones_first(occo, tmp_path):
    many = ''.join(f"'node_def:type{i:02}':\n  - resource: {{type: dummy}}\n" for i in range(30))
    many += "'node_def:zz-webserver':\n  - resource: {type: dummy}\n"
    write(tmp_path, {'nodes.yaml': many, 'infra.yaml': 'infra_name: x\nuser_id: u\n'
                                                      'nodes: [{name: a, type: zz-webservr}]\n'})
    assert occo.run('occopus-import', tmp_path / 'nodes.yaml').returncode == 0
    line = fails(occo, 'occopus-build', '--dry-run', tmp_path / 'infra.yaml')
    assert "(did you mean 'zz-webserver'?)" in line
    assert ('(imported types there: zz-webserver, type00, type01, type02, type03, type04, type05, '
            'type06, type07, type08 and 21 more;') in line


def test_mistyped_dependency(occo, imported):
    line = dry_run_fails(occo, imported, edit(INFRA, '[*W, *D]', '[web, dbb]'))
    assert line == ("occopus-build: error: @/infra.yaml:12: dependency 1 names node 'dbb', which is not "
                    "declared in nodes (did you mean 'db'?) (declared: db, web)")


def test_mistyped_resource_type(occo, tmp_path):
    path = write(tmp_path, {'nodes.yaml': "'node_def:a':\n  - resource: {type: dumy}\n"}) / 'nodes.yaml'
    line = fails(occo, 'occopus-import', path)
    assert "Unknown resource type 'dumy' (did you mean 'dummy'?) (known: " in line


def test_definitions_of_another_user(occo, imported):
    path = imported / 'infra.yaml'
    path.write_text(INFRA)
    other = {'USER': 'someone-else', 'LOGNAME': 'someone-else'}
    line = fails(occo, 'occopus-build', '--dry-run', path, env=other)
    assert line == (f"occopus-build: error: {path}:4: node 'web': type 'web' has no imported node "
                    "definition in namespace 'someone-else' (nothing is imported there yet; node "
                    "definitions are kept per user namespace: import the file defining "
                    "'node_def:web' with occopus-import in this namespace, or set namespace in the "
                    'configuration to the one that holds it)')


# -- 16: compatibility -----------------------------------------------------------------------

RESOURCE_FIXTURES = {
    'ec2': fixtures.CHEF, 'nova': fixtures.NOVA, 'docker': fixtures.DOCKER,
    'azure_vm': fixtures.AZURE_VM, 'azure_aci': fixtures.AZURE_ACI,
    'cloudbroker': fixtures.CLOUDBROKER, 'cloudsigma': fixtures.CLOUDSIGMA,
    'dummy': fixtures.DUMMY, 'local': fixtures.LOCAL,
}


def test_every_resource_type_has_a_fixture():
    assert sorted(RESOURCE_FIXTURES) == sorted(plugins.plugin_names(plugins.RESOURCES))


@pytest.mark.parametrize('kind', sorted(RESOURCE_FIXTURES))
def test_blank_optional_keys_are_not_given(occo, tmp_path, kind):
    """``key_name:``, ``security_groups:``, ... left blank, as the tutorials ship them."""
    cls = plugins.plugin_class(plugins.RESOURCES, kind)
    text = RESOURCE_FIXTURES[kind]
    blank = [key for key in cls.keys.optional if not re.search(rf'^      {key}:', text, re.M)]
    assert blank
    text = edit(text, '  - resource:\n', '  - resource:\n' + ''.join(f'      {k}:\n' for k in blank))
    path = write(tmp_path, {'nodes.yaml': text}) / 'nodes.yaml'
    result = occo.run('occopus-import', path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ''
    [stored] = occo.redis.hgetall(f'{occo.prefix}nodedefs:occotest').values()
    resource = json.loads(stored)['implementations'][0]['resource']
    assert resource['type'] == kind
    assert not [key for key in blank if key in resource]
    assert None not in resource.values()


def test_blank_optional_keys_of_other_sections(occo, tmp_path):
    text = ("'node_def:a':\n  - resource: {type: dummy}\n    contextualisation:\n      type: cloudinit\n"
            "      context_template: '#cloud-config'\n      attributes:\n")
    path = write(tmp_path, {'nodes.yaml': text}) / 'nodes.yaml'
    result = occo.run('occopus-import', path)
    assert result.returncode == 0, result.stderr
    [stored] = occo.redis.hgetall(f'{occo.prefix}nodedefs:occotest').values()
    assert 'attributes' not in json.loads(stored)['implementations'][0]['contextualisation']


def test_inverted_scaling_is_raised_with_a_warning(occo, imported):
    path = imported / 'infra.yaml'
    path.write_text(edit(INFRA, 'scaling: {min: 1, max: 2}', 'scaling: {min: 3, max: 2}'))
    before = occo.snapshot()
    result = occo.run('occopus-build', '--dry-run', '--format', 'json', path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == (f"occopus-build: warning: {path}:7: scaling of node 'web': max (2) is "
                             'less than min (3); max is taken as 3\n')
    plan = json.loads(result.stdout)
    assert sum(1 for action in plan['creates'] if action['node'] == 'web') == 3
    assert occo.snapshot() == before


# -- 17: a legacy configuration file ---------------------------------------------------------

def test_legacy_configuration_gives_one_short_warning(occo, imported):
    config = write(imported, {'legacy.yaml': 'components:\n  uds: !UDS {host: 127.0.0.1, port: 1, db: 0}\n'
                                             'plugins: !python_import [occo.plugins]\n'
                                             'logging: {version: 1}\n'}) / 'legacy.yaml'
    path = imported / 'infra.yaml'
    path.write_text(INFRA)
    result = occo.run('occopus-build', '--cfg', config, '--dry-run', path)
    warnings = [line for line in result.stderr.splitlines() if 'warning:' in line]
    assert warnings == [f'occopus-build: warning: {config}: read as an Occopus 1.x configuration '
                        'file (used: components.uds; nothing in it is executed)']
