"""The local backend's sandbox (issue 8): private files and folders (point 2), every process of
an instance ends when it is dropped (point 8), templated addresses checked once rendered
(point 9), and a failed step's output in the error and kept on disk (point 13)."""
from __future__ import annotations

import json
import os
import random
import re
import stat
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from conftest import live_processes, write
from test_build import UUID, assert_gone, built_id, import_ok

from occo.plugins.resources import local as local_module

ROOT_OF = lambda occo: occo.home / '.occopus' / 'local'  # noqa: E731


def node(occo, folder: Path, name: str, implementation: str, variables: Optional[Dict] = None) -> Path:
    """Import ``'node_def:<name>': [implementation]``; returns an infrastructure file of one
    node of it (with ``variables``)."""
    write(folder, {'nodes.yaml': f"'node_def:{name}':\n  - {implementation}"})
    infra = {'infra_name': 't', 'user_id': 'u',
             'nodes': [dict({'name': name, 'type': name}, **({'variables': variables} if variables else {}))]}
    write(folder, {'infra.yaml': json.dumps(infra) + '\n'})
    import_ok(occo, folder / 'nodes.yaml')
    return folder / 'infra.yaml'


def cloudinit(template: str, extra: str = '') -> str:
    return ('resource: {type: local}\n'
            f'    health_check: {{ping: false}}\n{extra}'
            '    contextualisation:\n      type: cloudinit\n'
            f'      context_template: {template}\n')


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def instances(occo, infra_id: str) -> List[dict]:
    return [json.loads(v) for v in occo.redis.hgetall(f'{occo.prefix}{{{infra_id}}}:instances').values()]


def processes_with(argument: str) -> List[int]:
    """Live (non-zombie) processes whose command line has ``argument`` as a word."""
    return [pid for pid, read in live_processes() if argument.encode() in read('cmdline').split(b'\0')]


def wait_for(predicate, bound: float = 30.0) -> None:
    """Wait until ``predicate()`` holds (a bound against hangs, not a timing check)."""
    deadline = time.monotonic() + bound
    while not predicate():
        assert time.monotonic() < deadline, 'gave up waiting'
        time.sleep(0.05)


def cgroups_allowed() -> bool:
    """Whether this machine lets us make cgroups (what the handler decides by trying)."""
    mount = local_module.cgroup2_mount()
    if mount is None:
        return False
    probe = local_module.make_cgroup(f'probe-{os.getpid()}-{random.randrange(10 ** 9)}')
    if probe is None:
        return False
    os.rmdir(probe)
    return True


# -- point 2: private files and folders ---------------------------------------------------------

def test_instance_files_and_folders_are_private(occo, tmp_path):
    template = ('{write_files: [{path: /etc/app/secret.conf, content: "password=hunter2"}, '
                "{path: /srv/index.html, content: hello, permissions: '0644'}], "
                'runcmd: ["echo password=hunter2 > made-by-step"]}')
    infra = node(occo, tmp_path, 'p', cloudinit(template))
    os.umask(0o022)
    result = occo.run('occopus-build', '-i', 'private', infra)
    assert built_id(result) == 'private'
    root = ROOT_OF(occo)
    [folder] = list((root / 'private').iterdir())
    assert mode(root) == 0o700 and mode(root / 'private') == 0o700
    assert mode(folder) == 0o700 and mode(folder / '.occopus') == 0o700
    for name in ('user-data', 'runcmd.sh', 'status', 'output.log'):
        assert mode(folder / '.occopus' / name) == 0o600, name
    assert mode(folder / 'etc' / 'app' / 'secret.conf') == 0o600
    assert (folder / 'etc' / 'app' / 'secret.conf').read_text() == 'password=hunter2'
    assert mode(folder / 'srv' / 'index.html') == 0o644  # an explicit permissions is kept
    assert mode(folder / 'etc') == 0o700
    # what the steps make keeps the umask it was given (as on a VM)
    assert mode(folder / 'made-by-step') == 0o644
    others = [p for p in folder.rglob('*') if p.stat().st_mode & 0o077 and p.name not in
              ('index.html', 'made-by-step')]
    assert others == []
    assert occo.run('occopus-destroy', '-i', 'private').returncode == 0
    assert not (root / 'private').exists()
    assert_gone(occo, 'private')


