"""The ec2 handler against moto_server over HTTP: the ec2-ping tutorial, a killed build's
leftovers, the error paths, throttling, healing, and credentials kept out of sight."""
from __future__ import annotations

import base64
import json
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import yaml

from conftest import CORPUS, destroy_listing, fill_in, kill_build_when, records, write
from peer_ec2 import IMAGE_ID, INSTANCE_TYPE, REGION, FaultProxy, MotoServer, free_port
from test_build import built_id, import_ok

TUTORIAL = CORPUS / 'ec2-ping'


def auth_data(occo, peer: MotoServer, *, url: Optional[str] = None, secret: Optional[str] = None,
              entries: Optional[List[str]] = None) -> None:
    """``~/.occopus/auth_data.yaml`` with one ec2 entry for ``url`` (moto's by default)."""
    entries = entries or [f'{{type: ec2, endpoint: "{url or peer.url}", auth_data: '
                          f'{{accesskey: {peer.access}, secretkey: "{secret or peer.secret}"}}}}']
    text = 'resource:\n' + ''.join(f'  - {e}\n' for e in entries)
    write(occo.home / '.occopus', {'auth_data.yaml': text})


def resource(url: str, **keys: Any) -> str:
    section = dict(dict(type='ec2', endpoint=url, regionname=REGION, image_id=IMAGE_ID,
                        instance_type=INSTANCE_TYPE), **keys)
    return json.dumps(section)


def one_ec2_node(occo, folder: Path, url: str, *, context: str = '#cloud-config\n{}', **keys: Any) -> Path:
    """Import node definition ``n`` (one ec2 implementation) and write ``infra.yaml`` with one
    node ``n``; returns the infrastructure file."""
    write(folder, {'nodes.yaml': (
        "'node_def:n':\n"
        f'  - resource: {resource(url, **keys)}\n'
        f'    contextualisation: {{type: cloudinit, context_template: {json.dumps(context)}}}\n'),
        'infra.yaml': 'infra_name: t\nuser_id: u\nnodes: [{name: n, type: n}]\n'})
    import_ok(occo, folder / 'nodes.yaml')
    return folder / 'infra.yaml'




def infra_id() -> str:
    return f'ec2-{uuid.uuid4().hex[:12]}'


def tags(instance: Dict[str, Any]) -> Dict[str, str]:
    return {t['Key']: t['Value'] for t in instance.get('Tags', [])}


def assert_secret_free(peer: MotoServer, *texts: str, redis: Any = None) -> None:
    """Neither the secret key nor the access key id in ``texts`` nor in any Redis value."""
    everything = list(texts)
    if redis is not None:
        everything.append(repr(redis.snapshot()))
    for text in everything:
        assert peer.secret not in text and peer.access not in text


def assert_rolled_back(occo, peer: MotoServer, infra: str, output: str = '') -> None:
    assert peer.instances(infra) == []
    assert occo.infra_keys(infra) == [], output


# -- the tutorial ------------------------------------------------------------------------------

