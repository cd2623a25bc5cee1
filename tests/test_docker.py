"""The docker handler against a real Docker Engine API (podman's, see ``peer_docker``): the
docker-helloworld and docker-ping tutorials with their images imported from a URL, ``origin:
local``, the error paths, a container killed out of band, a killed build's leftovers, and how
the engine's states read."""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from conftest import CORPUS, destroy_listing, kill_build_when, write
from peer_docker import IMAGE, HoldingProxy, PodmanPeer
from test_build import built_id, import_ok

from occo.instances import CloudState
from occo.plugins.resources.base import CreateRequest
from occo.plugins.resources.docker import (
    DockerHandler, ImageRef, addresses_of, base_url, container_name, status_of)


def infra_id() -> str:
    return f'docker-{uuid.uuid4().hex[:12]}'


def tutorial(tmp_path: Path, name: str, peer: PodmanPeer) -> Path:
    """A copy of a docker tutorial with its endpoint pointed at the peer and its origin URLs
    at the peer's loopback HTTP server (same file name); returns its folder."""
    folder = tmp_path / name
    shutil.copytree(CORPUS / name, folder, ignore=shutil.ignore_patterns('golden'))
    definitions = folder / 'nodes' / 'node_definitions.yaml'
    text = definitions.read_text()
    assert 'replace_with_your_docker_endpoint' in text
    text = text.replace('replace_with_your_docker_endpoint', peer.endpoint)
    text, count = re.subn(r'origin: https://s3\.lpds\.sztaki\.hu/docker/(\w+\.tar)',
                          lambda m: f'origin: {peer.tarball_url(m.group(1))}', text)
    assert count >= 1
    definitions.write_text(text)
    return folder


def one_node(occo, folder: Path, peer: PodmanPeer, *, command: Any = 'sh -c /root/start.sh',
             env: Optional[List[str]] = None, **keys: Any) -> Path:
    """Import node definition ``n`` (one docker implementation) and write ``infra.yaml`` with
    one node ``n``; returns the infrastructure file."""
    resource = dict(dict(type='docker', endpoint=peer.endpoint, origin='local', image=IMAGE,
                         tag='latest'), **keys)
    context = {'type': 'docker', 'env': env or ['message=hello {{infra_id}}'], 'command': command}
    write(folder, {'nodes.yaml': (f"'node_def:n':\n  - resource: {json.dumps(resource)}\n"
                                  f'    contextualisation: {json.dumps(context)}\n'
                                  '    health_check: {ping: false}\n'),
                   'infra.yaml': 'infra_name: hello-docker\nuser_id: u\nnodes: [{name: n, type: n}]\n'})
    import_ok(occo, folder / 'nodes.yaml')
    return folder / 'infra.yaml'


def records(occo, infra: str) -> Dict[str, Dict[str, Any]]:
    return {json.loads(v)['node']: json.loads(v)
            for v in occo.redis.hgetall(f'{occo.prefix}{{{infra}}}:instances').values()}


def env_of(container: Dict[str, Any]) -> Dict[str, str]:
    return dict(item.split('=', 1) for item in container['Config']['Env'])


def ip_of(container: Dict[str, Any]) -> str:
    [network] = container['NetworkSettings']['Networks'].values()
    return network['IPAddress']


def wait_for_file(peer: PodmanPeer, container_id: str, path: str, seconds: float = 30) -> str:
    deadline = time.monotonic() + seconds
    while True:
        text = peer.run_in(container_id, 'cat', path)
        if 'No such file' not in text and text or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def assert_rolled_back(occo, peer: PodmanPeer, infra: str) -> None:
    assert peer.containers(infra) == []
    assert occo.infra_keys(infra) == []


def one_line_error(result) -> str:
    report = f'exit {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}'
    assert result.returncode == 1, report
    assert 'Traceback' not in result.stderr, report
    return result.stderr.splitlines()[-1]


