"""The chef config manager against goiardi (the chef-wordpress tutorial on moto's EC2) and
against the organisation-prefixed fake: registration order, attributes and connections,
check-in, drop, the infrastructure forgotten on destroy and rollback, and the error paths."""
from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from chefpeer import CLIENT, ChefPeer, new_key, pem_of
from conftest import CORPUS, fill_in, kill_build_when, write
from peer_ec2 import IMAGE_ID, INSTANCE_TYPE, REGION, FaultProxy
from test_build import built_id, import_ok
from test_ec2 import records, tags

TUTORIAL = CORPUS / 'chef-wordpress'
KEY_LINE = re.compile(r'-----BEGIN|MII[A-Za-z0-9+/]{20}')


def infra_id() -> str:
    return f'chef-{uuid.uuid4().hex[:12]}'


def auth_data(occo, *, chef: List[Dict[str, Any]], ec2: Any = None,
              ec2_url: Optional[str] = None) -> None:
    """``~/.occopus/auth_data.yaml``: an ec2 entry for ``ec2`` (a MotoServer; at ``ec2_url``
    if given) if given, and
    one chef entry per item of ``chef`` (``endpoint``, ``pem``, optional ``name``,
    ``sign_version``, ``client_key`` written as it is).  Each key is written to a file next to
    it and read with ``!text_import``, as users write it."""
    text = ''
    if ec2 is not None:
        text += ('resource:\n  - {type: ec2, endpoint: "%s", auth_data: {accesskey: %s, '
                 'secretkey: "%s"}}\n' % (ec2_url or ec2.url, ec2.access, ec2.secret))
    text += 'config_management:\n'
    folder = occo.home / '.occopus'
    folder.mkdir(exist_ok=True)
    for number, entry in enumerate(chef):
        text += '  - type: chef\n'
        if entry.get('endpoint') is not None:
            text += f'    endpoint: "{entry["endpoint"]}"\n'
        text += f'    auth_data:\n      client_name: {entry.get("name", CLIENT)}\n'
        if 'client_key' in entry:
            text += f'      client_key: {entry["client_key"]}\n'
        else:
            (folder / f'chef{number}.pem').write_text(entry['pem'])
            text += f'      client_key: !text_import {{url: "file://chef{number}.pem"}}\n'
        if entry.get('sign_version'):
            text += f"      sign_version: '{entry['sign_version']}'\n"
    write(folder, {'auth_data.yaml': text})


def assert_secret_free(occo, pems: List[str], *texts: str) -> None:
    """No key material in ``texts``, and none of ``pems`` anywhere in Redis (the tutorial's
    node definitions do hold the validator key, which its cloud-init hands to chef-client)."""
    for text in texts:
        assert not KEY_LINE.search(text), text[:2000]
    for text in list(texts) + [repr(occo.snapshot())]:
        for pem in pems:
            for line in pem.splitlines()[1:-1]:
                assert line not in text


# -- the tutorial against moto and goiardi -----------------------------------------------------

