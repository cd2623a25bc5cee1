"""The nova resource handler against the Keystone v3 + Nova (+ Neutron, Cinder) peer of
:mod:`novapeer`: the nova-ping tutorial, application credentials, boot volumes, a killed
build, error paths and an out-of-band deletion, seen as a user sees them (exit codes, one-line
messages, Redis) and as the cloud holds them afterwards."""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from conftest import CORPUS, chain_infra, destroy_listing, failure_line, fill_in, write
from test_build import built_id
from novapeer import BIG_IMAGE_ID, IMAGE_ID, NETWORK_ID, USERS
from occo.instances import Instance
from occo.plugins.resources.base import HandlerContext
from occo.plugins.resources.nova import NovaHandler, keystone_url

PASSWORD = USERS['demo']
PASSWORD_AUTH = f'resource:\n  - type: nova\n    auth_data: {{username: demo, password: {PASSWORD}}}\n'
UUID = r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'


def auth(occo, text: str = PASSWORD_AUTH) -> None:
    write(occo.home, {'.occopus/auth_data.yaml': text})


def resource(peer, project: str, **keys: Any) -> Dict[str, Any]:
    section = {'type': 'nova', 'endpoint': peer.keystone, 'project_id': project,
               'image_id': IMAGE_ID, 'flavor_name': 'm1.tiny', 'network_id': NETWORK_ID}
    section.update(keys)
    return {k: v for k, v in section.items() if v is not None}






def nothing_left(peer, project: str) -> Dict[str, List[Any]]:
    state = peer.state(project)
    return {kind: state[kind] for kind in ('servers', 'volumes', 'floating_ips', 'ports') if state[kind]}




# -- the tutorial ------------------------------------------------------------------------------

def tutorial(folder: Path, peer, project: str) -> Path:
    """The nova-ping tutorial with only its endpoint, ids, key pair, security group and pool
    values pointed at the peer."""
    target = folder / 'nova-ping'
    shutil.copytree(CORPUS / 'nova-ping', target)
    fill_in(target / 'nodes' / 'node_definitions.yaml', {
        'endpoint_of_nova_interface_of_your_cloud': peer.keystone,
        'projectid_to_use': project,
        'id_of_your_image_on_your_target_cloud': IMAGE_ID,
        'id_of_network_on_your_target_cloud': NETWORK_ID,
        'id_of_the_flavor_on_your_target_cloud': 'm1.small',
        'name_of_keypair_or_remove': 'demo-key',
        'security_group_to_add_or_remove_section': 'default',
        'name_of_floating_ip_pool_or_remove': 'public'})
    return target


def test_nova_ping_tutorial_builds_reports_and_destroys(occo, tmp_path, nova_peer, nova_project):
    auth(occo)
    folder = tutorial(tmp_path, nova_peer, nova_project)
    assert occo.run('occopus-import', folder / 'nodes' / 'node_definitions.yaml').returncode == 0
    nova_peer.config(nova_project, build_delay=0.3)
    result = occo.run('occopus-build', '--listips', folder / 'infra-nova-ping.yaml')
    infra_id = built_id(result)

    state = nova_peer.state(nova_project)
    servers = {s['metadata']['occopus_node']: s for s in state['servers']}
    assert sorted(servers) == ['ping-receiver', 'ping-sender']
    assert {s['name'] for s in servers.values()} == {'mypingreceiver', 'mypingsender'}
    for node, server in servers.items():
        assert server['status'] == 'ACTIVE' and server['flavor']['id'] == '2'  # m1.small by name
        assert server['metadata']['occopus_infra_id'] == infra_id
        assert re.fullmatch(UUID, server['metadata']['occopus_node_id'])
        assert server['key_name'] == 'demo-key' and server['security_groups'] == [{'name': 'default'}]
    floating = {f['port_id']: f for f in state['floating_ips']}
    assert len(state['floating_ips']) == 2 and None not in floating
    receiver = servers['ping-receiver']
    [receiver_port] = [p for p in state['ports'] if p['device_id'] == receiver['id']]
    receiver_ip = floating[receiver_port['id']]['floating_ip_address']
    assert floating[receiver_port['id']]['description'] == (
        f"occopus:{infra_id}:{receiver['metadata']['occopus_node_id']}")
    # getip() of the receiver is its floating address, in the sender's user data
    assert f'ping {receiver_ip} -c 5' in servers['ping-sender']['user_data']
    assert servers['ping-receiver']['user_data'].startswith('#cloud-config\n')
    assert f'ping-receiver {receiver_ip}' in result.stdout.splitlines()
    assert re.search(rf'^    {re.escape(receiver_ip)}$', result.stdout, re.M)

    report = occo.run('occopus-manage', '-r', '-i', infra_id)
    assert report.returncode == 0, report.stderr
    assert receiver_ip in report.stdout and 'ping-sender' in report.stdout

    destroyed = occo.run('occopus-destroy', '-i', infra_id)
    assert destroyed.returncode == 0, destroyed.stderr
    assert destroyed.stdout == f'Destroyed infrastructure {infra_id} (2 instances)\n'
    assert nothing_left(nova_peer, nova_project) == {}
    assert occo.infra_keys(infra_id) == []


