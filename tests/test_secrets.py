"""Secrets in URLs and configuration values never reach a message, a progress line or an event
(issue 8, point 1), and a Redis URL with a database that is not a number is refused (point 7)."""
from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from conftest import write
from occo.config import load_config
from occo.errors import ConfigError, StoreError
from occo.redact import excerpt, is_secret_name, mask_url, mask_urls, printable
from occo.store import ClusterTarget, SentinelTarget, Store

INFRA = 'infra_name: s\nuser_id: u\nnodes: [{name: a, type: a}]\n'


# -- the one function ------------------------------------------------------------------------

@pytest.mark.parametrize('url, shown', [
    ('redis://host:1/0?password=X', 'redis://host:1/0?password=***'),
    ('unix:///run/redis.sock?password=X&db=2', 'unix:///run/redis.sock?password=***&db=2'),
    ('redis://:pw@127.0.0.1:6379/0', 'redis://:***@127.0.0.1:6379/0'),
    ('rediss://user:pw@h:6380/1?ssl_cert_reqs=none', 'rediss://user:***@h:6380/1?ssl_cert_reqs=none'),
    ('http://10.0.0.1:8099/?token=abc&page=2', 'http://10.0.0.1:8099/?token=***&page=2'),
    ('http://h/?API_KEY=1&access_token=2&X-Amz-Signature=3&Credential=4&passwd=5&Secret=6',
     'http://h/?API_KEY=***&access_token=***&X-Amz-Signature=***&Credential=***&passwd=***&Secret=***'),
    ('http://h/?pass=1&auth=2&sig=3&user=me', 'http://h/?pass=***&auth=***&sig=***&user=me'),
    ('https://h/cb#access_token=abc&state=1', 'https://h/cb#access_token=***&state=1'),
    ('http://u:p@[::1]:80/x?y=1', 'http://u:***@[::1]:80/x?y=1'),
    ('http://h/?token=', 'http://h/?token='),
    ('http://h:8080/index.html', 'http://h:8080/index.html'),
])
def test_mask_url(url, shown):
    assert mask_url(url) == shown


def test_secret_names():
    for name in ('password', 'PASSWORD', 'api_key', 'access_token', 'client-secret', 'authkey',
                 'x-amz-credential', 'db_pass'):
        assert is_secret_name(name), name
    for name in ('user', 'page', 'db', 'host', 'name'):
        assert not is_secret_name(name), name


def test_mask_urls_in_text():
    assert mask_urls('GET http://h:1/?token=abc failed; see https://x/?a=1') == \
        'GET http://h:1/?token=*** failed; see https://x/?a=1'
    # punctuation after a URL ends the sentence, not the URL (a port followed by a colon)
    assert mask_urls('docker at tcp://127.0.0.1:2375: refused') == 'docker at tcp://127.0.0.1:2375: refused'
    assert mask_urls('(see http://u:pw@h:1/x?token=abc), then.') == '(see http://u:***@h:1/x?token=***), then.'


def test_printable_and_excerpt():
    assert printable('a\x1b[31mb\r\u202ec\x00\x85') == 'a\\x1b[31mb\\x0d\\u202ec\\x00\\x85'
    assert printable('a\nb', keep_newlines=True) == 'a\nb'
    long = excerpt('root:x:0:0:root:/root:/bin/bash\n' * 50)
    assert len(long) <= 61 and long.endswith('…') and '\n' not in long


# -- Redis URLs ------------------------------------------------------------------------------

@pytest.mark.parametrize('url', [
    'redis://127.0.0.1:1/0?password=SECRETVALUE',
    'unix:///nonexistent/redis.sock?password=SECRETVALUE',
    'redis://:SECRETVALUE@127.0.0.1:1/0',
])
def test_unreachable_redis_error_masks_the_password(occo, tmp_path, url):
    path = write(tmp_path, {'infra.yaml': INFRA}) / 'infra.yaml'
    result = occo.run('occopus-build', '--dry-run', path, env={'OCCOPUS_REDIS_URL': url})
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert 'SECRETVALUE' not in result.stderr
    assert '***' in result.stderr
    assert result.stderr.count('\n') == 1


