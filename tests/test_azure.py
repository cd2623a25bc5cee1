"""The azure_vm and azure_aci handlers against the HTTPS fake of Entra ID and ARM
(:mod:`azurepeer`): the azure-helloworld and azure-aci-nginx tutorials, a killed build's
leftovers, the error paths each with a full rollback, throttling, hostile answers, and the
client secret kept out of sight."""
from __future__ import annotations

import base64
import json
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import yaml

from conftest import CORPUS, destroy_listing, fill_in, kill_build_when, records, write
from occo.localredis import free_port
from peer_azure import PeerInfo
from test_build import built_id, import_ok

TENANT = 'c0ffee00-0000-4000-8000-00000000a2e0'
GROUP = 'occopus-rg'
LOCATION = 'westeurope'
VM_KEYS = dict(resource_group=GROUP, location=LOCATION, vm_size='Standard_B1s',
               publisher='Canonical', offer='UbuntuServer', sku='18.04-LTS', version='latest',
               username='azureuser', password='Vm-Passw0rd!')


@pytest.fixture
def azure(occo, azure_peer: PeerInfo, azure_subscription: str) -> 'Azure':
    """This test's subscription, its pre-existing resource group, and the subprocesses'
    environment: the test CA trusted, and every non-loopback host behind a dead proxy (so a
    contact with the public login host would fail the build)."""
    azure_peer.cloud.add_group(azure_subscription, GROUP, LOCATION)
    azure_peer.cloud.arm_hold()
    occo.env.update(REQUESTS_CA_BUNDLE=str(azure_peer.bundle),
                    HTTPS_PROXY=f'http://127.0.0.1:{free_port()}', NO_PROXY='127.0.0.1,localhost')
    occo.env.pop('https_proxy', None)
    occo.env.pop('no_proxy', None)
    return Azure(occo, azure_peer, azure_subscription)


class Azure:
    def __init__(self, occo: Any, peer: PeerInfo, subscription: str) -> None:
        self.occo, self.peer, self.cloud, self.sub = occo, peer, peer.cloud, subscription

    def auth_data(self, *, secret: Optional[str] = None, types: tuple = ('azure_vm', 'azure_aci'),
                  endpoint: Optional[str] = None) -> None:
        entries = ''.join(
            f'  - type: {t}\n' + (f'    endpoint: "{endpoint}"\n' if endpoint else '') +
            f'    auth_data: {{tenant_id: {TENANT}, client_id: {self.peer.client_id}, '
            f'client_secret: "{secret or self.peer.client_secret}", subscription_id: {self.sub}, '
            f'authority: "{self.peer.url}/"}}\n' for t in types)
        write(self.occo.home / '.occopus', {'auth_data.yaml': 'resource:\n' + entries})

    def resources(self) -> List[Dict[str, Any]]:
        return self.cloud.held_resources(self.sub)

    def by_type(self, kind: str) -> List[Dict[str, Any]]:
        return [r for r in self.resources() if r['type'].endswith('/' + kind)]

    def calls(self, kind: str) -> int:
        return sum(1 for k, path in self.cloud.calls if k == kind and self.sub in path)

    def assert_nothing_left(self, infra: str, output: str = '') -> None:
        assert self.resources() == [], output
        assert self.cloud.group(self.sub, GROUP) is not None  # the resource group is kept
        assert self.occo.infra_keys(infra) == [], output

    def assert_secret_free(self, *texts: str) -> None:
        for text in list(texts) + [repr(self.occo.snapshot())]:
            assert self.peer.client_secret not in text


def one_vm_node(azure: Azure, folder: Path, *, context: str = '#cloud-config\n{}',
                endpoint: Optional[str] = None, **keys: Any) -> Path:
    section = dict(type='azure_vm', endpoint=endpoint or azure.peer.url, **dict(VM_KEYS, **keys))
    write(folder, {'nodes.yaml': (
        "'node_def:n':\n"
        f'  - resource: {json.dumps(section)}\n'
        f'    contextualisation: {{type: cloudinit, context_template: {json.dumps(context)}}}\n'),
        'infra.yaml': 'infra_name: t\nuser_id: u\nnodes: [{name: n, type: n}]\n'})
    import_ok(azure.occo, folder / 'nodes.yaml')
    return folder / 'infra.yaml'


def one_aci_node(azure: Azure, folder: Path, *, env: str = '[A=1]', command: str = '[sleep, "9"]',
                 **keys: Any) -> Path:
    section = dict(dict(type='azure_aci', endpoint=azure.peer.url, resource_group=GROUP,
                        location=LOCATION, image='busybox', network_type='private', memory=1,
                        cpu_cores=1, os_type='linux'), **keys)
    write(folder, {'nodes.yaml': (
        "'node_def:n':\n"
        f'  - resource: {json.dumps(section)}\n'
        f'    contextualisation: {{type: docker, env: {env}, command: {command}}}\n'),
        'infra.yaml': 'infra_name: t\nuser_id: u\nnodes: [{name: n, type: n}]\n'})
    import_ok(azure.occo, folder / 'nodes.yaml')
    return folder / 'infra.yaml'


