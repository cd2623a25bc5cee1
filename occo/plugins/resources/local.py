"""Node instances as processes on this machine, each with its own loopback address.

The embedded backend that lets a new user try Occopus with no cloud.  Each instance gets an
address from 127.0.0.0/8 (never 127.0.0.1, the network or the broadcast address, unique among
live instances; or ``address:`` in the resource, checked again once rendered) and a folder of
its own (``<root>/<infra_id>/<node_id>``, mode 0700, where ``root`` is the handler's setting
``resources: {local: {root: ...}}``, ``~/.occopus/local`` by default).  Its cloud-init user
data is applied there: ``write_files`` under the folder (absolute paths mapped inside it; mode
0600 unless ``permissions`` says otherwise) and ``runcmd`` run by ``/bin/sh`` in the folder, in
a new session, with ``OCCOPUS_NODE_ROOT``, ``OCCOPUS_NODE_IP``, ``OCCOPUS_NODE_ID`` and
``OCCOPUS_INFRA_ID`` set.  Occopus' own files (``.occopus/...``) are 0600.  Background
processes it starts keep running, as services on a VM do.  Other cloud-config keys are logged
as ignored.

Every process of an instance is kept in a cgroup of its own (cgroup v2,
``<cgroup2 mount>/occopus/<node_id>``) where the machine allows it (root, a cgroup2 mount);
elsewhere the instance is a process group, and its processes are found by that group and by
the OCCOPUS_NODE_ID in their environment.  Which way is in force is recorded as ``kill``
(``cgroup`` or ``process-group``) in the registry entry and in the instance record's ``extra``,
with the cgroup's path as ``cgroup``.

State: pending while runcmd runs, running once it has finished (and while the instance
exists), failed if a runcmd step exits non-zero; the failure reason ends with the last lines of
that step's output (secrets masked), and the instance's output is kept in
``<root>/failed/<infra_id>/<node_id>.log`` once the failure is seen (again when it is dropped).
Drop kills every process of the instance (SIGTERM, then SIGKILL), removes its cgroup and its
folder.  The registry of instances is the cloud registry ``local`` (the Redis hash
``<prefix>localcloud``); an instance whose registry entry is lost (Redis restarted empty) is
still dropped from what its instance record knows (folder, cgroup, process group, node id).
"""
from __future__ import annotations

import base64
import contextlib
import functools
import gzip
import ipaddress
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from occo.errors import OccoError
from occo.instances import Instance
from occo.plugins.resources.base import (
    FAILED, PENDING, RUNNING, SHUTDOWN, CreateRequest, Created, Found, ResourceHandler,
    ResourceStatus, resource_keys)
from occo.redact import mask_url
from occo.schema import KeySchema, Problem, is_template

LOOPBACK = ipaddress.ip_network('127.0.0.0/8')
RESERVED = ipaddress.ip_address('127.0.0.1')
NOT_ADDRESSES = (RESERVED, LOOPBACK.network_address, LOOPBACK.broadcast_address)
ADDRESS_RULE = ("'address' must be a loopback address in 127.0.0.0/8 other than 127.0.0.1, "
                '127.0.0.0 and 127.255.255.255')
APPLIED_KEYS = ('write_files', 'runcmd')
STATUS_FILE = os.path.join('.occopus', 'status')
OFFSET_FILE = os.path.join('.occopus', 'failed-step.offset')  # where the failed step's output starts
OUTPUT_FILE = os.path.join('.occopus', 'output.log')
FAILED_FOLDER = 'failed'  # <root>/failed/<infra_id>/<node_id>.log: outputs of failed instances
KILL_GRACE = 3.0
KILL_WAIT = 5.0
KEPT_ENVIRONMENT = ('PATH', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR')
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
TAIL_LINES = 5
TAIL_CHARS = 500
TAIL_READ = 64 * 1024
SAFE_NAME = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.-]*')

#: The ways to find every process of an instance (``kill`` in its records).
KILL_CGROUP = 'cgroup'
KILL_GROUP = 'process-group'
CGROUP_PARENT = 'occopus'

# The shell that becomes the instance's runcmd waits until Occopus has put it into the
# instance's cgroup (a line on its stdin, a pipe), so that nothing of the instance runs outside.
HOLD = 'read go || exit 1; exec /bin/sh "$0" < /dev/null'