def test_ec2_ping_tutorial_builds_reports_and_destroys(occo, ec2_peer, tmp_path):
    network = ec2_peer.network()
    folder = tmp_path / 'ec2-ping'
    shutil.copytree(TUTORIAL, folder, ignore=shutil.ignore_patterns('golden'))
    definitions = fill_in(folder / 'nodes' / 'node_definitions.yaml',
                          ec2_peer.tutorial_values(network))
    auth_data(occo, ec2_peer)
    import_ok(occo, definitions)

    infra = infra_id()
    built = occo.run('occopus-build', '-i', infra, folder / 'infra-ec2-ping.yaml', cwd=folder)
    assert built_id(built) == infra
    instances = {tags(i)['occopus:node']: i for i in ec2_peer.instances(infra)}
    assert sorted(instances) == ['ping-receiver', 'ping-sender']
    sender = instances['ping-sender']
    by_node = {r['node']: r for r in records(occo, infra)}
    for node, instance in instances.items():
        record = by_node[node]
        assert record['instance_id'] == instance['InstanceId'] and record['state'] == 'ready'
        assert instance['ClientToken'] == record['node_id']
        assert tags(instance) == {
            'occopus:infra_id': infra, 'occopus:node_id': record['node_id'], 'occopus:node': node,
            'Name': f"occopus-ec2-ping-infra-{infra[:8]}-{node}-{record['node_id'][:8]}"}
        assert (instance['KeyName'], instance['SubnetId']) == (network.key_name, network.subnet_id)
        groups = sorted(g['GroupId'] for g in instance['SecurityGroups'])
        assert groups == sorted(network.security_group_ids)
        assert record['addresses'] == [instance['PrivateIpAddress']]  # no public address in a new VPC
        assert record['private_address'] == instance['PrivateIpAddress']
    receiver_address = by_node['ping-receiver']['addresses'][0]
    assert f'    {receiver_address}\n' in built.stdout

    def user_data(instance: Dict[str, Any]) -> str:
        answer = ec2_peer.client().describe_instance_attribute(
            InstanceId=instance['InstanceId'], Attribute='userData')
        return base64.b64decode(answer['UserData']['Value']).decode()
    golden = TUTORIAL / 'golden'
    fake = yaml.safe_load((golden / 'addresses.yaml').read_text())['ping-receiver']
    for node, instance in instances.items():  # the golden user data, with the real address
        text = user_data(instance)
        assert text.startswith('#cloud-config\n')
        expected = (golden / f'{node}.userdata').read_text().replace(fake, receiver_address)
        assert yaml.safe_load(text) == yaml.safe_load(expected)
    assert f'ping {receiver_address} -c 5' in user_data(sender)

    report = occo.run('occopus-manage', '-r', '-i', infra)
    assert report.returncode == 0, report.stderr
    assert re.search(rf'^ping-receiver: \(1 of target 1.*\n  {by_node["ping-receiver"]["node_id"]} '
                     rf'\(ready\):\n    {re.escape(receiver_address)}$', report.stdout, re.M)
    assert_secret_free(ec2_peer, built.stdout, built.stderr, report.stdout, report.stderr,
                       redis=occo)

    destroyed = occo.run('occopus-destroy', '-i', infra)
    assert destroyed.returncode == 0, destroyed.stderr
    assert destroyed.stdout == f'Destroyed infrastructure {infra} (2 instances)\n'
    assert destroyed.stderr.index('ping-sender/') < destroyed.stderr.index('ping-receiver/')
    assert ec2_peer.instances(infra) == []
    assert {i['State']['Name'] for i in ec2_peer.instances(infra, live=False)} == {'terminated'}
    assert occo.infra_keys(infra) == []


# -- a killed build ----------------------------------------------------------------------------

def test_killed_build_leaves_an_instance_that_destroy_finds_by_its_tags(occo, ec2_peer, tmp_path):
    """SIGKILL while the build waits for RunInstances' answer: the instance exists, its record
    has no id.  A second instance tagged for the infrastructure, which no record knows, stands
    for a create whose record was never written."""
    with FaultProxy(ec2_peer.url, hold=('RunInstances',)) as proxy:
        path = one_ec2_node(occo, tmp_path, proxy.url)
        auth_data(occo, ec2_peer, url=proxy.url)
        infra = infra_id()
        kill_build_when(occo, proxy.held, '-i', infra, path)
        [made] = ec2_peer.instances(infra)
        [record] = records(occo, infra)
        assert (record['state'], record['instance_id']) == ('creating', None)
        unknown = ec2_peer.client().run_instances(
            ImageId=IMAGE_ID, InstanceType=INSTANCE_TYPE, MinCount=1, MaxCount=1,
            TagSpecifications=[{'ResourceType': 'instance', 'Tags': [
                {'Key': 'occopus:infra_id', 'Value': infra},
                {'Key': 'occopus:node_id', 'Value': 'never-recorded'},
                {'Key': 'occopus:node', 'Value': 'n'}]}])['Instances'][0]['InstanceId']
        proxy.release.set()

        tracked, untracked = destroy_listing(occo, infra, recorded=1, untracked=1)
        assert tracked.startswith('  creating   ec2 instance ') and made['InstanceId'] in tracked
        assert untracked == f'  untracked  ec2 instance {unknown}  tagged for node n (never-recorded)'
        assert len(ec2_peer.instances(infra)) == 2  # nothing dropped

        destroyed = occo.run('occopus-destroy', '-i', infra)
        assert destroyed.returncode == 0, destroyed.stderr
        assert f'dropped ({made["InstanceId"]})' in destroyed.stderr
        assert f'dropped ({unknown})' in destroyed.stderr
        assert_rolled_back(occo, ec2_peer, infra)
        assert_secret_free(ec2_peer, tracked, untracked, destroyed.stdout, destroyed.stderr)