def infra_id() -> str:
    return f'az-{uuid.uuid4().hex[:12]}'


def assert_one_line_error(stderr: str, pattern: str) -> None:
    assert 'Traceback' not in stderr
    line = r'^occopus-build: n/[0-9a-f]{8}: failed: ' + pattern + '$'
    assert re.search(line, stderr, re.M), stderr
    assert stderr.rstrip().splitlines()[-1].startswith('occopus-build: ')


# -- the tutorials -----------------------------------------------------------------------------

def copy_tutorial(name: str, folder: Path, values: Dict[str, str], endpoint: str) -> Path:
    shutil.copytree(CORPUS / name, folder, ignore=shutil.ignore_patterns('golden'))
    definitions = fill_in(folder / 'nodes' / 'node_definitions.yaml', values)
    text = definitions.read_text()
    assert 'https://management.azure.com' in text
    definitions.write_text(text.replace('https://management.azure.com', endpoint))
    return definitions


def test_azure_helloworld_builds_reports_and_destroys(occo, azure, tmp_path):
    folder = tmp_path / 'azure-helloworld'
    definitions = copy_tutorial('azure-helloworld', folder, {
        'resource_group_name': GROUP, 'location': LOCATION, 'vm_size': VM_KEYS['vm_size'],
        'publisher_name': 'Canonical', 'offer': 'UbuntuServer', 'sku': '18.04-LTS',
        'version': 'latest', 'admin_username': 'azureuser', 'admin_password': 'Vm-Passw0rd!'},
        azure.peer.url)
    azure.auth_data()
    import_ok(occo, definitions)
    infra = infra_id()
    built = occo.run('occopus-build', '-i', infra, folder / 'infra-azure-helloworld.yaml',
                     cwd=folder)
    assert built_id(built) == infra

    # the client-credentials flow ran at the authority given (the peer), never elsewhere
    token_path = f'/{TENANT}/oauth2/v2.0/token'
    assert ('POST token', token_path) in azure.cloud.calls
    assert ('GET openid-configuration', f'/{TENANT}/v2.0/.well-known/openid-configuration') in \
        azure.cloud.calls
    assert not [c for c in azure.cloud.calls if c[0] == 'GET discovery']

    [record] = records(occo, infra)
    name = f"occopus-azure-helloworld-i-{infra[:8]}-helloworld-{record['node_id'][:8]}"
    # progress names the resource group and the VM; the subscription id is masked with the
    # rest of the auth data (not a secret, but masking it is harmless)
    assert f"helloworld/{record['node_id'][:8]}: created /subscriptions/***/resourceGroups/" \
        f'{GROUP}/providers/Microsoft.Compute/virtualMachines/{name} on azure_vm' in built.stderr
    assert azure.sub not in built.stderr + built.stdout
    tags = {'occopus_infra_id': infra, 'occopus_node_id': record['node_id'],
            'occopus_node': 'helloworld'}
    [vm] = azure.by_type('virtualMachines')
    [nic] = azure.by_type('networkInterfaces')
    [vnet] = azure.by_type('virtualNetworks')
    assert [r['name'] for r in (vm, nic, vnet)] == [name, f'{name}-nic', f'{name}-vnet']
    assert azure.by_type('publicIPAddresses') == []  # public_ip_needed is not set
    for part in (vm, nic, vnet):
        assert part['tags'] == tags
    assert (record['state'], record['instance_id']) == ('ready', vm['id'])
    props = vm['properties']
    assert props['hardwareProfile'] == {'vmSize': 'Standard_B1s'}
    assert props['storageProfile']['imageReference'] == {
        'publisher': 'Canonical', 'offer': 'UbuntuServer', 'sku': '18.04-LTS', 'version': 'latest'}
    assert props['storageProfile']['osDisk']['deleteOption'] == 'Delete'
    assert props['osProfile']['adminUsername'] == 'azureuser'
    custom = base64.b64decode(props['osProfile']['customData']).decode()
    assert custom.startswith('#cloud-config\n')
    assert yaml.safe_load(custom)['write_files'][0] == {
        'content': 'Hello World! I have been created by Occopus\n', 'path': '/tmp/helloworld.txt',
        'permissions': '0644'}
    assert len(azure.by_type('disks')) == 1
    private = nic['properties']['ipConfigurations'][0]['properties']['privateIPAddress']
    assert record['addresses'] == [private] and record['private_address'] == private
    assert f'    {private}\n' in built.stdout

    report = occo.run('occopus-manage', '-r', '-i', infra)
    assert report.returncode == 0, report.stderr
    assert re.search(rf'^helloworld: \(1 of target 1.*\n  {record["node_id"]} \(ready\):\n'
                     rf'    {re.escape(private)}$', report.stdout, re.M), report.stdout
    listed = destroy_listing(occo, infra, recorded=1, untracked=0)
    assert vm['id'] in listed[0]

    destroyed = occo.run('occopus-destroy', '-i', infra)
    assert destroyed.returncode == 0, destroyed.stderr
    assert destroyed.stdout == f'Destroyed infrastructure {infra} (1 instance)\n'
    azure.assert_nothing_left(infra, destroyed.stderr)  # the OS disk went with the VM
    azure.assert_secret_free(built.stdout, built.stderr, report.stdout, destroyed.stderr)


