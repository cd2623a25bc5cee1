"""occopus-build and occopus-destroy: what a user sees, what is left in Redis, in the dummy
cloud and in the process table."""
from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import EXAMPLES, destroy_listing, processes_of, write

UUID = r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'


def dummy_infra(folder: Path, nodes: int, levels: int = 1, *, boot_time: float = 0,
                create_time: float = 0, bad=(), bad_reason: str = 'fail_rate: 1') -> Path:
    """N dummy nodes in L levels (node i depends on node i-1 unless it starts a level);
    nodes in ``bad`` use a type whose resources always fail."""
    write(folder, {'nodes.yaml': (
        "'node_def:good':\n"
        f'  - resource: {{type: dummy, boot_time: {boot_time}, create_time: {create_time}}}\n'
        '    health_check: {ping: false}\n'
        "'node_def:bad':\n"
        f'  - resource: {{type: dummy, boot_time: {boot_time}, {bad_reason}}}\n'
        '    health_check: {ping: false}\n')})
    lines = ['infra_name: bench', 'user_id: tester', 'nodes:']
    lines += [f"  - {{name: n{i}, type: {'bad' if i in bad else 'good'}}}" for i in range(nodes)]
    deps = [f'  - [n{i}, n{i - 1}]' for i in range(nodes) if i % levels]
    lines += ['dependencies:'] + deps if deps else []
    write(folder, {'infra.yaml': '\n'.join(lines) + '\n'})
    return folder


def one_node(occo, folder: Path, name: str, implementation: str) -> Path:
    """Import ``'node_def:<name>': [implementation]`` and write an infrastructure of one node
    of that type; returns the infrastructure file."""
    write(folder, {'nodes.yaml': f"'node_def:{name}':\n  - {implementation}",
                   'infra.yaml': f'infra_name: t\nuser_id: u\nnodes: [{{name: {name}, type: {name}}}]\n'})
    import_ok(occo, folder / 'nodes.yaml')
    return folder / 'infra.yaml'


def import_ok(occo, path):
    result = occo.run('occopus-import', path)
    assert result.returncode == 0, result.stderr


def built_id(result) -> str:
    assert result.returncode == 0, result.stderr
    infra_id = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(UUID, infra_id) or infra_id
    return infra_id


def assert_gone(occo, infra_id):
    assert occo.dummy_cloud(infra_id) == {}
    assert occo.infra_keys(infra_id) == []
    assert processes_of(f'OCCOPUS_INFRA_ID={infra_id}') == []


# -- the ping example on both backends --------------------------------------------------------

def test_ping_example_on_dummy(occo):
    import_ok(occo, EXAMPLES / 'ping' / 'nodes' / 'node_definitions.yaml')
    result = occo.run('occopus-build', '--listips', EXAMPLES / 'ping' / 'infra-ping-dummy.yaml')
    infra_id = built_id(result)
    assert result.stderr.startswith(f'occopus-build: Submitted infrastructure: {infra_id}\n')
    lines = result.stdout.splitlines()
    assert lines[0] == 'List of nodes/instances/addresses:'
    assert lines[1] == 'ping-receiver:' and re.fullmatch(rf'  {UUID}:', lines[2])
    assert re.fullmatch(r'    198\.18\.\d+\.\d+', lines[3])
    assert lines[4] == 'ping-sender:'
    assert lines[7] == f'ping-receiver {lines[3].strip()}' and lines[8].startswith('ping-sender 198.18.')
    assert lines[-1] == infra_id and len(lines) == 10
    cloud = occo.dummy_cloud(infra_id)
    assert sorted(r['node'] for r in cloud.values()) == ['ping-receiver', 'ping-sender']
    assert {r['state'] for r in cloud.values()} == {'running'}
    instances = occo.redis.hgetall(f'{occo.prefix}{{{infra_id}}}:instances')
    assert {json.loads(v)['state'] for v in instances.values()} == {'ready'}
    registry = occo.registry(infra_id)
    assert (registry['name'], registry['state']) == ('ping-dummy', 'ready')
    events = [e['event'] for _, e in occo.redis.xrange(f'{occo.prefix}{{{infra_id}}}:events')]
    assert events == ['infra_created', 'node_created', 'node_ready', 'node_created', 'node_ready',
                      'infra_ready']

    destroyed = occo.run('occopus-destroy', '-i', infra_id)
    assert destroyed.returncode == 0, destroyed.stderr
    assert destroyed.stdout == f'Destroyed infrastructure {infra_id} (2 instances)\n'
    # dependents are dropped before what they depend on
    assert destroyed.stderr.index('ping-sender/') < destroyed.stderr.index('ping-receiver/')
    assert_gone(occo, infra_id)
    again = occo.run('occopus-destroy', '-i', infra_id)
    assert again.returncode == 1
    assert again.stderr.startswith(f'occopus-destroy: error: Unknown infrastructure: "{infra_id}"')