# -- errors ------------------------------------------------------------------------------------

ERRORS = {
    'bad image': (dict(image_id='ami-00000000'), None,
                  r"RunInstances refused \(InvalidAMIID\.NotFound, HTTP 400\): .*ami-00000000.* -- "
                  r"check image_id \('ami-00000000'\): no such image in this region"),
    'bad instance type': (dict(instance_type='t9.giant'), None,
                          r"RunInstances refused \(InvalidInstanceType\.NotFound, HTTP 400\): .* -- "
                          r"check instance_type \('t9\.giant'\)"),
    'unknown key pair': (dict(key_name='no-such-key'), None,
                         r"RunInstances refused \(InvalidKeyPair\.NotFound, HTTP 400\): .* -- "
                         r"check key_name \('no-such-key'\): no such key pair in this region"),
    'unknown subnet': (dict(subnet_id='subnet-0000000000'), None,
                       r"RunInstances refused \(InvalidSubnetID\.NotFound, HTTP 400\): .* -- "
                       r"check subnet_id \('subnet-0000000000'\)"),
    'wrong secret key': ({}, 'wrong-secret-key',
                         r'RunInstances refused \(AuthFailure, HTTP 401\): AWS was not able to validate '
                         r'the provided access credentials -- the cloud refused the credentials: check '
                         r'accesskey and secretkey of the matching ec2 entry of auth_data.yaml'),
}


@pytest.mark.parametrize('case', sorted(ERRORS))
def test_cloud_errors_fail_in_one_line_and_roll_back(occo, ec2_peer, tmp_path, case):
    keys, secret, said = ERRORS[case]
    path = one_ec2_node(occo, tmp_path, ec2_peer.url, **keys)
    auth_data(occo, ec2_peer, secret=secret)
    infra = infra_id()
    result = occo.run('occopus-build', '-i', infra, path)
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr, re.escape(f'ec2 at {ec2_peer.url} ({REGION}): ') + said)
    assert_rolled_back(occo, ec2_peer, infra, result.stderr)
    assert_secret_free(ec2_peer, result.stdout, result.stderr)


def assert_one_line_error(stderr: str, pattern: str) -> None:
    """The node's failure is one line naming the node, the endpoint and what the cloud said;
    no traceback."""
    assert 'Traceback' not in stderr
    assert re.search(r'^occopus-build: n/[0-9a-f]{8}: failed: ' + pattern + '$', stderr, re.M), stderr
    assert stderr.rstrip().splitlines()[-1].startswith('occopus-build: ')