def test_azure_aci_nginx_builds_reports_and_destroys(occo, azure, tmp_path):
    folder = tmp_path / 'azure-aci-nginx'
    definitions = copy_tutorial('azure-aci-nginx', folder, {
        'resource_group_name': GROUP, 'location': LOCATION, 'memory': '1.5', 'cpu_cores': '1'},
        azure.peer.url + '/')  # an endpoint with a trailing slash
    azure.auth_data()
    import_ok(occo, definitions)
    infra = infra_id()
    built = occo.run('occopus-build', '-i', infra, folder / 'infra-azure-aci-nginx.yaml',
                     cwd=folder)
    assert built_id(built) == infra
    by_node = {r['node']: r for r in records(occo, infra)}
    groups = {g['tags']['occopus_node']: g for g in azure.by_type('containerGroups')}
    assert sorted(groups) == ['nginx-client', 'nginx-server'] == sorted(by_node)
    assert len(azure.resources()) == 2  # public network: nothing else is made
    for node, group in groups.items():
        record = by_node[node]
        assert group['tags'] == {'occopus_infra_id': infra, 'occopus_node_id': record['node_id'],
                                 'occopus_node': node}
        address = group['properties']['ipAddress']
        fqdn = f"{group['name']}.{LOCATION}.azurecontainer.io"
        assert (address['type'], address['dnsNameLabel'], address['fqdn']) == (
            'Public', group['name'], fqdn)
        assert record['instance_id'] == group['id'] and record['state'] == 'ready'
        assert record['addresses'] == [fqdn, address['ip']]
        [container] = group['properties']['containers']
        env = {e['name']: e['value'] for e in container['properties']['environmentVariables']}
        assert env['_OCCOPUS_ALLOCATED_FQDN'] == fqdn
        assert container['properties']['resources']['requests'] == {'memoryInGB': 1.5, 'cpu': 1.0}
        assert group['properties']['osType'] == 'Linux'
    server, client = groups['nginx-server'], groups['nginx-client']
    client_props = client['properties']['containers'][0]['properties']
    server_fqdn = server['properties']['ipAddress']['fqdn']
    assert client_props['image'] == 'alpine'
    assert {'name': 'message', 'value': 'Hello World! I am the client node created by Occopus.'} \
        in client_props['environmentVariables']
    assert client_props['command'][:2] == ['sh', '-c']
    assert f'wget -O /tmp/nginx_content.html {server_fqdn};' in client_props['command'][2]
    assert client_props['ports'] == [{'port': 8080, 'protocol': 'TCP'}]
    assert server['properties']['containers'][0]['properties']['image'] == 'nginx:alpine'

    report = occo.run('occopus-manage', '-r', '-i', infra)
    assert report.returncode == 0, report.stderr
    assert f'    {server_fqdn}\n' in report.stdout
    destroyed = occo.run('occopus-destroy', '-i', infra)
    assert destroyed.returncode == 0, destroyed.stderr
    assert destroyed.stderr.index('nginx-client/') < destroyed.stderr.index('nginx-server/')
    azure.assert_nothing_left(infra, destroyed.stderr)
    azure.assert_secret_free(built.stdout, built.stderr, report.stdout, destroyed.stderr)


def test_a_private_container_group_gets_a_tagged_network_removed_with_it(occo, azure, tmp_path):
    path = one_aci_node(azure, tmp_path, ports=[8080, '53/UDP'], gpu_type='K80',
                        env="[A=1, junk, 'B=x=y']")
    azure.auth_data()
    infra = infra_id()
    assert built_id(occo.run('occopus-build', '-i', infra, path)) == infra
    [group] = azure.by_type('containerGroups')
    [vnet] = azure.by_type('virtualNetworks')
    assert vnet['tags'] == group['tags'] and group['tags']['occopus_infra_id'] == infra
    [subnet] = vnet['properties']['subnets']
    assert subnet['properties']['delegations'][0]['properties']['serviceName'] == \
        'Microsoft.ContainerInstance/containerGroups'
    assert group['properties']['subnetIds'] == [{'id': subnet['id']}]
    assert group['properties']['ipAddress']['type'] == 'Private'
    [container] = group['properties']['containers']
    props = container['properties']
    assert props['environmentVariables'] == [{'name': 'A', 'value': '1'},
                                             {'name': 'B', 'value': 'x=y'}]
    assert props['command'] == ['sleep', '9']
    assert props['ports'] == [{'port': 8080, 'protocol': 'TCP'}, {'port': 53, 'protocol': 'UDP'}]
    assert props['resources']['requests']['gpu'] == {'count': 1, 'sku': 'K80'}
    [record] = records(occo, infra)
    assert record['addresses'] == [group['properties']['ipAddress']['ip']]
    assert occo.run('occopus-destroy', '-i', infra).returncode == 0
    azure.assert_nothing_left(infra)


