"""The cloudsigma resource handler against the CloudSigma API 2.0 peer of
:mod:`cloudsigmapeer`: the cloudsigma-ping tutorial, a killed build's leftovers, error paths
each with a full rollback, throttling, lost and hostile answers, seen as a user sees them
(exit codes, one-line messages, Redis) and as the cloud holds them afterwards."""
from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import pytest

from cloudsigmapeer import CDROM_ID, FIREWALL_POLICY_ID, LIBDRIVE_ID, PUBKEY_ID
from conftest import (CORPUS, chain_infra, destroy_listing, failure_line, fill_in,
                      kill_build_when, records, write)
from test_build import built_id
from occo.errors import AuthError, CloudError, TransientCloudError
from occo.instances import CloudState, Instance
from occo.plugins.resources.base import CreateRequest, HandlerContext
from occo.plugins.resources.cloudsigma import CloudSigmaHandler, api_base

UUID = r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
DESCRIPTION = {'cpu': 2000, 'mem': 1073741824, 'vnc_password': 'secret', 'pubkeys': [PUBKEY_ID],
               'nics': [{'firewall_policy': FIREWALL_POLICY_ID, 'ip_v4_conf': {'conf': 'dhcp'}}]}


def auth(occo, login, password: Optional[str] = None) -> None:
    write(occo.home, {'.occopus/auth_data.yaml': (
        'resource:\n  - type: cloudsigma\n    auth_data: {email: "%s", password: "%s"}\n'
        % (login.email, password or login.password))})


def resource(peer, **keys: Any) -> Dict[str, Any]:
    section = {'type': 'cloudsigma', 'endpoint': peer.api, 'libdrive_id': LIBDRIVE_ID,
               'description': dict(DESCRIPTION)}
    section.update(keys)
    return {k: v for k, v in section.items() if v is not None}






def left(peer, login) -> Dict[str, List[Any]]:
    """What the account still holds (servers, drives)."""
    state = peer.state(login)
    return {kind: state[kind] for kind in ('servers', 'drives') if state[kind]}






def assert_rolled_back(occo, peer, login, infra_id: str, *outputs: str) -> None:
    assert left(peer, login) == {}
    assert occo.infra_keys(infra_id) == []
    for text in outputs + (str(occo.snapshot()),):
        assert login.password not in text


@pytest.fixture
def peer(cloudsigma_peer):
    """The CloudSigma peer of this test process."""
    return cloudsigma_peer


@pytest.fixture
def login(cloudsigma_account):
    """This test's own account of the peer."""
    return cloudsigma_account


# -- the tutorial ------------------------------------------------------------------------------

def tutorial(folder: Path, endpoint: str) -> Path:
    """The cloudsigma-ping tutorial with only its endpoint and ids pointed at the peer."""
    target = folder / 'cloudsigma-ping'
    shutil.copytree(CORPUS / 'cloudsigma-ping', target)
    fill_in(target / 'nodes' / 'node_definitions.yaml', {
        'endpoint_of_cloudsigma_interface_of_your_cloud': endpoint,
        'id_of_your_library_drive_on_your_target_cloud': LIBDRIVE_ID,
        'id_of_your_pubkey_on_your_target_cloud': PUBKEY_ID,
        'id_of_your_network_policy_on_your_target_cloud': FIREWALL_POLICY_ID})
    return target