@pytest.mark.parametrize('url', [
    'redis+sentinel://:SECRETVALUE@127.0.0.1:1,127.0.0.1:2/occo/0',
    'redis+cluster://:SECRETVALUE@127.0.0.1:1,127.0.0.1:2',
])
def test_unreachable_sentinels_or_cluster_error_masks_the_password(occo, url):
    result = occo.run('occopus-manage', '-l', env={'OCCOPUS_REDIS_URL': url})
    assert result.returncode == 1
    assert result.stderr.startswith(f"occopus-manage: error: cannot reach Redis at {url.split(':SECRET')[0]}:***@")
    assert 'SECRETVALUE' not in result.stderr and result.stderr.count('\n') == 1
    assert len(result.stderr) < 400, result.stderr
    if 'sentinel' in url:
        assert ('no Sentinel named a primary for the service (none answered, or none monitors '
                'it)') in result.stderr


@pytest.mark.parametrize('url, problem', [
    ('redis+cluster://', 'each server must be host:port, e.g. redis+cluster://10.0.0.1:7000,10.0.0.2:7000'),
    ('redis+cluster://127.0.0.1:99999', 'each server must be host:port, e.g. redis+cluster://'),
    ('redis+cluster://127.0.0.1:1,,127.0.0.1:2', 'each server must be host:port'),
    ('redis+cluster://:SECRETVALUE@127.0.0.1:1/5', 'a cluster has one database: nothing may follow '
                                                  'the nodes but "/" or "/0"'),
    ('redis+sentinel://127.0.0.1:1', 'the URL must name the monitored service after the Sentinels'),
    ('redis+sentinel://:SECRETVALUE@127.0.0.1:x/occo', 'each server must be host:port, e.g. '
                                                      'redis+sentinel://10.0.0.1:26379'),
    ('redis+sentinel://127.0.0.1:1/occo/abc', 'the database must be a number'),
    ('redis+cluster://127.0.0.1:1\x00', 'each server must be host:port'),
])
def test_malformed_sentinel_and_cluster_urls(occo, url, problem):
    before = occo.snapshot()
    result = occo.run('occopus-manage', '-l', env={'OCCOPUS_REDIS_URL': url.replace('\x00', '\x01')})
    assert result.returncode == 1
    assert result.stderr.startswith('occopus-manage: error: OCCOPUS_REDIS_URL must be a Redis URL such '
                                    f'as redis://127.0.0.1:6379/0: {problem}'), result.stderr
    assert 'SECRETVALUE' not in result.stderr and result.stderr.count('\n') == 1
    assert occo.snapshot() == before


def test_a_huge_cluster_url_is_shown_short(occo):
    url = 'redis+cluster://127.0.0.1:1,' + ','.join(f'127.0.0.{n % 250}:{1000 + n}' for n in range(500))
    result = occo.run('occopus-manage', '-l', env={'OCCOPUS_REDIS_URL': url})
    assert result.returncode == 1 and result.stderr.count('\n') == 1
    assert result.stderr.startswith('occopus-manage: error: cannot reach Redis at redis+cluster://127.0.0.1:1,')
    assert len(result.stderr) < 400, len(result.stderr)


@pytest.mark.parametrize('url, shown, login', [
    ('redis+cluster://SECRETVALUE@127.0.0.1:1', 'redis+cluster://:***@127.0.0.1:1', (None, 'SECRETVALUE')),
    ('redis+cluster://:SECRETVALUE@127.0.0.1:1/', 'redis+cluster://:***@127.0.0.1:1/', (None, 'SECRETVALUE')),
    ('redis+cluster://ops:SECRETVALUE@127.0.0.1:1,127.0.0.1:2', 'redis+cluster://ops:***@127.0.0.1:1,127.0.0.1:2',
     ('ops', 'SECRETVALUE')),
    ('redis+sentinel://ops:SECRET%40VALUE@127.0.0.1:1/occo/0', 'redis+sentinel://ops:***@127.0.0.1:1/occo/0',
     ('ops', 'SECRET@VALUE')),
])
def test_logins_of_sentinel_and_cluster_urls_are_read_and_masked(url, shown, login):
    assert Store.connect(url).url == shown
    target = (ClusterTarget if url.startswith('redis+cluster') else SentinelTarget).parse(url)
    assert (target.login.username, target.login.password) == login
    assert 'SECRET' not in repr(target)


