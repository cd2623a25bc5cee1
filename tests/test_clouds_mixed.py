"""One infrastructure over three clouds at once: a docker container, a nova server and an ec2
instance, each depending on the one before and given its address by ``getip()``, built in
parallel, reported, found by ``occopus-destroy --dry-run`` and destroyed, against the three
peers of the cloud tests (podman's Docker API, the Keystone/Nova peer, moto_server); and the
orphan sweep of a killed build whose endpoint comes from a template."""
from __future__ import annotations

import base64
import json
import uuid

from conftest import destroy_listing, kill_build_when, write
from novapeer import IMAGE_ID as NOVA_IMAGE, NETWORK_ID, USERS
from peer_docker import IMAGE as DOCKER_IMAGE
from peer_ec2 import IMAGE_ID as EC2_IMAGE, INSTANCE_TYPE, REGION, FaultProxy
from test_build import built_id, import_ok


def cloud_init(text: str) -> dict:
    return {'type': 'cloudinit', 'context_template': f'#cloud-config\nruncmd: ["{text}"]\n'}


def test_an_infrastructure_over_docker_nova_and_ec2(occo, tmp_path, local_image, nova_peer,
                                                      nova_project, ec2_peer):
    nodes = {
        'db': {'resource': {'type': 'docker', 'endpoint': local_image.endpoint, 'origin': 'local',
                            'image': DOCKER_IMAGE},
               'contextualisation': {'type': 'docker', 'env': ['role=db'],
                                     'command': 'sh -c /root/start.sh'}},
        'app': {'resource': {'type': 'nova', 'endpoint': nova_peer.keystone,
                             'project_id': nova_project, 'image_id': NOVA_IMAGE,
                             'flavor_name': 'm1.tiny', 'network_id': NETWORK_ID},
                'contextualisation': cloud_init("echo db={{getip('db')}}")},
        'web': {'resource': {'type': 'ec2', 'endpoint': ec2_peer.url, 'regionname': REGION,
                             'image_id': EC2_IMAGE, 'instance_type': INSTANCE_TYPE},
                'contextualisation': cloud_init("echo app={{getip('app')}}")},
    }
    definitions = {f'node_def:{name}': [dict(node, health_check={'ping': False})]
                   for name, node in nodes.items()}
    write(tmp_path, {
        'nodes.yaml': json.dumps(definitions),
        'infra.yaml': 'infra_name: hybrid\nuser_id: u\nnodes:\n'
                      + ''.join(f'  - {{name: {n}, type: {n}}}\n' for n in nodes)
                      + 'dependencies:\n  - [app, db]\n  - [web, app]\n'})
    write(occo.home, {'.occopus/auth_data.yaml': (
        'resource:\n'
        f'  - type: nova\n    auth_data: {{username: demo, password: {USERS["demo"]}}}\n'
        f'  - type: ec2\n    auth_data: {{accesskey: {ec2_peer.access}, secretkey: {ec2_peer.secret}}}\n')})
    import_ok(occo, tmp_path / 'nodes.yaml')
    infra = f'hybrid-{uuid.uuid4().hex[:8]}'

    result = occo.run('occopus-build', '--parallelize', '-i', infra, tmp_path / 'infra.yaml')
    assert built_id(result) == infra
    assert 'Traceback' not in result.stderr

    # each cloud holds one resource of the infrastructure, given the address of the one before
    [container] = local_image.containers(infra)
    assert container['State']['Status'] == 'running'
    db_ip = next(iter(container['NetworkSettings']['Networks'].values()))['IPAddress']
    [server] = nova_peer.state(nova_project)['servers']
    assert f'echo db={db_ip}' in server['user_data']
    [instance] = ec2_peer.instances(infra)
    answer = ec2_peer.client().describe_instance_attribute(InstanceId=instance['InstanceId'],
                                                           Attribute='userData')
    user_data = base64.b64decode(answer['UserData']['Value']).decode()
    records = {json.loads(v)['node']: json.loads(v)
               for v in occo.redis.hgetall(f'{occo.prefix}{{{infra}}}:instances').values()}
    assert f"echo app={records['app']['addresses'][0]}" in user_data
    assert {n: r['state'] for n, r in records.items()} == {'db': 'ready', 'app': 'ready', 'web': 'ready'}

    report = occo.run('occopus-manage', '-r', '-i', infra, '--format', 'json')
    assert report.returncode == 0, report.stderr
    assert USERS['demo'] not in report.stdout and ec2_peer.secret not in report.stdout

    listed = occo.run('occopus-destroy', '--dry-run', '-i', infra)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].endswith('would drop 3 recorded instances and 0 resources no record knows:')
    assert [line.split()[:3] for line in lines[1:]] == [  # dependents first
        ['ready', 'ec2', 'instance'], ['ready', 'nova', 'server'], ['ready', 'docker', 'container']]

    destroyed = occo.run('occopus-destroy', '-i', infra)
    assert destroyed.returncode == 0, destroyed.stderr
    assert local_image.containers(infra) == []
    assert nova_peer.state(nova_project)['servers'] == []
    assert ec2_peer.instances(infra) == []
    assert occo.infra_keys(infra) == []
    everything = repr(occo.snapshot())
    assert USERS['demo'] not in everything and ec2_peer.secret not in everything


def test_a_killed_build_whose_endpoint_is_a_template_is_still_found(occo, tmp_path, ec2_peer):
    """The record written before the cloud is asked holds the rendered resource section, so
    a destroy asks the endpoint the template named (the node definition names none)."""
    section = dict(type='ec2', endpoint='{{ variables.ep }}', regionname=REGION,
                   image_id=EC2_IMAGE, instance_type=INSTANCE_TYPE)
    with FaultProxy(ec2_peer.url, hold=('RunInstances',)) as proxy:
        write(tmp_path, {
            'nodes.yaml': json.dumps({'node_def:n': [{'resource': section, 'contextualisation':
                                                      cloud_init('echo {{node_id}}')}]}),
            'infra.yaml': f'infra_name: t\nuser_id: u\nvariables: {{ep: "{proxy.url}"}}\n'
                          'nodes: [{name: n, type: n}]\n'})
        write(occo.home, {'.occopus/auth_data.yaml': (
            f'resource:\n  - type: ec2\n    auth_data: {{accesskey: {ec2_peer.access}, '
            f'secretkey: {ec2_peer.secret}}}\n')})
        import_ok(occo, tmp_path / 'nodes.yaml')
        infra = f'tmpl-{uuid.uuid4().hex[:8]}'
        kill_build_when(occo, proxy.held, '-i', infra, tmp_path / 'infra.yaml')
        proxy.release.set()
        [made] = ec2_peer.instances(infra)
        [record] = [json.loads(v) for v in occo.redis.hgetall(f'{occo.prefix}{{{infra}}}:instances').values()]
        assert (record['state'], record['instance_id'], record['resource']['endpoint']) == \
            ('creating', None, proxy.url)

        [line] = destroy_listing(occo, infra, recorded=1, untracked=0)
        assert line.startswith(f"  creating   ec2 instance {made['InstanceId']}  node n "), line
        destroyed = occo.run('occopus-destroy', '-i', infra)
        assert destroyed.returncode == 0, destroyed.stderr
        assert f"dropped ({made['InstanceId']})" in destroyed.stderr
    assert ec2_peer.instances(infra) == [] and occo.infra_keys(infra) == []