# -- the tutorials -----------------------------------------------------------------------------

def test_docker_helloworld_tutorial_imports_its_image_builds_reports_and_destroys(occo, docker_peer, tmp_path):
    docker_peer.remove_image(f'{IMAGE}:latest')  # origin: <url> must really import it
    folder = tutorial(tmp_path, 'docker-helloworld', docker_peer)
    import_ok(occo, folder / 'nodes' / 'node_definitions.yaml')
    infra = infra_id()
    built = occo.run('occopus-build', '-i', infra, folder / 'infra-docker-helloworld.yaml', cwd=folder)
    assert built_id(built) == infra
    assert docker_peer.podman('image', 'exists', f'{IMAGE}:latest').returncode == 0

    [container] = docker_peer.containers(infra)
    record = records(occo, infra)['helloworld']
    assert record['state'] == 'ready' and record['instance_id'] == container['Id']
    assert container['State']['Status'] == 'running'
    assert container['Name'].lstrip('/') == \
        f"occopus-docker-helloworld--{infra[:8]}-helloworld-{record['node_id'][:8]}"
    assert container['Config']['Labels'] == {
        'occopus.infra_id': infra, 'occopus.node_id': record['node_id'], 'occopus.node': 'helloworld'}
    message = 'Hello World! I have been created by Occopus.'
    assert env_of(container)['message'] == message
    assert wait_for_file(docker_peer, container['Id'], '/tmp/message') == message + '\n'
    assert record['addresses'] == [ip_of(container)] and record['private_address'] == ip_of(container)

    report = occo.run('occopus-manage', '-r', '-i', infra)
    assert report.returncode == 0, report.stderr
    assert re.search(rf'^helloworld: \(1 of target 1.*\n  {record["node_id"]} \(ready\):\n'
                     rf'    {re.escape(ip_of(container))}$', report.stdout, re.M), report.stdout

    destroyed = occo.run('occopus-destroy', '-i', infra)
    assert destroyed.returncode == 0, destroyed.stderr
    assert destroyed.stdout == f'Destroyed infrastructure {infra} (1 instance)\n'
    assert_rolled_back(occo, docker_peer, infra)


def test_docker_ping_tutorial_sender_pings_the_receiver_by_getip(occo, docker_peer, tmp_path):
    folder = tutorial(tmp_path, 'docker-ping', docker_peer)
    import_ok(occo, folder / 'nodes' / 'node_definitions.yaml')
    infra = infra_id()
    built = occo.run('occopus-build', '-i', infra, folder / 'infra-docker-ping.yaml', cwd=folder)
    assert built_id(built) == infra
    containers = {c['Config']['Labels']['occopus.node']: c for c in docker_peer.containers(infra)}
    assert sorted(containers) == ['ping-receiver', 'ping-sender']
    receiver, sender = containers['ping-receiver'], containers['ping-sender']
    assert 'busybox_ping:latest' in sender['Config']['Image']  # podman writes docker.io/library/
    assert env_of(sender)['target_ip'] == ip_of(receiver) != ''
    assert records(occo, infra)['ping-receiver']['addresses'] == [ip_of(receiver)]
    assert wait_for_file(docker_peer, sender['Id'], '/tmp/ping.rc') == '0\n', \
        docker_peer.run_in(sender['Id'], 'cat', '/tmp/ping.log')

    destroyed = occo.run('occopus-destroy', '-i', infra)
    assert destroyed.returncode == 0, destroyed.stderr
    assert destroyed.stderr.index('ping-sender/') < destroyed.stderr.index('ping-receiver/')
    assert_rolled_back(occo, docker_peer, infra)