def address_problem(address: Any) -> Optional[str]:
    """Why ``address`` cannot be a local instance's address (None if it can)."""
    try:
        ip = ipaddress.ip_address(str(address))
    except ValueError:
        ip = None
    if ip is None or ip.version != 4 or ip not in LOOPBACK or ip in NOT_ADDRESSES:
        return f'{ADDRESS_RULE}, got {address!r}'
    return None


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
            problem = address_problem(address)
            if problem:
                yield Problem(problem, ('address',))

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.cloud = ctx.registry('local')
        self.root = os.path.abspath(os.path.expanduser(ctx.settings.get('root') or self.DEFAULT_ROOT))
        self._shells: List[subprocess.Popen] = []  # reaped as they end (no zombies)

    # -- create ----------------------------------------------------------------------------

    def create(self, request: CreateRequest) -> Created:
        wanted = request.resource.get('address')
        if wanted is not None:  # a template is only known now: checked as a literal one is
            if address_problem(wanted):
                raise OccoError(f"node '{request.node}': {ADDRESS_RULE}, got {wanted!r} once rendered")
        resource_id = f'local-{uuid.uuid4().hex}'
        address = self._allocate(None if wanted is None else str(ipaddress.ip_address(str(wanted))))
        root = os.path.join(self.root, request.infra_id, request.node_id)
        record = {'state': 'creating', 'infra_id': request.infra_id, 'node_id': request.node_id,
                  'node': request.node, 'address': address, 'root': root, 'pgid': None,
                  'kill': KILL_GROUP, 'cgroup': None, 'created_at': round(time.time(), 3)}
        try:
            record['cgroup'] = make_cgroup(request.node_id)
            if record['cgroup']:
                record['kill'] = KILL_CGROUP
            # Registered before anything runs, so a killed build never leaves an untraceable instance.
            self.cloud.put(resource_id, record)
        except BaseException:
            with contextlib.suppress(Exception):
                remove_cgroup(record['cgroup'])
                self.cloud.delete(None, address)
            raise
        try:
            steps = self._prepare(root, request)
            record['pgid'], joined = self._start(root, address, request, steps, record['cgroup'])
            if not joined:
                remove_cgroup(record['cgroup'])
                record['kill'], record['cgroup'] = KILL_GROUP, None
        except BaseException:
            self._remove(resource_id, record)
            raise
        record['state'] = 'started'
        self.cloud.put(resource_id, record)
        return Created(resource_id, [address], address,
                       {'root': root, 'pgid': record['pgid'], 'address': address,
                        'kill': record['kill'], 'cgroup': record['cgroup']})

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
        for attempt in range(3):
            private_dir(self.root)
            private_dir(os.path.dirname(root))
            try:
                os.mkdir(root, PRIVATE_DIR)  # a folder left by someone else is not reused
                break
            except FileNotFoundError:  # the infrastructure's folder went with its last instance
                if attempt == 2:
                    raise
        os.chmod(root, PRIVATE_DIR)
        os.mkdir(os.path.join(root, '.occopus'), PRIVATE_DIR)
        context = request.context
        text = getattr(context, 'user_data', None) or ''
        script = os.path.join(root, '.occopus', 'user-data')
        is_script = text.startswith('#!')  # a user-data script, as cloud-init runs it
        write_private(script, text.encode('utf-8'), 0o700 if is_script else PRIVATE_FILE)
        if is_script:
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
        if os.path.commonpath([target, root]) != root or target == root:
            raise OccoError(f"node '{node}': write_files path {entry['path']!r} leaves the instance folder")
        mode = PRIVATE_FILE
        if entry.get('permissions') is not None:
            permissions = entry['permissions']
            try:
                mode = int(str(permissions), 8) if isinstance(permissions, str) else int(permissions)
            except ValueError:
                raise OccoError(f"node '{node}': write_files permissions {permissions!r} of "
                                f"{entry['path']!r} is not an octal mode such as '0644'") from None
        content = entry.get('content', '')
        data = content.encode('utf-8') if isinstance(content, str) else bytes(str(content), 'utf-8')
        encoding = str(entry.get('encoding', '')).lower()
        if encoding in ('b64', 'base64', 'gz+b64', 'gz+base64', 'gzip+b64', 'gzip+base64'):
            data = base64.b64decode(data)
        if encoding.startswith(('gz', 'gzip')):
            data = gzip.decompress(data)
        folder, missing = os.path.dirname(target), []
        while not os.path.isdir(folder):  # inside the instance's folder: made 0700 as it is
            missing.append(folder)
            folder = os.path.dirname(folder)
        for folder in reversed(missing):
            os.mkdir(folder, PRIVATE_DIR)
        # written 0600 (nobody else reads it half-way), then given its own permissions
        write_private(target, data, PRIVATE_FILE, append=bool(entry.get('append')))
        if mode != PRIVATE_FILE:
            os.chmod(target, mode)

    def _start(self, root: str, address: str, request: CreateRequest, steps: List[str],
               cgroup: Optional[str]) -> Tuple[int, bool]:
        """Start the runcmd script; returns its process (group) id and whether it runs in
        ``cgroup`` (it does not start before it has been put there, or it has been refused)."""
        status = os.path.join(root, STATUS_FILE)
        output = os.path.join(root, OUTPUT_FILE)
        lines = ['#!/bin/sh',
                 f'# runcmd of node {request.node}, instance {request.node_id} (written by Occopus)',
                 'cd "$OCCOPUS_NODE_ROOT" || exit 1',
                 f'status={shlex.quote(status)}',
                 f'offset={shlex.quote(os.path.join(root, OFFSET_FILE))}',
                 f'output={shlex.quote(output)}',
                 # Occopus' files are for you alone (0600), and replaced whole, never seen
                 # half-written; the steps keep the umask they were given
                 'private() { (umask 077 && echo "$2" > "$1.new") && mv -f "$1.new" "$1"; }',
                 'step() {',
                 '    start=$(wc -c < "$output")',
                 '    /bin/sh -c "$3"; rc=$?',
                 '    if [ $rc -ne 0 ]; then',
                 '        private "$offset" "$start"',
                 '        private "$status" "runcmd step $1 ($2) exited with $rc"; exit $rc',
                 '    fi',
                 '}']
        # A failure names the step and its program, not the whole command: a rendered command
        # may hold a password.
        lines += [f'step {number} {shlex.quote(_program(step))} {shlex.quote(step)}'
                  for number, step in enumerate(steps, 1)]
        lines.append(f'private "$status" {RUNNING.value}')
        script = os.path.join(root, '.occopus', 'runcmd.sh')
        write_private(script, ('\n'.join(lines) + '\n').encode('utf-8'))
        write_private(status, (PENDING + '\n').encode('utf-8'))
        env = {k: os.environ[k] for k in KEPT_ENVIRONMENT if k in os.environ}
        env.update(HOME=root, OCCOPUS_NODE_ROOT=root, OCCOPUS_NODE_IP=address,
                   OCCOPUS_NODE_ID=request.node_id, OCCOPUS_INFRA_ID=request.infra_id,
                   OCCOPUS_NODE_NAME=request.node)
        hold, release = os.pipe()
        try:
            log = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, PRIVATE_FILE)
            try:
                process = subprocess.Popen(['/bin/sh', '-c', HOLD, script], cwd=root, env=env,
                                           stdin=hold, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
            finally:
                os.close(log)
            os.close(hold)
            hold = -1
            joined = False
            if cgroup:
                try:
                    with open(os.path.join(cgroup, 'cgroup.procs'), 'w', encoding='ascii') as stream:
                        stream.write(str(process.pid))
                    joined = True
                except OSError as exc:
                    self.ctx.log.debug(f'local: cannot use the cgroup {cgroup} ({exc}); the '
                                       'instance is a process group')
            os.write(release, b'go\n')
        finally:
            os.close(release)
            if hold >= 0:
                os.close(hold)
        self._shells = [p for p in self._shells if p.poll() is None] + [process]
        return process.pid, joined

    # -- state -----------------------------------------------------------------------------

    def states(self, instances: Sequence[Instance]) -> Dict[str, ResourceStatus]:
        self._shells = [p for p in self._shells if p.poll() is None]
        values = self.cloud.get_many([i.instance_id for i in instances])
        return {instance.node_id: self._state(instance, local)
                for instance, local in zip(instances, values)}

    def _state(self, instance: Instance, local: Optional[Mapping[str, Any]]) -> ResourceStatus:
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
        return ResourceStatus(FAILED, addresses, local['address'], self._failure(status, local))

    def _failure(self, status: str, local: Mapping[str, Any]) -> str:
        """The failure reason: the status line, the last lines of the failed step's output
        (one line, secrets masked) and where the instance's output is kept."""
        reason = ' '.join(status.split())
        tail = step_tail(local['root'])
        if tail:
            reason += f': {tail}'
        kept = self._keep_log(local, again=False)
        if kept:
            reason += f' (its output is kept in {kept})'
        return reason

    def _kept_log(self, local: Mapping[str, Any]) -> Optional[str]:
        infra_id, node_id = str(local.get('infra_id') or ''), str(local.get('node_id') or '')
        if not (SAFE_NAME.fullmatch(infra_id) and SAFE_NAME.fullmatch(node_id)):
            return None
        return os.path.join(self.root, FAILED_FOLDER, infra_id, f'{node_id}.log')

    def _keep_log(self, local: Mapping[str, Any], again: bool) -> Optional[str]:
        """Copy the output of a failed instance to ``<root>/failed/<infra_id>/<node_id>.log``
        (0600); ``again``: even if it was copied before (the last word, before a drop)."""
        target = self._kept_log(local)
        source = os.path.join(local['root'], OUTPUT_FILE) if local.get('root') else None
        if target is None or source is None:
            return None
        if os.path.exists(target) and not again:
            return target
        try:
            private_dir(self.root)
            private_dir(os.path.dirname(os.path.dirname(target)))
            private_dir(os.path.dirname(target))
            partial = f'{target}.{os.getpid()}.new'
            with open(source, 'rb') as stream:
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                             | getattr(os, 'O_NOFOLLOW', 0), PRIVATE_FILE)
                with os.fdopen(fd, 'wb') as copy:
                    os.fchmod(fd, PRIVATE_FILE)
                    shutil.copyfileobj(stream, copy)
            os.replace(partial, target)
        except OSError as exc:
            self.ctx.log.debug(f'local: cannot keep the output of a failed instance: {exc}')
            return target if os.path.exists(target) else None
        return target

    # -- drop ------------------------------------------------------------------------------

    def drop(self, instance: Instance) -> None:
        resource_id = instance.instance_id
        local = self.cloud.get(resource_id) if resource_id else None
        if local is None:  # the registry lost it: what the instance record knows is enough
            extra = instance.extra or {}
            local = {'node_id': instance.node_id, 'infra_id': instance.infra_id,
                     'root': extra.get('root'), 'pgid': extra.get('pgid'),
                     'address': extra.get('address'), 'kill': extra.get('kill'),
                     'cgroup': extra.get('cgroup')}
            if local['root'] and not self._instance_folder(local['root'], instance):
                local['root'] = None
        self._remove(resource_id, local)

    def _instance_folder(self, path: str, instance: Instance) -> bool:
        """Whether ``path`` (from a record) is the folder of ``instance`` under our root."""
        path = os.path.abspath(path)
        inside = os.path.commonpath([path, self.root]) == self.root and path != self.root
        return (inside and os.path.basename(path) == instance.node_id
                and os.path.dirname(os.path.dirname(path)) == self.root
                and os.path.basename(os.path.dirname(path)) != FAILED_FOLDER)

    def _remove(self, resource_id: Optional[str], local: Mapping[str, Any]) -> None:
        cgroup = our_cgroup(local.get('cgroup'))
        if cgroup:
            kill_cgroup(cgroup)  # raises if its processes would not end: the drop is tried again
        kill_instance(local.get('pgid'), local.get('node_id'))  # the fallback, and leftovers
        self._shells = [p for p in self._shells if p.poll() is None]
        if local.get('root'):
            if failed_status(local['root']):
                self._keep_log(local, again=True)
            shutil.rmtree(local['root'], ignore_errors=True)
            parent = os.path.dirname(local['root'])
            try:
                os.rmdir(parent)  # the infrastructure's folder, once its last instance is gone
            except OSError:
                pass
        self.cloud.delete(resource_id, local.get('address'))

    def find(self, infra_id: str, resources: Sequence[Mapping[str, Any]]) -> List[Found]:
        return [Found(entry['instance_id'], entry.get('node_id'), entry.get('node'))
                for entry in self.cloud.find(infra_id)]