def test_chef_wordpress_tutorial_builds_reports_and_destroys(occo, ec2_peer, goiardi, tmp_path):
    network = ec2_peer.network()
    folder = tmp_path / 'chef-wordpress'
    shutil.copytree(TUTORIAL, folder)
    definitions = fill_in(folder / 'nodes' / 'node_definitions.yaml', dict(
        ec2_peer.tutorial_values(network), url_of_chef_server=goiardi.url))
    validator = (goiardi.root / 'chef-validator.pem').read_text()
    fill_in(folder / 'nodes' / 'cloud_init_chef.yaml', {
        'your_chef_server_url': goiardi.url, 'chef_validation_client_name': 'chef-validator',
        'chef_validation_client_key': validator.strip().replace('\n', '\n        ')})
    auth_data(occo, ec2=ec2_peer, chef=[{'endpoint': goiardi.url, 'name': 'admin',
                                         'pem': goiardi.admin_pem}])
    import_ok(occo, definitions)

    infra = infra_id()
    built = occo.run('occopus-build', '-i', infra, folder / 'infra-chef-wordpress.yaml', cwd=folder)
    assert built_id(built) == infra
    by_node = {r['node']: r for r in records(occo, infra)}
    assert sorted(by_node) == ['mysql-server', 'wordpress']
    assert {r['state'] for r in by_node.values()} == {'ready'}
    assert sorted(tags(i)['occopus:node'] for i in ec2_peer.instances(infra)) == \
        ['mysql-server', 'wordpress']

    assert goiardi.api('GET', f'environments/{infra}')['name'] == infra
    assert goiardi.names('roles', infra) == {f'{infra}_mysql-server', f'{infra}_wordpress'}
    assert set(goiardi.api('GET', f'environments/{infra}/nodes')) == \
        {r['node_id'] for r in by_node.values()}
    variables = {'mysql_root_password': 'replace_with_database_root_password',
                 'mysql_database_name': 'replace_with_database_name',
                 'mysql_dbuser_username': 'replace_with_database_username',
                 'mysql_dbuser_password': 'replace_with_database_user_password'}
    mysql = goiardi.api('GET', f"nodes/{by_node['mysql-server']['node_id']}")
    assert mysql['chef_environment'] == infra
    assert mysql['run_list'] == [f'role[{infra}_mysql-server]', 'recipe[connect]',
                                 'recipe[database-setup::db]']
    assert mysql['normal'] == {
        'mysql': {'server_root_password': variables['mysql_root_password']},
        'database_management': {'database_name': variables['mysql_database_name'],
                                'dbuser_username': variables['mysql_dbuser_username'],
                                'dbuser_password': variables['mysql_dbuser_password']},
        'connections': []}
    wordpress = goiardi.api('GET', f"nodes/{by_node['wordpress']['node_id']}")
    assert wordpress['run_list'] == [f'role[{infra}_wordpress]', 'recipe[connect]',
                                     'recipe[wordpress]']
    assert wordpress['normal'] == {
        'wordpress': {'db': {'name': variables['mysql_database_name'],
                             'user': variables['mysql_dbuser_username'],
                             'pass': variables['mysql_dbuser_password']}},
        'connections': [{'source_role': f'{infra}_mysql-server', 'source_attribute': 'fqdn',
                         'destination_attribute': 'wordpress.db.host'}]}

    report = occo.run('occopus-manage', '-r', '-i', infra)
    assert report.returncode == 0, report.stderr
    for node, record in by_node.items():
        assert re.search(rf'^{node}: \(1 of target 1.*\n  {record["node_id"]} \(ready\):',
                         report.stdout, re.M), report.stdout

    destroyed = occo.run('occopus-destroy', '-i', infra)
    assert destroyed.returncode == 0, destroyed.stderr
    assert destroyed.stdout == f'Destroyed infrastructure {infra} (2 instances)\n'
    assert ec2_peer.instances(infra) == []
    assert goiardi.api('GET', f'environments/{infra}') is None
    assert goiardi.names('roles', infra) == set()
    assert not {r['node_id'] for r in by_node.values()} & goiardi.names('nodes')
    assert occo.infra_keys(infra) == []
    assert_secret_free(occo, [goiardi.admin_pem], built.stdout, built.stderr, report.stdout,
                       report.stderr, destroyed.stdout, destroyed.stderr)


def test_sign_version_1_0_works_on_goiardi(occo, goiardi, tmp_path):
    path = dummy_infra(occo, tmp_path, goiardi.url)
    auth_data(occo, chef=[{'endpoint': goiardi.url, 'name': 'admin', 'pem': goiardi.admin_pem,
                           'sign_version': '1.0'}])
    infra = infra_id()
    built = occo.run('occopus-build', '-i', infra, path)
    assert built_id(built) == infra
    assert goiardi.names('roles', infra) == {f'{infra}_db', f'{infra}_app'}
    destroyed = occo.run('occopus-destroy', '-i', infra)
    assert destroyed.returncode == 0, destroyed.stderr
    assert goiardi.names('roles', infra) == set()
    assert goiardi.api('GET', f'environments/{infra}') is None


