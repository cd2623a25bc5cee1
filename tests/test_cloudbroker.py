"""The cloudbroker handler against the CloudBroker platform of :mod:`cloudbrokerpeer` over HTTP:
the cloudbroker-helloworld tutorial, a killed build's instance, the error paths (each with a
full rollback), retried 429/503 answers, lost create answers, hostile XML, and credentials
kept out of sight."""
from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import pytest
import yaml

from conftest import CORPUS, destroy_listing, failure_line, fill_in, records, write
from occo.errors import CloudError, TransientCloudError
from occo.instances import CloudState, Instance
from occo.plugins.resources.base import CreateRequest, HandlerContext
from occo.plugins.resources.cloudbroker import CloudBrokerHandler, instance_name
from peer_cloudbroker import PeerAccount, PeerClient
from test_build import built_id, import_ok

TUTORIAL = CORPUS / 'cloudbroker-helloworld'
DEPLOYMENT, SIZE, KEY_PAIR = 'dep-ubuntu-22', 'it-small', 'kp-demo'


def auth_data(occo, account: PeerAccount, password: Optional[str] = None) -> None:
    write(occo.home, {'.occopus/auth_data.yaml': (
        'resource:\n  - type: cloudbroker\n'
        f'    auth_data: {{email: "{account.email}", '
        f'password: "{password or account.password}"}}\n')})


def one_node(occo, folder: Path, endpoint: str, *, create_timeout: Optional[float] = None,
             **description: Any) -> Path:
    """Import node definition ``n`` (one cloudbroker implementation) and write ``infra.yaml``
    with one node ``n``; returns the infrastructure file."""
    section: Dict[str, Any] = {'type': 'cloudbroker', 'endpoint': endpoint, 'description': dict(
        {'deployment_id': DEPLOYMENT, 'instance_type_id': SIZE}, **description)}
    if create_timeout is not None:
        section['create_timeout'] = create_timeout
    write(folder, {'nodes.yaml': (
        "'node_def:n':\n"
        f'  - resource: {json.dumps(section)}\n'
        '    contextualisation: {type: cloudinit, context_template: "#cloud-config\\n{}"}\n'),
        'infra.yaml': 'infra_name: t\nuser_id: u\nnodes: [{name: n, type: n}]\n'})
    import_ok(occo, folder / 'nodes.yaml')
    return folder / 'infra.yaml'


def infra_id() -> str:
    return f'cb-{uuid.uuid4().hex[:12]}'




def of_infra(instances: List[Dict[str, Any]], infra: str) -> List[Dict[str, Any]]:
    return [i for i in instances if i['name'].startswith(f'occopus:{infra}:')]


def assert_secret_free(account: PeerAccount, *texts: str, occo: Any = None) -> None:
    everything = list(texts) + ([repr(occo.snapshot())] if occo is not None else [])
    for text in everything:
        assert account.password not in text and account.email not in text


def assert_rolled_back(occo, peer: PeerClient, account: PeerAccount, infra: str,
                       output: str = '') -> None:
    assert peer.live(account) == [], output
    assert occo.infra_keys(infra) == [], output




def node_error(endpoint: str, said: str) -> str:
    return (r"occopus-build: error: node 'n' \(instance [0-9a-f]{8}\): "
            + re.escape(f'cloudbroker at {endpoint}: {said}'))


# -- the tutorial ------------------------------------------------------------------------------