# -- a killed build ----------------------------------------------------------------------------

def test_a_build_killed_after_the_nic_leaves_parts_destroy_finds_by_tags(occo, azure, tmp_path):
    """SIGKILL while ARM holds the VM's create: the vnet, public IP and NIC exist, tagged; the
    record has no id.  occopus-destroy finds them by their tags and deletes them in order."""
    azure.cloud.configure(azure.sub, hold=['PUT virtualMachines'])
    path = one_vm_node(azure, tmp_path, public_ip_needed=True)
    azure.auth_data()
    infra = infra_id()
    kill_build_when(occo, azure.cloud.held, '-i', infra, path)
    # the held create is refused once let go: the VM is never made
    azure.cloud.configure(azure.sub, faults={'PUT virtualMachines': [{'status': 500}]})
    azure.cloud.release()
    [record] = records(occo, infra)
    assert (record['state'], record['instance_id']) == ('creating', None)
    kinds = sorted(r['type'].split('/')[-1] for r in azure.resources() if r['type'].count('/') == 1)
    assert kinds == ['networkInterfaces', 'publicIPAddresses', 'virtualNetworks']
    for part in azure.cloud.tagged(azure.sub, infra):
        assert part['tags']['occopus_node_id'] == record['node_id']

    [listed] = destroy_listing(occo, infra, recorded=1, untracked=0)
    assert '/providers/Microsoft.Network/networkInterfaces/' in listed
    assert len(azure.resources()) == 4  # nothing dropped by a dry run (subnet included)
    destroyed = occo.run('occopus-destroy', '-i', infra)
    assert destroyed.returncode == 0, destroyed.stderr
    azure.assert_nothing_left(infra, destroyed.stderr)


# -- errors ------------------------------------------------------------------------------------

TOKEN_REFUSED = {'status': 401, 'headers': {'WWW-Authenticate': 'Bearer error="invalid_token"'},
                 'body': {'error': {'code': 'InvalidAuthenticationToken',
                                    'message': 'The access token is invalid.'}}}
TOKEN_HINT = (r' -- ARM refused the token: check tenant_id, subscription_id and the endpoint '
              r'\(and authority\) of the auth data')

#: case -> (keys of the node's section, knobs of the peer, client secret, what the one line
#: says after "azure_vm at <endpoint>: ", the kind of part whose DELETE shows the rollback)
ERRORS = {
    'wrong secret': (dict(), {}, 'a-wrong-secret',
                     r'looking up resource group occopus-rg: the login at \S+ \(tenant \S+\) '
                     r'failed: .*AADSTS7000215: Invalid client secret provided.* -- check '
                     r'tenant_id, client_id and client_secret of the matching azure_vm entry .*',
                     None),
    'unknown size': (dict(vm_size='Standard_Giant'), {}, None,
                     r"creating virtual machine \S+ refused \(SkuNotAvailable, HTTP 409\): The "
                     r"requested VM size 'Standard_Giant' is not available .*",
                     'networkInterfaces'),
    'unknown image': (dict(sku='99.99-LTS'), {}, None,
                      r"creating virtual machine \S+ refused \(PlatformImageNotFound, HTTP 404\): "
                      r"The platform image 'Canonical:UbuntuServer:99.99-LTS:latest' is not "
                      r"available.*", 'networkInterfaces'),
    'quota': (dict(public_ip_needed=True), {'quota_cores': 0}, None,
              r'creating virtual machine \S+ refused \(OperationNotAllowed, HTTP 409\): Operation '
              r'could not be completed as it results in exceeding approved Total Regional Cores '
              r'quota.* -- a quota of the subscription is used up: .*', 'publicIPAddresses'),
    'no such vnet': (dict(vnet_name='missing-vnet'), {}, None,
                     r'looking up virtual network missing-vnet refused \(ResourceNotFound, '
                     r'HTTP 404\): .*', None),
    # ARM itself refuses the token Entra ID gave (e.g. one of another tenant or audience):
    # for the whole subscription (its first call is a HEAD: a 401 without a body) ...
    'token refused': (dict(), {'refuse_tokens': True}, None,
                      r'looking up resource group occopus-rg refused \(InvalidAuthenticationToken, '
                      r'HTTP 401\): The access token is invalid\.'
                      + TOKEN_HINT, None),
    # ... or after the virtual network was made
    'token refused later': (dict(), {'faults': {'PUT networkInterfaces': [TOKEN_REFUSED]}}, None,
                            r'creating network interface \S+ refused \(InvalidAuthenticationToken, '
                            r'HTTP 401\): The access token is invalid\.' + TOKEN_HINT,
                            'virtualNetworks'),
}