def test_user_data_script_is_executable_by_us_only(occo, tmp_path):
    write(tmp_path, {'script.sh': '#!/bin/sh\necho ran > ran.txt\n'})
    infra = node(occo, tmp_path, 's', 'resource: {type: local}\n'
                                     '    health_check: {ping: false}\n'
                                     '    contextualisation:\n      type: cloudinit\n'
                                     '      context_template: !text_import {url: file://script.sh}\n')
    result = occo.run('occopus-build', '-i', 'script', infra, cwd=tmp_path)
    if result.returncode != 0 and 'text_import' in result.stderr:
        pytest.skip(f'!text_import of a script: {result.stderr}')
    assert built_id(result) == 'script'
    [folder] = list((ROOT_OF(occo) / 'script').iterdir())
    assert mode(folder / '.occopus' / 'user-data') == 0o700
    assert (folder / 'ran.txt').read_text() == 'ran\n'
    assert occo.run('occopus-destroy', '-i', 'script').returncode == 0
    assert_gone(occo, 'script')


def test_an_existing_root_keeps_its_mode(occo, tmp_path):
    root = ROOT_OF(occo)
    root.mkdir(parents=True)
    root.chmod(0o755)
    infra = node(occo, tmp_path, 'k', cloudinit('{runcmd: ["true"]}'))
    assert built_id(occo.run('occopus-build', '-i', 'kept', infra)) == 'kept'
    assert mode(root) == 0o755 and mode(root / 'kept') == 0o700
    assert occo.run('occopus-destroy', '-i', 'kept').returncode == 0


# -- point 8: every process ends with its instance ----------------------------------------------

def escaping_node(occo, tmp_path, name: str) -> (Path, str):
    """A node whose runcmd starts a process that leaves the process group and clears its
    environment; returns the infrastructure file and the sleep's (unique) argument."""
    seconds = str(random.randrange(10 ** 6, 10 ** 7))
    infra = node(occo, tmp_path, name, cloudinit(f"{{runcmd: ['setsid env -i /bin/sleep {seconds} &']}}"))
    return infra, seconds


def cgroup_of(pid: int) -> str:
    with open(f'/proc/{pid}/cgroup', encoding='ascii') as stream:
        return next(line.split(':', 2)[2].strip() for line in stream if line.startswith('0::'))


@pytest.mark.parametrize('lost_registry', [False, True])
def test_escaped_process_ends_with_its_instance(occo, tmp_path, lost_registry):
    infra, seconds = escaping_node(occo, tmp_path, 'e')
    result = occo.run('occopus-build', '-i', 'escape', infra)
    assert built_id(result) == 'escape'
    wait_for(lambda: processes_with(seconds))
    [pid] = processes_with(seconds)
    [record] = instances(occo, 'escape')
    [entry] = [json.loads(v) for v in occo.redis.hgetall(f'{occo.prefix}localcloud').values()]
    extra = record['extra']
    assert extra['kill'] == entry['kill']
    if cgroups_allowed():  # root with a cgroup v2 mount, as on the machines we test on
        assert extra['kill'] == 'cgroup'
        cgroup = extra['cgroup']
        assert cgroup == os.path.join(local_module.cgroup2_mount(), 'occopus', record['node_id'])
        assert entry['cgroup'] == cgroup and os.path.isdir(cgroup)
        assert cgroup_of(pid) == f"/occopus/{record['node_id']}"
        with open(os.path.join(cgroup, 'cgroup.procs'), encoding='ascii') as stream:
            assert pid in [int(p) for p in stream.read().split()]
    else:
        assert extra['kill'] == 'process-group' and extra['cgroup'] is None
    if lost_registry:  # Redis restarted empty: only the instance record knows the cgroup
        occo.redis.delete(f'{occo.prefix}localcloud', f'{occo.prefix}localcloud:addresses')
    destroyed = occo.run('occopus-destroy', '-i', 'escape')
    assert destroyed.returncode == 0, destroyed.stderr
    assert destroyed.stdout == 'Destroyed infrastructure escape (1 instance)\n'
    assert processes_with(seconds) == []
    if extra['kill'] == 'cgroup':
        assert not os.path.exists(extra['cgroup'])
    assert not (ROOT_OF(occo) / 'escape').exists()
    assert_gone(occo, 'escape')