@pytest.mark.parametrize('slash', ['/', ''], ids=['endpoint/', 'endpoint'])
def test_helloworld_tutorial_builds_reports_and_destroys(occo, cloudbroker_peer,
                                                         cloudbroker_account, tmp_path, slash):
    peer, account = cloudbroker_peer, cloudbroker_account
    folder = tmp_path / 'cloudbroker-helloworld'
    shutil.copytree(TUTORIAL, folder)
    definitions = fill_in(folder / 'nodes' / 'node_definitions.yaml', {
        'endpoint_of_cloudbroker_interface': peer.url + slash, 'deployment_id': DEPLOYMENT,
        'instance_type_id': SIZE, 'keypair_id': KEY_PAIR,
        'list_of_ports_separated_with_comma': "'22, 80'"})
    auth_data(occo, account)
    import_ok(occo, definitions)

    infra = infra_id()
    built = occo.run('occopus-build', '-i', infra, folder / 'infra-cloudbroker-helloworld.yaml',
                     cwd=folder)
    assert built_id(built) == infra
    [record] = records(occo, infra)
    [instance] = peer.instances(account)
    assert instance['name'] == f"occopus:{infra}:{record['node_id']}:helloworld"
    assert (record['instance_id'], record['state']) == (instance['id'], 'ready')
    addresses = [instance['external_hostname'], instance['external_ip'],
                 instance['internal_hostname'], instance['internal_ip']]
    assert (record['addresses'], record['private_address']) == (addresses, instance['internal_ip'])
    # the XML the platform received: the description, the defaults and the contextualisation
    assert re.match(r"<\?xml version='1\.0' encoding='utf-8'\?>\n<instance>", instance['raw'])
    assert instance['fields'] == {
        'deployment_id': DEPLOYMENT, 'instance_type_id': SIZE, 'key_pair_id': KEY_PAIR,
        'opened_port': '22, 80', 'disable_autostop': 'true', 'isolated': 'true',
        'name': instance['name'], 'cloud-init': instance['fields']['cloud-init'],
        'cloud-init-b64': 'true'}
    assert instance['cloud_init'].startswith('#cloud-config\n')
    assert yaml.safe_load(instance['cloud_init']) == {'write_files': [{
        'content': 'Hello World! I have been created by Occopus\n', 'path': '/tmp/helloworld.txt',
        'permissions': '0644'}]}

    report = occo.run('occopus-manage', '-r', '-i', infra)
    assert report.returncode == 0, report.stderr
    assert re.search(rf'^helloworld: \(1 of target 1.*\n  {record["node_id"]} \(ready\):\n'
                     rf'    {re.escape(addresses[0])}$', report.stdout, re.M), report.stdout
    assert_secret_free(account, built.stdout, built.stderr, report.stdout, report.stderr, occo=occo)

    destroyed = occo.run('occopus-destroy', '-i', infra)
    assert destroyed.returncode == 0, destroyed.stderr
    assert destroyed.stdout == f'Destroyed infrastructure {infra} (1 instance)\n'
    assert peer.live(account) == []
    assert occo.infra_keys(infra) == []
    state = peer.state(account)
    assert state['calls']['create'] == 1 and state['calls']['stop'] == 1
    assert state['unrouted'] == []  # no '//instances.xml', whichever way the endpoint ends


def test_user_values_win_over_the_defaults(occo, cloudbroker_peer, cloudbroker_account, tmp_path):
    peer, account = cloudbroker_peer, cloudbroker_account
    path = one_node(occo, tmp_path, peer.url, isolated=False, disable_autostop='false',
                    opened_port=22, name='my-helloworld')
    auth_data(occo, account)
    infra = infra_id()
    assert built_id(occo.run('occopus-build', '-i', infra, path)) == infra
    [instance] = peer.instances(account)
    fields = instance['fields']
    assert (fields['isolated'], fields['disable_autostop'], fields['opened_port']) == \
        ('false', 'false', '22')
    [record] = records(occo, infra)  # the description's name is kept after Occopus' own
    assert instance['name'] == f"occopus:{infra}:{record['node_id']}:n:my-helloworld"
    assert occo.run('occopus-destroy', '--dry-run', '-i', infra).returncode == 0
    assert occo.run('occopus-destroy', '-i', infra).returncode == 0
    assert_rolled_back(occo, peer, account, infra)


# -- a killed build ----------------------------------------------------------------------------

def wait_for(predicate, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.05)