@pytest.mark.parametrize('case', sorted(ERRORS))
def test_cloud_errors_fail_in_one_line_and_roll_back(occo, azure, tmp_path, case):
    keys, knobs, secret, said, undone = ERRORS[case]
    azure.cloud.configure(azure.sub, **knobs)
    path = one_vm_node(azure, tmp_path, **keys)
    azure.auth_data(secret=secret)
    infra = infra_id()
    result = occo.run('occopus-build', '-i', infra, path)
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr, re.escape(f'azure_vm at {azure.peer.url}: ') + said)
    if undone:
        assert azure.calls(f'DELETE {undone}') >= 1  # the parts made were removed
    azure.assert_nothing_left(infra, result.stderr)
    azure.assert_secret_free(result.stdout, result.stderr)
    assert 'a-wrong-secret' not in result.stderr


def test_a_vm_stuck_in_creating_past_create_timeout_is_rolled_back(occo, azure, tmp_path):
    azure.cloud.configure(azure.sub, stuck=True)
    path = one_vm_node(azure, tmp_path, public_ip_needed=True, create_timeout=3)
    azure.auth_data()
    infra = infra_id()
    result = occo.run('occopus-build', '-i', infra, path)
    assert result.returncode == 1, result.stderr
    assert 'Traceback' not in result.stderr
    assert re.search(r'^occopus-build: n/[0-9a-f]{8}: failed: .*create_timeout', result.stderr,
                     re.M), result.stderr
    assert azure.calls('DELETE virtualMachines') >= 1
    azure.assert_nothing_left(infra, result.stderr)


def test_a_failed_provisioning_is_a_failure_with_the_cloud_s_reason(occo, azure, tmp_path):
    azure.cloud.configure(azure.sub, fail={'code': 'OSProvisioningInternalError',
                                           'message': 'OS provisioning failed\x1b[2J for VM'})
    path = one_vm_node(azure, tmp_path)
    azure.auth_data()
    infra = infra_id()
    result = occo.run('occopus-build', '-i', infra, path)
    assert result.returncode == 1, result.stderr
    assert 'the provisioning of the virtual machine failed: OS provisioning failed\\x1b[2J for VM' \
        in result.stderr
    assert '\x1b' not in result.stderr
    azure.assert_nothing_left(infra, result.stderr)


def test_an_error_echoing_the_secret_is_masked(occo, azure, tmp_path):
    echo = {'status': 400, 'body': {'error': {'code': 'InvalidParameter', 'message':
            f'secret {azure.peer.client_secret} is not a valid ' + 'x' * 3000}}}
    azure.cloud.configure(azure.sub, faults={'PUT networkInterfaces': [echo]})
    path = one_vm_node(azure, tmp_path)
    azure.auth_data()
    infra = infra_id()
    result = occo.run('occopus-build', '-i', infra, path)
    assert result.returncode == 1, result.stderr
    start = re.escape(f'azure_vm at {azure.peer.url}: creating network interface ')
    assert_one_line_error(result.stderr, start + r'\S+ refused \(InvalidParameter, HTTP 400\): '
                          r'secret \*\*\* is not a valid x+…')
    azure.assert_secret_free(result.stdout, result.stderr)
    azure.assert_nothing_left(infra, result.stderr)


def test_throttling_and_503_are_answered_by_engine_retries(occo, azure, tmp_path):
    busy = {'status': 429, 'headers': {'Retry-After': '1'},
            'body': {'error': {'code': 'TooManyRequests', 'message': 'Too many requests'}}}
    down = {'status': 503, 'raw': '<html>Service Unavailable</html>'}
    azure.cloud.configure(azure.sub, faults={'PUT virtualMachines': [busy],
                                             'GET virtualMachines': [down]})
    path = one_vm_node(azure, tmp_path)
    azure.auth_data()
    infra = infra_id()
    result = occo.run('occopus-build', '-i', infra, path)
    assert built_id(result) == infra
    assert re.search(r'^occopus-build: n/[0-9a-f]{8}: the create call on azure_vm: azure_vm at .*'
                     r'creating virtual machine \S+ refused \(TooManyRequests, HTTP 429\): '
                     r'Too many requests; try 2 in', result.stderr, re.M), result.stderr
    assert azure.calls('PUT virtualMachines') == 2 and len(azure.by_type('virtualMachines')) == 1
    events = [e for _, e in occo.redis.xrange(f'{occo.prefix}{{{infra}}}:events')]
    assert [e['event'] for e in events].count('cloud_retry') >= 1
    assert occo.run('occopus-destroy', '-i', infra).returncode == 0
    azure.assert_nothing_left(infra)