@pytest.mark.parametrize('slash', ['with', 'without'])
def test_cloudsigma_ping_tutorial_builds_reports_and_destroys(occo, tmp_path, peer, login, slash):
    endpoint = peer.api if slash == 'with' else peer.api.rstrip('/')
    auth(occo, login)
    folder = tutorial(tmp_path, endpoint)
    assert occo.run('occopus-import', folder / 'nodes' / 'node_definitions.yaml').returncode == 0
    result = occo.run('occopus-build', '--listips', folder / 'infra-cloudsigma-ping.yaml')
    infra_id = built_id(result)

    state = peer.state(login)
    servers = {s['meta']['occopus_node']: s for s in state['servers']}
    assert sorted(servers) == ['ping-receiver', 'ping-sender']
    by_node = {r['node']: r for r in records(occo, infra_id)}
    drives = {d['uuid']: d for d in state['drives']}
    assert len(drives) == 2
    for node, server in servers.items():
        record = by_node[node]
        assert server['status'] == 'running' and record['state'] == 'ready'
        assert record['instance_id'] == server['uuid']
        assert (server['cpu'], server['mem'], server['vnc_password']) == (2000, 1 << 30, 'secret')
        assert [k['uuid'] for k in server['pubkeys']] == [PUBKEY_ID]
        assert server['nics'][0]['firewall_policy'] == FIREWALL_POLICY_ID
        assert server['name'] == (f'occopus-cloudsigma-ping-in-{infra_id[:8]}-{node}-'
                                  f"{record['node_id'][:8]}")
        meta = server['meta']
        assert (meta['occopus_infra_id'], meta['occopus_node_id']) == (infra_id, record['node_id'])
        assert meta['base64_fields'] == 'cloudinit-user-data'
        assert server['user_data']['cloudinit-user-data'] == base64.b64decode(
            meta['cloudinit-user-data']).decode()
        [attached] = server['drives']
        drive = drives[attached['drive']['uuid']]
        assert (attached['boot_order'], attached['device']) == (1, 'virtio')
        assert drive['name'] == f"occopus:{infra_id}:{record['node_id']}"
        assert drive['status'] == 'mounted' and drive['size'] == 10 << 30
        assert record['extra'] == {'drive_id': drive['uuid']}
    receiver_ip = servers['ping-receiver']['runtime']['nics'][0]['ip_v4']['uuid']
    assert by_node['ping-receiver']['addresses'] == [receiver_ip]
    sender_data = servers['ping-sender']['user_data']['cloudinit-user-data']
    assert sender_data.startswith('#cloud-config\n')
    assert f'ping {receiver_ip} -c 5' in sender_data
    assert 'Hello World! I am the sender node' in sender_data
    assert re.search(rf'^    {re.escape(receiver_ip)}$', result.stdout, re.M)

    report = occo.run('occopus-manage', '-r', '-i', infra_id)
    assert report.returncode == 0, report.stderr
    assert receiver_ip in report.stdout and 'ping-sender' in report.stdout

    destroyed = occo.run('occopus-destroy', '-i', infra_id)
    assert destroyed.returncode == 0, destroyed.stderr
    assert destroyed.stdout == f'Destroyed infrastructure {infra_id} (2 instances)\n'
    assert_rolled_back(occo, peer, login, infra_id, result.stdout, result.stderr, report.stdout,
                       report.stderr, destroyed.stdout, destroyed.stderr)


# -- a build killed during a create ----------------------------------------------------------

@pytest.mark.parametrize('route', ['clone', 'create_server'])
def test_a_killed_builds_leftovers_are_found_and_removed(occo, tmp_path, peer, login, route):
    """SIGKILL while the peer holds the answer of the clone (the drive exists) or of the server
    create (the server and its drive exist): the record has no id; destroy finds what the
    build made by the drive's name and the server's meta, and removes it."""
    auth(occo, login)
    peer.config(login, hold=route)
    path = chain_infra(occo, tmp_path, {'a': resource(peer)})
    infra_id = f'killed-{route}'
    kill_build_when(occo, peer.held(login), '-i', infra_id, path)
    peer.release(login)
    state = peer.state(login)
    assert len(state['drives']) == 1 and len(state['servers']) == (route == 'create_server')
    [record] = records(occo, infra_id)
    assert (record['state'], record['instance_id']) == ('creating', None)

    made = (state['servers'] or state['drives'])[0]['uuid']
    what = 'server' if state['servers'] else 'drive'
    [line] = destroy_listing(occo, infra_id, recorded=1, untracked=0)
    assert re.fullmatch(rf'  creating   cloudsigma {what} {made}  node a \({UUID}\)', line), line
    assert left(peer, login).keys() == ({'servers', 'drives'} if what == 'server' else {'drives'})

    destroyed = occo.run('occopus-destroy', '-i', infra_id)
    assert destroyed.returncode == 0, destroyed.stderr
    assert f'dropped ({made})' in destroyed.stderr
    assert_rolled_back(occo, peer, login, infra_id, destroyed.stdout, destroyed.stderr)