# -- credentials, paging, volumes ------------------------------------------------------------

def test_application_credentials_and_paged_listings(occo, tmp_path, nova_peer, nova_project):
    nova_peer.app_credential('app-cred-1', 'app-secret-xyz', nova_project)
    auth(occo, 'resource:\n  - type: nova\n    auth_data: {type: application_credential, '
               'id: app-cred-1, secret: app-secret-xyz}\n')
    nova_peer.config(nova_project, page_size=2, build_delay=0.2)
    nodes = {f'n{i}': resource(nova_peer, nova_project, endpoint=f'{nova_peer.url}/identity/v3/')
             for i in range(3)}
    infra_id = built_id(occo.run('occopus-build', '--parallelize', chain_infra(occo, tmp_path, nodes)))
    state = nova_peer.state(nova_project)
    assert sorted(s['metadata']['occopus_node'] for s in state['servers']) == ['n0', 'n1', 'n2']
    assert {s['status'] for s in state['servers']} == {'ACTIVE'}
    records = [json.loads(v) for v in occo.redis.hvals(f'{occo.prefix}{{{infra_id}}}:instances')]
    assert sorted(r['private_address'] for r in records) == sorted(
        p['fixed_ips'][0]['ip_address'] for p in state['ports'])
    assert all(r['addresses'] == [r['private_address']] for r in records)
    assert 'app-secret-xyz' not in str(occo.snapshot())
    assert occo.run('occopus-destroy', '-i', infra_id).returncode == 0
    assert nothing_left(nova_peer, nova_project) == {}


def test_boot_volumes_and_a_persistent_one(occo, tmp_path, nova_peer, nova_project):
    auth(occo)
    nova_peer.config(nova_project, volume_delay=0.6)
    nodes = {'imagesize': resource(nova_peer, nova_project, image_id=BIG_IMAGE_ID, volume_size=0),
             'kept': resource(nova_peer, nova_project, volume_size=5, volume_persist=True,
                              floating_ip='yes')}
    infra_id = built_id(occo.run('occopus-build', chain_infra(occo, tmp_path, nodes)))
    state = nova_peer.state(nova_project)
    volumes = {v['metadata']['occopus_node']: v for v in state['volumes']}
    assert volumes['imagesize']['size'] == 3  # the image's min_disk and size (2.5 GiB)
    assert volumes['kept']['size'] == 5 and volumes['kept']['metadata']['occopus_persist'] == 'true'
    assert {v['status'] for v in volumes.values()} == {'in-use'}
    for server in state['servers']:
        node = server['metadata']['occopus_node']
        assert server['image'] == ''  # booted from its volume
        assert server['os-extended-volumes:volumes_attached'] == [
            {'id': volumes[node]['id'], 'delete_on_termination': False}]
        assert volumes[node]['metadata']['occopus_infra_id'] == infra_id

    listed = occo.run('occopus-destroy', '--dry-run', '-i', infra_id)
    assert listed.returncode == 0, listed.stderr
    assert volumes['kept']['id'] not in listed.stdout
    assert volumes['imagesize']['id'] not in listed.stdout  # dropped with its server, not a leftover
    destroyed = occo.run('occopus-destroy', '-i', infra_id)
    assert destroyed.returncode == 0, destroyed.stderr
    left = nothing_left(nova_peer, nova_project)
    assert list(left) == ['volumes']
    assert [(v['id'], v['status']) for v in left['volumes']] == [(volumes['kept']['id'], 'available')]