AWS_ERRORS = {  # what AWS answers and moto does not
    'quota': ((400, 'InstanceLimitExceeded', "You have requested more instances (21) than your "
               "current instance limit of 20 allows for the specified instance type."),
              r'InstanceLimitExceeded, HTTP 400\): You have requested .* -- a quota of the account '
              r'is used up: drop instances or ask for a higher limit'),
    'vcpu quota': ((400, 'VcpuLimitExceeded', 'You have requested more vCPU capacity than your '
                    'current vCPU limit of 32 allows.'),
                   r'VcpuLimitExceeded, HTTP 400\): .* -- a quota of the account is used up: .*'),
    'instance type': ((400, 'InvalidParameterValue', "Invalid value 'm9.huge' for InstanceType."),
                      r"InvalidParameterValue, HTTP 400\): Invalid value 'm9.huge' for InstanceType\. "
                      r"-- check instance_type \('t2.micro'\)"),
    'signature': ((403, 'SignatureDoesNotMatch', 'The request signature we calculated does not '
                   'match the signature you provided.'),
                  r'SignatureDoesNotMatch, HTTP 403\): .* -- the cloud refused the credentials: .*'),
    'permission': ((403, 'UnauthorizedOperation', 'You are not authorized to perform this operation.'),
                   r'UnauthorizedOperation, HTTP 403\): .* -- the credentials are not allowed this call'),
}


@pytest.mark.parametrize('case', sorted(AWS_ERRORS))
def test_aws_errors_are_permanent_and_named(occo, ec2_peer, tmp_path, case):
    fault, said = AWS_ERRORS[case]
    with FaultProxy(ec2_peer.url, faults={'RunInstances': [fault]}) as proxy:
        path = one_ec2_node(occo, tmp_path, proxy.url)
        auth_data(occo, ec2_peer, url=proxy.url)
        infra = infra_id()
        result = occo.run('occopus-build', '-i', infra, path)
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr, re.escape(f'ec2 at {proxy.url} ({REGION}): RunInstances '
                                                   'refused (') + said)
    assert proxy.refused['RunInstances'] == 1 and proxy.counts['RunInstances'] == 0  # no retry
    assert_rolled_back(occo, ec2_peer, infra, result.stderr)


@pytest.mark.parametrize('case', ['missing', 'ambiguous'])
def test_missing_or_ambiguous_credentials(occo, ec2_peer, tmp_path, case):
    path = one_ec2_node(occo, tmp_path, ec2_peer.url)
    entry = f'{{type: ec2, auth_data: {{accesskey: {ec2_peer.access}, secretkey: "{ec2_peer.secret}"}}}}'
    if case == 'missing':
        auth_data(occo, ec2_peer, url='http://127.0.0.1:9/elsewhere')
        expected = (rf"\S+infra\.yaml:\d+: node 'n': Cannot find credentials for ec2 "
                    rf'{re.escape(ec2_peer.url)}: add an entry .*')
    else:
        second = entry.replace('{type: ec2,', f'{{type: ec2, endpoint: "{ec2_peer.url}",')
        auth_data(occo, ec2_peer, entries=[entry, second])
        expected = (r"\S+auth_data\.yaml: node 'n': Cannot determine authorization information: "
                    r'entries 1 .*, 2 .* all match .*')
    infra = infra_id()
    before = occo.snapshot()
    result = occo.run('occopus-build', '-i', infra, path)
    # checked before anything is created: one error line, no cloud asked, nothing stored
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr
    [line] = result.stderr.splitlines()
    assert re.fullmatch('occopus-build: error: ' + expected, line), line
    assert occo.snapshot() == before
    assert_rolled_back(occo, ec2_peer, infra, result.stderr)
    assert_secret_free(ec2_peer, result.stdout, result.stderr)


def test_user_data_over_16_kib_is_refused_before_the_call(occo, ec2_peer, tmp_path):
    big = '#cloud-config\nwrite_files:\n- {path: /tmp/big, content: "' + 'x' * 16400 + '"}\n'
    with FaultProxy(ec2_peer.url) as proxy:
        path = one_ec2_node(occo, tmp_path, proxy.url, context=big)
        auth_data(occo, ec2_peer, url=proxy.url)
        infra = infra_id()
        result = occo.run('occopus-build', '-i', infra, path)
    assert result.returncode == 1, result.stderr
    size = len(big.rstrip('\n').encode())  # Jinja drops one trailing newline
    assert_one_line_error(result.stderr, re.escape(
        f"ec2 at {proxy.url} ({REGION}): the user data (the rendered contextualisation) is "
        f"{size} bytes, over EC2's limit of 16384 bytes (16 KiB, before base64): make it "
        'shorter, e.g. let cloud-init download big files'))
    assert proxy.counts['RunInstances'] == 0
    assert_rolled_back(occo, ec2_peer, infra)


