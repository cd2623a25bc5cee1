"""Node instances as process groups on this machine, each with its own loopback address.

The embedded backend that lets a new user try Occopus with no cloud.  Each instance gets an
address from 127.0.0.0/8 (never 127.0.0.1, unique among live instances; or ``address:`` in the
resource) and a folder of its own (``<root>/<infra_id>/<node_id>``, where ``root`` is the
handler's setting ``resources: {local: {root: ...}}``, ``~/.occopus/local`` by default).  Its cloud-init user
data is applied there: ``write_files`` under the folder (absolute paths mapped inside it) and
``runcmd`` run by ``/bin/sh`` in the folder, in a new process group, with ``OCCOPUS_NODE_ROOT``,
``OCCOPUS_NODE_IP``, ``OCCOPUS_NODE_ID`` and ``OCCOPUS_INFRA_ID`` set.  Background processes it
starts keep running, as services on a VM do.  Other cloud-config keys are logged as ignored.

State: pending while runcmd runs, running once it has finished (and while the instance
exists), failed if a runcmd step exits non-zero.  Drop kills every process of the instance
(found by process group and by the OCCOPUS_NODE_ID in its environment) and removes the folder.
The registry of instances is the cloud registry ``local`` (the Redis hash
``<prefix>localcloud``); an instance whose registry entry is lost (Redis restarted empty) is
still dropped from what its instance record knows (folder, process group, node id).
"""
from __future__ import annotations

import base64
import gzip
import ipaddress
import os
import random
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from occo.errors import OccoError
from occo.instances import Instance
from occo.plugins.resources.base import (
    FAILED, PENDING, RUNNING, SHUTDOWN, CreateRequest, Created, ResourceHandler, ResourceStatus,
    resource_keys)
from occo.schema import KeySchema, Problem, is_template