# -- a build killed during the create call --------------------------------------------------

def wait_for(predicate, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.05)


def killed_build(occo, tmp_path, peer, project: str) -> Dict[str, Any]:
    """A build SIGKILLed while Nova is answering its create call (the server exists, its
    boot volume too; the store never heard its id).  Returns the peer's state."""
    auth(occo)
    peer.config(project, create_delay=60)
    path = chain_infra(occo, tmp_path, {'a': resource(peer, project, volume_size=1, floating_ip='yes')})
    build = occo.popen('occopus-build', '-i', 'killed-nova', path)
    wait_for(lambda: peer.state(project)['servers'])
    build.kill()
    build.communicate(timeout=30)
    state = peer.state(project)
    assert len(state['servers']) == 1 and len(state['volumes']) == 1
    return state


def test_a_server_of_a_killed_build_is_found_and_removed(occo, tmp_path, nova_peer, nova_project):
    state = killed_build(occo, tmp_path, nova_peer, nova_project)
    destroyed = occo.run('occopus-destroy', '-i', 'killed-nova')
    assert destroyed.returncode == 0, destroyed.stderr
    assert state['servers'][0]['id'] in destroyed.stderr
    assert nothing_left(nova_peer, nova_project) == {}
    assert occo.infra_keys('killed-nova') == []


def test_destroy_dry_run_lists_the_server_of_a_killed_build(occo, tmp_path, nova_peer, nova_project):
    state = killed_build(occo, tmp_path, nova_peer, nova_project)
    server_id = state['servers'][0]['id']
    [line] = [line for line in destroy_listing(occo, 'killed-nova', recorded=1, untracked=0)
              if server_id in line]
    assert re.fullmatch(rf'  creating   nova server {server_id}  node a \({UUID}\)', line), line
    assert nova_peer.state(nova_project)['servers'] == state['servers']  # nothing dropped
    assert occo.run('occopus-destroy', '-i', 'killed-nova').returncode == 0
    assert nothing_left(nova_peer, nova_project) == {}


# -- error paths -----------------------------------------------------------------------------

ERRORS = {
    'bad image': ({'image_id': 'no-such-image'}, {},
                  r'creating the server: Image no-such-image could not be found\. \(HTTP 400\)'),
    'bad flavor': ({'flavor_name': 'm9.huge'}, {},
                   r"looking up the flavor: there is no flavor 'm9\.huge' \(flavor_name takes a flavor's "
                   r'name or id; the cloud has: m1\.medium, m1\.small, m1\.tiny\)'),
    'unknown network': ({'network_id': 'no-such-net'}, {},
                        r'creating the server: Network no-such-net could not be found\. \(HTTP 400\)'),
    'quota': ({}, {'quota_servers': 0},
              r'creating the server: quota exceeded \(HTTP 403\): Quota exceeded for instances'),
    'server in ERROR': ({'volume_size': 1, 'floating_ip': 'yes'}, {'error': 'No valid host was found.'},
                        r'the server went into ERROR: No valid host was found\.'),
    'BUILD too long': ({'volume_size': 1, 'floating_ip': 'yes', 'create_timeout': 3},
                       {'build_delay': 300}, None),
}