def test_an_untracked_server_and_an_orphan_clone_are_listed_and_dropped(occo, tmp_path, peer,
                                                                         login):
    """Resources named for the infrastructure that no record knows (a create whose record was
    never written) are found: a running server with its drive, and a clone alone."""
    auth(occo, login)
    path = chain_infra(occo, tmp_path, {'a': resource(peer)})
    infra_id = built_id(occo.run('occopus-build', path))
    handler = handler_for(login)
    stray = handler.create(request_for(resource(peer), infra_id=infra_id, node_id='never-recorded'))
    orphan = handler_for(login).make_client(api_base(peer.api), vars(login)).call(
        'POST', f'libdrives/{CDROM_ID}/action/?do=clone', {'name': f'occopus:{infra_id}:lost-node'})
    orphan_id = orphan['objects'][0]['uuid']
    lines = destroy_listing(occo, infra_id, recorded=1, untracked=2)
    assert (f'  untracked  cloudsigma server {stray.instance_id}  tagged for node a '
            '(never-recorded)') in lines
    assert f'  untracked  cloudsigma drive {orphan_id}  tagged for node ? (lost-node)' in lines
    destroyed = occo.run('occopus-destroy', '-i', infra_id)
    assert destroyed.returncode == 0, destroyed.stderr
    assert_rolled_back(occo, peer, login, infra_id, destroyed.stderr)


# -- error paths, each with a full rollback ----------------------------------------------------

ERRORS = {
    'unknown libdrive': (
        {'libdrive_id': 'no-such-drive'}, {},
        r'cloning the library drive no-such-drive: Object with uuid no-such-drive does not exist '
        r"\(HTTP 404, notexist\) -- check libdrive_id \('no-such-drive'\)"),
    'quota': (
        {}, {'quota_servers': 0},
        r'creating the server: quota exceeded \(HTTP 403, limits\): Servers limit exceeded: you '
        r'have 0 of 0 servers -- drop servers or drives, or ask for a higher limit'),
    'bad description': (
        {'description': dict(DESCRIPTION, cpu=100)}, {},
        r'creating the server: cpu: Ensure this value is an integer of at least 250\. '
        r'\(HTTP 400, validation\)'),
    'unknown pubkey': ({'description': dict(DESCRIPTION, pubkeys=['nope'])}, {},
                       r'creating the server: pubkeys: Object with uuid nope does not exist '
                       r'\(HTTP 400, validation\)'),
    'drive stuck cloning': (
        {'create_timeout': 3}, {'stick_drive': 'cloning_dst'},
        rf'the drive {UUID} cloned from the library drive {LIBDRIVE_ID} was still cloning_dst '
        r'after \d+ s \(create_timeout bounds the wait\)'),
    'drive went bad': ({}, {'stick_drive': 'unavailable'},
                       rf"the drive {UUID} cloned from the library drive {LIBDRIVE_ID} became "
                       r"'unavailable', not unmounted"),
    'garbage answer': ({}, {'hostile': {'clone': ['garbage']}},
                       r"cloning the library drive \S+: the answer is not JSON: "
                       r"'<html><body>\\x1b\[2J Bad gateway \\x07</body></html>'"),
    'huge answer': ({}, {'hostile': {'create_server': ['huge']}},
                    r'creating the server: the answer is \d+ bytes long, over the 16777216 bytes '
                    r'Occopus reads'),
    'missing objects': (
        {}, {'hostile': {'create_server': ['missing']}},
        r'creating the server: the answer about the new server has no list of objects'),
    'control characters': ({}, {'hostile': {'create_server': ['error_control']}},
                           r'creating the server: cpu: bad \\x1b\[2J\\x1b\[31mvalue\\x07 y+… '
                           r'\(HTTP 400, validation\)'),
    'wrong types': ({}, {'hostile': {'get_drive': ['wrong_types']}},
                    rf"the drive {UUID} cloned from the library drive {LIBDRIVE_ID} became 7, "
                    r"not unmounted"),
}