def test_an_error_echoing_the_keys_is_masked(occo, ec2_peer, tmp_path):
    """AWS may quote the access key id (InvalidClientTokenId); neither key reaches the user."""
    echo = (403, 'InvalidClientTokenId', f'The AWS Access Key Id {ec2_peer.access} you provided '
            f'does not exist in our records (secret {ec2_peer.secret})')
    with FaultProxy(ec2_peer.url, faults={'RunInstances': [echo]}) as proxy:
        path = one_ec2_node(occo, tmp_path, proxy.url)
        auth_data(occo, ec2_peer, url=proxy.url)
        infra = infra_id()
        result = occo.run('occopus-build', '-i', infra, path)
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr, re.escape(
        f'ec2 at {proxy.url} ({REGION}): RunInstances refused (InvalidClientTokenId, HTTP 403): '
        'The AWS Access Key Id *** you provided does not exist in our records (secret ***) -- '
        'the cloud refused the credentials: check accesskey and secretkey of the matching ec2 '
        'entry of auth_data.yaml'))
    assert_secret_free(ec2_peer, result.stdout, result.stderr, redis=occo)
    assert_rolled_back(occo, ec2_peer, infra)


# -- throttling, healing -----------------------------------------------------------------------

def test_throttling_is_answered_by_retries(occo, ec2_peer, tmp_path):
    """Four refusals of RunInstances use up botocore's attempts (adaptive mode, 3 retries):
    the engine retries the create.  Two of DescribeInstances are answered by botocore alone."""
    faults = {'RunInstances': [400, 503, 400, 400], 'DescribeInstances': [503, 400]}
    with FaultProxy(ec2_peer.url, faults=faults) as proxy:
        path = one_ec2_node(occo, tmp_path, proxy.url)
        auth_data(occo, ec2_peer, url=proxy.url)
        infra = infra_id()
        result = occo.run('occopus-build', '-i', infra, path)
        assert built_id(result) == infra
        assert proxy.refused == {'RunInstances': 4, 'DescribeInstances': 2}
        assert proxy.counts['RunInstances'] == 1  # one instance: the refused calls made none
        assert len(ec2_peer.instances(infra)) == 1
        assert re.search(r'^occopus-build: n/[0-9a-f]{8}: the create call on ec2: ec2 at .*: '
                         r'RunInstances refused \((RequestLimitExceeded, HTTP 400|ServiceUnavailable, '
                         r'HTTP 503)\).*; try 2 in \d+\.\d s$', result.stderr, re.M), result.stderr
        events = [e for _, e in occo.redis.xrange(f'{occo.prefix}{{{infra}}}:events')]
        assert [e['event'] for e in events].count('cloud_retry') == 1
        assert occo.run('occopus-destroy', '-i', infra).returncode == 0
    assert ec2_peer.instances(infra) == []