def test_failed_build_ends_escaped_processes_too(occo, tmp_path):
    seconds = str(random.randrange(10 ** 6, 10 ** 7))
    infra = node(occo, tmp_path, 'f', cloudinit(
        f"{{runcmd: ['setsid env -i /bin/sleep {seconds} &', 'exit 7']}}"))
    result = occo.run('occopus-build', '-i', 'escfail', infra)
    assert result.returncode == 1
    assert 'runcmd step 2 (exit) exited with 7' in result.stderr
    assert processes_with(seconds) == []
    [kept] = list((ROOT_OF(occo) / 'failed' / 'escfail').iterdir())  # named by the node id
    mount = local_module.cgroup2_mount()
    if mount:
        assert not Path(mount, 'occopus', kept.stem).exists()
    assert_gone(occo, 'escfail')


class _Registry:
    """An in-memory stand-in for the cloud registry ``local``."""

    def __init__(self) -> None:
        self.entries: Dict[str, dict] = {}
        self.addresses: set = set()

    def put(self, key, value):
        self.entries[key] = json.loads(json.dumps(value))

    def get(self, key):
        return self.entries.get(key)

    def get_many(self, keys):
        return [self.entries.get(k) for k in keys]

    def delete(self, key, address=None):
        self.entries.pop(key, None)
        self.addresses.discard(address)

    def claim(self, address):
        if address in self.addresses:
            return False
        self.addresses.add(address)
        return True

    def find(self, infra_id):
        return []


def test_fallback_without_cgroups_is_recorded_and_still_kills(tmp_path, monkeypatch):
    """Where no cgroup can be made (not root, no cgroup v2), the instance is a process group
    and its processes are found by group and environment, as recorded in ``kill``."""
    from types import SimpleNamespace
    import logging
    from occo.instances import Instance
    from occo.plugins.resources.base import CreateRequest

    monkeypatch.setattr(local_module, 'make_cgroup', lambda node_id: None)
    registry = _Registry()
    handler = local_module.LocalHandler(SimpleNamespace(
        registry=lambda name: registry, settings={'root': str(tmp_path / 'root')},
        log=logging.getLogger('test')))
    seconds = str(random.randrange(10 ** 6, 10 ** 7))
    node_id = 'fallback-node'
    request = CreateRequest(infra_id='fb', infra_name='fb', node='n', node_id=node_id, resource={},
                            context=SimpleNamespace(user_data=f'#cloud-config\nruncmd: ["/bin/sleep {seconds} &"]\n'))
    created = handler.create(request)
    assert created.extra['kill'] == 'process-group' and created.extra['cgroup'] is None
    assert registry.get(created.instance_id)['kill'] == 'process-group'
    wait_for(lambda: processes_with(seconds))
    instance = Instance(node_id=node_id, node='n', infra_id='fb', instance_id=created.instance_id,
                        extra=created.extra)
    registry.entries.clear()  # and with the registry lost, from the record alone
    handler.drop(instance)
    assert processes_with(seconds) == []
    assert not (tmp_path / 'root' / 'fb').exists()