def test_store_masks_its_url():
    store = Store.connect('redis://127.0.0.1:1/0?password=SECRETVALUE')
    assert store.url == 'redis://127.0.0.1:1/0?password=***'


@pytest.mark.parametrize('url', ['redis://127.0.0.1:6379/abc', 'redis://127.0.0.1:6379/0?db=x',
                                 'unix:///run/redis.sock?db=one', 'redis://h:1/0/1', 'redis://h:1/-1'])
def test_database_that_is_not_a_number_is_refused(url):
    with pytest.raises(StoreError, match=r'the database must be a number'):
        Store.connect(url)


def test_database_that_is_not_a_number_is_refused_by_the_commands(occo, tmp_path):
    path = write(tmp_path, {'infra.yaml': INFRA}) / 'infra.yaml'
    before = occo.snapshot()
    result = occo.run('occopus-build', '--dry-run', path,
                      env={'OCCOPUS_REDIS_URL': 'redis://127.0.0.1:6379/abc'})
    assert result.returncode == 1
    assert result.stderr == ('occopus-build: error: OCCOPUS_REDIS_URL must be a Redis URL such as '
                             'redis://127.0.0.1:6379/0: the database must be a number (e.g. '
                             "redis://127.0.0.1:6379/0 or unix:///run/redis.sock?db=0), got 'abc'\n")
    config = write(tmp_path, {'c.yaml': 'redis: {url: "redis://:hunter2@127.0.0.1:6379/abc"}\n'}) / 'c.yaml'
    result = occo.run('occopus-build', '--cfg', config, '--dry-run', path, env={'OCCOPUS_REDIS_URL': ''})
    assert result.returncode == 1
    assert result.stderr.startswith(f"occopus-build: error: {config}:1: 'redis.url' must be a Redis URL")
    assert "the database must be a number" in result.stderr
    assert 'hunter2' not in result.stderr and 'Traceback' not in result.stderr
    assert occo.snapshot() == before


def test_legacy_database_that_is_not_a_number_is_refused(tmp_path):
    path = write(tmp_path, {'c.yaml': 'components:\n  uds: !UDS {host: h, port: 1, db: abc}\n'}) / 'c.yaml'
    with pytest.raises(ConfigError, match=r"the Redis database \(db\) must be a number such as 0, got 'abc'"):
        load_config(str(path), environ={})


# -- configuration values that may be secrets ------------------------------------------------

@pytest.mark.parametrize('text, message', [
    ('redis: {url: "http://user:hunter2@host/0"}\n',
     "'redis.url' must be a Redis URL such as redis://127.0.0.1:6379/0 (schemes: redis://, "
     "rediss://, unix://, redis+sentinel://, redis+cluster://; the database, if given, a "
     'number); it must start with redis://, rediss://, unix://, redis+sentinel://, '
     'redis+cluster:// (e.g. redis://127.0.0.1:6379/0) (the value is not shown, as it may hold '
     'a secret)'),
    ('redis: {url: 12345}\n', "'redis.url' must be a Redis URL"),
    ('rest: {token: 12345}\n', "'rest.token' must be non-empty text; got a number (the value is "
                               'not shown, as it may hold a secret)'),
    ('rest: {token: [hunter2]}\n', "'rest.token' must be non-empty text; got a list"),
    ('rest: {token: ""}\n', "'rest.token' must be non-empty text; got empty text"),
])
def test_rejected_secret_values_are_not_echoed(tmp_path, text, message):
    path = write(tmp_path, {'c.yaml': text}) / 'c.yaml'
    with pytest.raises(ConfigError) as info:
        load_config(str(path), environ={})
    assert message in str(info.value)
    for secret in ('hunter2', '12345'):
        assert secret not in str(info.value)


# -- health-check URLs -----------------------------------------------------------------------

WEB = """\
'node_def:web':
  - resource: {type: local}
    health_check:
      ping: false
      urls: ['http://127.0.0.1:PORT/?token={{ variables.tok }}&page=1']
      timeout: 1
"""


