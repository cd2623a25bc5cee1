"""Configuration and authentication files: lookup chain, legacy files, overrides, secrets."""
from __future__ import annotations

import json

import pytest

from conftest import CORPUS, write
from occo.config import load_auth_data, load_config
from occo.errors import AuthError, ConfigError

LEGACY_HOME = CORPUS / '_occopus_home'
needs_corpus = pytest.mark.skipif(not LEGACY_HOME.is_dir(), reason='tutorial corpus not found')


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    (tmp_path / 'home').mkdir()
    return tmp_path / 'home'


def cfg(folder, name, prefix):
    return write(folder, {name: f'redis: {{prefix: "{prefix}"}}\n'}) / name


def test_lookup_chain_order(tmp_path, home, monkeypatch):
    option = cfg(tmp_path, 'option.yaml', 'from-option:')
    env = cfg(tmp_path, 'env.yaml', 'from-env:')
    cfg(home / '.occopus', 'occopus_config.yaml', 'from-home:')
    environ = {'OCCOPUS_CONFIG_PATH': str(env)}
    assert load_config(str(option), environ=environ).redis_prefix == 'from-option:'
    assert load_config(None, environ=environ).redis_prefix == 'from-env:'
    assert load_config(None, environ={}).redis_prefix == 'from-home:'
    (home / '.occopus' / 'occopus_config.yaml').unlink()
    defaults = load_config(None, environ={})
    assert defaults.source is None and defaults.redis_url == 'redis://127.0.0.1:6379/0'
    monkeypatch.chdir(tmp_path)
    assert load_config('option.yaml', environ={}).redis_prefix == 'from-option:'  # relative: CWD


def test_absolute_paths_are_taken_literally(tmp_path):
    path = cfg(tmp_path / 'deep' / 'er', 'c.yaml', 'abs:')
    assert path.is_absolute()
    assert load_config(str(path), environ={}).source == str(path)


@pytest.mark.parametrize('option, environ, message', [
    ('/nonexistent/occopus.yaml', {}, "Specified configuration file does not exist: '/nonexistent/occopus.yaml'"),
    (None, {'OCCOPUS_CONFIG_PATH': '/nope.yaml'}, "OCCOPUS_CONFIG_PATH names a configuration file that does not exist"),
    (None, {'OCCOPUS_REDIS_URL': 'http://x'}, 'OCCOPUS_REDIS_URL must be a Redis URL'),
    (None, {'OCCOPUS_HEALTH_CHECKS': 'maybe'}, 'OCCOPUS_HEALTH_CHECKS must be 0 or 1'),
])
def test_bad_locations_are_errors(home, option, environ, message):
    with pytest.raises(ConfigError, match=message):
        load_config(option, environ=environ)


@pytest.mark.parametrize('text, message', [
    ('redis: {url: 5}\n', "'redis.url' must be a Redis URL"),
    ('colour: blue\n', "unknown configuration key 'colour'"),
    ('redis: {host: x}\n', "unknown key 'host' in 'redis' (allowed: prefix, url)"),
    ('parallelism: 0\n', "'parallelism' must be a whole number >= 1, got 0"),
    ('create_timeout: -5\n', "'create_timeout' must be a number of seconds > 0"),
    ('rest: {port: 99999}\n', "'rest.port' must be a port number (1-65535)"),
    ('namespace: ""\n', "'namespace' must be non-empty text"),
    ('redis: {url: "http://x"}\n', "'redis.url' must be a Redis URL"),
    ('components: {dry_run: true}\n', 'components.dry_run is not supported'),
    ('[1, 2]\n', 'a configuration file must be a mapping'),
    ('redis: !!python/object/apply:os.system [ls]\n', "unsupported YAML tag"),
])
def test_bad_configuration_files(tmp_path, text, message):
    path = write(tmp_path, {'c.yaml': text}) / 'c.yaml'
    with pytest.raises(ConfigError, match=message.replace('(', r'\(').replace(')', r'\)')) as info:
        load_config(str(path), environ={})
    assert info.value.source == str(path)