def _program(step: str) -> str:
    """The program a shell command starts, for messages (``mariadb``, ``python3``, ...)."""
    try:
        words = shlex.split(step)
    except ValueError:
        words = step.split()
    words = [w for w in words if '=' not in w.split('/')[0]]  # skip VAR=value prefixes
    return os.path.basename(words[0]) if words else 'sh'


# -- files -----------------------------------------------------------------------------------

def private_dir(path: str) -> None:
    """Create the folder ``path`` with mode 0700 (its missing parents as usual); one that
    exists is left as it is."""
    if os.path.isdir(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.mkdir(path, PRIVATE_DIR)
    except FileExistsError:
        return
    os.chmod(path, PRIVATE_DIR)  # whatever the umask


def write_private(path: str, data: bytes, mode: int = PRIVATE_FILE, append: bool = False) -> None:
    """Write ``data`` to ``path``, a file with mode ``mode`` (never readable by others on the way)."""
    flags = (os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC) | os.O_CLOEXEC
             | getattr(os, 'O_NOFOLLOW', 0))
    fd = os.open(path, flags, mode)
    with os.fdopen(fd, 'wb') as stream:
        os.fchmod(fd, mode)
        stream.write(data)


def failed_status(root: str) -> bool:
    try:
        with open(os.path.join(root, STATUS_FILE), encoding='utf-8') as stream:
            status = stream.read().strip()
    except OSError:
        return False
    return status not in (RUNNING, PENDING, '')