def test_origin_local_with_a_list_command_and_templated_env(occo, local_image, tmp_path):
    path = one_node(occo, tmp_path, local_image, command=['sh', '-c', '/root/start.sh'],
                    env=['message=hello {{infra_id}}', 'other=x'], tag=None)
    infra = infra_id()
    built = occo.run('occopus-build', '-i', infra, path)
    assert built_id(built) == infra
    [container] = local_image.containers(infra)
    assert container['Config']['Cmd'] == ['sh', '-c', '/root/start.sh']
    assert env_of(container)['message'] == f'hello {infra}' and env_of(container)['other'] == 'x'
    assert container['Name'].lstrip('/').startswith(f'occopus-hello-docker-{infra[:8]}-n-')
    assert occo.run('occopus-destroy', '-i', infra).returncode == 0
    assert_rolled_back(occo, local_image, infra)


# -- errors --------------------------------------------------------------------------------------

ERRORS = {
    'unknown image on docker hub': (
        dict(origin='dockerhub', image='no-such-image-occotest', tag='v9'),
        r'docker at {endpoint}: cannot pull image no-such-image-occotest:v9: initializing source '
        r'no-such-image-occotest:v9: registry docker\.io is blocked in .*'),
    'origin local without the image': (
        dict(image='not-here-occotest'),
        r'docker at {endpoint}: image not-here-occotest:latest is not present on the engine '
        r'\(origin: local uses an image already there: .*\)'),
    'origin URL that is not there': (
        dict(origin='{url}/missing.tar', image='never-imported'),
        r'docker at {endpoint}: importing image never-imported:latest from http://127\.0\.0\.1:\d+/'
        r'missing\.tar: .*\(HTTP 500\) -- the engine got no tar archive there: check that origin '
        r'is the URL of an image tarball the Docker host can download'),
    'unknown network': (
        dict(network_mode='no-such-network'),
        r'docker at {endpoint}: creating container occopus-hello-docker-[\w-]+-n-\w+ from image '
        r'busybox_helloworld:latest: .*no-such-network.*\(HTTP 500\)'),
    'command that does not exist': (
        dict(command='no-such-command --now'),
        r'docker at {endpoint}: starting container occopus-hello-docker-[\w-]+-n-\w+: .*'
        r'no-such-command.*\(HTTP 500\)'),
}


@pytest.mark.parametrize('case', sorted(ERRORS))
def test_errors_fail_in_one_line_and_roll_back(occo, local_image, tmp_path, case):
    keys, expected = ERRORS[case]
    url = local_image.tarball_url('x').rsplit('/', 1)[0]
    keys = {k: v.format(url=url) if isinstance(v, str) else v for k, v in keys.items()}
    command = keys.pop('command', 'sh -c /root/start.sh')
    before = {c['Id'] for c in local_image.containers()}
    path = one_node(occo, tmp_path, local_image, command=command, **keys)
    infra = infra_id()
    result = occo.run('occopus-build', '-i', infra, path, timeout=120)
    line = one_line_error(result)
    pattern = r"occopus-build: error: node 'n' \(instance \w+\): " + \
        expected.format(endpoint=re.escape(local_image.endpoint))
    assert re.fullmatch(pattern, line), line
    assert_rolled_back(occo, local_image, infra)
    assert {c['Id'] for c in local_image.containers()} == before  # no unlabelled leftover either


def test_an_endpoint_that_is_no_docker_url_fails_the_build_not_the_import(occo, local_image, tmp_path):
    path = one_node(occo, tmp_path, local_image, endpoint='replace_with_your_docker_endpoint')
    infra = infra_id()
    line = one_line_error(occo.run('occopus-build', '-i', infra, path))
    assert line == (f"occopus-build: error: node 'n' (instance {line.split('(instance ')[1][:8]}): "
                    'docker at replace_with_your_docker_endpoint: the endpoint must be '
                    'unix://<socket path> or tcp://<host>:<port> (no TLS)')
    assert occo.infra_keys(infra) == []