def test_manage_replaces_an_instance_terminated_out_of_band(occo, ec2_peer, tmp_path):
    path = one_ec2_node(occo, tmp_path, ec2_peer.url, tags=[
        {'Key': 'team', 'Value': 'blue'}, {'Name': 'web', 'occopus:node': 'spoofed', 'cost': 7}])
    auth_data(occo, ec2_peer)
    infra = infra_id()
    assert built_id(occo.run('occopus-build', '-i', infra, path)) == infra
    [first] = ec2_peer.instances(infra)
    assert tags(first) == {'team': 'blue', 'Name': 'web', 'cost': '7', 'occopus:node': 'n',
                           'occopus:infra_id': infra, 'occopus:node_id': tags(first)['occopus:node_id']}
    ec2_peer.client().terminate_instances(InstanceIds=[first['InstanceId']])

    managed = occo.run('occopus-manage', '-i', infra)
    assert managed.returncode == 0, managed.stderr
    [second] = ec2_peer.instances(infra)
    assert second['InstanceId'] != first['InstanceId']
    assert tags(second)['occopus:node_id'] != tags(first)['occopus:node_id']
    [record] = records(occo, infra)
    assert (record['instance_id'], record['state']) == (second['InstanceId'], 'ready')
    assert first['InstanceId'] in managed.stderr
    assert occo.run('occopus-destroy', '-i', infra).returncode == 0
    assert_rolled_back(occo, ec2_peer, infra)


def test_an_instance_the_cloud_does_not_know_reads_as_gone(occo, ec2_peer, tmp_path):
    """A recorded id the cloud does not list (past the grace for EC2's eventual consistency)
    is replaced by a manage pass; the instance it stood for, recorded nowhere now, is found
    by its tags and dropped by destroy."""
    path = one_ec2_node(occo, tmp_path, ec2_peer.url)
    auth_data(occo, ec2_peer)
    infra = infra_id()
    assert built_id(occo.run('occopus-build', '-i', infra, path)) == infra
    [first] = ec2_peer.instances(infra)
    key = f'{occo.prefix}{{{infra}}}:instances'
    [(node_id, value)] = occo.redis.hgetall(key).items()
    record = json.loads(value)
    record.update(instance_id='i-00000000000000000', created_at=time.time() - 3600)
    occo.redis.hset(key, node_id, json.dumps(record))

    managed = occo.run('occopus-manage', '-i', infra)
    assert managed.returncode == 0, managed.stderr
    assert 'the cloud has no instance i-00000000000000000 (terminated and gone)' in managed.stderr
    assert len(ec2_peer.instances(infra)) == 2
    destroyed = occo.run('occopus-destroy', '-i', infra)
    assert destroyed.returncode == 0, destroyed.stderr
    assert f'dropped ({first["InstanceId"]})' in destroyed.stderr
    assert_rolled_back(occo, ec2_peer, infra)


def test_states_of_hostile_answers_are_mapped_never_raised():
    from occo.instances import CloudState
    from occo.plugins.resources.ec2 import _instances
    raw = [
        {'InstanceId': 'i-1', 'State': {'Name': 'pending'}},
        {'InstanceId': 'i-2', 'State': {'Name': 'running'}, 'PublicDnsName': 'h.example',
         'PublicIpAddress': '203.0.113.1', 'PrivateIpAddress': '203.0.113.1'},
        {'InstanceId': 'i-3', 'State': {'Name': 'stopped'},
         'StateReason': {'Message': 'Client.UserInitiatedShutdown\x1b[31m'}},
        {'InstanceId': 'i-4', 'State': {'Name': 'stopping'}},
        {'InstanceId': 'i-5', 'State': {'Name': 'shutting-down'}},
        {'InstanceId': 'i-6', 'State': {'Name': 'terminated'}},
        {'InstanceId': 'i-7', 'State': {'Name': 'hibernating\x1b'}},
        {'InstanceId': 'i-8', 'State': 'garbage', 'Tags': 'x', 'PublicIpAddress': 'a' * 5000,
         'PrivateIpAddress': 7},
        {'InstanceId': None}, 'junk', {'InstanceId': 'i-9\x07'}, {'InstanceId': 'i-' + 'x' * 9000},
    ]
    pages = [{'Reservations': [{'Instances': raw}, 'junk', {'Instances': None}]}, None,
             {'Reservations': 'x'}]
    seen = {s.instance_id: s.status() for s in _instances(pages)}
    assert sorted(seen) == [f'i-{n}' for n in range(1, 9)]
    assert [seen[f'i-{n}'].state for n in range(1, 9)] == [
        CloudState.PENDING, CloudState.RUNNING] + [CloudState.SHUTDOWN] * 4 + [CloudState.UNKNOWN] * 2
    assert seen['i-2'].addresses == ['h.example', '203.0.113.1']
    assert seen['i-2'].private_address == '203.0.113.1'
    assert seen['i-3'].reason == ('the instance is stopped (stopped instances are not used): '
                                  'Client.UserInitiatedShutdown\\x1b[31m')
    assert seen['i-4'].reason.startswith('the instance is stopping')
    assert seen['i-7'].reason == ("the cloud reports the state 'hibernating\\x1b', which Occopus "
                                  'does not know')
    assert (seen['i-8'].addresses, seen['i-8'].private_address) == ([], None)
    assert seen['i-8'].reason == 'the cloud reports no state for the instance'