# -- the failed step's output -----------------------------------------------------------------

SECRET_NAME = r'(?:password|passwd|pass|pwd|token|secret|key|signature|auth|credentials?)'
SECRET_VALUE = r'''("[^"\n]*"|'[^'\n]*'|[^\s&;,|'"]+)'''
#: ``password=…``, ``api_key: …``, ``?token=…`` in output (the name kept, the value masked)
SECRET_ASSIGNMENT = re.compile(rf'(?i)(\b[\w.-]*{SECRET_NAME})(\s*[=:]\s*){SECRET_VALUE}')
#: and ``--password …`` in the user data, whose values are then masked wherever they appear
SECRET_OPTION = re.compile(rf'(?i)(--?[\w-]*{SECRET_NAME})(\s+|=){SECRET_VALUE}')
URL = re.compile(r'''\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>|]+''')


def mask_secrets(text: str, known: Iterable[str] = ()) -> str:
    """``text`` with secrets replaced by ``***``: passwords (and secret query values) of URLs,
    values given to secret-sounding names, and the ``known`` secret values."""
    for value in sorted({v for v in known if len(v) >= 4}, key=len, reverse=True):
        text = text.replace(value, '***')
    text = URL.sub(lambda m: mask_url(m.group(0)), text)
    return SECRET_ASSIGNMENT.sub(lambda m: f'{m.group(1)}{m.group(2)}***', text)