@pytest.mark.parametrize('case', ['no socket', 'nobody listening'])
def test_an_unreachable_engine_is_said_clearly(occo, local_image, tmp_path, case):
    """No socket at the path: final at once.  A socket nobody listens on (connection refused:
    the engine may be restarting): retried until create_timeout, then said as clearly.  The
    rollback cannot ask that engine for leftovers either: it warns, and since the failed
    create made nothing, the infrastructure is forgotten (no endpoint typo can make an
    infrastructure impossible to destroy)."""
    import socket
    dead = tmp_path / 'dead.sock'
    if case == 'nobody listening':
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(dead))
        listener.close()  # the file stays, nobody listens
        said = r'cannot reach the Docker engine \(Connection refused\): is it running and listening there\?'
    else:
        said = (rf'there is no socket at {re.escape(str(dead))}: start the Docker engine \(or '
                r'podman system service\) there, or fix endpoint')
    config = write(tmp_path, {'cfg.yaml': 'call_timeout: 1\n'}) / 'cfg.yaml'
    path = one_node(occo, tmp_path, local_image, endpoint=f'unix://{dead}', create_timeout=2)
    infra = infra_id()
    result = occo.run('occopus-build', '--cfg', config, '-i', infra, path)
    line = one_line_error(result)
    endpoint = re.escape(f'unix://{dead}')
    assert re.search(rf"^occopus-build: n/\w+: failed: docker at {endpoint}: looking for image "
                     rf'busybox_helloworld:latest: {said}$', result.stderr, re.M), result.stderr
    assert re.fullmatch(rf"occopus-build: error: node 'n' \(instance \w+\): docker at {endpoint}: "
                        rf'looking for image busybox_helloworld:latest: {said}', line), line
    assert re.search(rf'^occopus-build: warning: cannot look for resources tagged with infrastructure '
                     rf'{infra} on docker: docker at {endpoint}: listing containers: {said}; what a '
                     'killed build may have left there is not removed$', result.stderr, re.M), result.stderr
    assert occo.infra_keys(infra) == []
    retried = re.search(r'; try \d+ in [\d.]+ s$', result.stderr, re.M)
    assert bool(retried) == (case == 'nobody listening'), result.stderr
    assert local_image.containers(infra) == []


def test_a_503_from_the_engine_is_retried(occo, local_image, tmp_path):
    with HoldingProxy(str(local_image.socket), tmp_path, fail=r'POST /v[\d.]+/containers/create',
                      status=503, fail_times=2) as proxy:
        path = one_node(occo, tmp_path, local_image, endpoint=proxy.endpoint)
        infra = infra_id()
        built = occo.run('occopus-build', '-i', infra, path)
        assert built_id(built) == infra
        assert proxy.failed == 2
        assert 'injected by the test proxy' in built.stderr  # told as a retry
        [container] = local_image.containers(infra)
        assert container['State']['Status'] == 'running'
        assert occo.run('occopus-destroy', '-i', infra).returncode == 0
    assert_rolled_back(occo, local_image, infra)


# -- healing and leftovers -----------------------------------------------------------------------

def test_manage_replaces_a_container_killed_out_of_band(occo, local_image, tmp_path):
    path = one_node(occo, tmp_path, local_image)
    infra = infra_id()
    assert built_id(occo.run('occopus-build', '-i', infra, path)) == infra
    [old] = local_image.containers(infra)
    local_image.client().kill(old['Id'])
    passed = occo.run('occopus-manage', '-i', infra)
    assert passed.returncode == 0, passed.stderr
    assert 'exited with code 137' in passed.stderr, passed.stderr
    [new] = local_image.containers(infra)
    assert new['Id'] != old['Id'] and new['State']['Status'] == 'running'
    assert records(occo, infra)['n']['instance_id'] == new['Id']
    assert occo.run('occopus-destroy', '-i', infra).returncode == 0
    assert_rolled_back(occo, local_image, infra)