def test_a_cgroup_path_from_a_record_must_be_ours():
    mount = local_module.cgroup2_mount() or '/sys/fs/cgroup'
    assert local_module.our_cgroup('/sys/fs/cgroup') is None
    assert local_module.our_cgroup(os.path.join(mount, 'occopus')) is None
    assert local_module.our_cgroup(os.path.join(mount, 'occopus', '..', 'system.slice')) is None
    assert local_module.our_cgroup(os.path.join(mount, 'other', 'x')) is None
    if local_module.cgroup2_mount():
        assert local_module.our_cgroup(os.path.join(mount, 'occopus', 'abc')) == \
            os.path.join(mount, 'occopus', 'abc')


# -- point 9: a templated address is checked once rendered ---------------------------------------

@pytest.mark.parametrize('address', ['0.0.0.0', '127.0.0.1', '127.0.0.0', '127.255.255.255',
                                     '10.1.2.3', 'localhost', ''])
def test_rendered_address_is_checked(occo, tmp_path, address):
    infra = node(occo, tmp_path, 'a', 'resource: {type: local, address: "{{ variables.a }}"}\n'
                                      '    health_check: {ping: false}\n', variables={'a': address})
    before = occo.redis.scard(f'{occo.prefix}localcloud:addresses')
    result = occo.run('occopus-build', '-i', 'addr', infra)
    assert result.returncode == 1
    rule = ("'address' must be a loopback address in 127.0.0.0/8 other than 127.0.0.1, 127.0.0.0 "
            f"and 127.255.255.255, got {address!r} once rendered")
    assert re.fullmatch(rf"occopus-build: error: node 'a' \(instance [0-9a-f]+\): {re.escape(rule)}",
                        result.stderr.splitlines()[-1]), result.stderr
    assert occo.redis.scard(f'{occo.prefix}localcloud:addresses') == before
    assert not (ROOT_OF(occo) / 'addr').exists()
    assert_gone(occo, 'addr')


def test_rendered_loopback_address_is_used(occo, tmp_path):
    infra = node(occo, tmp_path, 'a', 'resource: {type: local, address: "{{ variables.a }}"}\n'
                                      '    health_check: {ping: false}\n', variables={'a': '127.0.93.7'})
    result = occo.run('occopus-build', '--listips', '-i', 'goodaddr', infra)
    assert built_id(result) == 'goodaddr'
    assert '    127.0.93.7' in result.stdout.splitlines()
    assert occo.run('occopus-destroy', '-i', 'goodaddr').returncode == 0
    assert_gone(occo, 'goodaddr')


@pytest.mark.parametrize('address', ['127.0.0.0', '127.255.255.255'])
def test_literal_network_and_broadcast_addresses_are_refused(occo, tmp_path, address):
    write(tmp_path, {'nodes.yaml': f"'node_def:a':\n  - resource: {{type: local, address: '{address}'}}\n"})
    result = occo.run('occopus-import', tmp_path / 'nodes.yaml')
    assert result.returncode == 1
    assert (f"'address' must be a loopback address in 127.0.0.0/8 other than 127.0.0.1, 127.0.0.0 "
            f"and 127.255.255.255, got '{address}'") in result.stderr
    assert occo.keys() == []


# -- point 13: a failed step's output is told and kept -------------------------------------------

def failed_build(occo, tmp_path, infra_id: str, runcmd: str):
    infra = node(occo, tmp_path, 'l', cloudinit(runcmd))
    result = occo.run('occopus-build', '-i', infra_id, infra)
    assert result.returncode == 1
    line = result.stderr.splitlines()[-1]
    match = re.fullmatch(r"occopus-build: error: node 'l' \(instance ([0-9a-f]+)\): (.*)", line)
    assert match, result.stderr
    return result, match.group(2)