# -- the organisation fake ------------------------------------------------------------------

def dummy_infra(occo, folder: Path, endpoint: str, *, timeout: Optional[float] = None,
                db_run_list: str = '["recipe[db]"]') -> Path:
    """Node definitions ``db`` and ``app`` (dummy cloud, chef at ``endpoint``) and an
    infrastructure where ``app`` depends on ``db`` with one mapping; returns its file."""
    create = f', create_timeout: {timeout}' if timeout else ''
    write(folder, {'nodes.yaml': (
        "'node_def:db':\n"
        f'  - resource: {{type: dummy{create}}}\n'
        "    contextualisation: {type: basic, attributes: {db.name: '{{ variables.db }}', "
        "'port': 3306}}\n"
        f'    config_management: {{type: chef, endpoint: "{endpoint}", run_list: {db_run_list}}}\n'
        "'node_def:app':\n"
        f'  - resource: {{type: dummy{create}}}\n'
        "    contextualisation: {type: basic, attributes: {app: {db: '{{ variables.db }}'}}}\n"
        f'    config_management: {{type: chef, endpoint: "{endpoint}", '
        'run_list: ["recipe[app]"]}\n'),
        'infra.yaml': (
            'infra_name: t\nuser_id: u\nvariables: {db: wp}\n'
            'nodes:\n  - &DB {name: db, type: db}\n  - &APP {name: app, type: app}\n'
            'dependencies:\n  - connection: [*APP, *DB]\n'
            '    mappings: [[fqdn, app.db.host], '
            '{attributes: [port, app.db.port], synch: true}]\n')})
    import_ok(occo, folder / 'nodes.yaml')
    return folder / 'infra.yaml'


def chef_objects(peer: ChefPeer, infra: str) -> Dict[str, Any]:
    return {'environments': peer.objects('environments', infra),
            'roles': peer.objects('roles', infra), 'nodes': peer.nodes_in(infra)}


def assert_forgotten(occo, peer: ChefPeer, infra: str, output: str = '') -> None:
    assert chef_objects(peer, infra) == {'environments': {}, 'roles': {}, 'nodes': {}}, output
    assert occo.infra_keys(infra) == [], output


@pytest.mark.parametrize('slash', ['', '/'])
def test_organisation_endpoint_with_signing_1_3(occo, chef_peer, tmp_path, slash):
    endpoint = chef_peer.url + slash
    path = dummy_infra(occo, tmp_path, endpoint)
    auth_data(occo, chef=[{'endpoint': endpoint, 'pem': chef_peer.client_pem}])
    infra = infra_id()
    built = occo.run('occopus-build', '-i', infra, path)
    assert built_id(built) == infra
    by_node = {r['node']: r for r in records(occo, infra)}
    calls = chef_peer.calls_about(infra)
    assert {c.sign_version for c in calls} == {'1.3'}
    assert all(c.status < 400 or c.status == 409 for c in calls), calls
    posts = [(c.path, c.body.get('name')) for c in calls if c.method == 'POST']
    for node in ('db', 'app'):  # environment and role exist before the node is registered
        made = posts.index(('nodes', by_node[node]['node_id']))
        assert posts.index(('environments', infra)) < made
        assert posts.index(('roles', f'{infra}_{node}')) < made
    nodes = chef_peer.nodes_in(infra)
    app = nodes[by_node['app']['node_id']]
    assert app['run_list'] == [f'role[{infra}_app]', 'recipe[connect]', 'recipe[app]']
    assert app['normal'] == {'app': {'db': 'wp'}, 'connections': [
        {'source_role': f'{infra}_db', 'source_attribute': 'fqdn',
         'destination_attribute': 'app.db.host'},
        {'source_role': f'{infra}_db', 'source_attribute': 'port',
         'destination_attribute': 'app.db.port'}]}
    assert nodes[by_node['db']['node_id']]['normal'] == {'db': {'name': 'wp'}, 'port': 3306,
                                                         'connections': []}
    destroyed = occo.run('occopus-destroy', '-i', infra)
    assert destroyed.returncode == 0, destroyed.stderr
    assert_forgotten(occo, chef_peer, infra, destroyed.stderr)
    assert_secret_free(occo, [chef_peer.client_pem], built.stdout, built.stderr,
                       destroyed.stdout, destroyed.stderr)