@contextmanager
def killed_while_starting(occo, peer: PodmanPeer, folder: Path
                          ) -> Iterator[Tuple[HoldingProxy, str, Dict[str, Any]]]:
    """A one-node build SIGKILLed while a proxy in front of the engine holds its start call
    (the container exists, its record has no id): the proxy, the infrastructure id and the
    container, until the proxy is closed."""
    with HoldingProxy(str(peer.socket), folder, hold=r'POST /v[\d.]+/containers/\w+/start') as proxy:
        path = one_node(occo, folder, peer, endpoint=proxy.endpoint)
        infra = infra_id()
        kill_build_when(occo, proxy.held, '-i', infra, path)
        [made] = peer.containers(infra)
        yield proxy, infra, made


def test_killed_build_leaves_a_container_that_destroy_finds_by_its_labels(occo, local_image, tmp_path):
    """SIGKILL while the build waits for the start call's answer: the container exists, its
    record has no id.  A second container labelled for the infrastructure, which no record
    knows, stands for a create whose record was never written."""
    with killed_while_starting(occo, local_image, tmp_path) as (proxy, infra, made):
        [record] = records(occo, infra).values()
        assert (record['state'], record['instance_id']) == ('creating', None)
        client = local_image.client()
        unknown = client.create_container(
            f'{IMAGE}:latest', command=['sleep', '1000'], name=f'unknown-{infra}',
            labels={'occopus.infra_id': infra, 'occopus.node_id': 'never-recorded',
                    'occopus.node': 'n'})['Id']
        proxy.release.set()

        tracked, untracked = destroy_listing(occo, infra, recorded=1, untracked=1)
        assert tracked.startswith('  creating   docker container ') and made['Id'] in tracked
        assert untracked == (f'  untracked  docker container unknown-{infra} {unknown}  tagged for '
                             'node n (never-recorded)')
        assert len(local_image.containers(infra)) == 2  # nothing dropped

        # While the engine cannot be asked, the record whose create was under way is kept
        # (what it made is not known), and so is the infrastructure.
        os.rename(proxy.path, proxy.path + '.away')
        try:
            failed = occo.run('occopus-destroy', '-i', infra)
        finally:
            os.rename(proxy.path + '.away', proxy.path)
        assert failed.returncode == 1, failed.stderr
        assert re.search(r"^occopus-destroy: error: node 'n' \(instance \w{8}\): its create call was "
                         r'under way and its resource cannot be looked up by its tags: docker at '
                         r'unix://\S+: listing containers: there is no socket at \S+: start .*; they are still '
                         rf'recorded: run occopus-destroy -i {infra} again once the cloud answers'
                         r' \(or with --forget-unreachable if that cloud is gone for good\)$',
                         failed.stderr, re.M), failed.stderr
        assert records(occo, infra) and len(local_image.containers(infra)) == 2

        destroyed = occo.run('occopus-destroy', '-i', infra)
        assert destroyed.returncode == 0, destroyed.stderr
        assert f'dropped ({made["Id"]})' in destroyed.stderr
        assert f'dropped ({unknown})' in destroyed.stderr
    assert_rolled_back(occo, local_image, infra)


def test_forget_unreachable_gives_up_on_an_engine_that_is_gone(occo, local_image, tmp_path):
    """A build killed while its create was under way, on an engine that then goes away for
    good: destroy keeps the record (exit 1) until told --forget-unreachable, which forgets it
    and says that what it made, if anything, stays labelled."""
    with killed_while_starting(occo, local_image, tmp_path) as (_, infra, made):
        pass
    # the proxy is closed: its socket is gone, as the engine's would be
    assert one_line_error(occo.run('occopus-destroy', '-i', infra)).endswith(
        '(or with --forget-unreachable if that cloud is gone for good)')
    assert records(occo, infra)

    forgot = occo.run('occopus-destroy', '--forget-unreachable', '-i', infra)
    assert forgot.returncode == 0, forgot.stderr
    assert re.search(r"^occopus-destroy: warning: node 'n' \(instance [\w-]+\): its create call was "
                     r'under way and its resource cannot be looked up by its tags: .*; forgetting it '
                     rf'\(--forget-unreachable\): what it made, if anything, stays tagged with {infra}$',
                     forgot.stderr, re.M), forgot.stderr
    assert forgot.stdout.strip() == f'Destroyed infrastructure {infra} (1 instance)'
    assert occo.infra_keys(infra) == []
    [left] = local_image.containers(infra)  # still labelled, for the user to remove
    assert left['Id'] == made['Id']
    local_image.client().remove_container(made['Id'], force=True)