def test_ping_example_on_local(occo):
    import_ok(occo, EXAMPLES / 'ping' / 'nodes' / 'node_definitions.yaml')
    result = occo.run('occopus-build', EXAMPLES / 'ping' / 'infra-ping-local.yaml')
    infra_id = built_id(result)
    addresses = re.findall(r'^    (127\.\d+\.\d+\.\d+)$', result.stdout, re.M)
    assert len(set(addresses)) == 2 and '127.0.0.1' not in addresses
    root = occo.home / '.occopus' / 'local' / infra_id
    folders = sorted(root.iterdir())
    assert len(folders) == 2
    messages = sorted((f / 'tmp' / 'message.txt').read_text() for f in folders)
    assert messages == ['Hello World! I am the receiver node created by Occopus.\n',
                        'Hello World! I am the sender node created by Occopus.\n']
    [result_file] = [f / 'tmp' / 'ping-result.txt' for f in folders if (f / 'tmp' / 'ping-result.txt').exists()]
    assert addresses[0] in result_file.read_text()  # the sender reached the receiver's address

    destroyed = occo.run('occopus-destroy', '-i', infra_id)
    assert destroyed.returncode == 0, destroyed.stderr
    assert not root.exists()
    assert_gone(occo, infra_id)
    assert occo.redis.scard(f'{occo.prefix}localcloud:addresses') == 0


def test_webapp_example_serves_http_and_cleans_up(occo):
    import_ok(occo, EXAMPLES / 'webapp' / 'nodes' / 'node_definitions.yaml')
    result = occo.run('occopus-build', EXAMPLES / 'webapp' / 'infra-webapp.yaml',
                      env={'OCCOPUS_HEALTH_CHECKS': '1'})
    infra_id = built_id(result)
    web = re.search(r'^web:\n  \S+\n    (\S+)$', result.stdout, re.M).group(1)
    page = urllib.request.urlopen(f'http://{web}:8080/', timeout=10).read().decode()
    assert 'Hello from an infrastructure built by Occopus (data from node backend' in page
    assert len(processes_of(f'OCCOPUS_INFRA_ID={infra_id}')) >= 2  # two HTTP servers
    assert occo.run('occopus-destroy', '-i', infra_id).returncode == 0
    assert_gone(occo, infra_id)
    with pytest.raises(OSError):
        urllib.request.urlopen(f'http://{web}:8080/', timeout=2)


# -- ids ---------------------------------------------------------------------------------------

def test_chosen_id_and_existing_id(occo, tmp_path):
    folder = dummy_infra(tmp_path, 2)
    import_ok(occo, folder / 'nodes.yaml')
    result = occo.run('occopus-build', '-i', 'my-infra.1', folder / 'infra.yaml')
    assert built_id(result) == 'my-infra.1'
    before = occo.dummy_cloud('my-infra.1')
    again = occo.run('occopus-build', '-i', 'my-infra.1', folder / 'infra.yaml')  # an update
    assert again.returncode == 0, again.stderr
    assert 'Plan for infrastructure' in again.stdout and '2 nodes, 0 instances to create' in again.stdout
    assert again.stdout.strip().splitlines()[-1] == 'my-infra.1'
    assert occo.dummy_cloud('my-infra.1') == before  # the live one is untouched
    bad = occo.run('occopus-build', '-i', 'no{braces}', folder / 'infra.yaml')
    assert bad.returncode == 2 and "invalid infrastructure id 'no{braces}'" in bad.stderr
    assert occo.run('occopus-destroy', '-i', 'my-infra.1').returncode == 0


# -- failures and rollback ---------------------------------------------------------------------