def test_a_killed_builds_instance_is_found_by_its_name_and_stopped(occo, cloudbroker_peer,
                                                                   cloudbroker_account, tmp_path):
    """SIGKILL while the platform holds back the create's answer: the instance exists, its
    record has no id; occopus-destroy finds it by its name in the listing and stops it."""
    peer, account = cloudbroker_peer, cloudbroker_account
    peer.config(account, create_delay=60)
    path = one_node(occo, tmp_path, peer.url)
    auth_data(occo, account)
    infra = infra_id()
    build = occo.popen('occopus-build', '-i', infra, path)
    try:
        wait_for(lambda: peer.instances(account))
    finally:
        build.kill()
        build.communicate(timeout=30)
    [made] = peer.instances(account)
    [record] = records(occo, infra)
    assert (record['state'], record['instance_id']) == ('creating', None)
    assert made['name'] == f"occopus:{infra}:{record['node_id']}:n"

    [line] = destroy_listing(occo, infra, recorded=1, untracked=0)
    assert line == f"  creating   cloudbroker instance {made['id']}  node n ({record['node_id']})"
    assert len(peer.live(account)) == 1  # a dry run drops nothing
    destroyed = occo.run('occopus-destroy', '-i', infra)
    assert destroyed.returncode == 0, destroyed.stderr
    assert f"dropped ({made['id']})" in destroyed.stderr
    assert_rolled_back(occo, peer, account, infra, destroyed.stderr)
    assert_secret_free(account, line, destroyed.stdout, destroyed.stderr)


def test_destroy_finds_an_instance_no_record_knows(occo, cloudbroker_peer, cloudbroker_account,
                                                   tmp_path):
    """An instance named for the infrastructure that no record knows (a create whose record
    was never written) is listed as untracked and stopped; another infrastructure's is not."""
    peer, account = cloudbroker_peer, cloudbroker_account
    path = one_node(occo, tmp_path, peer.url)
    auth_data(occo, account)
    infra, other = infra_id(), infra_id()
    assert built_id(occo.run('occopus-build', '-i', infra, path)) == infra
    handler = handler_for(account)
    section = {'type': 'cloudbroker', 'endpoint': peer.url,
               'description': {'deployment_id': DEPLOYMENT, 'instance_type_id': SIZE}}
    unknown = handler.create(request_for(section, infra=infra,
                                         node_id='never-recorded')).instance_id
    elsewhere = handler.create(request_for(section, infra=other)).instance_id
    lines = destroy_listing(occo, infra, recorded=1, untracked=1)
    assert f'  untracked  cloudbroker instance {unknown}  tagged for node n (never-recorded)' \
        in lines
    destroyed = occo.run('occopus-destroy', '-i', infra)
    assert destroyed.returncode == 0, destroyed.stderr
    assert [i['id'] for i in peer.live(account)] == [elsewhere]
    assert occo.infra_keys(infra) == []
    handler.drop(Instance(node_id='node-1', node='n', resource=section, instance_id=elsewhere))
    assert peer.live(account) == []


# -- errors ------------------------------------------------------------------------------------

ERRORS = {
    'unknown deployment': (dict(deployment_id='dep-nope'), {},
                           "creating the instance: Deployment with id 'dep-nope' could not be "
                           "found (HTTP 404) -- check deployment_id ('dep-nope')"),
    'unknown instance type': (dict(instance_type_id='it-huge'), {},
                              "creating the instance: Instance type 'it-huge' is not available for "
                              f"deployment '{DEPLOYMENT}' (HTTP 422) -- check deployment_id "
                              f"('{DEPLOYMENT}') and instance_type_id ('it-huge')"),
    'unknown key pair': (dict(key_pair_id='kp-nope'), {},
                         "creating the instance: Key pair 'kp-nope' does not exist (HTTP 422) -- "
                         "check key_pair_id ('kp-nope')"),
    'quota': ({}, {'quota': 0},
              'creating the instance: quota exceeded (HTTP 403): Instance quota exceeded: the '
              'account may run at most 0 instances'),
}