def build_fails(occo, path: Path, infra: str, pattern: str, *,
                env: Optional[Dict[str, str]] = None) -> Any:
    """The build exits 1 with one line naming the node and matching ``pattern``, no
    traceback."""
    result = occo.run('occopus-build', '-i', infra, path, env=env)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert 'Traceback' not in result.stderr
    assert re.search(pattern, result.stderr.rstrip().splitlines()[-1]), result.stderr
    return result


def test_wrong_key_fails_in_one_line_and_rolls_back(occo, chef_peer, tmp_path):
    path = dummy_infra(occo, tmp_path, chef_peer.url)
    wrong = pem_of(new_key())
    auth_data(occo, chef=[{'endpoint': chef_peer.url, 'pem': wrong}])
    infra = infra_id()
    result = build_fails(occo, path, infra, re.escape(
        "node 'db' (instance ") + r"[0-9a-f]{8}\): " + re.escape(
        f"chef at {chef_peer.url}: POST environments refused (HTTP 401): Invalid signature for "
        "user or client '***' -- the server refused the credentials: check client_name "
        'and client_key of the matching chef entry of auth_data.yaml'))
    assert_forgotten(occo, chef_peer, infra, result.stderr)
    assert_secret_free(occo, [wrong, chef_peer.client_pem], result.stdout, result.stderr)


def test_endpoint_without_the_organisation_is_named(occo, chef_peer, tmp_path):
    endpoint = chef_peer.base
    path = dummy_infra(occo, tmp_path, endpoint)
    auth_data(occo, chef=[{'endpoint': endpoint, 'pem': chef_peer.client_pem}])
    infra = infra_id()
    result = build_fails(occo, path, infra, re.escape(
        f'chef at {endpoint}: POST environments refused (HTTP 404): not found: the organisation '
        'is missing -- no such object: is the endpoint the server URL (with /organizations/<org> '
        'for an organisation)?') + '$')
    assert_forgotten(occo, chef_peer, infra, result.stderr)