def test_one_node_in_twenty_fails_everything_is_rolled_back(occo, tmp_path):
    folder = dummy_infra(tmp_path, 20, levels=5, bad={13})
    import_ok(occo, folder / 'nodes.yaml')
    result = occo.run('occopus-build', '--parallelize', '-i', 'failing', folder / 'infra.yaml')
    assert result.returncode == 1
    error = result.stderr.splitlines()[-1]
    assert re.fullmatch(r"occopus-build: error: node 'n13' \(instance [0-9a-f]{8}\): the dummy cloud "
                        r'reports the resource failed \(fail_rate\)', error), error
    assert 'Error occurred' in result.stderr and 'has been torn down' in result.stderr
    assert result.stdout == ''
    assert_gone(occo, 'failing')


def test_template_error_names_the_node_and_rolls_back(occo, tmp_path):
    write(tmp_path, {'nodes.yaml': "'node_def:ok':\n  - resource: {type: dummy}\n"
                                   "'node_def:broken':\n  - resource: {type: dummy}\n"
                                   '    contextualisation:\n      type: cloudinit\n'
                                   '      context_template: "#cloud-config\\nruncmd: [{{ variables.x.y }}]"\n',
                     'infra.yaml': 'infra_name: t\nuser_id: u\nnodes:\n  - {name: first, type: ok}\n'
                                   '  - {name: second, type: broken}\n'})
    import_ok(occo, tmp_path / 'nodes.yaml')
    result = occo.run('occopus-build', '-i', 'tmpl', tmp_path / 'infra.yaml')
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith(
        "occopus-build: error: node 'second' (instance ")
    assert "contextualisation.context_template: UndefinedError: 'dict object' has no attribute 'x'" \
        in result.stderr
    assert_gone(occo, 'tmpl')


def test_create_timeout_bounds_the_wait(occo, tmp_path):
    infra = one_node(occo, tmp_path, 'slow', 'resource: {type: dummy, boot_time: 60, create_timeout: 1}\n')
    result = occo.run('occopus-build', '-i', 'slow', infra, timeout=30)  # a hang fails the test
    assert result.returncode == 1
    assert re.search(r"error: node 'slow' \(instance \w+\): not ready after 1 s \(the resource is "
                     r'pending; create_timeout bounds the wait\)', result.stderr)
    assert_gone(occo, 'slow')


def test_failing_runcmd_fails_the_local_node(occo, tmp_path):
    infra = one_node(occo, tmp_path, 'l', "resource: {type: local}\n"
                                          '    contextualisation:\n      type: cloudinit\n'
                                          '      context_template: {runcmd: [echo one, exit 3, echo never]}\n')
    result = occo.run('occopus-build', '-i', 'runcmd', infra)
    assert result.returncode == 1
    assert "node 'l' (instance" in result.stderr and 'runcmd step 2 (exit) exited with 3' in result.stderr
    assert_gone(occo, 'runcmd')
    assert not (occo.home / '.occopus' / 'local' / 'runcmd').exists()


def test_failing_health_check_fails_the_node(occo, tmp_path):
    infra = one_node(occo, tmp_path, 'h', "resource: {type: local}\n"
                                          '    health_check: {ping: false, ports: [9], timeout: 1}\n')
    result = occo.run('occopus-build', '-i', 'health', infra,
                      env={'OCCOPUS_HEALTH_CHECKS': '1'})
    assert result.returncode == 1
    assert re.search(r"node 'h' \(instance \w+\): health check failing for \d+ s: port 9 of "
                     r'127\.[\d.]+ is not open', result.stderr), result.stderr
    assert_gone(occo, 'health')


def test_ping_health_check_on_loopback(occo, tmp_path):
    infra = one_node(occo, tmp_path, 'p', 'resource: {type: local}\n')
    result = occo.run('occopus-build', '-i', 'pinged', infra,
                      env={'OCCOPUS_HEALTH_CHECKS': '1'})
    if result.returncode != 0 and 'needs the ping command' in result.stderr:
        pytest.skip('ping is not installed here')
    assert built_id(result) == 'pinged'
    assert occo.run('occopus-destroy', '-i', 'pinged').returncode == 0


# -- interrupts and crashes ----------------------------------------------------------------------