LOST = {'status': 503, 'after': True,
        'body': {'error': {'code': 'ServiceUnavailable', 'message': 'The service is busy'}}}
#: case -> (resource type, the call whose answer is lost after it was carried out, the fault,
#: the node's keys, what the node is made of: {kind: how many})
RETRIED = {
    'vm, 503': ('azure_vm', 'PUT virtualMachines', LOST, dict(public_ip_needed=True),
                {'virtualMachines': 1, 'disks': 1, 'networkInterfaces': 1,
                 'publicIPAddresses': 1, 'virtualNetworks': 1}),
    'vm, connection closed': ('azure_vm', 'PUT virtualMachines', {'after': True, 'close': True},
                              dict(public_ip_needed=True),
                              {'virtualMachines': 1, 'disks': 1, 'networkInterfaces': 1,
                               'publicIPAddresses': 1, 'virtualNetworks': 1}),
    'aci, 503': ('azure_aci', 'PUT containerGroups', LOST, dict(network_type='private'),
                 {'containerGroups': 1, 'virtualNetworks': 1}),
}


@pytest.mark.parametrize('case', sorted(RETRIED))
def test_a_create_whose_answer_is_lost_is_retried_and_takes_what_was_made(occo, azure, tmp_path,
                                                                          case):
    """ARM makes the VM (container group) but its answer is lost: the engine tries again, and
    that attempt takes the parts its tags find -- the VM included -- instead of deleting them
    or making a second set (nothing is PUT twice, nothing deleted)."""
    kind, call, fault, keys, parts = RETRIED[case]
    azure.cloud.configure(azure.sub, faults={call: [fault]})
    path = (one_vm_node if kind == 'azure_vm' else one_aci_node)(azure, tmp_path, **keys)
    azure.auth_data()
    infra = infra_id()
    result = occo.run('occopus-build', '-i', infra, path)
    assert built_id(result) == infra
    assert re.search(rf'^occopus-build: n/[0-9a-f]{{8}}: the create call on {kind}: {kind} at '
                     r'.*; try 2 in', result.stderr, re.M), result.stderr
    [record] = records(occo, infra)
    assert record['state'] == 'ready'
    made = azure.cloud.tagged(azure.sub, infra)
    counts: Dict[str, int] = {}
    for part in azure.resources():
        if part['type'].count('/') == 1:
            counts[part['type'].split('/')[1]] = counts.get(part['type'].split('/')[1], 0) + 1
    assert counts == parts, counts
    assert {p['tags']['occopus_node_id'] for p in made} == {record['node_id']}
    [head] = [p for p in made if p['type'].endswith(('/virtualMachines', '/containerGroups'))]
    assert record['instance_id'] == head['id']
    for made_kind in parts:
        if made_kind != 'disks':
            assert azure.calls(f'PUT {made_kind}') == 1, made_kind  # taken, not made again
    assert not [c for c, path in azure.cloud.calls if c.startswith('DELETE ') and azure.sub in path]
    assert azure.calls('GET resources') >= 1  # the second attempt looked for them by tags

    destroyed = occo.run('occopus-destroy', '-i', infra)
    assert destroyed.returncode == 0, destroyed.stderr
    azure.assert_nothing_left(infra, destroyed.stderr)
    azure.assert_secret_free(result.stdout, result.stderr, destroyed.stderr)


def test_a_create_that_stays_transient_is_rolled_back_by_tags(occo, azure, tmp_path):
    """A transient error keeps what was made for the next attempt; when no attempt succeeds
    before create_timeout, the build's rollback finds the parts by their tags."""
    down = {'status': 503, 'body': {'error': {'code': 'ServiceUnavailable', 'message': 'busy'}}}
    azure.cloud.configure(azure.sub, faults={'PUT networkInterfaces': [down] * 50})
    path = one_vm_node(azure, tmp_path, create_timeout=3)
    azure.auth_data()
    infra = infra_id()
    result = occo.run('occopus-build', '-i', infra, path)
    assert result.returncode == 1, result.stderr
    assert 'Traceback' not in result.stderr
    assert re.search(r'^occopus-build: n/[0-9a-f]{8}: failed: .*creating network interface \S+ '
                     r'refused \(ServiceUnavailable, HTTP 503\): busy', result.stderr, re.M), \
        result.stderr
    assert azure.calls('PUT virtualNetworks') == 1  # made once, taken by the retries
    assert azure.calls('DELETE virtualNetworks') >= 1
    azure.assert_nothing_left(infra, result.stderr)