@pytest.mark.parametrize('case', sorted(ERRORS))
def test_errors_fail_the_node_on_one_line_and_roll_back(occo, tmp_path, peer, login, case):
    keys, settings, said = ERRORS[case]
    auth(occo, login)
    if settings:
        peer.config(login, **settings)
    path = chain_infra(occo, tmp_path, {'a': resource(peer, **keys)})
    result = occo.run('occopus-build', '-i', 'broken', path, timeout=60)
    line = failure_line(result)
    cloud = rf'cloudsigma at {re.escape(peer.api)}: '
    node = r"occopus-build: error: node 'a' \(instance \w{8}\): "
    assert re.fullmatch(node + cloud + said, line), line
    assert len(line) < 1200
    assert_rolled_back(occo, peer, login, 'broken', result.stdout, result.stderr)
    if case == 'quota':  # the clone was made, then deleted before the error was raised
        assert peer.state(login)['calls']['clone'] == 1
        assert peer.state(login)['calls']['delete_drive'] == 1


def test_a_wrong_password_is_said_once_and_never_shown(occo, tmp_path, peer, login):
    wrong = 'Wrong-Pa55word-zyx'
    auth(occo, login, password=wrong)
    path = chain_infra(occo, tmp_path, {'a': resource(peer)})
    result = occo.run('occopus-build', '-i', 'badpw', path)
    line = failure_line(result)
    assert re.fullmatch(
        rf"occopus-build: error: node 'a' \(instance \w{{8}}\): cloudsigma at "
        rf'{re.escape(peer.api)}: cloning the library drive {LIBDRIVE_ID}: authentication failed '
        r'\(HTTP 401, permission\): '
        r'CloudSigma refused the email and password of the cloudsigma entry of auth_data.yaml: '
        r'check them', line), line
    assert wrong not in result.stdout + result.stderr and wrong not in str(occo.snapshot())
    assert peer.state(login)['calls'] == {}  # the peer never saw the account's own password
    assert_rolled_back(occo, peer, login, 'badpw')


@pytest.mark.parametrize('auth_data,said', [
    ('{email: someone@example.com}',
     r"the auth_data of cloudsigma http://127\.0\.0\.1:\d+/api/2\.0/ needs email and password "
     r'\(it has email\)'),
    ('{username: x, password: yyyyyy}',
     r'the auth_data of cloudsigma .* needs email and password \(it has password, username\)'),
])
def test_credentials_that_cannot_be_used(occo, tmp_path, peer, login, auth_data, said):
    write(occo.home, {'.occopus/auth_data.yaml':
                      f'resource:\n  - type: cloudsigma\n    auth_data: {auth_data}\n'})
    path = chain_infra(occo, tmp_path, {'a': resource(peer)})
    result = occo.run('occopus-build', '-i', 'nocreds', path)
    line = failure_line(result)
    node = r"occopus-build: error: (node 'a' \(instance \w{8}\): )?"
    assert re.fullmatch(node + said, line), line
    assert 'yyyyyy' not in result.stderr
    assert peer.state(login)['calls'] == {}
    assert occo.infra_keys('nocreds') == []


def test_an_endpoint_that_is_no_url_is_said(occo, tmp_path, peer, login):
    auth(occo, login)
    path = chain_infra(occo, tmp_path, {'a': resource(peer, endpoint='zrh.cloudsigma.com/api/2.0')})
    line = failure_line(occo.run('occopus-build', '-i', 'nourl', path))
    assert line.endswith('cloudsigma at zrh.cloudsigma.com/api/2.0: the endpoint must be the '
                         'http(s) URL of the API base, such as '
                         'https://zrh.cloudsigma.com/api/2.0/'), line
    assert occo.infra_keys('nourl') == []


# -- throttling, lost answers ------------------------------------------------------------------