def test_missing_auth_entry_is_one_line_before_anything_is_made(occo, chef_peer, tmp_path):
    path = dummy_infra(occo, tmp_path, chef_peer.url)
    auth_data(occo, chef=[{'endpoint': 'http://127.0.0.1:9/other', 'pem': chef_peer.client_pem}])
    infra = infra_id()
    result = occo.run('occopus-build', '-i', infra, path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(
        f"node 'db': Authorisation information is not set for the target chef server "
        f'{chef_peer.url}: add an entry with type: chef (and endpoint) to the config_management '
        'section of auth_data.yaml'), result.stderr
    assert chef_peer.calls_about(infra) == []
    assert occo.infra_keys(infra) == []


@pytest.mark.parametrize('key, said', [
    ('"~/.chef/occopus.pem"', 'client_key must be the PEM text of the key; write '
                              '`client_key: !text_import {url: file://key.pem}`'),
    ('"-----BEGIN RSA PRIVATE KEY-----\\nnot really\\n-----END RSA PRIVATE KEY-----"',
     'client_key is not a readable unencrypted PEM private key'),
])
def test_unusable_client_key_is_one_line(occo, chef_peer, tmp_path, key, said):
    path = dummy_infra(occo, tmp_path, chef_peer.url)
    auth_data(occo, chef=[{'endpoint': chef_peer.url, 'client_key': key}])
    infra = infra_id()
    result = build_fails(occo, path, infra, re.escape(
        f"the chef entry of auth_data.yaml for {chef_peer.url}: {said}"))
    assert 'not really' not in result.stderr and '.chef/occopus.pem' not in result.stderr
    assert_forgotten(occo, chef_peer, infra, result.stderr)


def test_server_errors_are_retried_then_fail_and_roll_back(occo, chef_peer, tmp_path):
    cfg = write(tmp_path, {'cfg.yaml': 'call_timeout: 2\n'}) / 'cfg.yaml'
    path = dummy_infra(occo, tmp_path, chef_peer.url)
    auth_data(occo, chef=[{'endpoint': chef_peer.url, 'pem': chef_peer.client_pem}])
    infra = infra_id()
    rule = chef_peer.script('POST', r'^nodes$', lambda p: (503, '{"error": ["overloaded"]}',
                                                           'application/json'))
    try:
        result = occo.run('occopus-build', '--cfg', cfg, '-i', infra, path)
    finally:
        chef_peer.unscript(rule)
    assert result.returncode == 1, result.stderr
    assert re.search(r'the registration with chef: .*POST nodes refused \(HTTP 503\): overloaded; '
                     r'try 2 in', result.stderr), result.stderr
    assert result.stderr.rstrip().splitlines()[-1].endswith(
        f'chef at {chef_peer.url}: POST nodes refused (HTTP 503): overloaded'), result.stderr
    assert 'Traceback' not in result.stderr
    assert_forgotten(occo, chef_peer, infra, result.stderr)


def test_server_down_fails_in_one_line(occo, chef_peer, tmp_path):
    from occo.localredis import free_port
    cfg = write(tmp_path, {'cfg.yaml': 'call_timeout: 1.5\n'}) / 'cfg.yaml'
    endpoint = f'http://127.0.0.1:{free_port()}/organizations/occo'
    path = dummy_infra(occo, tmp_path, endpoint)
    auth_data(occo, chef=[{'endpoint': endpoint, 'pem': chef_peer.client_pem}])
    infra = infra_id()
    result = occo.run('occopus-build', '--cfg', cfg, '-i', infra, path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.rstrip().splitlines()[-1].endswith(
        f'chef at {endpoint}: POST environments: cannot connect'), result.stderr
    assert occo.infra_keys(infra) == []


def test_node_that_never_checks_in_times_out_and_is_deleted(occo, chef_peer, tmp_path):
    path = dummy_infra(occo, tmp_path, chef_peer.url, timeout=2)
    auth_data(occo, chef=[{'endpoint': chef_peer.url, 'pem': chef_peer.client_pem}])
    infra = infra_id()
    chef_peer.no_checkin.add(infra)
    result = occo.run('occopus-build', '-i', infra, path)
    assert result.returncode == 1, result.stderr
    assert re.search(r"node 'db' \(instance [0-9a-f]{8}\): .*config manager is not done yet",
                     result.stderr.rstrip().splitlines()[-1]), result.stderr
    made = [c.body['name'] for c in chef_peer.calls_about(infra)
            if (c.method, c.path) == ('POST', 'nodes')]
    assert len(made) == 1
    assert ('DELETE', f'nodes/{made[0]}') in [(c.method, c.path) for c in chef_peer.calls]
    assert_forgotten(occo, chef_peer, infra, result.stderr)


HOSTILE = {
    'garbage': (200, b'<html>\x1b[31mnot json', 'text/html'),
    'huge': (200, b'{"a": "' + b'x' * (5 * 1024 * 1024) + b'"}', 'application/json'),
    'list': (200, b'[1, 2, 3]', 'application/json'),
    'error garbage': (400, b'\x00\x1b]0;title\x07' + b'y' * 5000, 'text/plain'),
}


@pytest.mark.parametrize('case', sorted(HOSTILE))
def test_hostile_answers_are_mapped(occo, chef_peer, tmp_path, case):
    cfg = write(tmp_path, {'cfg.yaml': 'call_timeout: 3\n'}) / 'cfg.yaml'
    path = dummy_infra(occo, tmp_path, chef_peer.url, timeout=3)
    auth_data(occo, chef=[{'endpoint': chef_peer.url, 'pem': chef_peer.client_pem}])
    infra = infra_id()
    # the listing of roles (forgetting the infrastructure) and each node read (readiness)
    rules = [chef_peer.script('GET', r'^nodes/', HOSTILE[case])]
    if case != 'error garbage':
        rules.append(chef_peer.script('GET', r'^roles$', HOSTILE[case], times=1))
    try:
        result = occo.run('occopus-build', '--cfg', cfg, '-i', infra, path)
    finally:
        for rule in rules:
            chef_peer.unscript(rule)
    assert result.returncode == 1, result.stderr
    assert 'Traceback' not in result.stderr and '\x1b' not in result.stderr
    assert re.search(r"^occopus-build: db/[0-9a-f]{8}: failed: .*its config manager is not done "
                     "yet", result.stderr, re.M), result.stderr
    assert len(result.stderr) < 20000
    if case == 'error garbage':
        assert_forgotten(occo, chef_peer, infra, result.stderr)
        return
    # forgetting the infrastructure met the hostile listing: said in one line, kept for destroy
    assert result.stderr.rstrip().splitlines()[-1].startswith(
        'occopus-build: error: what chef keeps for the infrastructure could not be removed: '
        f'chef at {chef_peer.url}: GET roles: the answer is '), result.stderr
    destroyed = occo.run('occopus-destroy', '-i', infra)
    assert destroyed.returncode == 0, destroyed.stderr
    assert_forgotten(occo, chef_peer, infra, destroyed.stderr)


def test_killed_build_leaves_a_chef_node_and_an_instance_that_destroy_removes(
        occo, ec2_peer, chef_peer, tmp_path):
    with FaultProxy(ec2_peer.url, hold=('RunInstances',)) as proxy:
        section = json.dumps(dict(type='ec2', endpoint=proxy.url, regionname=REGION,
                                  image_id=IMAGE_ID, instance_type=INSTANCE_TYPE))
        write(tmp_path, {'nodes.yaml': (
            "'node_def:n':\n"
            f'  - resource: {section}\n'
            "    contextualisation: {type: cloudinit, context_template: '#cloud-config\n{}', "
            "attributes: {a: 1}}\n"
            f'    config_management: {{type: chef, endpoint: "{chef_peer.url}", run_list: []}}\n'),
            'infra.yaml': 'infra_name: t\nuser_id: u\nnodes: [{name: n, type: n}]\n'})
        import_ok(occo, tmp_path / 'nodes.yaml')
        auth_data(occo, ec2=ec2_peer, ec2_url=proxy.url,
                  chef=[{'endpoint': chef_peer.url, 'pem': chef_peer.client_pem}])
        infra = infra_id()
        kill_build_when(occo, proxy.held, '-i', infra, tmp_path / 'infra.yaml')
        [record] = records(occo, infra)
        assert (record['state'], record['instance_id']) == ('creating', None)
        assert list(chef_peer.nodes_in(infra)) == [record['node_id']]
        # a node whose record was never written (a build killed just after registering it)
        stray = chef_peer.nodes_in(infra)[record['node_id']]
        chef_peer.store['nodes']['never-recorded'] = dict(stray, name='never-recorded')
        proxy.release.set()
        deadline = time.monotonic() + 30
        while not ec2_peer.instances(infra) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(ec2_peer.instances(infra)) == 1

        destroyed = occo.run('occopus-destroy', '-i', infra)
        assert destroyed.returncode == 0, destroyed.stderr
        assert ec2_peer.instances(infra) == []
        assert_forgotten(occo, chef_peer, infra, destroyed.stderr)