def test_polling_on_location_only_builds_and_destroys(occo, azure, tmp_path):
    """Long-running operations that name only a Location (no Azure-AsyncOperation) are
    polled there: 202 until they end, then the resource."""
    azure.cloud.configure(azure.sub, lro='location')
    path = one_vm_node(azure, tmp_path, public_ip_needed=True)
    azure.auth_data()
    infra = infra_id()
    built = occo.run('occopus-build', '-i', infra, path)
    assert built_id(built) == infra
    assert len(azure.cloud.tagged(azure.sub, infra)) == 4  # VM, NIC, public IP, vnet
    # three parts waited for, each polled twice (202, then 200)
    assert azure.calls('GET operation') >= 6
    destroyed = occo.run('occopus-destroy', '-i', infra)
    assert destroyed.returncode == 0, destroyed.stderr
    assert azure.calls('GET operation') >= 6 + 8  # four deletes, each polled twice (202, 204)
    azure.assert_nothing_left(infra, destroyed.stderr)


#: case -> (keys of the node's section, knobs of the peer, what the failure line says after
#: "azure_aci at <endpoint>: "); private networks make a delegated vnet first
ACI_ERRORS = {
    'inaccessible image': (
        dict(image='no-such/app:1', network_type='public'), {},
        r"creating container group \S+ refused \(InaccessibleImage, HTTP 400\): The image "
        r"'no-such/app:1' in container group '\S+' is not accessible\. Please check the image "
        r"and registry credential\."),
    'invalid image name': (
        dict(image='Not An Image', network_type='public'), {},
        r"creating container group \S+ refused \(InvalidImageName, HTTP 400\): The image "
        r"'Not An Image' in container group '\S+' is invalid\."),
    'quota, private network': (
        dict(cpu_cores=2), {'quota_cores': 1},
        r"creating container group \S+ refused \(ContainerGroupQuotaReached, HTTP 400\): "
        r"Resource type 'Microsoft\.ContainerInstance/containerGroups' container group quota "
        r"'StandardCores' exceeded in region 'westeurope'\. Limit: '1', Usage: '0' Requested: "
        r"'2'\. -- a quota of the subscription is used up: .*"),
    'stuck, private network': (
        dict(create_timeout=3), {'stuck': True},
        r'not ready after 3 s \(the resource is pending; create_timeout bounds the wait\)'),
}


@pytest.mark.parametrize('case', sorted(ACI_ERRORS))
def test_container_group_errors_fail_in_one_line_and_roll_back(occo, azure, tmp_path, case):
    keys, knobs, said = ACI_ERRORS[case]
    azure.cloud.configure(azure.sub, **knobs)
    path = one_aci_node(azure, tmp_path, **keys)
    azure.auth_data()
    infra = infra_id()
    result = occo.run('occopus-build', '-i', infra, path)
    assert result.returncode == 1, result.stderr
    if case.startswith('stuck'):  # the engine's verdict; the group was made, and is dropped
        assert_one_line_error(result.stderr, said)
        assert azure.calls('DELETE containerGroups') >= 1
    else:
        assert_one_line_error(result.stderr, re.escape(f'azure_aci at {azure.peer.url}: ') + said)
    if 'private' in case:
        assert azure.calls('PUT virtualNetworks') == 1
        assert azure.calls('DELETE virtualNetworks') >= 1  # the delegated vnet went too
    azure.assert_nothing_left(infra, result.stderr)
    azure.assert_secret_free(result.stdout, result.stderr)


# -- the handlers alone --------------------------------------------------------------------------

@pytest.fixture
def in_process(azure_peer, azure_subscription, monkeypatch):
    monkeypatch.setenv('REQUESTS_CA_BUNDLE', str(azure_peer.bundle))
    azure_peer.cloud.add_group(azure_subscription, GROUP, LOCATION)
    from occo.plugins.resources.azure_vm import AzureVMHandler
    from occo.plugins.resources.base import HandlerContext
    auth = dict(tenant_id=TENANT, client_id=azure_peer.client_id,
                client_secret=azure_peer.client_secret, subscription_id=azure_subscription,
                authority=azure_peer.url)
    handler = AzureVMHandler(HandlerContext(credentials=lambda section: auth))
    section = dict(type='azure_vm', endpoint=azure_peer.url, **VM_KEYS)
    return handler, section


def make_vm(handler, section, infra='inproc') -> Any:
    from occo.instances import Instance
    from occo.plugins.contexts.base import RenderedContext
    from occo.plugins.resources.base import CreateRequest
    request = CreateRequest(infra, 't', 'n', str(uuid.uuid4()), section,
                            RenderedContext('cloudinit', user_data='#cloud-config\n{}'))
    created = handler.create(request)
    return Instance(node_id=request.node_id, node='n', resource=section,
                    instance_id=created.instance_id, extra=created.extra)