@pytest.mark.parametrize('case', sorted(ERRORS))
def test_errors_fail_the_node_on_one_line_and_roll_back(occo, tmp_path, nova_peer, nova_project, case):
    keys, settings, said = ERRORS[case]
    auth(occo)
    if settings:
        nova_peer.config(nova_project, **settings)
    path = chain_infra(occo, tmp_path, {'a': resource(nova_peer, nova_project, **keys)})
    result = occo.run('occopus-build', '-i', 'broken', path, timeout=60)
    line = failure_line(result)
    cloud = rf'nova at {re.escape(nova_peer.keystone)}: '
    if said is None:  # BUILD too long
        said = r'not ready after 3 s \(the resource is pending: ' + cloud + \
            r'the server is BUILD; create_timeout bounds the wait\)'
    else:
        said = cloud + said
    assert re.fullmatch(rf"occopus-build: error: node 'a' \(instance \w{{8}}\): {said}.*", line), line
    assert nothing_left(nova_peer, nova_project) == {}
    assert occo.infra_keys('broken') == []


def test_a_wrong_password_is_said_and_never_shown(occo, tmp_path, nova_peer, nova_project):
    secret = 'Wrong-Pa55word-zyx'
    auth(occo, f'resource:\n  - type: nova\n    auth_data: {{username: demo, password: {secret}}}\n')
    path = chain_infra(occo, tmp_path, {'a': resource(nova_peer, nova_project)})
    result = occo.run('occopus-build', '-i', 'badpw', path)
    assert failure_line(result) == (
        "occopus-build: error: node 'a' (instance " + re.search(r"\(instance (\w{8})\)", result.stderr).group(1)
        + f'): nova at {nova_peer.keystone}: looking up the flavor: authentication failed (HTTP 401): '
        f"Keystone refused the credentials of auth_data.yaml for project '{nova_project}' (user domain "
        "'Default'): check them")
    assert secret not in result.stdout + result.stderr
    assert secret not in str(occo.snapshot())
    assert nothing_left(nova_peer, nova_project) == {}


# missing and ambiguous entries are found before anything is created (no instance yet)
@pytest.mark.parametrize('entries,said', [
    ('resource:\n  - type: ec2\n    auth_data: {accesskey: A, secretkey: B}\n',
     r"\S+infra\.yaml:\d+: node 'a': Cannot find credentials for nova http://127\.0\.0\.1:\d+/identity.*"),
    (PASSWORD_AUTH + '  - type: nova\n    project_id: PROJECT\n    auth_data: {username: x, password: yyyy}\n',
     r"\S+auth_data\.yaml: node 'a': Cannot determine authorization information: entries 1 "
     r"\(type: 'nova'\), 2 \(type: 'nova', project_id: 'proj-\w+'\) of 'resource' all match .*"),
    ('resource:\n  - type: nova\n    auth_data: {type: voms, proxy: /tmp/x509}\n',
     r'The nova credentials for http://127\.0\.0\.1:\d+/identity have a type Occopus does not support '
     r'\(VOMS proxies were dropped in Occopus 1\.10\): use username and password, or type: '
     r'application_credential with id and secret'),
    ('resource:\n  - type: nova\n    auth_data: {username: demo}\n',
     r'The nova credentials for .* need username and password.*'),
], ids=['missing', 'ambiguous', 'voms', 'no password'])
def test_credentials_that_cannot_be_used(occo, tmp_path, nova_peer, nova_project, entries, said):
    auth(occo, entries.replace('PROJECT', nova_project))
    path = chain_infra(occo, tmp_path, {'a': resource(nova_peer, nova_project)})
    result = occo.run('occopus-build', '-i', 'nocreds', path)
    line = failure_line(result)
    assert re.fullmatch(r"occopus-build: error: (node 'a' \(instance \w{8}\): )?" + said, line), line
    assert 'yyyy' not in result.stderr
    assert nova_peer.state(nova_project)['calls'] == 0
    assert occo.infra_keys('nocreds') == []