def test_an_endpoint_that_is_not_a_url_or_does_not_answer(occo, ec2_peer, tmp_path):
    path = one_ec2_node(occo, tmp_path, 'replace_with_endpoint')
    auth_data(occo, ec2_peer, url='replace_with_endpoint')
    infra = infra_id()
    result = occo.run('occopus-build', '-i', infra, path)
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result.stderr, re.escape(
        f"ec2 at replace_with_endpoint ({REGION}): making a client: the endpoint must be an "
        "http(s) URL such as https://ec2.eu-west-1.amazonaws.com, not 'replace_with_endpoint'"))
    assert_rolled_back(occo, ec2_peer, infra, result.stderr)

    # Nothing listens: connections are refused, which may pass, so the create is retried
    # until its deadline.  Every attempt failed before its request was sent (unsent): the
    # create made nothing.  The rollback cannot look for tagged instances there and says so,
    # yet it need not keep the record: the infrastructure is forgotten (an endpoint typo
    # must not leave an infrastructure that no occopus-destroy can remove).
    closed = f'http://127.0.0.1:{free_port()}'
    path = one_ec2_node(occo, tmp_path, closed)
    auth_data(occo, ec2_peer, url=closed)
    config = write(tmp_path, {'cfg.yaml': 'create_timeout: 2\ncall_timeout: 1\n'}) / 'cfg.yaml'
    result = occo.run('occopus-build', '--cfg', config, '-i', infra, path)
    assert result.returncode == 1, result.stderr
    refused = (rf'ec2 at {re.escape(closed)} \({REGION}\): (RunInstances|DescribeInstances): '
               rf'Could not connect to the endpoint URL: "{re.escape(closed)}/"')
    assert re.search(rf'^occopus-build: n/[0-9a-f]{{8}}: the create call on ec2: {refused}; try 2 in',
                     result.stderr, re.M), result.stderr
    assert re.search(rf'^occopus-build: warning: cannot look for resources tagged with '
                     rf'infrastructure {infra} on ec2: ({refused}|the find call on ec2 did not '
                     r'return within call_timeout \(1 s\))', result.stderr, re.M), result.stderr
    assert 'Traceback' not in result.stderr
    last = result.stderr.rstrip().splitlines()[-1]
    assert re.fullmatch(r"occopus-build: error: node 'n' \(instance [0-9a-f]{8}\): ec2 at "
                        rf'{re.escape(closed)} \({REGION}\): RunInstances: Could not connect to the '
                        rf'endpoint URL: "{re.escape(closed)}/"', last), result.stderr
    assert occo.infra_keys(infra) == [], result.stderr


# -- the handler alone ---------------------------------------------------------------------------

def handler(secret: str = 'hidden-secret-key') -> Any:
    from occo.plugins.resources.base import HandlerContext
    from occo.plugins.resources.ec2 import EC2Handler
    return EC2Handler(HandlerContext(credentials=lambda section: {
        'accesskey': 'AKIAABCDEFGHIJKLMNOP', 'secretkey': secret}))