# -- without an engine ---------------------------------------------------------------------------

def info(state: Any, **more: Any) -> Dict[str, Any]:
    return dict({'State': state, 'NetworkSettings': {'Networks': {'n': {'IPAddress': '10.0.0.7'}}}},
                **more)


@pytest.mark.parametrize('given, state, reason', [
    (info('running'), CloudState.RUNNING, None),
    (info('created'), CloudState.PENDING, 'the container is created and not started yet'),
    (info('restarting'), CloudState.PENDING, 'the container is restarting'),
    (info('paused'), CloudState.SHUTDOWN, 'the container is paused (paused containers are not used)'),
    (info('removing'), CloudState.SHUTDOWN, 'the container is being removed'),
    (info('exited', Status='Exited (0) 3 seconds ago'), CloudState.SHUTDOWN,
     'the container exited with code 0'),
    (info('exited', Status='Exited (137) 3 seconds ago'), CloudState.FAILED,
     'the container exited with code 137'),
    (info({'Status': 'exited', 'ExitCode': 1, 'Error': 'boom', 'OOMKilled': True}), CloudState.FAILED,
     'the container exited with code 1 (boom; killed for want of memory)'),
    (info('exited'), CloudState.SHUTDOWN, 'the container exited'),
    (info('dead', Status='Dead'), CloudState.SHUTDOWN, 'the engine reports the container dead'),
    (None, CloudState.SHUTDOWN, 'the container is gone (removed outside Occopus)'),
    (info('frozen\x1b[31m'), CloudState.UNKNOWN, "the engine reports the container 'frozen\\x1b[31m'"),
    (info(None), CloudState.UNKNOWN, 'the engine reports the container in no state'),
    (info(['x'] * 3), CloudState.UNKNOWN, "the engine reports the container ['x', 'x', 'x']"),
])
def test_states_are_mapped(given, state, reason):
    status = status_of(given)
    assert (status.state, status.reason) == (state, reason)
    assert status.addresses == (['10.0.0.7'] if state in (CloudState.RUNNING, CloudState.PENDING) else [])


@pytest.mark.parametrize('settings, network, expected', [
    ({'Networks': {'a': {'IPAddress': ''}, 'b': {'IPAddress': '10.1.0.2'}}}, None, ['10.1.0.2']),
    ({'Networks': {'a': {'IPAddress': '10.1.0.1'}, 'b': {'IPAddress': '10.1.0.2'}}}, 'b', ['10.1.0.2']),
    ({'Networks': {}}, 'host', []),
    ({'Networks': None, 'IPAddress': '172.17.0.3'}, None, ['172.17.0.3']),
    ({'Networks': {'a': {'IPAddress': 'not an address' * 100}}}, None, []),
    ('hostile', None, []),
])
def test_addresses(settings, network, expected):
    assert addresses_of({'NetworkSettings': settings}, network) == expected


def test_names_endpoints_and_images():
    request = CreateRequest(infra_id='abcdef0123456789', infra_name='my infra/ä', node='web*server',
                            node_id='0123456789abcdef', resource={}, context=None)
    assert container_name(request) == 'occopus-my-infra--abcdef01-web-server-01234567'
    assert base_url('unix://var/run/docker.sock') == 'unix:///var/run/docker.sock'
    assert base_url('unix:///run/podman.sock') == 'unix:///run/podman.sock'
    assert base_url('tcp://10.0.0.1:2375') == 'tcp://10.0.0.1:2375'
    assert str(ImageRef.of({'image': 'busybox'})) == 'busybox:latest'
    assert str(ImageRef.of({'image': 'nginx:alpine'})) == 'nginx:alpine'
    assert str(ImageRef.of({'image': 'reg:5000/x', 'tag': 3})) == 'reg:5000/x:3'