def test_a_burst_of_503_answers_is_retried(occo, tmp_path, nova_peer, nova_project):
    auth(occo)
    nova_peer.config(nova_project, burst_503=4)
    path = chain_infra(occo, tmp_path, {'a': resource(nova_peer, nova_project)})
    infra_id = built_id(occo.run('occopus-build', path))
    state = nova_peer.state(nova_project)
    assert state['served_503'] == 4
    assert [s['status'] for s in state['servers']] == ['ACTIVE']
    assert occo.run('occopus-destroy', '-i', infra_id).returncode == 0
    assert nothing_left(nova_peer, nova_project) == {}


def test_a_server_deleted_out_of_band_is_replaced(occo, tmp_path, nova_peer, nova_project):
    auth(occo)
    path = chain_infra(occo, tmp_path, {'a': resource(nova_peer, nova_project, floating_ip='yes')})
    infra_id = built_id(occo.run('occopus-build', path))
    [old] = nova_peer.state(nova_project)['servers']
    nova_peer.delete_server(old['id'])
    managed = occo.run('occopus-manage', '-i', infra_id)
    assert managed.returncode == 0, managed.stderr
    state = nova_peer.state(nova_project)
    [new] = state['servers']
    assert new['id'] != old['id'] and new['metadata']['occopus_node'] == 'a'
    assert new['metadata']['occopus_node_id'] != old['metadata']['occopus_node_id']
    assert len(state['floating_ips']) == 1  # the old one was released, the new one is on
    assert state['floating_ips'][0]['port_id'] is not None
    [record] = [json.loads(v) for v in occo.redis.hvals(f'{occo.prefix}{{{infra_id}}}:instances')]
    assert record['instance_id'] == new['id'] and record['state'] == 'ready'
    assert occo.run('occopus-destroy', '-i', infra_id).returncode == 0
    assert nothing_left(nova_peer, nova_project) == {}


# -- without commands -----------------------------------------------------------------------

@pytest.mark.parametrize('endpoint,url', [
    ('https://k.example.org:5000', 'https://k.example.org:5000/v3'),
    ('https://k.example.org:5000/', 'https://k.example.org:5000/v3'),
    ('https://k.example.org/identity/v3', 'https://k.example.org/identity/v3'),
    ('https://k.example.org/identity/v2/', 'https://k.example.org/identity/v2'),
    ('https://k.example.org/v3beta', 'https://k.example.org/v3beta/v3'),
])
def test_keystone_url(endpoint, url):
    assert keystone_url(endpoint) == url


def status_of(server: Optional[Dict[str, Any]]):
    handler = NovaHandler(HandlerContext(credentials=lambda s: {'username': 'u', 'password': 'p4ssw0rd'}))
    instance = Instance(node_id='n1', node='a', resource={'type': 'nova', 'endpoint': 'http://127.0.0.1:9/v3',
                                                          'project_id': 'p'},
                        instance_id='s1')
    cloud, _ = handler._cloud(instance.resource)
    return handler._status(instance, cloud, server)