def test_environment_overrides(tmp_path):
    path = write(tmp_path, {'c.yaml': 'redis: {url: "redis://10.0.0.1:7000/3"}\nhealth_checks: true\n'}) / 'c.yaml'
    config = load_config(str(path), environ={'OCCOPUS_REDIS_URL': 'redis://127.0.0.1:6399/0',
                                             'OCCOPUS_REDIS_PREFIX': 'p:', 'OCCOPUS_HEALTH_CHECKS': '0'})
    assert (config.redis_url, config.redis_prefix, config.health_checks) == \
        ('redis://127.0.0.1:6399/0', 'p:', False)


@needs_corpus
def test_legacy_config_is_read_safely():
    config = load_config(str(LEGACY_HOME / 'occopus_config.yaml'), environ={})
    assert config.redis_url == 'redis://localhost:6379/0'
    assert (config.rest_host, config.rest_port) == ('127.0.0.1', 5000)
    [warning] = config.warnings  # one short line: every command that reads the file prints it
    path = str(LEGACY_HOME / 'occopus_config.yaml')
    assert warning == (f'{path}: read as an Occopus 1.x configuration file (used: components.uds, '
                       'components.rest; nothing in it is executed)')
    assert len(warning) - len(path) <= 110


@needs_corpus
def test_legacy_redis_config():
    config = load_config(None, redis_config=str(LEGACY_HOME / 'redis_config.yaml'), environ={})
    assert config.redis_url == 'redis://localhost:6379/0'


def _legacy_copy(tmp_path, name, port):
    text = (LEGACY_HOME / name).read_text().replace('port: 6379', f'port: {port}')
    assert f'port: {port}' in text
    return write(tmp_path, {name: text}) / name


@needs_corpus
def test_import_with_legacy_config_file(occo, tmp_path):
    port = occo.redis.connection_pool.connection_kwargs['port']
    legacy = _legacy_copy(tmp_path, 'occopus_config.yaml', port)
    nodes = write(tmp_path, {'n.yaml': "'node_def:a':\n  - resource: {type: dummy}\n"}) / 'n.yaml'
    result = occo.run('occopus-import', '--cfg', legacy, nodes, env={'OCCOPUS_REDIS_URL': ''})
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'Successfully imported nodes: a\n'
    assert result.stderr.startswith('occopus-import: warning: ') and result.stderr.count('\n') == 1
    assert 'read as an Occopus 1.x configuration file' in result.stderr
    assert json.loads(occo.redis.hget(f'{occo.prefix}nodedefs:occotest', 'a'))['type'] == 'a'


@needs_corpus
def test_import_with_redisconf_and_url_override(occo, tmp_path):
    port = occo.redis.connection_pool.connection_kwargs['port']
    redisconf = _legacy_copy(tmp_path, 'redis_config.yaml', port)
    nodes = write(tmp_path, {'n.yaml': "'node_def:b':\n  - resource: {type: dummy}\n"}) / 'n.yaml'
    result = occo.run('occopus-import', '--redisconf', redisconf, nodes, env={'OCCOPUS_REDIS_URL': ''})
    assert result.returncode == 0, result.stderr
    assert occo.redis.hexists(f'{occo.prefix}nodedefs:occotest', 'b')
    # OCCOPUS_REDIS_URL overrides the Redis location of any configuration, --redisconf included.
    result = occo.run('occopus-import', '--redisconf', LEGACY_HOME / 'redis_config.yaml', nodes,
                      env={'OCCOPUS_REDIS_URL': 'redis://127.0.0.1:1/0'})
    assert result.returncode == 1 and 'cannot reach Redis at redis://127.0.0.1:1/0' in result.stderr


def test_namespace_from_configuration(occo, tmp_path):
    files = write(tmp_path, {'c.yaml': 'namespace: team-a\n',
                             'n.yaml': "'node_def:c':\n  - resource: {type: dummy}\n"})
    result = occo.run('occopus-import', '--cfg', files / 'c.yaml', files / 'n.yaml')
    assert result.returncode == 0, result.stderr
    assert occo.keys() == [f'{occo.prefix}nodedefs:team-a']