@pytest.mark.parametrize('keys, problem', [
    (dict(network_mode='host'), None),
    (dict(origin=None), None),
    (dict(origin='https://example.org/x.tar'), None),
    (dict(tag=1.1), "'tag' must be text: write it in quotes (tag: '1.1'), as YAML reads 1.1 as a number"),
    (dict(image='nginx:alpine'), "'image' ('nginx:alpine') names its tag already: leave 'tag' out "
                                 'or the tag out of image'),
    (dict(origin='ftp://x/y.tar'), "'origin' must be dockerhub (or empty), local, or the http(s) "
                                   "URL of an image tarball, got text 'ftp://x/y.tar'"),
    (dict(endpoint='replace_with_your_docker_endpoint'), None),  # the tutorials' placeholder
    (dict(network_mode=3), "'network_mode' must be a network name (bridge, host, none or a network "
                           'of the engine), got int 3'),
])
def test_validation(keys, problem):
    section = dict(dict(type='docker', endpoint='unix://var/run/docker.sock', image='busybox',
                        tag='latest', origin='dockerhub'), **keys)
    found = DockerHandler.check(section)
    assert (found.message if found else None) == problem


# -- hostile or silent engines, without the peer ------------------------------------------------

SECTION = {'type': 'docker', 'endpoint': 'unix:///nowhere/docker.sock', 'image': 'busybox'}


def bare_handler() -> DockerHandler:
    from occo.plugins.resources.base import HandlerContext
    return DockerHandler(HandlerContext())


def request_for(section: Dict[str, Any]) -> CreateRequest:
    return CreateRequest(infra_id='i', infra_name='t', node='n', node_id='0123456789ab',
                         resource=dict(section), context=None, attempts=1)


@pytest.mark.parametrize('acted', [False, True])
def test_an_answer_that_cannot_be_read_is_a_cloud_error(acted):
    """A 200 whose body is no JSON (requests' JSONDecodeError) or any other surprise becomes
    one printable line; transient where the call may have made something."""
    import requests.exceptions
    from occo.errors import CloudError, TransientCloudError
    handler = bare_handler()
    with pytest.raises(CloudError) as caught:
        with handler._speaking(SECTION, 'listing containers', may_have_acted=acted):
            raise requests.exceptions.JSONDecodeError('Expecting value', '<html>\x1b[2J', 0)
    assert type(caught.value) is (TransientCloudError if acted else CloudError)
    assert str(caught.value) == (
        'docker at unix:///nowhere/docker.sock: listing containers: the engine answered something '
        'that cannot be read (JSONDecodeError: Expecting value: line 1 column 1 (char 0))')


def test_states_ignore_entries_whose_id_is_no_text(monkeypatch):
    from occo.instances import Instance
    handler = bare_handler()
    monkeypatch.setattr(handler, '_engine', lambda resource: None)
    monkeypatch.setattr(handler, '_listed', lambda engine, resource, filters: [
        {'Id': ['c1']}, {'Id': {'x': 1}}, {'Id': 'c1', 'State': 'running'}])
    instances = [Instance('a', 'n', infra_id='i', resource=SECTION, instance_id='c1'),
                 Instance('b', 'n', infra_id='i', resource=SECTION, instance_id='c2')]
    states = handler.states(instances)
    assert (states['a'].state, states['b'].state) == (CloudState.RUNNING, CloudState.SHUTDOWN)