@pytest.mark.parametrize('status,state,reason', [
    ('BUILD', 'pending', 'the server is BUILD'), ('REBUILD', 'pending', 'the server is REBUILD'),
    ('RESIZE', 'pending', 'the server is RESIZE'), ('VERIFY_RESIZE', 'pending', 'the server is VERIFY_RESIZE'),
    ('MIGRATING', 'pending', 'the server is MIGRATING'), ('ACTIVE', 'running', None),
    ('ERROR', 'failed', 'the server went into ERROR: disk full'),
    ('SHUTOFF', 'shutdown', 'the server is shut off (SHUTOFF)'),
    ('SUSPENDED', 'shutdown', 'the server is suspended (SUSPENDED)'),
    ('PAUSED', 'shutdown', 'the server is paused (PAUSED)'),
    ('SHELVED_OFFLOADED', 'shutdown', 'the server is shelved (offloaded) (SHELVED_OFFLOADED)'),
    ('DELETED', 'shutdown', 'the server was deleted (DELETED)'),
    ('SOFT_DELETED', 'shutdown', 'the server was (soft) deleted (SOFT_DELETED)'),
    ('HARD_REBOOT', 'unknown', "the server is in state 'HARD_REBOOT', which Occopus does not know"),
    ('\x1b[31mEVIL' + 'x' * 500, 'unknown', "the server is in state '\\x1b[31mEVILxxx"),
    (None, 'unknown', 'the server is in state'),
    (['ACTIVE'], 'unknown', 'the server is in state'),
])
def test_every_nova_status_is_mapped(status, state, reason):
    server = {'id': 's1', 'status': status, 'fault': {'message': 'disk full'}, 'addresses': {
        'private': [{'addr': '10.0.0.5', 'OS-EXT-IPS:type': 'fixed'}, {'addr': '203.0.113.9', 'OS-EXT-IPS:type': 'floating'}],
        'weird': 'not a list', 'other': [None, {'addr': 7}, {'addr': '10.1.0.2'}]}}
    found = status_of(server)
    assert found.state.value == state
    assert found.addresses == ['203.0.113.9', '10.0.0.5', '10.1.0.2']
    assert found.private_address == '10.0.0.5'
    if reason is None:
        assert found.reason is None
    else:
        assert found.reason.startswith('nova at http://127.0.0.1:9/v3: ' + reason)
        assert len(found.reason) < 400 and '\x1b' not in found.reason


def test_a_server_that_is_gone_reads_as_shut_down():
    found = status_of(None)
    assert found.state.value == 'shutdown'
    assert 'the server s1 is gone' in found.reason


# -- lost answers: a create tried again takes what the earlier attempt made ------------------

def handler_for(password: str = PASSWORD) -> NovaHandler:
    return NovaHandler(HandlerContext(credentials=lambda s: {'username': 'demo', 'password': password}))


def request_for(section: Dict[str, Any], attempts: int = 1, node_id: str = 'node-1'):
    from types import SimpleNamespace
    from occo.plugins.resources.base import CreateRequest
    return CreateRequest(infra_id='infra-1', infra_name='t', node='a', node_id=node_id, resource=section,
                         context=SimpleNamespace(user_data='#cloud-config\n'), attempts=attempts)


def test_a_lost_create_answer_makes_one_server_in_a_build(occo, tmp_path, nova_peer, nova_project):
    auth(occo)
    nova_peer.config(nova_project, fail_after_create=1)
    path = chain_infra(occo, tmp_path, {'a': resource(nova_peer, nova_project, volume_size=1, floating_ip='yes')})
    infra_id = built_id(occo.run('occopus-build', path))
    state = nova_peer.state(nova_project)
    assert len(state['servers']) == 1 and len(state['volumes']) == 1 and len(state['floating_ips']) == 1
    assert state['servers'][0]['metadata']['occopus_node'] == 'a'
    assert state['floating_ips'][0]['port_id'] is not None
    [record] = [json.loads(v) for v in occo.redis.hvals(f'{occo.prefix}{{{infra_id}}}:instances')]
    assert record['instance_id'] == state['servers'][0]['id']
    assert occo.run('occopus-destroy', '-i', infra_id).returncode == 0
    assert nothing_left(nova_peer, nova_project) == {}


def test_a_create_answer_later_than_the_read_timeout_is_taken(monkeypatch, nova_peer, nova_project):
    from occo.plugins.resources import nova
    monkeypatch.setattr(nova, 'READ_TIMEOUT', 0.5)
    nova_peer.config(nova_project, create_delay=2)
    handler = handler_for()
    created = handler.create(request_for(resource(nova_peer, nova_project, floating_ip='yes')))
    [server] = nova_peer.state(nova_project)['servers']
    assert created.instance_id == server['id']
    nova_peer.config(nova_project, create_delay=0)
    handler.drop(Instance(node_id='node-1', node='a', resource=resource(nova_peer, nova_project),
                          instance_id=created.instance_id, extra=created.extra))
    assert nothing_left(nova_peer, nova_project) == {}