@pytest.mark.parametrize('case', sorted(ERRORS))
def test_platform_errors_fail_in_one_line_and_roll_back(occo, cloudbroker_peer, cloudbroker_account,
                                                        tmp_path, case):
    peer, account = cloudbroker_peer, cloudbroker_account
    description, settings, said = ERRORS[case]
    if settings:
        peer.config(account, **settings)
    path = one_node(occo, tmp_path, peer.url, **description)
    auth_data(occo, account)
    infra = infra_id()
    result = occo.run('occopus-build', '-i', infra, path)
    line = failure_line(result)
    assert re.fullmatch(node_error(peer.url, said), line), line
    assert peer.state(account)['calls']['create'] == 1  # refused once, not retried
    assert peer.instances(account) == []
    assert_rolled_back(occo, peer, account, infra, result.stderr)


def test_a_wrong_password_is_said_once_and_never_shown(occo, cloudbroker_peer, cloudbroker_account,
                                                       tmp_path):
    """The platform quotes the password it refused; neither it nor the email reaches the
    user or Redis."""
    peer, account = cloudbroker_peer, cloudbroker_account
    peer.config(account, echo_password=True)
    wrong = f'Wrong-{uuid.uuid4().hex[:12]}'
    path = one_node(occo, tmp_path, peer.url + '/')
    auth_data(occo, account, password=wrong)
    infra = infra_id()
    result = occo.run('occopus-build', '-i', infra, path)
    line = failure_line(result)
    assert re.fullmatch(node_error(peer.url + '/', (
        'creating the instance: authentication failed (HTTP 401): the platform refused the email '
        'and password of the matching cloudbroker entry of auth_data.yaml (Invalid email or '
        "password (email ***, password '***'))")), line), line
    for text in (result.stdout, result.stderr, repr(occo.snapshot())):
        assert wrong not in text and account.email not in text and account.password not in text
    assert peer.instances(account) == []
    assert occo.infra_keys(infra) == []


def test_an_instance_stuck_in_starting_is_stopped_after_create_timeout(
        occo, cloudbroker_peer, cloudbroker_account, tmp_path):
    peer, account = cloudbroker_peer, cloudbroker_account
    peer.config(account, start_delay=3600)
    path = one_node(occo, tmp_path, peer.url, create_timeout=3)
    auth_data(occo, account)
    infra = infra_id()
    result = occo.run('occopus-build', '-i', infra, path)
    line = failure_line(result)
    assert re.fullmatch(r"occopus-build: error: node 'n' \(instance [0-9a-f]{8}\): not ready after "
                        r'3 s \(the resource is pending: '
                        + re.escape(f'cloudbroker at {peer.url}: ')
                        + r'the instance is starting; create_timeout bounds the wait\)', line), line
    [instance] = peer.instances(account)
    assert instance['status'] in ('stopping', 'halted')
    assert_rolled_back(occo, peer, account, infra, result.stderr)


def test_an_endpoint_that_is_no_url_or_credentials_without_a_password(
        occo, cloudbroker_peer, cloudbroker_account, tmp_path):
    peer, account = cloudbroker_peer, cloudbroker_account
    path = one_node(occo, tmp_path, 'replace_with_endpoint_of_cloudbroker_interface')
    auth_data(occo, account)
    infra = infra_id()
    line = failure_line(occo.run('occopus-build', '-i', infra, path))
    assert re.fullmatch(node_error('replace_with_endpoint_of_cloudbroker_interface', (
        'the endpoint must be the http(s) URL of the CloudBroker API, such as '
        'https://cola-prototype.cloudbroker.com/, '
        "not 'replace_with_endpoint_of_cloudbroker_interface'")),
        line), line
    assert occo.infra_keys(infra) == []

    path = one_node(occo, tmp_path, peer.url)
    write(occo.home, {'.occopus/auth_data.yaml': 'resource:\n  - type: cloudbroker\n'
                                                 f'    auth_data: {{email: "{account.email}"}}\n'})
    line = failure_line(occo.run('occopus-build', '-i', infra, path))
    assert line.endswith(f'the auth_data of cloudbroker {peer.url} needs email and password '
                         '(it has email)'), line
    assert account.email not in line
    assert peer.instances(account) == [] and occo.infra_keys(infra) == []