def wait_for_resources(occo, infra_id, count, timeout=30):
    deadline = time.monotonic() + timeout
    while len(occo.dummy_cloud(infra_id)) < count:
        assert time.monotonic() < deadline, 'the build did not create resources in time'
        time.sleep(0.05)


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_interrupted_parallel_build_rolls_back(occo, tmp_path, sig):
    folder = dummy_infra(tmp_path, 30, levels=3, boot_time=1)
    import_ok(occo, folder / 'nodes.yaml')
    build = occo.popen('occopus-build', '--parallelize', '-i', 'interrupted', folder / 'infra.yaml')
    wait_for_resources(occo, 'interrupted', 5)
    build.send_signal(sig)
    stdout, stderr = build.communicate(timeout=60)
    assert build.returncode == 130, stderr
    assert stdout == ''
    assert 'Interrupted: tearing down what was built' in stderr
    assert stderr.rstrip().endswith('occopus-build: interrupted')
    assert_gone(occo, 'interrupted')


def test_killed_build_is_destroyed_by_id(occo, tmp_path):
    folder = dummy_infra(tmp_path, 30, levels=3, boot_time=1, create_time=0.2)
    import_ok(occo, folder / 'nodes.yaml')
    build = occo.popen('occopus-build', '--parallelize', '-i', 'killed', folder / 'infra.yaml')
    wait_for_resources(occo, 'killed', 8)
    build.kill()
    build.communicate(timeout=30)
    records = occo.redis.hgetall(f'{occo.prefix}{{killed}}:instances')
    assert records and len(occo.dummy_cloud('killed')) >= 8
    destroyed = occo.run('occopus-destroy', '-i', 'killed')
    assert destroyed.returncode == 0, destroyed.stderr
    assert_gone(occo, 'killed')


def test_creating_instances_are_found_by_their_tags(occo, tmp_path):
    """A record still in state `creating` (the build died during the cloud call) is matched to
    the resource the cloud made for it through the infrastructure and node ids."""
    folder = dummy_infra(tmp_path, 3)
    import_ok(occo, folder / 'nodes.yaml')
    assert built_id(occo.run('occopus-build', '-i', 'tagged', folder / 'infra.yaml')) == 'tagged'
    key = f'{occo.prefix}{{tagged}}:instances'
    for node_id, value in occo.redis.hgetall(key).items():
        record = json.loads(value)
        record.update(state='creating', instance_id=None)
        occo.redis.hset(key, node_id, json.dumps(record))
    occo.redis.hset(f'{occo.prefix}dummycloud', 'dummy-' + 'f' * 32, json.dumps(
        {'state': 'running', 'infra_id': 'tagged', 'node_id': 'never-recorded', 'node': 'n0'}))
    lines = destroy_listing(occo, 'tagged', recorded=3, untracked=1)
    assert lines[-1] == f"  untracked  dummy resource dummy-{'f' * 32}  tagged for node n0 (never-recorded)"
    assert len([line for line in lines if line.startswith('  creating   dummy resource dummy-')]) == 3
    assert len(occo.dummy_cloud('tagged')) == 4 and occo.redis.hlen(key) == 3  # nothing dropped
    destroyed = occo.run('occopus-destroy', '-i', 'tagged')
    assert destroyed.returncode == 0, destroyed.stderr
    assert destroyed.stderr.count('dropped (dummy-') == 4
    assert_gone(occo, 'tagged')


# -- ordering ----------------------------------------------------------------------------------

def test_sequential_build_makes_one_instance_at_a_time_in_order(occo, tmp_path):
    folder = dummy_infra(tmp_path, 6, levels=2, boot_time=0.2)
    import_ok(occo, folder / 'nodes.yaml')
    result = occo.run('occopus-build', '-i', 'seq', folder / 'infra.yaml')
    built_id(result)
    steps = re.findall(r'(n\d)/\w+: (created|ready)', result.stderr)
    # levels: [n0 n2 n4] then [n1 n3 n5]; each instance ready before the next is created
    assert steps == [(n, s) for n in ('n0', 'n2', 'n4', 'n1', 'n3', 'n5') for s in ('created', 'ready')]
    assert occo.run('occopus-destroy', '-i', 'seq').returncode == 0