def test_a_create_tried_again_takes_the_earlier_server_and_deletes_duplicates(nova_peer, nova_project):
    handler = handler_for()
    section = resource(nova_peer, nova_project, volume_size=1, floating_ip='yes')
    made = [handler.create(request_for(section)) for _ in range(2)]  # as two lost answers leave them
    other = handler.create(request_for(section, node_id='node-2'))  # another node's: left alone
    assert len(nova_peer.state(nova_project)['servers']) == 3
    again = handler.create(request_for(section, attempts=2))
    [kept] = [m for m in made if m.instance_id == again.instance_id]
    assert again.extra['volume_id'] == kept.extra['volume_id']
    assert again.extra['floating_ip_id'] in {m.extra['floating_ip_id'] for m in made}
    state = nova_peer.state(nova_project)
    assert sorted(s['id'] for s in state['servers']) == sorted([again.instance_id, other.instance_id])
    assert sorted(v['id'] for v in state['volumes']) == sorted([again.extra['volume_id'], other.extra['volume_id']])
    assert sorted(f['id'] for f in state['floating_ips']) == sorted(
        [again.extra['floating_ip_id'], other.extra['floating_ip_id']])
    found = handler.find('infra-1', [section])
    assert sorted((f.instance_id, f.extra.get('volume_id'), f.extra.get('floating_ip_id')) for f in found) == sorted(
        (c.instance_id, c.extra['volume_id'], c.extra['floating_ip_id']) for c in (again, other))
    for entry in found:
        handler.drop(Instance(node_id=entry.node_id, node='a', resource=entry.resource,
                              instance_id=entry.instance_id, extra=entry.extra))
    assert nothing_left(nova_peer, nova_project) == {}


def test_a_create_tried_again_with_nothing_made_makes_it(nova_peer, nova_project):
    handler = handler_for()
    section = resource(nova_peer, nova_project)
    created = handler.create(request_for(section, attempts=3))
    assert [s['id'] for s in nova_peer.state(nova_project)['servers']] == [created.instance_id]
    handler.drop(Instance(node_id='node-1', node='a', resource=section, instance_id=created.instance_id))
    assert nothing_left(nova_peer, nova_project) == {}


# -- hostile answers, redirects, unreachable clouds, masking ---------------------------------

def test_a_next_link_that_does_not_parse_is_a_cloud_error(nova_peer, nova_project):
    from occo.errors import CloudError
    handler = handler_for()
    section = resource(nova_peer, nova_project)
    nova_peer.config(nova_project, next_href='http://[::1/broken?marker=x')
    handler.create(request_for(section))
    with pytest.raises(CloudError) as caught:
        handler.find('infra-1', [section])
    assert type(caught.value) is CloudError
    assert re.fullmatch(rf'nova at {re.escape(nova_peer.keystone)}: looking for the servers of the '
                        r"infrastructure: the next page of the servers is a link that does not parse: "
                        r"'<a URL that does not parse>'", str(caught.value)), str(caught.value)
    nova_peer.config(nova_project, next_href=None)
    for entry in handler.find('infra-1', [section]):
        handler.drop(Instance(node_id='node-1', node='a', resource=section, instance_id=entry.instance_id))
    assert nothing_left(nova_peer, nova_project) == {}


class FakeResponse:
    def __init__(self, status: int, json_error: Optional[BaseException] = None, text: str = '') -> None:
        self.status_code, self.text, self.reason, self.content = status, text, 'Reason', b'x'
        self._error = json_error

    def json(self):
        raise self._error