LOOPBACK = ipaddress.ip_network('127.0.0.0/8')
RESERVED = ipaddress.ip_address('127.0.0.1')
APPLIED_KEYS = ('write_files', 'runcmd')
STATUS_FILE = os.path.join('.occopus', 'status')
KILL_GRACE = 3.0
KEPT_ENVIRONMENT = ('PATH', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR')


class LocalHandler(ResourceHandler):
    type = 'local'
    buildable = True
    keys = resource_keys(optional=('address', 'name'))
    settings_keys = KeySchema(optional=('root',))
    DEFAULT_ROOT = os.path.join('~', '.occopus', 'local')

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield from super().validate(section)
        address = section.get('address')
        if address is not None and not is_template(address):
            try:
                ip = ipaddress.ip_address(str(address))
            except ValueError:
                ip = None
            if ip is None or ip not in LOOPBACK or ip == RESERVED:
                yield Problem(f"'address' must be a loopback address in 127.0.0.0/8 other than "
                              f"127.0.0.1, got {address!r}", ('address',))

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.cloud = ctx.registry('local')
        self.root = os.path.abspath(os.path.expanduser(ctx.settings.get('root') or self.DEFAULT_ROOT))
        self._shells: List[subprocess.Popen] = []  # reaped as they end (no zombies)

    # -- create ----------------------------------------------------------------------------

    def create(self, request: CreateRequest) -> Created:
        resource_id = f'local-{uuid.uuid4().hex}'
        address = self._allocate(request.resource.get('address'))
        root = os.path.join(self.root, request.infra_id, request.node_id)
        record = {'state': 'creating', 'infra_id': request.infra_id, 'node_id': request.node_id,
                  'node': request.node, 'address': address, 'root': root, 'pgid': None,
                  'created_at': round(time.time(), 3)}
        # Registered before anything runs, so a killed build never leaves an untraceable instance.
        self.cloud.put(resource_id, record)
        try:
            steps = self._prepare(root, request)
            record['pgid'] = self._start(root, address, request, steps)
        except BaseException:
            self._remove(resource_id, record)
            raise
        record['state'] = 'started'
        self.cloud.put(resource_id, record)
        return Created(resource_id, [address], address, {'root': root, 'pgid': record['pgid'],
                                                         'address': address})

    def _allocate(self, wanted: Optional[str]) -> str:
        if wanted:
            if not self.cloud.claim(str(wanted)):
                raise OccoError(f'address {wanted} is already used by another local instance')
            return str(wanted)
        for _ in range(1000):
            candidate = (f'127.{random.randint(1, 254)}.{random.randint(0, 255)}.'
                         f'{random.randint(1, 254)}')
            if self.cloud.claim(candidate):
                return candidate
        raise OccoError('no free loopback address found for a local instance')

    def _prepare(self, root: str, request: CreateRequest) -> List[str]:
        """Create the folder, apply write_files; returns the runcmd steps as shell commands."""
        os.makedirs(os.path.join(root, '.occopus'), exist_ok=False)
        context = request.context
        text = getattr(context, 'user_data', None) or ''
        with open(os.path.join(root, '.occopus', 'user-data'), 'w', encoding='utf-8') as stream:
            stream.write(text)
        if text.startswith('#!'):  # a user-data script, as cloud-init runs it
            script = os.path.join(root, '.occopus', 'user-data')
            os.chmod(script, 0o755)
            return [shlex.quote(script)]
        if not text.lstrip().startswith('#cloud-config'):
            if text.strip():
                self.ctx.log.warning(f"local: node '{request.node}': user data is neither "
                                     'cloud-config nor a script; nothing of it is applied')
            return []
        import yaml
        config = yaml.safe_load(text) or {}
        if not isinstance(config, Mapping):
            raise OccoError(f"node '{request.node}': the cloud-config is not a mapping")
        ignored = sorted(str(k) for k in config if k not in APPLIED_KEYS)
        if ignored:
            self.ctx.log.warning(f"local: node '{request.node}': cloud-config keys ignored by the "
                                 f"local backend: {', '.join(ignored)}")
        for entry in config.get('write_files') or []:
            self._write_file(root, entry, request.node)
        steps = []
        for step in config.get('runcmd') or []:
            steps.append(shlex.join(str(part) for part in step) if isinstance(step, list) else str(step))
        return steps

    @staticmethod
    def _write_file(root: str, entry: Mapping[str, Any], node: str) -> None:
        if not isinstance(entry, Mapping) or not entry.get('path'):
            raise OccoError(f"node '{node}': every write_files entry needs a path")
        target = os.path.normpath(os.path.join(root, str(entry['path']).lstrip('/')))
        if os.path.commonpath([target, root]) != root:
            raise OccoError(f"node '{node}': write_files path {entry['path']!r} leaves the instance folder")
        content = entry.get('content', '')
        data = content.encode('utf-8') if isinstance(content, str) else bytes(str(content), 'utf-8')
        encoding = str(entry.get('encoding', '')).lower()
        if encoding in ('b64', 'base64', 'gz+b64', 'gz+base64', 'gzip+b64', 'gzip+base64'):
            data = base64.b64decode(data)
        if encoding.startswith(('gz', 'gzip')):
            data = gzip.decompress(data)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, 'ab' if entry.get('append') else 'wb') as stream:
            stream.write(data)
        if entry.get('permissions') is not None:
            permissions = entry['permissions']
            os.chmod(target, int(str(permissions), 8) if isinstance(permissions, str) else int(permissions))

    def _start(self, root: str, address: str, request: CreateRequest, steps: List[str]) -> int:
        status = os.path.join(root, STATUS_FILE)
        lines = ['#!/bin/sh',
                 f'# runcmd of node {request.node}, instance {request.node_id} (written by Occopus)',
                 'cd "$OCCOPUS_NODE_ROOT" || exit 1',
                 f'status={shlex.quote(status)}',
                 # the status file is replaced whole, never seen half-written
                 'say() { echo "$1" > "$status.new" && mv -f "$status.new" "$status"; }',
                 'step() {',
                 '    /bin/sh -c "$3"; rc=$?',
                 '    if [ $rc -ne 0 ]; then',
                 '        say "runcmd step $1 ($2) exited with $rc"; exit $rc',
                 '    fi',
                 '}']
        # A failure names the step and its program, not the whole command: a rendered command
        # may hold a password.
        lines += [f'step {number} {shlex.quote(_program(step))} {shlex.quote(step)}'
                  for number, step in enumerate(steps, 1)]
        lines.append(f'say {RUNNING.value}')
        script = os.path.join(root, '.occopus', 'runcmd.sh')
        with open(script, 'w', encoding='utf-8') as stream:
            stream.write('\n'.join(lines) + '\n')
        with open(status, 'w', encoding='utf-8') as stream:
            stream.write(PENDING + '\n')
        env = {k: os.environ[k] for k in KEPT_ENVIRONMENT if k in os.environ}
        env.update(HOME=root, OCCOPUS_NODE_ROOT=root, OCCOPUS_NODE_IP=address,
                   OCCOPUS_NODE_ID=request.node_id, OCCOPUS_INFRA_ID=request.infra_id,
                   OCCOPUS_NODE_NAME=request.node)
        with open(os.path.join(root, '.occopus', 'output.log'), 'ab') as log:
            process = subprocess.Popen(['/bin/sh', script], cwd=root, env=env,
                                       stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self._shells = [p for p in self._shells if p.poll() is None] + [process]
        return process.pid

    # -- state -----------------------------------------------------------------------------

    def states(self, instances: Sequence[Instance]) -> Dict[str, ResourceStatus]:
        self._shells = [p for p in self._shells if p.poll() is None]
        values = self.cloud.get_many([i.instance_id for i in instances])
        return {instance.node_id: self._state(instance, local)
                for instance, local in zip(instances, values)}

    @staticmethod
    def _state(instance: Instance, local: Optional[Mapping[str, Any]]) -> ResourceStatus:
        if local is None:
            return ResourceStatus(SHUTDOWN, reason=f'no local instance {instance.instance_id}')
        addresses = [local['address']]
        try:
            with open(os.path.join(local['root'], STATUS_FILE), encoding='utf-8') as stream:
                status = stream.read().strip()
        except OSError:
            return ResourceStatus(SHUTDOWN, addresses, local['address'],
                                  f"the folder of the instance is gone ({local['root']})")
        if status == RUNNING:
            return ResourceStatus(RUNNING, addresses, local['address'])
        if status in (PENDING, ''):  # '' : written by an older release, between truncate and write
            return ResourceStatus(PENDING, addresses, local['address'])
        return ResourceStatus(FAILED, addresses, local['address'], status)

    # -- drop ------------------------------------------------------------------------------

    def drop(self, instance: Instance) -> None:
        resource_id = instance.instance_id
        local = self.cloud.get(resource_id) if resource_id else None
        if local is None:  # the registry lost it: what the instance record knows is enough
            local = {'node_id': instance.node_id, 'root': instance.extra.get('root'),
                     'pgid': instance.extra.get('pgid'), 'address': instance.extra.get('address')}
            if local['root'] and not self._inside_root(local['root']):
                local['root'] = None
        self._remove(resource_id, local)

    def _inside_root(self, path: str) -> bool:
        path = os.path.abspath(path)
        return os.path.commonpath([path, self.root]) == self.root and path != self.root

    def _remove(self, resource_id: Optional[str], local: Mapping[str, Any]) -> None:
        kill_instance(local.get('pgid'), local.get('node_id'))
        if local.get('root'):
            shutil.rmtree(local['root'], ignore_errors=True)
            parent = os.path.dirname(local['root'])
            try:
                os.rmdir(parent)  # the infrastructure's folder, once its last instance is gone
            except OSError:
                pass
        self.cloud.delete(resource_id, local.get('address'))

    def find(self, infra_id: str) -> List[Dict[str, Any]]:
        return self.cloud.find(infra_id)


def _program(step: str) -> str:
    """The program a shell command starts, for messages (``mariadb``, ``python3``, ...)."""
    try:
        words = shlex.split(step)
    except ValueError:
        words = step.split()
    words = [w for w in words if '=' not in w.split('/')[0]]  # skip VAR=value prefixes
    return os.path.basename(words[0]) if words else 'sh'


# -- processes -------------------------------------------------------------------------------

def instance_processes(node_id: Optional[str], pgid: Optional[int] = None) -> List[int]:
    """Live processes of an instance: those carrying its OCCOPUS_NODE_ID (a daemon that left
    the group still has it in its environment), and the members of its process group -- if
    one of them carries it too, so that a process group id reused by someone else is never
    mistaken for the instance's."""
    if node_id is None:
        return []
    marker = f'OCCOPUS_NODE_ID={node_id}'.encode()
    marked, group = [], []
    for entry in os.listdir('/proc') if os.path.isdir('/proc') else ():
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f'/proc/{entry}/stat', 'rb') as stream:
                fields = stream.read().rsplit(b')', 1)[1].split()
            if fields[0] == b'Z':
                continue
            if pgid is not None and int(fields[2]) == pgid:
                group.append(int(entry))
            with open(f'/proc/{entry}/environ', 'rb') as stream:
                if marker in stream.read().split(b'\0'):
                    marked.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    if set(group) & set(marked):
        return sorted(set(group) | set(marked))
    return marked


def kill_instance(pgid: Optional[int], node_id: Optional[str]) -> None:
    """Stop every process of an instance: SIGTERM, then SIGKILL what is left after a grace."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, 1.0)):
        pids = instance_processes(node_id, pgid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not instance_processes(node_id, pgid):  # zombies count as gone
                return
            time.sleep(0.05)