def test_throttling_and_unavailability_are_answered_by_engine_retries(occo, tmp_path, peer, login):
    auth(occo, login)
    peer.config(login, fail={'clone': [429, 503], 'list_servers': [503, 429]})
    path = chain_infra(occo, tmp_path, {'a': resource(peer)})
    result = occo.run('occopus-build', path)
    infra_id = built_id(result)
    state = peer.state(login)
    assert state['faults_served'] == 4
    assert len(state['servers']) == 1 and len(state['drives']) == 1  # the refused clones made none
    assert re.search(r'^occopus-build: a/[0-9a-f]{8}: the create call on cloudsigma: '
                     r'cloudsigma at .*: cloning the library drive \S+: Request was throttled\. '
                     r'.*\(HTTP 429\); try 2 in',
                     result.stderr, re.M), result.stderr
    destroyed = occo.run('occopus-destroy', '-i', infra_id)
    assert destroyed.returncode == 0, destroyed.stderr
    assert_rolled_back(occo, peer, login, infra_id)


@pytest.mark.parametrize('route', ['clone', 'create_server'])
def test_a_lost_answer_makes_one_drive_and_one_server(occo, tmp_path, peer, login, route):
    """The peer does the work, then answers 503: the create looks the drive (by its name) or
    the server (by its meta) up and takes it rather than making a second one."""
    auth(occo, login)
    peer.config(login, lose={route: 1})
    path = chain_infra(occo, tmp_path, {'a': resource(peer)})
    infra_id = built_id(occo.run('occopus-build', path))
    state = peer.state(login)
    assert len(state['servers']) == 1 and len(state['drives']) == 1
    [record] = records(occo, infra_id)
    assert record['instance_id'] == state['servers'][0]['uuid']
    assert state['calls'][route] == 1
    assert occo.run('occopus-destroy', '-i', infra_id).returncode == 0
    assert_rolled_back(occo, peer, login, infra_id)


def test_a_server_deleted_out_of_band_is_replaced(occo, tmp_path, peer, login):
    auth(occo, login)
    path = chain_infra(occo, tmp_path, {'a': resource(peer)})
    infra_id = built_id(occo.run('occopus-build', path))
    [old] = peer.state(login)['servers']
    api = handler_for(login).make_client(api_base(peer.api), vars(login))
    peer.config(login, stop_delay=0)
    api.call('POST', f"servers/{old['uuid']}/action/?do=stop", {})
    api.call('DELETE', f"servers/{old['uuid']}/")  # its drive stays, unmounted
    managed = occo.run('occopus-manage', '-i', infra_id)
    assert managed.returncode == 0, managed.stderr
    state = peer.state(login)
    [new] = state['servers']
    assert new['uuid'] != old['uuid'] and new['status'] == 'running'
    # the old clone went with the old server's record
    assert [d['uuid'] for d in state['drives']] == [new['drives'][0]['drive']['uuid']]
    assert occo.run('occopus-destroy', '-i', infra_id).returncode == 0
    assert_rolled_back(occo, peer, login, infra_id)


# -- the handler alone -------------------------------------------------------------------------

def handler_for(login, password: Optional[str] = None) -> CloudSigmaHandler:
    return CloudSigmaHandler(HandlerContext(credentials=lambda s: {
        'email': login.email, 'password': password or login.password}))


def request_for(section: Dict[str, Any], attempts: int = 1, node_id: str = 'node-1',
                infra_id: str = 'infra-1') -> CreateRequest:
    return CreateRequest(infra_id=infra_id, infra_name='t', node='a', node_id=node_id,
                         resource=section, context=SimpleNamespace(user_data='#cloud-config\n'),
                         attempts=attempts)