@pytest.mark.parametrize('extra,said', [
    ('ports: [22, 80]',
     'description value of ports must be text, a number or true/false, got a list'),
    ("'bad key': 1", "description key 'bad key' cannot be an XML element name"),
], ids=['list', 'key'])
def test_descriptions_the_platform_cannot_be_sent_are_refused_at_import(occo, tmp_path, extra,
                                                                        said):
    write(tmp_path, {'nodes.yaml': (
        "'node_def:n':\n  - resource: {type: cloudbroker, endpoint: 'http://127.0.0.1:9/', "
        f"description: {{deployment_id: d, instance_type_id: i, {extra}}}}}\n")})
    result = occo.run('occopus-import', tmp_path / 'nodes.yaml')
    assert result.returncode == 1, result.stderr
    assert 'Traceback' not in result.stderr
    assert said in result.stderr.splitlines()[-1]


# -- retries, lost answers -----------------------------------------------------------------------

def test_429_and_503_answers_are_retried_by_the_engine(occo, cloudbroker_peer, cloudbroker_account,
                                                       tmp_path):
    peer, account = cloudbroker_peer, cloudbroker_account
    peer.config(account, faults={'create': [429, 503], 'show': [503], 'stop': [503]})
    path = one_node(occo, tmp_path, peer.url)
    auth_data(occo, account)
    infra = infra_id()
    result = occo.run('occopus-build', '-i', infra, path)
    assert built_id(result) == infra
    assert re.search(r'^occopus-build: n/[0-9a-f]{8}: the create call on cloudbroker: '
                     + re.escape(f'cloudbroker at {peer.url}: creating the instance: ')
                     + r'Rate limit exceeded, slow down \(HTTP 429\); try 2 in \d+\.\d s$',
                     result.stderr, re.M), result.stderr
    assert len(peer.instances(account)) == 1  # the refused calls made none
    destroyed = occo.run('occopus-destroy', '-i', infra)
    assert destroyed.returncode == 0, destroyed.stderr
    state = peer.state(account)
    assert state['served_faults'] == 4
    assert (state['calls']['create'], state['calls']['stop']) == (1, 1)
    assert_rolled_back(occo, peer, account, infra)


def test_a_lost_create_answer_makes_one_instance(occo, cloudbroker_peer, cloudbroker_account,
                                                 tmp_path):
    """The platform makes the instance and answers 503: the create looks for it by its name
    and takes it rather than making a second one."""
    peer, account = cloudbroker_peer, cloudbroker_account
    peer.config(account, fail_after_create=1)
    path = one_node(occo, tmp_path, peer.url)
    auth_data(occo, account)
    infra = infra_id()
    assert built_id(occo.run('occopus-build', '-i', infra, path)) == infra
    [instance] = peer.instances(account)
    [record] = records(occo, infra)
    assert record['instance_id'] == instance['id'] and record['state'] == 'ready'
    assert occo.run('occopus-destroy', '-i', infra).returncode == 0
    assert_rolled_back(occo, peer, account, infra)


def handler_for(account: PeerAccount, password: Optional[str] = None) -> CloudBrokerHandler:
    return CloudBrokerHandler(HandlerContext(credentials=lambda s: {
        'email': account.email, 'password': password or account.password}))


def request_for(section: Dict[str, Any], attempts: int = 1, node_id: str = 'node-1',
                infra: str = 'infra-1') -> CreateRequest:
    return CreateRequest(infra_id=infra, infra_name='t', node='n', node_id=node_id,
                         resource=section, context=SimpleNamespace(user_data='#cloud-config\n'),
                         attempts=attempts)