def test_in_use_and_404_deletes(in_process, azure_peer, azure_subscription):
    from occo.errors import TransientCloudError
    from occo.plugins.resources.azure_common import Part
    handler, section = in_process
    instance = make_vm(handler, section)
    clients, account = handler.clients(section)
    nic = next(Part(p) for p in instance.extra['parts'] if Part(p).kind == 'networkInterfaces')
    with pytest.raises(TransientCloudError, match=r'deleting network interface \S+ refused '
                                                  r'\(NicInUse, HTTP 400\)'):
        handler.delete(clients, account, section, nic)
    handler.drop(instance)
    assert azure_peer.cloud.held_resources(azure_subscription) == []
    handler.drop(instance)  # every part is gone now: 404s are no error
    assert handler.states([instance])[instance.node_id].state.value == 'shutdown'


HOSTILE = {
    'garbage json': {'status': 200, 'raw': '{"properties": {"provisioningState": '},
    'huge body': {'status': 500,
                  'raw': '{"error": {"code": "X", "message": "' + 'y' * 200000 + '"}}'},
    'control characters': {'status': 400, 'body': {'error': {'code': 'Bad\x1b[31m', 'message':
                                                             'evil\x07\x1b]0;title\x07'}}},
    'wrong types': {'status': 200, 'body': {'properties': 'nope', 'id': 7, 'tags': []}},
    'missing fields': {'status': 200, 'body': {}},
}


@pytest.mark.parametrize('case', sorted(HOSTILE))
def test_hostile_answers_are_mapped_never_raised(in_process, azure_peer, azure_subscription, case):
    from occo.errors import CloudError
    handler, section = in_process
    instance = make_vm(handler, section)
    azure_peer.cloud.configure(azure_subscription, faults={'GET virtualMachines': [HOSTILE[case]]})
    try:
        status = handler.states([instance])[instance.node_id]
    except CloudError as exc:
        text = str(exc)
        assert text.startswith(f'azure_vm at {azure_peer.url}: reading virtual machine ')
        assert len(text) <= 1000 and '\x1b' not in text and '\x07' not in text
    else:
        assert status.state.value == 'unknown', status
    handler.drop(instance)
    assert azure_peer.cloud.held_resources(azure_subscription) == []


def test_states_of_hostile_models_are_unknown():
    from occo.plugins.resources.azure_aci import group_status
    from occo.plugins.resources.azure_vm import vm_status

    class Obj:
        def __init__(self, **kw: Any) -> None:
            self.__dict__.update(kw)
    view = lambda *codes: Obj(statuses=[Obj(code=c) for c in codes])  # noqa: E731
    cases = [(Obj(provisioning_state='Succeeded', instance_view=view('PowerState/running')),
              'running'),
             (Obj(provisioning_state='Succeeded', instance_view=view('PowerState/deallocated')),
              'shutdown'),
             (Obj(provisioning_state='Creating', instance_view=None), 'pending'),
             (Obj(provisioning_state='Succeeded', instance_view=view('PowerState/levitating')),
              'unknown'),
             (Obj(provisioning_state='Failed', instance_view=view()), 'failed'),
             (Obj(provisioning_state=7, instance_view='x'), 'unknown'),
             (Obj(provisioning_state='Sideways\x1b', instance_view=view(None, 3)), 'unknown'),
             (Obj(), 'unknown')]
    assert [vm_status(vm).state.value for vm, _ in cases] == [s for _, s in cases]
    groups = [(Obj(provisioning_state='Creating'), 'pending'),
              (Obj(provisioning_state='Succeeded', instance_view=Obj(state='Running'),
                   ip_address=Obj(fqdn='a.b', ip='203.0.113.9')), 'running'),
              (Obj(provisioning_state='Failed'), 'failed'),
              (Obj(provisioning_state='Odd'), 'unknown'),
              (Obj(provisioning_state=None), 'unknown')]
    assert [group_status(g).state.value for g, _ in groups] == [s for _, s in groups]
    assert group_status(groups[1][0]).addresses == ['a.b', '203.0.113.9']


def test_a_login_host_that_does_not_answer_is_no_matter_of_the_credentials(
        in_process, azure_peer, azure_subscription):
    """azure-identity wraps a refused connection to the login host in the same error as a
    refused secret: it must be said (and retried) as an outage, not as wrong credentials."""
    from occo.errors import TransientCloudError
    from occo.plugins.resources.azure_vm import AzureVMHandler
    from occo.plugins.resources.base import HandlerContext
    _, section = in_process
    auth = dict(tenant_id=TENANT, client_id=azure_peer.client_id,
                client_secret=azure_peer.client_secret, subscription_id=azure_subscription,
                authority=f'https://127.0.0.1:{free_port()}')  # nothing listens there
    handler = AzureVMHandler(HandlerContext(credentials=lambda s: auth))
    clients, account = handler.clients(section)
    with pytest.raises(TransientCloudError) as caught:
        handler.tagged(clients, account, section, 'inproc', ('virtualMachines',))
    assert 'check tenant_id' not in str(caught.value)
    assert azure_peer.client_secret not in str(caught.value)