SECTION = dict(type='ec2', endpoint='http://127.0.0.1:9', regionname=REGION, image_id=IMAGE_ID,
               instance_type=INSTANCE_TYPE)


def test_a_listing_that_never_ends_is_cut_off():
    """An endpoint that names a next page for ever: find (and states) stop after MAX_PAGES
    pages with one clear error, through botocore's own paginator."""
    from botocore.stub import Stubber
    from occo.errors import CloudError
    from occo.plugins.resources import ec2
    ec2_handler = handler()
    client, _ = ec2_handler._client(SECTION)  # loopback URL; the stubber answers, nothing is sent
    with Stubber(client) as stubber:
        for page in range(ec2.MAX_PAGES + 1):
            stubber.add_response('describe_instances', {'Reservations': [], 'NextToken': f'more-{page}'})
        with pytest.raises(CloudError) as caught:
            ec2_handler.find('infra', [SECTION])
        assert len(stubber._queue) == 0  # exactly MAX_PAGES + 1 pages were asked for
    assert str(caught.value) == (
        f'ec2 at http://127.0.0.1:9 ({REGION}): DescribeInstances answered more than '
        f'{ec2.MAX_PAGES} pages (of up to 1000 instances each) and still named a next page: '
        'listing stopped')


def test_what_botocore_cannot_read_becomes_a_masked_cloud_error():
    from occo.errors import CloudError
    ec2_handler = handler()
    _, keys = ec2_handler._client(SECTION)
    with pytest.raises(CloudError) as caught:
        with ec2_handler._errors(SECTION, keys, 'DescribeInstances'):
            raise TypeError('unhashable list for AKIAABCDEFGHIJKLMNOP with hidden-secret-key\x1b[2J')
    assert type(caught.value) is CloudError
    assert str(caught.value) == (
        f'ec2 at http://127.0.0.1:9 ({REGION}): DescribeInstances: the answer could not be read '
        '(TypeError: unhashable list for *** with ***\\x1b[2J)')


def test_keys_echoed_across_the_cut_are_masked_first():
    """The cloud's message is cut at 500 characters, after the keys were masked: a key that
    straddles the cut leaves no prefix behind."""
    from botocore.exceptions import ClientError
    ec2_handler = handler()
    _, keys = ec2_handler._client(SECTION)
    message = 'x' * 490 + ' AKIAABCDEFGHIJKLMNOP and hidden-secret-key'
    error = ClientError({'Error': {'Code': 'InvalidClientTokenId', 'Message': message},
                         'ResponseMetadata': {'HTTPStatusCode': 403}}, 'RunInstances')
    text = str(ec2_handler._refused(SECTION, keys, 'RunInstances', error))
    assert 'AKIA' not in text and 'hidden' not in text and 'x' * 490 + ' ***' in text


def test_find_raises_for_credentials_it_cannot_use(ec2_peer):
    """A destroy must not forget a record because its credentials changed after the build:
    missing or refused credentials raise; unrendered or placeholder endpoints are skipped."""
    from occo.errors import AuthError, CloudError
    from occo.plugins.resources.base import HandlerContext
    from occo.plugins.resources.ec2 import EC2Handler
    section = dict(SECTION, endpoint=ec2_peer.url)
    skipped = [dict(section, endpoint='{{ endpoint }}'), dict(section, endpoint='replace_with_x')]
    nothing = EC2Handler(HandlerContext(credentials=lambda s: None))
    assert nothing.find('infra', skipped) == []
    with pytest.raises(AuthError, match='Cannot find credentials for ec2'):
        nothing.find('infra', skipped + [section])
    wrong = EC2Handler(HandlerContext(credentials=lambda s: {
        'accesskey': ec2_peer.access, 'secretkey': 'wrong-secret-key'}))
    with pytest.raises(CloudError, match=r'DescribeInstances refused \(AuthFailure, HTTP 401\)') as caught:
        wrong.find('infra', [section])
    assert ec2_peer.access not in str(caught.value)