def instance_of(section: Dict[str, Any], instance_id: str, node_id: str = 'node-1') -> Instance:
    return Instance(node_id=node_id, node='n', resource=section, instance_id=instance_id)


def section_for(peer: PeerClient) -> Dict[str, Any]:
    return {'type': 'cloudbroker', 'endpoint': peer.url + '/',
            'description': {'deployment_id': DEPLOYMENT, 'instance_type_id': SIZE}}


def test_a_create_tried_again_takes_the_earlier_instance_and_stops_duplicates(cloudbroker_peer,
                                                                              cloudbroker_account):
    peer, account = cloudbroker_peer, cloudbroker_account
    handler, section = handler_for(account), section_for(peer)
    # as two create calls whose answers were lost leave them
    made = [handler.create(request_for(section)) for _ in range(2)]
    other = handler.create(request_for(section, node_id='node-2'))  # another node's: left alone
    again = handler.create(request_for(section, attempts=2))
    assert again.instance_id == made[0].instance_id  # the oldest
    assert sorted(i['id'] for i in peer.live(account)) == \
        sorted([again.instance_id, other.instance_id])
    assert peer.state(account)['calls']['create'] == 3
    found = handler.find('infra-1', [section])
    assert sorted((f.instance_id, f.node_id, f.node) for f in found) == sorted(
        [(again.instance_id, 'node-1', 'n'), (other.instance_id, 'node-2', 'n')])
    for entry in found:
        handler.drop(Instance(node_id=entry.node_id, node='n', resource=entry.resource,
                              instance_id=entry.instance_id))
    assert peer.live(account) == []
    fresh = handler.create(request_for(section, attempts=3))  # nothing to take: made
    assert [i['id'] for i in peer.live(account)] == [fresh.instance_id]
    handler.drop(instance_of(section, fresh.instance_id))


def test_dropping_what_is_stopped_or_gone_is_no_error(cloudbroker_peer, cloudbroker_account):
    peer, account = cloudbroker_peer, cloudbroker_account
    handler, section = handler_for(account), section_for(peer)
    created = handler.create(request_for(section))
    instance = instance_of(section, created.instance_id)
    handler.drop(instance)
    handler.drop(instance)  # stopping (the platform refuses with 422): done already
    wait_for(lambda: peer.instances(account)[0]['status'] == 'halted')
    handler.drop(instance)  # halted
    handler.drop(Instance(node_id='node-2', node='n', resource=section, instance_id='no-such-id'))
    assert handler.states([instance])['node-1'].state == CloudState.SHUTDOWN
    gone = handler.states([instance_of(section, 'no-such-id', node_id='x')])['x']
    assert gone.state == CloudState.SHUTDOWN and 'has no instance no-such-id' in gone.reason
    assert peer.state(account)['unrouted'] == []


# -- hostile answers -----------------------------------------------------------------------------

LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
          + ''.join(f'<!ENTITY lol{n} "{("&lol%s;" % (n - 1 if n > 1 else "")) * 10}">'
                    for n in range(1, 10))
          + ']><instance><id>x</id><status>&lol9;</status></instance>')