def test_failed_step_output_is_in_the_error_and_kept(occo, tmp_path):
    result, reason = failed_build(occo, tmp_path, 'stepout', '{runcmd: [echo starting, ls /nonexistent]}')
    [kept] = list((ROOT_OF(occo) / 'failed' / 'stepout').iterdir())
    assert re.fullmatch(rf'{UUID}\.log', kept.name)
    assert reason == ("runcmd step 2 (ls) exited with 2: ls: cannot access '/nonexistent': No such "
                      f'file or directory (its output is kept in {kept})')
    # the progress line (and so the node_failed event) says the same
    assert f"failed: {reason}" in result.stderr
    assert kept.read_text() == "starting\nls: cannot access '/nonexistent': No such file or directory\n"
    assert mode(kept) == 0o600
    assert mode(kept.parent) == 0o700 and mode(kept.parent.parent) == 0o700
    assert not (ROOT_OF(occo) / 'stepout').exists()  # the instance itself is gone
    assert_gone(occo, 'stepout')


def test_failed_step_tail_is_short_one_line_and_masked(occo, tmp_path):
    step = ("for i in 1 2 3 4 5 6 7 8; do echo line $i; done; "
            "echo 'token=abc123xyz https://bob:pa55word@example.org/x'; printf 'bell\\a\\033[31m'; "
            "echo; echo using S3cretPw0rd; exit 4")
    runcmd = json.dumps({'runcmd': ['echo before', step],
                         'write_files': [{'path': '/app.conf', 'content': 'db_password: S3cretPw0rd'}]})
    _, reason = failed_build(occo, tmp_path, 'masked', runcmd)
    kept = next((ROOT_OF(occo) / 'failed' / 'masked').iterdir())
    assert reason == ('runcmd step 2 (for) exited with 4: line 6 | line 7 | line 8 | '
                      'token=*** https://bob:***@example.org/x | bell\\x07\\x1b[31m | using *** '
                      f'(its output is kept in {kept})'.replace('line 6 | ', ''))
    assert 'abc123xyz' not in reason and 'pa55word' not in reason and 'S3cretPw0rd' not in reason
    assert 'before' not in reason  # only the failed step's output


def test_long_output_is_cut_to_500_characters(occo, tmp_path):
    step = "python3 -c 'print(\"x\" * 2000)'; exit 1"
    _, reason = failed_build(occo, tmp_path, 'long', json.dumps({'runcmd': [step]}))
    tail = reason.split(': ', 1)[1].rsplit(' (its output is kept in', 1)[0]
    assert len(tail) == 500 and tail == '…' + 'x' * 499


def test_failed_log_is_kept_by_a_manage_pass_and_named_in_the_event(occo, tmp_path):
    """A node that fails after the build (its instance's status file says so) is replaced by
    occopus-manage: the node_failed event names the kept log, which exists after the drop."""
    infra = node(occo, tmp_path, 'm', cloudinit('{runcmd: ["echo serving"]}'))
    assert built_id(occo.run('occopus-build', '-i', 'later', infra)) == 'later'
    [record] = instances(occo, 'later')
    folder = ROOT_OF(occo) / 'later' / record['node_id']
    with open(folder / '.occopus' / 'output.log', 'a') as stream:
        stream.write('crashed: password=abc999\n')
    offset = (folder / '.occopus' / 'output.log').stat().st_size - len('crashed: password=abc999\n')
    (folder / '.occopus' / 'failed-step.offset').write_text(f'{offset}\n')
    (folder / '.occopus' / 'status').write_text('runcmd step 9 (svc) exited with 1\n')
    result = occo.run('occopus-manage', '-i', 'later')
    kept = ROOT_OF(occo) / 'failed' / 'later' / f"{record['node_id']}.log"
    assert kept.read_text() == 'serving\ncrashed: password=abc999\n'  # the log itself is whole
    events = occo.run('occopus-manage', '-i', 'later', '--events')
    assert (f'runcmd step 9 (svc) exited with 1: crashed: password=*** (its output is kept in {kept})'
            in events.stdout), (result.stderr, events.stdout)
    assert occo.run('occopus-destroy', '-i', 'later').returncode == 0
    assert kept.exists()
    assert_gone(occo, 'later')
