"""The six commands as a user meets them: installed, -h with the usage page's flags, honest
about what is not implemented yet."""
from __future__ import annotations

import re

import pytest

from conftest import BIN

# Flags of each command from the usage page (reference/usage.rst), plus the original's extras.
USAGE_FLAGS = {
    'occopus-build': ['-h', '--cfg', '--auth_data_path', '--parallelize', '--listips', 'infra_def',
                      '-i', '--infra_id', '--dry-run', '--render', '--addresses', '--format',
                      '--parallelism'],
    'occopus-destroy': ['-h', '--cfg', '--auth_data_path', '-i', '--parallelize'],
    'occopus-manage': ['-h', '--cfg', '--auth_data_path', '-i', '-l', '--list', '-t', '-c',
                       '--cyclic', '-r', '--report', '--parallelize', '-o', '--output', '-f', '--filter',
                       '--format', '--events'],
    'occopus-maintain': ['-h', '--cfg', '--auth_data_path', '-i', '-l', '--list', '-t', '-c',
                         '--cyclic', '-r', '--report', '-o', '-f'],
    'occopus-scale': ['-h', '--cfg', '--auth_data_path', '-i', '-n', '--node', '-c', '--count',
                      '-s', '--setscale', '-f', '--filter'],
    'occopus-import': ['-h', '--redisconf', 'datafile', '--cfg'],
    'occopus-rest-service': ['-h', '--cfg', '--auth_data_path', '--host', '--port', '--parallelize'],
}


@pytest.mark.parametrize('command', sorted(USAGE_FLAGS))
def test_console_script_is_installed(command):
    assert (BIN / command).exists(), f'{command} is not installed next to {BIN}/python'


@pytest.mark.parametrize('command', sorted(USAGE_FLAGS))
def test_help_shows_the_usage_page_flags(occo, command):
    result = occo.run(command, '-h')
    assert result.returncode == 0
    assert result.stderr == ''
    assert result.stdout.startswith(f'usage: {command} ')
    for flag in USAGE_FLAGS[command]:
        assert re.search(rf'(^|[\s\[,]){re.escape(flag)}\b', result.stdout), f'{flag} missing in {command} -h'


@pytest.mark.parametrize('command, args, fragment', [
    ('occopus-destroy', [], 'the following arguments are required: -i/--infra_id'),
    ('occopus-scale', ['-i', 'x'], 'the following arguments are required: -n/--node'),
    ('occopus-import', [], 'the following arguments are required: datafile'),
    ('occopus-manage', ['-t', 'soon'], "must be a number of seconds, got 'soon'"),
    ('occopus-build', ['--bogus', 'x.yaml'], 'unrecognized arguments: --bogus'),
    ('occopus-build', ['-l'], 'unrecognized arguments: -l'),
    ('occopus-build', ['-l', 'x.yaml'], 'unrecognized arguments: -l'),
    ('occopus-destroy', ['-x'], 'unrecognized arguments: -x'),
])
def test_usage_errors_exit_2(occo, command, args, fragment):
    result = occo.run(command, *args)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert 'Traceback' not in result.stderr


def test_version(occo):
    result = occo.run('occopus-build', '--version')
    assert result.returncode == 0
    assert re.fullmatch(r'occopus-build \d+\.\d+\.\d+\S*\n', result.stdout)


def test_unreachable_redis_is_one_clear_line(occo, tmp_path):
    nodes = tmp_path / 'nodes.yaml'
    nodes.write_text("'node_def:a':\n  - resource: {type: dummy}\n")
    result = occo.run('occopus-import', nodes, env={'OCCOPUS_REDIS_URL': 'redis://127.0.0.1:1/0'})
    assert result.returncode == 1
    assert result.stderr.count('\n') == 1
    assert result.stderr.startswith('occopus-import: error: cannot reach Redis at redis://127.0.0.1:1/0')
    assert 'Traceback' not in result.stderr


def test_redis_password_is_masked_in_errors(occo, tmp_path):
    nodes = tmp_path / 'nodes.yaml'
    nodes.write_text("'node_def:a':\n  - resource: {type: dummy}\n")
    result = occo.run('occopus-import', nodes,
                      env={'OCCOPUS_REDIS_URL': 'redis://:s3cr3t-pw@127.0.0.1:1/0'})
    assert result.returncode == 1
    assert 's3cr3t-pw' not in result.stderr
    assert 'redis://:***@127.0.0.1:1/0' in result.stderr


def test_help_imports_no_heavy_library(occo):
    """`-h` must stay fast: no YAML, Redis, Jinja or cloud SDK is imported to answer it."""
    code = ('import sys\n'
            'from occo.cli import build, destroy, manage, scale, importer, rest_service\n'
            'for module in (build, destroy, manage, scale, importer, rest_service):\n'
            '    module.build_parser().format_help()\n'
            "heavy = ('yaml', 'redis', 'jinja2', 'boto3', 'novaclient', 'docker', 'fastapi', 'pymysql')\n"
            'print(sorted(m for m in heavy if m in sys.modules))\n')
    import subprocess
    import sys
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=occo.env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == '[]\n'


def test_an_unknown_option_is_named_rather_than_a_missing_argument(occo):
    result = occo.run('occopus-build', '-l')
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == 'occopus-build: error: unrecognized arguments: -l'
    ok = occo.run('occopus-scale', '-i', 'nope', '-n', 'web', '-c', '-1')  # a negative value is no option
    assert 'unrecognized' not in ok.stderr