def secret_values(text: str) -> List[str]:
    """Values given to secret-sounding names in ``text`` (the rendered user data)."""
    found = []
    for pattern in (SECRET_ASSIGNMENT, SECRET_OPTION):
        for match in pattern.finditer(text):
            value = match.group(3).strip('\'"')
            if value and value != '***':
                found.append(value)
    for match in URL.finditer(text):
        masked = mask_url(match.group(0))
        if masked != match.group(0):  # what the mask hides, e.g. the password of the URL
            for part in set(re.split(r'[:@/?&=#]', match.group(0))) - set(re.split(r'[:@/?&=#]', masked)):
                found.append(part)
    return found


def _printable(line: str) -> str:
    return ''.join(c if c.isprintable() else (f'\\x{ord(c):02x}' if ord(c) < 0x100 else f'\\u{ord(c):04x}')
                   for c in line)


def step_tail(root: str) -> str:
    """The last lines (at most 5, 500 characters) of the failed step's output, one line
    joined with `` | ``, secrets masked; '' if there is none."""
    try:
        with open(os.path.join(root, OFFSET_FILE), encoding='ascii') as stream:
            offset = int(stream.read().strip())
        with open(os.path.join(root, OUTPUT_FILE), 'rb') as stream:
            size = stream.seek(0, os.SEEK_END)
            stream.seek(max(offset, size - TAIL_READ, 0))
            data = stream.read(TAIL_READ)
    except (OSError, ValueError):
        return ''
    lines = [' '.join(line.split()) for line in data.decode('utf-8', 'replace').splitlines()]
    lines = [line for line in lines if line][-TAIL_LINES:]
    if not lines:
        return ''
    try:
        with open(os.path.join(root, '.occopus', 'user-data'), encoding='utf-8', errors='replace') as stream:
            known = secret_values(stream.read())
    except OSError:
        known = []
    tail = _printable(mask_secrets(' | '.join(lines), known))
    if len(tail) > TAIL_CHARS:
        tail = '…' + tail[-(TAIL_CHARS - 1):]
    return tail


