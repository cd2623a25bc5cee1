"""occopus-rest-service over HTTP against a real Redis: the life of an infrastructure through
the API, errors with real status codes, hostile bodies, the bearer token, background builds
that fail or are deleted while they run, and a restart that resumes maintenance."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from conftest import write
from peer_rest import RestService, states
from test_build import import_ok

NODES = """\
'node_def:web':
  - resource: {type: dummy, boot_time: 0.2}
    health_check: {ping: false}
'node_def:db':
  - resource: {type: dummy, boot_time: 0.2}
    health_check: {ping: false}
'node_def:slow':
  - resource: {type: dummy, boot_time: 60}
    health_check: {ping: false}
'node_def:broken':
  - resource: {type: dummy, fail_rate: 1}
    health_check: {ping: false}
"""
INFRA = """\
infra_name: shop
user_id: someone@example.org
nodes:
  - {name: db, type: db}
  - {name: web, type: web, scaling: {min: 1, max: 5}}
dependencies:
  - [web, db]
"""


@pytest.fixture
def nodes(occo, tmp_path: Path) -> None:
    import_ok(occo, write(tmp_path, {'nodes.yaml': NODES}) / 'nodes.yaml')


def created(rest: RestService, text: str = INFRA) -> str:
    answer = rest.call('POST', '/infrastructures/', data=text.encode())
    assert answer.status_code == 200, answer.text
    return answer.json()['infraid']


def ready(body) -> bool:
    return bool(body) and all(s == 'ready' for v in states(body).values() for s in v)


def error(answer: requests.Response, status: int) -> str:
    assert answer.status_code == status, (answer.status_code, answer.text)
    body = answer.json()
    assert body['status_code'] == status and set(body) == {'status_code', 'reason', 'message'}
    return body['message']


def test_the_life_of_an_infrastructure_through_the_api(occo, rest, nodes):
    infra = created(rest)
    assert infra in rest.call('GET', '/infrastructures/').json()['infrastructures']
    body = rest.wait_for(infra, lambda b: states(b) == {'db': ['ready'], 'web': ['ready']})
    assert body['web']['scaling'] == {'actual': 1, 'target': 1, 'min': 1, 'max': 5}

    up = rest.call('POST', f'/infrastructures/{infra}/scaleup/web/3')
    assert up.json() == {'method': 'scaleup', 'infraid': infra, 'nodename': 'web', 'count': 3}
    rest.wait_for(infra, lambda b: states(b).get('web') == ['ready'] * 4)
    assert len(occo.dummy_cloud(infra)) == 5

    to = rest.call('POST', f'/infrastructures/{infra}/scaleto/web/2')
    assert to.json() == {'method': 'scaleto', 'infraid': infra, 'nodename': 'web', 'count': 2}
    body = rest.wait_for(infra, lambda b: states(b).get('web') == ['ready'] * 2)
    victim = sorted(body['web']['instances'])[0]
    down = rest.call('POST', f'/infrastructures/{infra}/scaledown/web/{victim}')
    assert down.json() == {'method': 'scaledown', 'infraid': infra, 'nodename': 'web', 'nodeid': victim}
    body = rest.wait_for(infra, lambda b: victim not in b['web']['instances'])
    assert len(body['web']['instances']) == 1 and body['web']['scaling']['target'] == 1

    assert rest.call('POST', f'/infrastructures/{infra}/detach').json() == {'infraid': infra}
    assert 'is not maintained' in error(rest.call('POST', f'/infrastructures/{infra}/detach'), 409)
    rest.call('POST', f'/infrastructures/{infra}/scaleup/web')
    time.sleep(1.5)  # three pass intervals: a detached infrastructure is left alone
    assert len(rest.call('GET', f'/infrastructures/{infra}').json()['web']['instances']) == 1
    assert rest.call('POST', f'/infrastructures/{infra}/attach').json() == {'infraid': infra}
    assert 'already being maintained' in error(rest.call('POST', f'/infrastructures/{infra}/attach'), 409)
    rest.wait_for(infra, lambda b: len(b['web']['instances']) == 2)

    events = rest.call('GET', f'/infrastructures/{infra}/events').json()
    kinds = [e['event'] for e in events['events']]
    assert events['infraid'] == infra and kinds[0] == 'infra_created' and 'node_dropped' in kinds
    assert rest.call('POST', f'/infrastructures/{infra}/notify',
                     json={'type': 'fcm', 'fcm': {'api_key': 'k'}}).json() == {'infraid': infra}

    assert rest.call('DELETE', f'/infrastructures/{infra}').json() == {'infraid': infra}
    assert 'Unknown infrastructure' in error(rest.call('GET', f'/infrastructures/{infra}'), 404)
    assert infra not in rest.call('GET', '/infrastructures/').json()['infrastructures']
    assert occo.dummy_cloud(infra) == {} and occo.infra_keys(infra) == []


def test_errors_have_real_status_codes_and_the_original_fields(occo, rest, nodes):
    infra = created(rest)
    assert 'Empty POST data' in error(rest.call('POST', '/infrastructures/', data=b''), 400)
    assert 'Unknown infrastructure: "nope"' in error(rest.call('GET', '/infrastructures/nope'), 404)
    assert 'Unknown infrastructure' in error(rest.call('DELETE', '/infrastructures/nope'), 404)
    assert "node 'nosuch' does not exist" in error(
        rest.call('POST', f'/infrastructures/{infra}/scaleup/nosuch'), 404)
    for bad in ('abc', '-1', '0', '99999999999999999999'):
        error(rest.call('POST', f'/infrastructures/{infra}/scaleup/web/{bad}'), 400)
    error(rest.call('POST', f'/infrastructures/{infra}/scaleto/web/-3'), 400)
    assert '1 to 256 characters' in error(
        rest.call('POST', f"/infrastructures/{infra}/scaledown/web/{'x' * 300}"), 400)
    error(rest.call('GET', f'/infrastructures/{infra}/events?count=0'), 400)
    assert 'unknown query parameter(s): cuont (this endpoint takes count)' in error(
        rest.call('GET', f'/infrastructures/{infra}/events?cuont=3'), 400)
    error(rest.call('POST', f'/infrastructures/{infra}/notify', data=b'[1, 2]'), 400)
    assert 'infra_name' in error(rest.call('POST', '/infrastructures/', data=b'nodes: []\n'), 400)
    assert 'has no imported node definition' in error(rest.call(
        'POST', '/infrastructures/', data=b'infra_name: x\nuser_id: u\nnodes: [{name: a, type: nothing}]\n'),
        400).lower()
    assert 'UTF-8' in error(rest.call('POST', '/infrastructures/', data=b'\xff\xfe\x00garbage'), 400)
    assert 'control character' in error(rest.call('POST', '/infrastructures/', data=b'a: "\x1b[31m"\x07\n'), 400)
    assert 'at most' in error(rest.call('POST', '/infrastructures/', data=b'#' * (2 << 20)), 413)
    assert error(rest.call('GET', '/no/such/path'), 404)
    assert rest.call('GET', f'/infrastructures/{infra}/events').status_code == 200


def test_a_python_tag_in_the_body_is_refused_and_runs_nothing(occo, rest, nodes, tmp_path):
    marker = tmp_path / 'pwned'
    for body in (f'!!python/object/apply:os.system ["touch {marker}"]',
                 f'infra_name: !!python/object/apply:os.system ["touch {marker}"]\n',
                 f'infra_name: x\nuser_id: !text_import {{url: "file:///etc/passwd"}}\n'):
        message = error(rest.call('POST', '/infrastructures/', data=body.encode()), 400)
        assert 'root:' not in message
    assert not marker.exists()
    assert rest.call('GET', '/infrastructures/').json() == {'infrastructures': []}


def test_the_bearer_token_guards_every_endpoint_but_health(occo, nodes):
    service = RestService(occo, env={'OCCOPUS_REST_TOKEN': 's3cret-token'}).start()
    try:
        assert service.call('GET', '/health').json()['status'] == 'ok'
        for path in ('/infrastructures/', '/openapi.json', '/infrastructures/x/events'):
            assert 'Bearer' in error(service.call('GET', path), 401)
            error(service.call('GET', path, token='wrong'), 401)
        assert 'Bearer' in error(service.call('POST', '/infrastructures/', data=INFRA.encode()), 401)
        assert service.call('GET', '/infrastructures/', token='s3cret-token').json() == {'infrastructures': []}
        service.token = 's3cret-token'
        infra = created(service)
        service.wait_for(infra, ready)
        assert service.call('DELETE', f'/infrastructures/{infra}').status_code == 200
    finally:
        service.stop()
    assert 's3cret-token' not in service.log()


def test_a_build_that_fails_in_the_background_says_why(occo, rest, nodes):
    infra = created(rest, INFRA.replace('{name: db, type: db}', '{name: db, type: broken}'))
    deadline = time.monotonic() + 30
    while (answer := rest.call('GET', f'/infrastructures/{infra}')).status_code == 200:
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.2)
    message = error(answer, 410)
    assert message.startswith('the build failed and was rolled back: ') and 'db' in message
    told = rest.call('GET', f'/infrastructures/{infra}/events').json()['events']
    assert told[-1]['event'] == 'build_failed' and told[-1]['reason'] in message
    assert any('Submitted infrastructure' in e['reason'] for e in told[:-1])
    assert occo.dummy_cloud(infra) == {}
    assert infra not in rest.call('GET', '/infrastructures/').json()['infrastructures']
    assert rest.call('DELETE', f'/infrastructures/{infra}').json() == {'infraid': infra}
    error(rest.call('GET', f'/infrastructures/{infra}'), 404)


def test_delete_during_a_build_cancels_it_and_leaves_nothing(occo, rest, nodes):
    infra = created(rest, INFRA.replace('type: web,', 'type: slow,'))
    rest.wait_for(infra, lambda b: 'web' in b)  # its slow instance is booting
    started = time.monotonic()
    assert rest.call('DELETE', f'/infrastructures/{infra}').json() == {'infraid': infra}
    assert time.monotonic() - started < 30  # not the 60 s boot
    assert occo.dummy_cloud(infra) == {} and occo.infra_keys(infra) == []
    error(rest.call('GET', f'/infrastructures/{infra}'), 404)


def test_a_restarted_service_resumes_maintenance_and_deleted_ones_stay_gone(occo, nodes):
    first = RestService(occo).start()
    try:
        kept = created(first)
        first.wait_for(kept, ready)
        gone = [created(first) for _ in range(5)]
        for infra in gone:
            assert first.call('DELETE', f'/infrastructures/{infra}').status_code == 200
            error(first.call('GET', f'/infrastructures/{infra}'), 404)
    finally:
        first.stop()
    # while no service runs, a request is recorded (occopus-scale does the same)
    scaled = occo.run('occopus-scale', '-i', kept, '-n', 'web', '-c', '2')
    assert scaled.returncode == 0, scaled.stderr
    second = RestService(occo, name='rest2').start()
    try:
        second.wait_for(kept, lambda b: states(b).get('web') == ['ready'] * 3)
        listed = second.call('GET', '/infrastructures/').json()['infrastructures']
        assert listed == [kept]
        for infra in gone:
            error(second.call('GET', f'/infrastructures/{infra}'), 404)
            assert occo.dummy_cloud(infra) == {}
        assert second.call('DELETE', f'/infrastructures/{kept}').status_code == 200
    finally:
        second.stop()


def test_openapi_describes_every_endpoint(occo, rest):
    spec = rest.call('GET', '/openapi.json').json()
    paths = spec['paths']
    for path, methods in {
            '/infrastructures/': {'get', 'post'}, '/infrastructures/{infraid}': {'get', 'delete'},
            '/infrastructures/{infraid}/scaleup/{nodename}': {'post'},
            '/infrastructures/{infraid}/scaleup/{nodename}/{count}': {'post'},
            '/infrastructures/{infraid}/scaledown/{nodename}': {'post'},
            '/infrastructures/{infraid}/scaledown/{nodename}/{nodeid}': {'post'},
            '/infrastructures/{infraid}/scaleto/{nodename}/{count}': {'post'},
            '/infrastructures/{infraid}/attach': {'post'}, '/infrastructures/{infraid}/detach': {'post'},
            '/infrastructures/{infraid}/notify': {'post'}, '/infrastructures/{infraid}/events': {'get'},
            '/health': {'get'}}.items():
        assert set(paths[path]) == methods, path
        for method in methods:
            assert '200' in paths[path][method]['responses']
    assert json.dumps(spec).count('"404"') >= 10


def test_delete_on_another_replica_cancels_the_build_there(occo, nodes):
    builder = RestService(occo, name='builder').start()
    other = RestService(occo, name='other').start()
    try:
        infra = created(builder, INFRA.replace('type: web,', 'type: slow,'))
        builder.wait_for(infra, lambda b: 'web' in b)  # its slow instance is booting there
        started = time.monotonic()
        assert other.call('DELETE', f'/infrastructures/{infra}').json() == {'infraid': infra}
        assert time.monotonic() - started < 30  # not the 60 s boot, nor a lease time-out
        assert occo.dummy_cloud(infra) == {} and occo.infra_keys(infra) == []
        error(builder.call('GET', f'/infrastructures/{infra}'), 404)
    finally:
        builder.stop()
        other.stop()


def test_cors_is_off_unless_origins_are_configured(occo, rest):
    asked = {'Origin': 'http://portal.example', 'Access-Control-Request-Method': 'GET'}
    answer = rest.call('OPTIONS', '/infrastructures/', headers=asked)
    assert 'access-control-allow-origin' not in answer.headers
    assert 'access-control-allow-origin' not in rest.call(
        'GET', '/infrastructures/', headers={'Origin': 'http://portal.example'}).headers
    open_to = RestService(occo, name='cors',
                          config='rest: {interval: 0.5, cors_origins: [http://portal.example]}\n').start()
    try:
        answer = open_to.call('OPTIONS', '/infrastructures/', headers=asked)
        assert answer.headers.get('access-control-allow-origin') == 'http://portal.example'
        other = open_to.call('OPTIONS', '/infrastructures/', headers=dict(asked, Origin='http://evil.example'))
        assert 'access-control-allow-origin' not in other.headers
    finally:
        open_to.stop()


def test_sigterm_cancels_the_builds_under_way_and_rolls_them_back(occo, nodes):
    service = RestService(occo, name='stopped').start()
    infra = created(service, INFRA.replace('type: web,', 'type: slow,'))
    service.wait_for(infra, lambda b: 'web' in b)  # its slow instance is booting
    process = service.process
    process.terminate()
    assert process.wait(60) == 0, service.log()[-2000:]
    assert occo.dummy_cloud(infra) == {} and occo.infra_keys(infra) == []
    assert 'Traceback' not in service.log()


def test_a_deeply_nested_notify_body_is_a_400(occo, rest, nodes):
    infra = created(rest)
    body = '{"a":' * 100000 + '1' + '}' * 100000
    assert 'JSON object' in error(rest.call('POST', f'/infrastructures/{infra}/notify', data=body.encode()), 400)
    assert 'Traceback' not in rest.log()