def test_parallel_build_starts_a_node_when_its_own_dependencies_are_ready(occo, tmp_path):
    # a (slow) <- b ; c (fast) <- d : d must not wait for a
    write(tmp_path, {'nodes.yaml': "'node_def:slow':\n  - resource: {type: dummy, boot_time: 2}\n"
                                   "'node_def:fast':\n  - resource: {type: dummy, boot_time: 0.2}\n",
                     'infra.yaml': 'infra_name: t\nuser_id: u\nnodes:\n'
                                   '  - {name: a, type: slow}\n  - {name: b, type: fast}\n'
                                   '  - {name: c, type: fast}\n  - {name: d, type: fast}\n'
                                   'dependencies: [[b, a], [d, c]]\n'})
    import_ok(occo, tmp_path / 'nodes.yaml')
    result = occo.run('occopus-build', '--parallelize', '-i', 'nobarrier', tmp_path / 'infra.yaml')
    built_id(result)
    order = re.findall(r'^occopus-build: (\w)/\w+: (created|ready)', result.stderr, re.M)
    assert order.index(('d', 'ready')) < order.index(('a', 'ready'))
    assert occo.run('occopus-destroy', '-i', 'nobarrier', '--parallelize').returncode == 0
    assert_gone(occo, 'nobarrier')


# -- what cannot be built, and what must not be waited for or contacted ----------------------------

def test_a_cloud_that_cannot_be_built_yet_is_refused_before_anything_is_created(occo, tmp_path):
    """A third-party resource type that can be checked and planned but not built (every
    built-in type builds): registered by an entry point of a package on PYTHONPATH."""
    plugin = {'PYTHONPATH': str(Path(__file__).parent / 'thirdparty')}
    write(tmp_path, {'nodes.yaml': "'node_def:vm':\n  - resource: {type: example_cloud, "
                                   "endpoint: 'https://example.x'}\n",
                     'infra.yaml': 'infra_name: t\nuser_id: u\nnodes: [{name: vm, type: vm}]\n'})
    imported = occo.run('occopus-import', tmp_path / 'nodes.yaml', env=plugin)
    assert imported.returncode == 0, imported.stderr
    before = occo.snapshot()
    result = occo.run('occopus-build', tmp_path / 'infra.yaml', env=plugin)
    assert result.returncode == 2
    assert result.stderr == (f"occopus-build: error: {tmp_path}/infra.yaml:3: node 'vm': implementation "
                             "#0 of 'vm' uses resource type 'example_cloud', which can be checked, "
                             'planned and rendered but not yet built in this release (a filter can '
                             'choose another implementation)\n')
    assert occo.snapshot() == before
    unknown = occo.run('occopus-import', tmp_path / 'nodes.yaml')  # without the package
    assert unknown.returncode != 0 and "Unknown resource type 'example_cloud'" in unknown.stderr


def test_a_failed_build_does_not_wait_for_instances_still_booting(occo, tmp_path):
    folder = dummy_infra(tmp_path, 2, boot_time=60, bad={0}, bad_reason='fail_rate: 1')
    (folder / 'nodes.yaml').write_text((folder / 'nodes.yaml').read_text().replace(
        'boot_time: 60, fail_rate: 1', 'boot_time: 0, fail_rate: 1'))
    import_ok(occo, folder / 'nodes.yaml')
    started = time.monotonic()
    result = occo.run('occopus-build', '--parallelize', '-i', 'fast-fail', folder / 'infra.yaml')
    assert result.returncode == 1
    assert time.monotonic() - started < 15, 'the rollback waited for the booting instance'
    assert_gone(occo, 'fast-fail')


def test_dummy_addresses_are_never_health_checked(occo, tmp_path):
    # ping is on by default, but 198.18.x.y is fake
    infra = one_node(occo, tmp_path, 'd', 'resource: {type: dummy, create_timeout: 5}\n')
    result = occo.run('occopus-build', '-i', 'fake', infra,
                      env={'OCCOPUS_HEALTH_CHECKS': '1'})
    assert built_id(result) == 'fake'
    assert occo.run('occopus-destroy', '-i', 'fake').returncode == 0


def test_local_backend_warnings_use_the_command_format(occo, tmp_path):
    infra = one_node(occo, tmp_path, 'l', "resource: {type: local}\n"
                                          '    contextualisation:\n      type: cloudinit\n'
                                          '      context_template: {packages: [nginx], runcmd: [echo ok]}\n'
                                          '    health_check: {ping: false}\n')
    result = occo.run('occopus-build', '-i', 'warned', infra)
    assert built_id(result) == 'warned'
    assert ("occopus-build: warning: local: node 'l': cloud-config keys ignored by the local "
            'backend: packages\n') in result.stderr
    assert occo.run('occopus-destroy', '-i', 'warned').returncode == 0