def test_a_create_tried_again_takes_the_earlier_server_and_deletes_duplicates(peer, login):
    handler, section = handler_for(login), resource(peer)
    # as two lost answers leave them
    made = [handler.create(request_for(section)) for _ in range(2)]
    other = handler.create(request_for(section, node_id='node-2'))    # another node's: left alone
    again = handler.create(request_for(section, attempts=2))
    assert again.instance_id == made[0].instance_id and again.extra == made[0].extra
    state = peer.state(login)
    assert sorted(s['uuid'] for s in state['servers']) == sorted(
        [again.instance_id, other.instance_id])
    assert sorted(d['uuid'] for d in state['drives']) == sorted(
        [again.extra['drive_id'], other.extra['drive_id']])
    found = handler.find('infra-1', [section])
    assert sorted((f.instance_id, f.extra['drive_id'], f.what) for f in found) == sorted(
        (c.instance_id, c.extra['drive_id'], 'server') for c in (again, other))
    for entry in found:
        handler.drop(Instance(node_id=entry.node_id, node='a', resource=entry.resource,
                              instance_id=entry.instance_id, extra=entry.extra))
    assert left(peer, login) == {}


def test_drop_stops_a_running_server_and_is_idempotent(peer, login):
    peer.config(login, stop_delay=0.5)
    handler, section = handler_for(login), resource(peer)
    created = handler.create(request_for(section))
    instance = Instance(node_id='node-1', node='a', resource=section,
                        instance_id=created.instance_id, extra=created.extra)
    handler.drop(instance)
    assert peer.state(login)['calls']['stop'] == 1
    handler.drop(instance)  # gone: no error
    assert left(peer, login) == {}


def test_a_server_that_will_not_stop_is_a_transient_drop_error(monkeypatch, peer, login):
    from occo.plugins.resources import cloudsigma
    monkeypatch.setattr(cloudsigma, 'STOP_WAIT', 0.5)
    handler, section = handler_for(login), resource(peer)
    created = handler.create(request_for(section))
    instance = Instance(node_id='node-1', node='a', resource=section,
                        instance_id=created.instance_id, extra=created.extra)
    peer.config(login, stop_delay=3)
    with pytest.raises(TransientCloudError, match=r'deleting the server \S+: it is still '
                                                  r'.*stopping.* '
                                                  r'after 0 s; it is deleted once stopped'):
        handler.drop(instance)
    monkeypatch.setattr(cloudsigma, 'STOP_WAIT', 30)
    handler.drop(instance)  # once it has stopped
    assert left(peer, login) == {}


def status_of(server: Optional[Dict[str, Any]]):
    handler = handler_for(SimpleNamespace(email='e@x', password='p4ssw0rd'))
    section = {'type': 'cloudsigma', 'endpoint': 'http://127.0.0.1:9/api/2.0/'}
    return handler.status(section, None, 's1', server)


@pytest.mark.parametrize('status,state,reason', [
    ('running', 'running', None), ('starting', 'pending', 'the server is starting'),
    ('paused', 'pending', 'the server is paused'),
    ('stopping', 'shutdown', 'the server is stopping (stopped servers are not used)'),
    ('stopped', 'shutdown', 'the server is stopped (stopped servers are not used)'),
    ('unavailable', 'unknown', 'the server is unavailable (its host cannot be reached now)'),
    ('migrating', 'unknown', "the server is in state 'migrating', which Occopus does not know"),
    ('\x1b[31mEVIL' + 'x' * 500, 'unknown', "the server is in state '\\x1b[31mEVILxxx"),
    (None, 'unknown', 'the server is in state None'),
    (['running'], 'unknown', 'the server is in state'),
])
def test_every_server_status_is_mapped(status, state, reason):
    server = {'uuid': 's1', 'status': status, 'runtime': {'nics': [
        {'ip_v4': {'uuid': '198.51.100.7'}}, {'ip_v4': None}, 'junk', {'ip_v4': {'uuid': 7}},
        {'ip_v4': {'uuid': 'a' * 500}}, {'ip_v4': {'uuid': '198.51.100.8\x1b'}},
        {'ip_v4': {'uuid': '198.51.100.9'}}]}}
    found = status_of(server)
    assert found.state == CloudState(state)
    assert found.addresses == ['198.51.100.7', '198.51.100.9']
    if reason is None:
        assert found.reason is None
    else:
        assert found.reason.startswith('cloudsigma at http://127.0.0.1:9/api/2.0/: ' + reason)
        assert len(found.reason) < 400 and '\x1b' not in found.reason