# -- authentication data ---------------------------------------------------------------------

AUTH = """\
resource:
  - type: ec2
    endpoint: https://ec2.a
    auth_data: {accesskey: A, secretkey: "${OCCO_TEST_SECRET}"}
  - type: ec2
    endpoint: https://ec2.b
    auth_data: {accesskey: B, secretkey: b-secret}
  - type: nova
    auth_data: {username: u, password: nova-secret}
  - type: nova
    name: special
    auth_data: {username: v, password: other-secret}
config_management:
  - type: chef
    auth_data:
      client_name: me
      client_key: !text_import {url: 'file://key.pem'}
"""


@pytest.fixture
def auth(tmp_path):
    write(tmp_path, {'auth.yaml': AUTH, 'key.pem': '-----BEGIN KEY-----\n'})
    return load_auth_data(str(tmp_path / 'auth.yaml'), environ={})


def test_auth_selects_the_one_matching_entry(auth):
    env = {'OCCO_TEST_SECRET': 'from-env'}
    assert auth.find('resource', {'type': 'ec2', 'endpoint': 'https://ec2.a', 'image_id': 'x'}, env) == \
        {'accesskey': 'A', 'secretkey': 'from-env'}
    assert auth.find('resource', {'type': 'ec2', 'endpoint': 'https://ec2.b'}) == \
        {'accesskey': 'B', 'secretkey': 'b-secret'}
    assert auth.find('resource', {'type': 'ec2', 'endpoint': 'https://elsewhere'}) is None
    assert auth.find('config_management', {'type': 'chef', 'endpoint': 'x', 'run_list': []}) == \
        {'client_name': 'me', 'client_key': '-----BEGIN KEY-----\n'}


def test_auth_ambiguity_is_an_error_without_secrets(auth):
    with pytest.raises(AuthError) as info:
        auth.find('resource', {'type': 'nova', 'name': 'special', 'endpoint': 'https://keystone'})
    message = str(info.value)
    assert "entries 3 (type: 'nova'), 4 (type: 'nova', name: 'special')" in message and "type 'nova', endpoint 'https://keystone', name 'special'" in message
    assert 'secret' not in message.replace('auth.yaml', '')


def test_auth_unset_variable_is_named_not_guessed(auth):
    with pytest.raises(AuthError, match=r'use \$\{OCCO_TEST_SECRET\}, which is not set'):
        auth.find('resource', {'type': 'ec2', 'endpoint': 'https://ec2.a'}, environ={})


def test_auth_repr_hides_credentials(auth):
    assert 'secret' not in repr(auth).replace('auth.yaml', '') and 'BEGIN KEY' not in repr(auth)


def test_auth_lookup_chain_and_errors(tmp_path, home):
    assert load_auth_data(None, environ={}).sections == {}
    write(home / '.occopus', {'auth_data.yaml': 'resource: [{type: dummy, auth_data: {}}]\n'})
    assert load_auth_data(None, environ={}).source == str(home / '.occopus' / 'auth_data.yaml')
    with pytest.raises(ConfigError, match="Specified authentication file does not exist: '/no/auth.yaml'"):
        load_auth_data('/no/auth.yaml', environ={})
    bad = write(tmp_path, {'bad.yaml': 'resource:\n  - type: ec2\n    accesskey: A\n'}) / 'bad.yaml'
    with pytest.raises(ConfigError, match=r"bad.yaml:2: entry 1 of 'resource' needs an auth_data mapping"):
        load_auth_data(str(bad), environ={})


@needs_corpus
def test_shipped_auth_file_loads():
    data = load_auth_data(str(LEGACY_HOME / 'auth_data.yaml'), environ={})
    assert data.find('resource', {'type': 'cloudsigma', 'endpoint': 'x'}) == \
        {'email': 'your@email.com', 'password': 'your_password'}