EXTERNAL = ('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            '<instance><id>x</id><status>&x;</status></instance>')
HOSTILE_SHOW = {
    'garbage': ('{"id": "not xml"}', CloudState.UNKNOWN, 'the answer is not XML'),
    'empty': ('', CloudState.UNKNOWN, 'the answer is empty, not XML'),
    'billion laughs': (LAUGHS, CloudState.UNKNOWN, 'the answer is XML Occopus refuses to read'),
    'external entity': (EXTERNAL, CloudState.UNKNOWN, 'the answer is XML Occopus refuses to read'),
    'huge': ('<instance><id>x</id><status>' + 'r' * (9 << 20) + '</status></instance>',
             CloudState.UNKNOWN, 'over the 8388608 bytes Occopus reads'),
    'raw control character': ('<instance><id>x</id><status>run\x1bning</status></instance>',
                              CloudState.UNKNOWN, 'the answer is not XML'),
    'escaped control character': ('<instance><id>x</id><status>run&#27;ning</status></instance>',
                                  CloudState.UNKNOWN, 'the answer is not XML'),
    'odd status': ('<instance><id>x</id><status>bogus\u202e</status></instance>',
                   CloudState.UNKNOWN,
                   "the platform reports the status 'bogus\\u202e', which Occopus does not know"),
    'missing fields': ('<instance><id>x</id></instance>', CloudState.UNKNOWN,
                       'the platform reports no status for the instance'),
    'wrong types': ('<instance><id><a>1</a></id><status><b/></status></instance>',
                    CloudState.UNKNOWN, 'the answer names no instance'),
    'other root': ('<error>Internal</error>', CloudState.UNKNOWN, 'the answer names no instance'),
    'odd addresses': ('<instances><instance><id>x</id><status> Running </status>'
                      '<external-hostname></external-hostname><external-ip>203.0.113.9'
                      '</external-ip><internal-hostname><x>1</x></internal-hostname>'
                      '<internal_ip_address>10.0.0.9</internal_ip_address><junk>' + 'j' * 300
                      + '</junk></instance></instances>', CloudState.RUNNING, None),
}


@pytest.mark.parametrize('case', sorted(HOSTILE_SHOW))
def test_hostile_state_answers_are_mapped_never_raised(cloudbroker_peer, cloudbroker_account, case):
    peer, account = cloudbroker_peer, cloudbroker_account
    handler, section = handler_for(account), section_for(peer)
    created = handler.create(request_for(section))
    body, state, said = HOSTILE_SHOW[case]
    peer.config(account, hostile={'show': body})
    instance = instance_of(section, created.instance_id)
    status = handler.states([instance])['node-1']
    assert status.state == state
    if said is None:
        assert status.addresses == ['203.0.113.9', '10.0.0.9']
        assert status.private_address == '10.0.0.9'
    else:
        assert status.reason.startswith(f'cloudbroker at {peer.url}/: ') and said in status.reason
        assert 'root:' not in status.reason and '\x1b' not in status.reason
        assert len(status.reason) <= 1000
    peer.config(account, hostile={})
    handler.drop(instance)
    assert peer.live(account) == []


def test_a_hostile_create_answer_fails_the_node_and_the_instance_is_stopped(
        occo, cloudbroker_peer, cloudbroker_account, tmp_path):
    peer, account = cloudbroker_peer, cloudbroker_account
    peer.config(account, hostile={'create': EXTERNAL})
    path = one_node(occo, tmp_path, peer.url)
    auth_data(occo, account)
    infra = infra_id()
    result = occo.run('occopus-build', '-i', infra, path)
    line = failure_line(result)
    assert re.fullmatch(node_error(peer.url, 'creating the instance: the answer is XML Occopus '
                                             'refuses to read (DTDForbidden: a DTD or entities)'),
                        line), line
    assert len(peer.instances(account)) == 1  # made, then found by its name and stopped
    assert_rolled_back(occo, peer, account, infra, result.stderr)


@pytest.mark.parametrize('body,said', [
    ('<instances><instance><id>x</id>', 'the answer is not XML'),
    (LAUGHS, 'the answer is XML Occopus refuses to read'),
])
def test_a_hostile_listing_is_one_clear_error(cloudbroker_peer, cloudbroker_account, body, said):
    peer, account = cloudbroker_peer, cloudbroker_account
    peer.config(account, hostile={'list': body})
    with pytest.raises(CloudError) as caught:
        handler_for(account).find('infra-1', [section_for(peer)])
    assert str(caught.value).startswith(
        f'cloudbroker at {peer.url}/: listing the instances: {said}')


def test_an_error_body_with_secrets_and_control_characters(cloudbroker_peer, cloudbroker_account):
    """What the platform says is quoted on one printable line, credentials masked before it
    is cut; a listing of an infrastructure's instances skips entries without an id."""
    from occo.plugins.resources import cloudbroker
    peer, account = cloudbroker_peer, cloudbroker_account
    handler = handler_for(account)
    platform = handler._platform(section_for(peer))
    answer = cloudbroker.Answer(422, 'x' * 280 + f' {account.password}\x1b[2J\nand more')
    error = handler._refused(section_for(peer), platform, 'creating the instance', answer)
    assert type(error) is CloudError
    text = str(error)
    assert account.password not in text and 'Pw-' not in text and '\n' not in text
    assert 'x' * 280 + ' ***\\x1b[2J and more' in text
    for status in (429, 500, 503):
        refused = handler._refused(section_for(peer), platform, 'x', cloudbroker.Answer(status, ''))
        assert type(refused) is TransientCloudError
    listing = ('<instances><instance><id/><name>occopus:infra-1:a:n</name></instance>'
               '<instance><id>ok</id><name>occopus:infra-1:b:n</name><status>running</status>'
               '</instance>'
               '<instance><id>bad id</id><name>occopus:infra-1:c:n</name></instance></instances>')
    peer.config(account, hostile={'list': listing})
    found = handler.find('infra-1', [section_for(peer)])
    assert [(f.instance_id, f.node_id) for f in found] == [('ok', 'b')]


def test_a_platform_that_refuses_connections_was_not_sent_the_create():
    from occo.localredis import free_port
    closed = f'http://127.0.0.1:{free_port()}'
    handler = handler_for(PeerAccount('someone@example.org', 'some-password'))
    section = {'type': 'cloudbroker', 'endpoint': closed,
               'description': {'deployment_id': DEPLOYMENT, 'instance_type_id': SIZE}}
    with pytest.raises(TransientCloudError) as caught:
        handler.create(request_for(section))
    assert caught.value.unsent
    assert str(caught.value).startswith(f'cloudbroker at {closed}: creating the instance: '
                                        'cannot reach the platform: ')
    assert 'some-password' not in str(caught.value)


def test_instance_names_carry_the_infrastructure_and_node():
    assert instance_name('infra-1', 'a1b2', 'web') == 'occopus:infra-1:a1b2:web'
    assert instance_name('infra-1', 'a1b2', 'web', 'mine') == 'occopus:infra-1:a1b2:web:mine'


def test_a_create_whose_accepted_answer_cannot_be_read_stops_what_it_made(cloudbroker_peer,
                                                                          cloudbroker_account):
    """The platform made the instance (2xx) but its answer is unreadable: the create fails for
    good, so it must leave nothing -- the instance is stopped by the create itself, not only
    by a rollback that looks for leftovers."""
    peer, account = cloudbroker_peer, cloudbroker_account
    peer.config(account, hostile={'create': EXTERNAL})
    with pytest.raises(CloudError, match='the answer is XML Occopus refuses to read'):
        handler_for(account).create(request_for(section_for(peer)))
    assert len(peer.instances(account)) == 1 and peer.live(account) == []


def test_an_instance_whose_state_cannot_be_read_does_not_hold_up_the_others(cloudbroker_peer,
                                                                            cloudbroker_account):
    peer, account = cloudbroker_peer, cloudbroker_account
    handler, section = handler_for(account), section_for(peer)
    instances = [instance_of(section, handler.create(request_for(section, node_id=n)).instance_id,
                             node_id=n) for n in ('node-1', 'node-2')]
    peer.config(account, faults={'show': [503]})  # the first question of this call fails
    answered = handler.states(instances)
    assert len(answered) == 1  # the other one is answered; the failed one is asked again later
    assert set(handler.states(instances)) == {'node-1', 'node-2'}
    peer.config(account, faults={'show': [503, 503]})
    with pytest.raises(TransientCloudError):  # nothing could be read: the call says why
        handler.states(instances[:1])