@pytest.mark.parametrize('runtime', [None, 'junk', {'nics': 'x'}, {'nics': [None]}])
def test_a_server_without_runtime_addresses_has_none(runtime):
    assert status_of({'uuid': 's1', 'status': 'running', 'runtime': runtime}).addresses == []


def test_a_server_that_is_gone_reads_as_shut_down():
    found = status_of(None)
    assert found.state == CloudState.SHUTDOWN and 'the server s1 is gone' in found.reason


@pytest.mark.parametrize('kind,said', [
    ('control', None),
    ('wrong_types', 'listing the servers: the listing of the servers has no list of objects'),
    ('missing', 'listing the servers: the listing of the servers has no list of objects'),
    ('garbage', "listing the servers: the answer is not JSON: '<html><body>\\x1b[2J Bad gateway"),
])
def test_hostile_listings_are_mapped_never_raised_raw(peer, login, kind, said):
    handler, section = handler_for(login), resource(peer)
    created = handler.create(request_for(section))
    instance = Instance(node_id='node-1', node='a', resource=section,
                        instance_id=created.instance_id, extra=created.extra)
    peer.config(login, hostile={'list_servers': [kind]})
    if said is None:
        [status] = handler.states([instance]).values()
        assert status.state == CloudState.UNKNOWN
        assert "the server is in state '\\x1b[31mrunning\\x1b[0mxxx" in status.reason
    else:
        with pytest.raises(CloudError) as caught:
            handler.states([instance])
        assert not isinstance(caught.value, TransientCloudError)
        assert str(caught.value).startswith(f'cloudsigma at {peer.api}: {said}'), str(caught.value)
    handler.drop(instance)
    assert left(peer, login) == {}


def test_a_cloud_that_refuses_connections_was_not_sent_the_create():
    import socket
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    login = SimpleNamespace(email='e@example.com', password='p4ssw0rd-xyz')
    section = {'type': 'cloudsigma', 'endpoint': f'http://127.0.0.1:{port}/api/2.0',
               'libdrive_id': LIBDRIVE_ID, 'description': dict(DESCRIPTION)}
    with pytest.raises(TransientCloudError) as caught:
        handler_for(login).create(request_for(section))
    assert caught.value.unsent is True
    assert 'cannot reach the cloud' in str(caught.value) and 'p4ssw0rd' not in str(caught.value)


def test_find_raises_for_credentials_it_cannot_use_and_skips_templates(peer, login):
    section = resource(peer)
    skipped = [dict(section, endpoint='{{ variables.endpoint }}'),
               dict(section, endpoint='replace_me')]
    assert handler_for(login).find('infra-1', skipped) == []
    with pytest.raises(CloudError, match=r'authentication failed \(HTTP 401') as caught:
        handler_for(login, password='Wrong-Pa55word').find('infra-1', [section])
    assert 'Wrong-Pa55word' not in str(caught.value)
    nobody = CloudSigmaHandler(HandlerContext(credentials=lambda s: None))
    with pytest.raises(AuthError, match='Cannot find credentials for cloudsigma'):
        nobody.find('infra-1', [section])


def test_a_password_the_cloud_echoes_is_masked():
    login = SimpleNamespace(email='e@example.com', password='Secret-Echo-123')
    handler = handler_for(login)
    section = {'type': 'cloudsigma', 'endpoint': 'http://127.0.0.1:9/api/2.0/', 'description': {}}
    api, _ = handler._api(section)
    from occo.plugins.resources.cloudsigma import Answer
    for at in range(285, 305):
        error = handler._refused(section, api, 'creating the server',
                                 Answer(400, ('validation',), 'x' * at + login.password + ' tail'))
        assert 'Secr' not in str(error), at


@pytest.mark.parametrize('endpoint', ['https://zrh.cloudsigma.com/api/2.0',
                                      'https://zrh.cloudsigma.com/api/2.0/',
                                      ' https://zrh.cloudsigma.com/api/2.0// '])
def test_api_base(endpoint):
    assert api_base(endpoint) == 'https://zrh.cloudsigma.com/api/2.0/'