# -- processes -------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def cgroup2_mount() -> Optional[str]:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup``, or
    ``/sys/fs/cgroup/unified`` on a hybrid machine), None without one."""
    try:
        with open('/proc/self/mounts', encoding='utf-8') as stream:
            mounts = stream.read().splitlines()
    except OSError:
        return None
    for line in mounts:
        fields = line.split()
        if len(fields) > 2 and fields[2] == 'cgroup2':
            return fields[1].replace('\\040', ' ')
    return None


def make_cgroup(node_id: str) -> Optional[str]:
    """A new cgroup ``occopus/<node_id>`` for an instance, or None where the machine does not
    allow it (no cgroup v2, not permitted)."""
    mount = cgroup2_mount()
    if mount is None or not SAFE_NAME.fullmatch(node_id):
        return None
    parent = os.path.join(mount, CGROUP_PARENT)
    path = os.path.join(parent, node_id)
    try:
        try:
            os.mkdir(parent)
        except FileExistsError:
            if not _pruned:
                prune_cgroups(parent)
        os.mkdir(path)
    except OSError:
        return None
    return path


_pruned = False
PRUNE_AGE = 60.0


def prune_cgroups(parent: str) -> None:
    """Remove the empty instance cgroups under ``parent`` that are older than a minute (once
    per process): those whose instance's records were deleted without a drop (a test harness
    that kills processes and deletes keys).  An instance whose processes have all ended loses
    nothing by it (no process can join an empty cgroup of ours), and one being created right
    now is younger than a minute (and would fall back to its process group)."""
    global _pruned
    _pruned = True
    try:
        names = os.listdir(parent)
    except OSError:
        return
    now = time.time()
    for name in names:
        path = os.path.join(parent, name)
        try:
            if (not SAFE_NAME.fullmatch(name) or not os.path.isdir(path)
                    or now - os.stat(path).st_mtime < PRUNE_AGE or cgroup_processes(path)):
                continue
            os.rmdir(path)  # refused (EBUSY) if a process is in it after all
        except OSError:
            continue


def our_cgroup(path: Any) -> Optional[str]:
    """``path`` if it is an instance cgroup of ours (records are data: nothing else is touched)."""
    mount = cgroup2_mount()
    if not path or not isinstance(path, str) or mount is None:
        return None
    path = os.path.normpath(path)
    if (os.path.dirname(path) != os.path.join(mount, CGROUP_PARENT)
            or not SAFE_NAME.fullmatch(os.path.basename(path))):
        return None
    return path


def cgroup_processes(path: str) -> List[int]:
    try:
        with open(os.path.join(path, 'cgroup.procs'), encoding='ascii') as stream:
            return [int(pid) for pid in stream.read().split()]
    except (OSError, ValueError):
        return []


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_empty(path: str, seconds: float, resend: Optional[int] = None) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        pids = cgroup_processes(path)
        if not pids:  # exited processes (zombies too) are no longer listed
            return True
        if time.monotonic() >= deadline:
            return False
        if resend is not None:  # without cgroup.kill, children forked meanwhile get it too
            _signal_all(pids, resend)
        time.sleep(0.05)


def kill_cgroup(path: str) -> None:
    """End every process in the cgroup ``path`` (SIGTERM, then SIGKILL after a grace) and
    remove it. :raises OccoError: if its processes would not end."""
    if not os.path.isdir(path):
        return
    pids = cgroup_processes(path)
    if pids:
        _signal_all(pids, signal.SIGTERM)
        if not _wait_empty(path, KILL_GRACE):
            try:
                with open(os.path.join(path, 'cgroup.kill'), 'w', encoding='ascii') as stream:
                    stream.write('1')
                resend = None
            except OSError:  # a kernel older than 5.14
                resend = signal.SIGKILL
                _signal_all(cgroup_processes(path), signal.SIGKILL)
            if not _wait_empty(path, KILL_WAIT, resend):
                raise OccoError(f'processes of the instance would not end (cgroup {path})')
    remove_cgroup(path)


def remove_cgroup(path: Optional[str]) -> None:
    if not path:
        return
    deadline = time.monotonic() + KILL_WAIT
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:  # EBUSY: the last process is still on its way out
            if time.monotonic() >= deadline:
                raise OccoError(f'cannot remove the cgroup {path} of the instance: {exc.strerror}') from None
            time.sleep(0.05)


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
    """Stop every process of an instance found by its process group and environment:
    SIGTERM, then SIGKILL what is left after a grace."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, 1.0)):
        pids = instance_processes(node_id, pgid)
        if not pids:
            return
        _signal_all(pids, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not instance_processes(node_id, pgid):  # zombies count as gone
                return
            time.sleep(0.05)