def test_a_create_waiting_for_another_ones_image_gives_its_turn_back(monkeypatch):
    from occo.errors import TransientCloudError
    from occo.plugins.resources import docker
    from occo.plugins.resources.docker import Engine
    monkeypatch.setattr(docker, 'IMAGE_LOCK_WAIT', 0.05)
    handler = bare_handler()
    ref = ImageRef.of(SECTION)
    engine = Engine('unix:///nowhere/docker.sock', None, None)
    lock = handler._image_lock((engine.url, str(ref)))
    assert lock.acquire()
    try:
        with pytest.raises(TransientCloudError) as caught:
            handler._ensure_image(engine, request_for(SECTION), ref)
    finally:
        lock.release()
    assert caught.value.unsent
    assert str(caught.value) == ('docker at unix:///nowhere/docker.sock: image busybox:latest is '
                                 'being fetched for another node instance on this endpoint: waited '
                                 '0.05 s for it')


class StreamingEngine:
    """A loopback HTTP server that answers a pull with progress messages, one every few
    milliseconds, until the client goes away (``gone`` is set then)."""

    def __init__(self) -> None:
        import http.server
        import socketserver
        engine = self
        self.sent = 0
        self.gone = __import__('threading').Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Transfer-Encoding', 'chunked')
                self.end_headers()
                try:
                    for _ in range(100000):
                        data = json.dumps({'status': 'Downloading', 'id': 'layer'}).encode() + b'\r\n'
                        self.wfile.write(b'%x\r\n%s\r\n' % (len(data), data))
                        self.wfile.flush()
                        engine.sent += 1
                        time.sleep(0.002)
                except OSError:
                    engine.gone.set()

        self.server = socketserver.ThreadingTCPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f'tcp://127.0.0.1:{self.server.server_address[1]}'
        __import__('threading').Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_pull_stops_and_closes_its_stream_when_the_create_is_given_up():
    from occo.errors import TransientCloudError
    server = StreamingEngine()
    try:
        section = dict(SECTION, endpoint=server.endpoint)
        handler, request = bare_handler(), request_for(section)
        engine = handler._engine(section)
        messages = []
        real = engine.images._stream_helper

        def counting(response: Any, decode: bool = False) -> Any:
            for message in real(response, decode):
                if decode:  # (the SDK decodes what its undecoded stream gives)
                    messages.append(message)
                    if len(messages) == 5:
                        request.cancelled.set()
                yield message
        engine.images._stream_helper = counting
        with pytest.raises(TransientCloudError) as caught:
            handler._pull(engine, request, ImageRef.of(section))
        # (base.cloud_said masks "tcp://127.0.0.1:<port>:" as a URL that does not parse)
        assert str(caught.value).startswith('docker at ')
        assert str(caught.value).endswith('pulling image busybox:latest from Docker Hub: the create '
                                          'call was given up by its caller; pull stopped')
        assert len(messages) == 5
        assert server.gone.wait(30)  # the stream was closed: the engine's writes fail
    finally:
        server.close()


def test_a_refused_connection_never_sent_the_request_a_reset_may_have():
    """Connection refused: the request never left (unsent).  A connection closed after the
    request was read: the engine may have acted (not unsent)."""
    import socket
    from occo.errors import TransientCloudError
    from occo.localredis import free_port
    handler = bare_handler()
    refused = dict(SECTION, endpoint=f'tcp://127.0.0.1:{free_port()}')
    with pytest.raises(TransientCloudError) as caught:
        with handler._speaking(refused, 'listing containers'):
            handler._engine(refused).calls.containers()
    assert caught.value.unsent and 'Connection refused' in str(caught.value)

    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)

    def hang_up() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.close()
    __import__('threading').Thread(target=hang_up, daemon=True).start()
    reset = dict(SECTION, endpoint=f'tcp://127.0.0.1:{listener.getsockname()[1]}')
    try:
        with pytest.raises(TransientCloudError) as caught:
            with handler._speaking(reset, 'listing containers'):
                handler._engine(reset).calls.containers()
    finally:
        listener.close()
    assert not caught.value.unsent