class _Answers(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web_server():
    """An HTTP server on the loopback whose answer (``.status``) the test sets."""
    handler = type('Answers', (_Answers,), {'status': 200})
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def test_health_check_url_token_is_masked_everywhere(occo, tmp_path, web_server):
    """A failing url check shows the URL in progress lines, events and --events: never the
    token rendered into its query."""
    server, handler = web_server
    write(tmp_path, {'nodes.yaml': WEB.replace('PORT', str(server.server_address[1])),
                     'infra.yaml': 'infra_name: w\nuser_id: u\nvariables: {tok: TOPSECRET42}\n'
                                   'nodes: [{name: web, type: web}]\n'})
    assert occo.run('occopus-import', tmp_path / 'nodes.yaml').returncode == 0
    health = {'OCCOPUS_HEALTH_CHECKS': '1'}
    built = occo.run('occopus-build', '-i', 'tokens', tmp_path / 'infra.yaml', env=health)
    assert built.returncode == 0, built.stderr
    handler.status = 500
    seen = ''
    for _ in range(5):  # passes until the failing check has been recorded (its timeout is 1 s)
        passed = occo.run('occopus-manage', '-i', 'tokens', env=health)
        seen += passed.stdout + passed.stderr
        events = occo.redis.xrange(f'{occo.prefix}{{tokens}}:events')
        if any('answers HTTP 500' in str(fields) for _, fields in events):
            break
        time.sleep(0.5)
    assert 'Traceback' not in seen and 'TOPSECRET42' not in seen
    assert any('/?token=***&page=1 answers HTTP 500' in str(fields) for _, fields in events), events
    assert not any('TOPSECRET42' in str(fields) for _, fields in events)
    shown = occo.run('occopus-manage', '-i', 'tokens', '--events')
    assert shown.returncode == 0, shown.stderr
    assert '/?token=***&page=1 answers HTTP 500' in shown.stdout
    assert 'TOPSECRET42' not in shown.stdout + shown.stderr
    handler.status = 200
    assert occo.run('occopus-destroy', '-i', 'tokens').returncode == 0


def test_health_check_url_token_is_masked_in_progress_lines(occo, tmp_path):
    with socket.socket() as probe:  # a loopback port where nothing listens
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    write(tmp_path, {'nodes.yaml': WEB.replace('PORT', str(port)),
                     'infra.yaml': 'infra_name: w\nuser_id: u\nvariables: {tok: TOPSECRET42}\n'
                                   'nodes: [{name: web, type: web}]\n'})
    assert occo.run('occopus-import', tmp_path / 'nodes.yaml').returncode == 0
    result = occo.run('occopus-build', '-i', 'tokens', tmp_path / 'infra.yaml',
                      env={'OCCOPUS_HEALTH_CHECKS': '1'})
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert 'TOPSECRET42' not in result.stderr + result.stdout
    assert (f'http://127.0.0.1:{port}/?token=***&page=1 does not answer (ConnectionError)'
            in result.stderr), result.stderr


def test_values_of_the_authentication_data_are_masked_wherever_a_url_shows_them(tmp_path, monkeypatch):
    from occo import redact
    from occo.config import load_auth_data
    monkeypatch.setattr(redact, '_KNOWN', set())
    monkeypatch.setenv('OCCO_TEST_SECRET', 'from-the-environment-42')
    auth = tmp_path / 'auth.yaml'
    auth.write_text('resource:\n  - type: dummy\n    auth_data: {username: someone, '
                    'password: cOrrect-h0rse, other: "${OCCO_TEST_SECRET}"}\n')
    data = load_auth_data(str(auth), environ={'OCCO_TEST_SECRET': 'from-the-environment-42'})
    url = 'http://10.0.0.1:8099/status?p=cOrrect-h0rse&q=from-the-environment-42'
    assert redact.mask_url(url) == 'http://10.0.0.1:8099/status?p=***&q=from-the-environment-42'
    data.find('resource', {'type': 'dummy'}, environ={'OCCO_TEST_SECRET': 'from-the-environment-42'})
    assert redact.mask_url(url) == 'http://10.0.0.1:8099/status?p=***&q=***'
    assert redact.mask_urls(f'GET {url} failed') == 'GET http://10.0.0.1:8099/status?p=***&q=*** failed'