@pytest.mark.parametrize('status', [200, 500])
def test_deeply_nested_json_is_a_cloud_error(status):
    from occo.errors import CloudError, TransientCloudError
    from occo.plugins.resources.nova import Cloud
    handler = handler_for()
    section = {'type': 'nova', 'endpoint': 'http://127.0.0.1:9/v3', 'project_id': 'p'}
    cloud, _ = handler._cloud(section)
    fake = Cloud.__new__(Cloud)
    fake.__dict__.update(cloud.__dict__)
    fake.session = type('S', (), {'request': lambda *a, **k: FakeResponse(status, RecursionError('deep'),
                                                                          '[' * 5000)})()
    with pytest.raises(CloudError) as caught:
        with handler._errors(section, fake, 'listing the volumes'):
            fake.call('volumev3', None, 'GET', '/volumes')
    assert isinstance(caught.value, TransientCloudError) == (status == 500)
    assert str(caught.value).startswith('nova at http://127.0.0.1:9/v3: listing the volumes: ')
    assert len(str(caught.value)) < 500


def test_any_other_exception_at_the_boundary_is_a_cloud_error():
    from occo.errors import CloudError
    handler = handler_for()
    section = {'type': 'nova', 'endpoint': 'http://127.0.0.1:9/v3', 'project_id': 'p'}
    cloud, _ = handler._cloud(section)
    with pytest.raises(CloudError) as caught:
        with handler._errors(section, cloud, 'creating the server'):
            raise TypeError(f"'NoneType' object is not subscriptable \x1b[31m {PASSWORD}")
    assert type(caught.value) is CloudError
    assert str(caught.value) == ("nova at http://127.0.0.1:9/v3: creating the server: the answer could not "
                                 "be used (TypeError: 'NoneType' object is not subscriptable \\x1b[31m ***)")


def test_a_secret_echoed_across_the_cut_is_masked_first():
    handler = handler_for()
    section = {'type': 'nova', 'endpoint': 'http://127.0.0.1:9/v3', 'project_id': 'p'}
    cloud, _ = handler._cloud(section)
    for at in range(285, 305):
        error = handler._refused(section, cloud, 'creating the server', 400, 'x' * at + PASSWORD + ' tail')
        assert PASSWORD[:4] not in str(error), at


def test_a_redirect_is_never_followed(nova_peer, nova_project):
    from occo.errors import CloudError, TransientCloudError
    handler = handler_for()
    section = resource(nova_peer, nova_project, volume_size=1)
    nova_peer.config(nova_project, redirect='http://127.0.0.1:9/elsewhere?token=abcdef')
    for call in (lambda: handler.create(request_for(section)),  # novaclient, then Cinder
                 lambda: handler.find('infra-1', [section])):
        with pytest.raises(CloudError) as caught:
            call()
        assert not isinstance(caught.value, TransientCloudError)  # port 9 was never asked
        assert 'the cloud answered with a redirect to' in str(caught.value)
        assert '(HTTP 302)' in str(caught.value) and 'abcdef' not in str(caught.value)
    nova_peer.config(nova_project, redirect=None)
    assert nothing_left(nova_peer, nova_project) == {}


def test_a_cloud_that_refuses_connections_was_not_sent_the_create():
    import socket
    from occo.errors import TransientCloudError
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    section = {'type': 'nova', 'endpoint': f'http://127.0.0.1:{port}/v3', 'project_id': 'p',
               'image_id': IMAGE_ID, 'flavor_name': 'm1.tiny'}
    with pytest.raises(TransientCloudError) as caught:
        handler_for().create(request_for(section))
    assert caught.value.unsent is True
    assert 'cannot reach the cloud' in str(caught.value)


# -- find asks every cloud or says it could not ------------------------------------------------

def test_find_raises_for_credentials_it_cannot_use_and_skips_templates(nova_peer, nova_project):
    from occo.errors import AuthError, CloudError
    section = resource(nova_peer, nova_project)
    template = dict(section, endpoint='{{ variables.endpoint }}')
    assert handler_for().find('infra-1', [template, dict(section, endpoint='')]) == []
    with pytest.raises(CloudError, match=r'authentication failed \(HTTP 401\)'):
        handler_for('Wrong-Pa55word').find('infra-1', [section])
    missing = NovaHandler(HandlerContext(credentials=lambda s: None))
    with pytest.raises(AuthError, match='Cannot find credentials for nova'):
        missing.find('infra-1', [section])
