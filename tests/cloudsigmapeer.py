"""A small CloudSigma API 2.0 for tests, over real HTTP on loopback.

The ``cloudsigma`` resource handler talks to it with ``requests`` exactly as to the cloud: HTTP
basic authentication with an account's email and password, ``{"objects": [...]}`` bodies,
listings paged by ``limit`` and ``offset`` with a ``meta.total_count``, and error bodies that
are lists of ``{"error_point", "error_type", "error_message"}`` (types ``validation``,
``notexist``, ``permission``, ``limits``, ``backend``...).  The addresses it hands out
(``198.51.100.x``) are fake and never contacted.

Run it alone (users, the docs)::

    python tests/cloudsigmapeer.py --port 8700

then point a ``cloudsigma`` resource at ``http://127.0.0.1:8700/api/2.0/`` with ``auth_data:
{email: demo@example.com, password: demo-password}`` and ``libdrive_id`` :data:`LIBDRIVE_ID`;
``GET /_peer/state`` lists the library drives, public keys and firewall policies it knows.

What it serves (every path with or without its trailing slash):

* ``GET libdrives/``, ``GET libdrives/<uuid>/``, ``POST libdrives/<uuid>/action/?do=clone``
  (body: optional ``name``, ``media``, ``affinities``): a drive of the account, ``cloning_dst``
  for ``clone_delay`` seconds, then ``unmounted``;
* ``GET drives/``, ``GET drives/detail/``, ``GET drives/<uuid>/``, ``DELETE drives/<uuid>/``
  (not while mounted);
* ``POST servers/`` (checks ``name``, ``cpu``, ``mem``, ``vnc_password``, drives -- each the
  account's and ``unmounted`` --, ``pubkeys``, NIC firewall policies, ``meta``; quota),
  ``GET servers/``, ``GET servers/detail/``, ``GET servers/<uuid>/``,
  ``POST servers/<uuid>/action/?do=start|stop`` (``starting`` for ``boot_delay`` seconds, then
  ``running`` with a runtime NIC address; ``stopping`` for ``stop_delay`` seconds),
  ``DELETE servers/<uuid>/[?recurse=all_drives]`` (only stopped servers).

Test knobs, per account (``POST /_peer/config`` with ``account`` and the settings):
``clone_delay``, ``boot_delay``, ``stop_delay``; ``stick_drive`` (clones stay in that status);
``quota_servers``; ``fail`` (``{route: [status, ...]}``: the next calls of a route answer these
statuses -- 429 throttled, 5xx backend -- before doing anything); ``lose`` (``{route: n}``:
the next n calls do the work, then answer 503 as if the answer were lost); ``hostile``
(``{route: [kind, ...]}``: the next calls answer ``garbage`` (not JSON), ``missing`` (no
objects), ``huge`` (a body over 16 MiB), ``control`` (terminal control characters in the
status and error message) or ``wrong_types``); ``hold`` (a route whose answers are held,
after the work is done, until the test releases them).  Routes: ``clone``,
``create_server``, ``start``, ``stop``, ``get_drive``, ``get_server``, ``list_servers``,
``list_drives``, ``delete_server``, ``delete_drive``.  ``POST /_peer/accounts`` makes an
account; ``GET /_peer/state?account=E`` lists its servers (with decoded user data) and drives
and the calls counted; ``POST /_peer/reset`` forgets everything.
"""
from __future__ import annotations

import base64
import json
import re
import sys
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from peerhttp import RoutedHandler, ThreadedPeer, serve

DEMO = ('demo@example.com', 'demo-password')
LIBDRIVE_ID = '6d53b92c-42dc-472b-a7b6-7021f45f1ab4'   # Ubuntu 22.04, 10 GiB
CDROM_ID = '8ab3a2a6-7a8e-4b3e-9a5d-0c2bde0e2a11'      # an installation CD
PUBKEY_ID = 'f4c3b3e2-1a0d-4a6e-9c1f-4d2f2b6e5c01'
FIREWALL_POLICY_ID = '0a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d'
GiB = 1 << 30
LIBDRIVES = {
    LIBDRIVE_ID: {'uuid': LIBDRIVE_ID, 'name': 'Ubuntu 22.04 LTS', 'media': 'disk',
                  'size': 10 * GiB, 'status': 'unmounted', 'os': 'linux', 'arch': '64',
                  'image_type': 'preinst'},
    CDROM_ID: {'uuid': CDROM_ID, 'name': 'Debian 12 netinst', 'media': 'cdrom', 'size': GiB // 2,
               'status': 'unmounted', 'os': 'linux', 'arch': '64', 'image_type': 'install'},
}
DEFAULTS: Dict[str, Any] = {'clone_delay': 0.1, 'boot_delay': 0.2, 'stop_delay': 0.1,
                            'stick_drive': None, 'quota_servers': None, 'fail': {}, 'lose': {},
                            'hostile': {}, 'hold': None}
ROUTES = ('clone', 'create_server', 'start', 'stop', 'get_drive', 'get_server', 'list_servers',
          'list_drives', 'delete_server', 'delete_drive', 'list_libdrives', 'get_libdrive')
HUGE = 17 << 20  # bytes of a huge answer: over the handler's limit


class Answer(Exception):
    """An HTTP answer other than the usual one (an error, mostly)."""

    def __init__(self, status: int, body: Any = None, raw: Optional[bytes] = None) -> None:
        super().__init__(status)
        self.status, self.body, self.raw = status, body, raw


def error(status: int, kind: str, message: str, point: Optional[str] = None) -> Answer:
    return Answer(status, [{'error_point': point, 'error_type': kind, 'error_message': message}])


def _uri(kind: str, uid: str) -> str:
    return f'/api/2.0/{kind}/{uid}/'


class Account:
    """One user of the peer: its password, knobs, resources and counted calls."""

    def __init__(self, email: str, password: str) -> None:
        self.email, self.password = email, password
        self.user = str(uuid.uuid4())
        self.config: Dict[str, Any] = json.loads(json.dumps(DEFAULTS))
        self.servers: Dict[str, Dict[str, Any]] = {}
        self.drives: Dict[str, Dict[str, Any]] = {}
        self.calls: Dict[str, int] = {}
        self.faults_served = 0
        self.held = threading.Event()
        self.release = threading.Event()


class Cloud:
    """The state of the fake CloudSigma; every method runs under one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            for account in getattr(self, 'accounts', {}).values():
                account.release.set()
            self.accounts: Dict[str, Account] = {}
            self.used_ips: set = set()
            self.add_account(*DEMO)

    def add_account(self, email: str, password: str) -> Account:
        with self.lock:
            self.accounts[email] = Account(email, password)
            return self.accounts[email]

    def owner(self, account: Account) -> Dict[str, str]:
        return {'resource_uri': f'/api/2.0/user/{account.user}/', 'uuid': account.user}

    # -- drives ----------------------------------------------------------------------------

    def settle_drive(self, account: Account, drive: Dict[str, Any]) -> Dict[str, Any]:
        stuck = account.config.get('stick_drive')
        if drive['status'] == 'cloning_dst' and time.time() >= drive['_ready_at'] and not stuck:
            drive['status'] = 'unmounted'
            drive['jobs'] = []
        return drive

    def drive_view(self, account: Account, drive: Dict[str, Any]) -> Dict[str, Any]:
        self.settle_drive(account, drive)
        view = {k: v for k, v in drive.items() if not k.startswith('_')}
        view['mounted_on'] = [{'resource_uri': _uri('servers', s['uuid']), 'uuid': s['uuid']}
                              for s in account.servers.values()
                              if any(a['drive']['uuid'] == drive['uuid'] for a in s['drives'])]
        return view

    def clone(self, account: Account, libdrive_id: str, body: Any) -> Dict[str, Any]:
        source = LIBDRIVES.get(libdrive_id)
        if source is None:
            raise error(404, 'notexist', f'Object with uuid {libdrive_id} does not exist')
        body = body if isinstance(body, dict) else {}
        name = body.get('name', source['name'])
        if not isinstance(name, str) or not name or len(name) > 256:
            raise error(400, 'validation', 'Ensure this value has at most 256 characters', 'name')
        drive_id = str(uuid.uuid4())
        stuck = account.config.get('stick_drive')
        drive = {
            'uuid': drive_id, 'name': name, 'media': body.get('media', source['media']),
            'size': source['size'], 'status': stuck or 'cloning_dst', 'meta': {}, 'tags': [],
            'affinities': list(body.get('affinities') or []), 'allow_multimount': False,
            'licenses': [], 'grantees': [], 'permissions': [], 'snapshots': [],
            'storage_type': 'dssd', 'owner': self.owner(account),
            'jobs': [{'resource_uri': f'/api/2.0/jobs/{uuid.uuid4()}/', 'uuid': str(uuid.uuid4())}],
            'resource_uri': _uri('drives', drive_id),
            'runtime': {'is_snapshotable': True, 'snapshots_allocated_size': 0,
                        'storage_type': 'dssd'},
            '_ready_at': time.time() + float(account.config['clone_delay'])}
        account.drives[drive_id] = drive
        return drive

    def drive(self, account: Account, drive_id: str) -> Dict[str, Any]:
        drive = account.drives.get(drive_id)
        if drive is None:
            raise error(404, 'notexist', f'Object with uuid {drive_id} does not exist')
        return drive

    def delete_drive(self, account: Account, drive_id: str) -> None:
        view = self.drive_view(account, self.drive(account, drive_id))
        if view['mounted_on']:
            raise error(403, 'permission', 'Cannot delete a drive that is mounted on a server')
        del account.drives[drive_id]

    # -- servers ---------------------------------------------------------------------------

    def create_server(self, account: Account, spec: Any) -> Dict[str, Any]:
        if not isinstance(spec, dict):
            raise error(400, 'validation', 'Expected an object')
        for field in ('name', 'cpu', 'mem', 'vnc_password'):
            if field not in spec:
                raise error(400, 'validation', 'This field is required.', field)
        for field, low in (('cpu', 250), ('mem', 256 << 20)):
            value = spec[field]
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise error(400, 'validation',
                            f'Ensure this value is an integer of at least {low}.', field)
        meta = spec.get('meta') or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise error(400, 'validation', 'Meta values must be strings.', 'meta')
        for key in (spec.get('pubkeys') or []):
            if key != PUBKEY_ID:
                raise error(400, 'validation', f'Object with uuid {key} does not exist', 'pubkeys')
        drives = []
        for attachment in spec.get('drives') or []:
            drive_id = attachment.get('drive') if isinstance(attachment, dict) else None
            drive_id = drive_id.get('uuid') if isinstance(drive_id, dict) else drive_id
            drive = account.drives.get(str(drive_id))
            if drive is None:
                raise error(400, 'validation', f'Object with uuid {drive_id} does not exist',
                            'drives')
            if self.settle_drive(account, drive)['status'] != 'unmounted':
                raise error(400, 'validation', f"Drive {drive_id} is {drive['status']}, it must be "
                                               'unmounted', 'drives')
            drives.append({'boot_order': attachment.get('boot_order'),
                           'dev_channel': attachment.get('dev_channel', '0:0'),
                           'device': attachment.get('device', 'virtio'),
                           'drive': {'resource_uri': _uri('drives', drive['uuid']),
                                     'uuid': drive['uuid']}})
        nics = []
        for nic in spec.get('nics') or []:
            nic = nic if isinstance(nic, dict) else {}
            policy = nic.get('firewall_policy')
            if policy is not None and policy != FIREWALL_POLICY_ID:
                raise error(400, 'validation', f'Object with uuid {policy} does not exist',
                            'nics.firewall_policy')
            nics.append({'boot_order': None, 'firewall_policy': policy, 'model': 'virtio',
                         'ip_v4_conf': dict(nic.get('ip_v4_conf') or {'conf': 'dhcp'}, ip=None),
                         'ip_v6_conf': None, 'mac': '22:%02x:%02x:%02x:%02x:%02x' % tuple(
                             uuid.uuid4().bytes[:5]), 'runtime': None, 'vlan': nic.get('vlan')})
        quota = account.config.get('quota_servers')
        if quota is not None and len(account.servers) >= quota:
            used = len(account.servers)
            raise error(403, 'limits',
                        f'Servers limit exceeded: you have {used} of {quota} servers')
        server_id = str(uuid.uuid4())
        server = {
            'uuid': server_id, 'name': str(spec['name']), 'cpu': spec['cpu'], 'mem': spec['mem'],
            'smp': spec.get('smp', 1), 'vnc_password': spec['vnc_password'], 'meta': meta,
            'pubkeys': [{'resource_uri': _uri('keypairs', k), 'uuid': k}
                        for k in spec.get('pubkeys') or []],
            'drives': drives, 'nics': nics, 'status': 'stopped', 'runtime': None, 'tags': [],
            'context': True, 'cpu_model': None, 'cpus_instead_of_cores': False,
            'enable_numa': False,
            'hv_relaxed': False, 'hv_tsc': False, 'jobs': [], 'grantees': [], 'permissions': [],
            'requirements': [], 'owner': self.owner(account),
            'resource_uri': _uri('servers', server_id),
            '_until': 0.0}
        account.servers[server_id] = server
        for attachment in drives:
            account.drives[attachment['drive']['uuid']]['status'] = 'mounted'
        return server

    def settle_server(self, server: Dict[str, Any]) -> Dict[str, Any]:
        if server['status'] in ('starting', 'stopping') and time.time() >= server['_until']:
            if server['status'] == 'starting':
                server['status'] = 'running'
                server['runtime'] = {'active_since': int(time.time()), 'nics': [
                    {'interface_type': 'public', 'mac': nic['mac'], 'ip_v6': None,
                     'ip_v4': {'resource_uri': _uri('ips', nic['_ip']), 'uuid': nic['_ip']}}
                    for nic in server['nics'] if nic.get('_ip')]}
                for nic in server['nics']:
                    if nic.get('_ip'):
                        nic['runtime'] = {'interface_type': 'public', 'io': {'bytes_recv': 0,
                                                                            'bytes_sent': 0},
                                          'ip_v4': {'resource_uri': _uri('ips', nic['_ip']),
                                                    'uuid': nic['_ip']}}
            else:
                server['status'] = 'stopped'
                server['runtime'] = None
                for nic in server['nics']:
                    nic['runtime'] = None
                    self.used_ips.discard(nic.pop('_ip', None))
        return server

    def server_view(self, server: Dict[str, Any]) -> Dict[str, Any]:
        self.settle_server(server)
        view = {k: v for k, v in server.items() if not k.startswith('_')}
        view['nics'] = [{k: v for k, v in nic.items() if not k.startswith('_')}
                        for nic in server['nics']]
        return view

    def server(self, account: Account, server_id: str) -> Dict[str, Any]:
        server = account.servers.get(server_id)
        if server is None:
            raise error(404, 'notexist', f'Object with uuid {server_id} does not exist')
        return self.settle_server(server)

    def action(self, account: Account, server_id: str, action: str) -> Dict[str, Any]:
        server = self.server(account, server_id)
        if action == 'start':
            if server['status'] != 'stopped':
                raise error(403, 'permission', f"Cannot start a server that is {server['status']}")
            for nic in server['nics']:
                if (nic.get('ip_v4_conf') or {}).get('conf') in ('dhcp', 'static'):
                    index = next(i for i in range(1, 1 << 16) if i not in self.used_ips)
                    self.used_ips.add(index)
                    nic['_ip'] = f'198.51.{100 + index // 254}.{index % 254 + 1}'
            server['status'] = 'starting'
            server['_until'] = time.time() + float(account.config['boot_delay'])
        elif action == 'stop':
            if server['status'] in ('stopped', 'stopping'):
                raise error(403, 'permission', f"Cannot stop a server that is {server['status']}")
            server['status'] = 'stopping'
            server['_until'] = time.time() + float(account.config['stop_delay'])
        else:
            raise error(400, 'validation', f'Unknown action {action}', 'do')
        self.settle_server(server)
        return {'action': action, 'result': 'success', 'uuid': server_id}

    def delete_server(self, account: Account, server_id: str, recurse: Optional[str]) -> None:
        server = self.server(account, server_id)
        if server['status'] != 'stopped':
            raise error(403, 'permission', f"Cannot delete a server that is {server['status']}; "
                                           'stop it first')
        del account.servers[server_id]
        for attachment in server['drives']:
            drive = account.drives.get(attachment['drive']['uuid'])
            if drive is None:
                continue
            if recurse == 'all_drives' or (recurse == 'disks' and drive['media'] == 'disk'):
                del account.drives[drive['uuid']]
            else:
                drive['status'] = 'unmounted'

    # -- test view -------------------------------------------------------------------------

    def state(self, account: Account) -> Dict[str, Any]:
        servers = []
        for server in account.servers.values():
            view = self.server_view(server)
            meta = view.get('meta') or {}
            fields = [f for f in str(meta.get('base64_fields', '')).split(',') if f]
            view['user_data'] = {f: base64.b64decode(meta[f]).decode() for f in fields if f in meta}
            servers.append(view)
        drives = [self.drive_view(account, d) for d in account.drives.values()]
        return {'servers': servers, 'drives': drives,
                'calls': dict(account.calls), 'faults_served': account.faults_served,
                'libdrives': list(LIBDRIVES.values()), 'pubkeys': [PUBKEY_ID],
                'firewall_policies': [FIREWALL_POLICY_ID]}


def listing(objects: List[Dict[str, Any]], query: Dict[str, str], detail: bool) -> Dict[str, Any]:
    """A CloudSigma listing: ``limit`` (0: all) and ``offset``, with ``meta``."""
    try:
        limit, offset = int(query.get('limit', 20)), int(query.get('offset', 0))
    except ValueError:
        raise error(400, 'validation', 'limit and offset must be integers', 'limit')
    page = objects[offset:offset + limit] if limit else objects[offset:]
    if not detail:
        page = [{'uuid': o['uuid'], 'resource_uri': o['resource_uri'], 'name': o.get('name'),
                 'status': o.get('status'), 'owner': o.get('owner')} for o in page]
    return {'meta': {'limit': limit, 'offset': offset, 'total_count': len(objects)},
            'objects': page}


Route = Tuple[str, 're.Pattern[str]', str, Callable[..., Any]]


class Handler(RoutedHandler):
    protocol_version = 'HTTP/1.1'
    disable_nagle_algorithm = True
    cloud: Cloud = Cloud()
    verbose = False

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        if self.verbose:
            sys.stderr.write('cloudsigmapeer: ' + format % args + '\n')


    def body(self) -> Any:
        length = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(length) if length else b''
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise error(400, 'validation', 'The request body is not valid JSON')

    def send(self, status: int, body: Any = None, raw: Optional[bytes] = None) -> None:
        data = raw if raw is not None else b'' if body is None else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header('Content-Type', 'application/json; charset=utf-8')
            self.send_header('Content-Length', str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (a killed build): fine

    def dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = parts.path.rstrip('/') or '/'
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            self.body_value = self.body() if method in ('POST', 'PUT') else None
            for verb, pattern, route, action in self.routes():
                match = pattern.fullmatch(path)
                if verb == method and match and (route != 'action' or 'do' in query):
                    break
            else:
                raise error(404, 'notexist', f'No such URL: {method} {path}')
            if route.startswith('_peer'):
                result = action(self, query, **match.groupdict())
            else:
                if route == 'action':
                    route = query['do'] if query['do'] in ('start', 'stop') else 'start'
                result = self.cloud_call(route, action, query, match.groupdict())
        except Answer as answer:
            self.send(answer.status, answer.body, answer.raw)
            return
        status, body = result if isinstance(result, tuple) else (200, result)
        self.send(status, body)

    def account(self) -> Account:
        header = self.headers.get('Authorization') or ''
        denied = error(401, 'permission', 'Authentication failed: invalid email or password')
        if not header.startswith('Basic '):
            raise denied
        try:
            email, _, password = base64.b64decode(header[6:]).decode().partition(':')
        except ValueError:
            raise denied
        with self.cloud.lock:
            account = self.cloud.accounts.get(email)
        if account is None or account.password != password:
            raise denied
        return account

    def cloud_call(self, route: str, action: Callable[..., Any], query: Dict[str, str],
                   groups: Dict[str, str]) -> Any:
        """Count the call, serve a fault or a hostile answer if one is due, do the work, hold
        or lose the answer if asked."""
        account = self.account()
        with self.cloud.lock:
            account.calls[route] = account.calls.get(route, 0) + 1
            queued = account.config['fail'].get(route) or []
            if queued:
                status = queued.pop(0)
                account.faults_served += 1
                if status == 429:
                    raise Answer(429, {'detail': 'Request was throttled. Expected available '
                                                 'in 0 seconds.'})
                raise error(status, 'backend', 'Service temporarily unavailable, try again')
            hostile = account.config['hostile'].get(route) or []
            kind = hostile.pop(0) if hostile else None
            if kind:
                account.faults_served += 1
            lose = int(account.config['lose'].get(route) or 0)
            if lose:
                account.config['lose'][route] = lose - 1
            hold = account.config['hold'] == route
            result = action(self, account, query, **groups)
        if hold:
            account.held.set()
            account.release.wait(120)
        if lose:
            raise error(503, 'backend', 'Service temporarily unavailable (the answer was lost)')
        if kind:
            return self.hostile(kind, result)
        return result

    @staticmethod
    def hostile(kind: str, result: Any) -> Any:
        status = result[0] if isinstance(result, tuple) else 200
        if kind == 'garbage':
            raise Answer(status, raw=b'<html><body>\x1b[2J Bad gateway \x07</body></html>')
        if kind == 'missing':
            return status, {'meta': {}, 'unexpected': True}
        if kind == 'huge':
            raise Answer(status, raw=b'{"objects": [' + b' ' * HUGE + b']}')
        if kind == 'control':
            body = json.loads(json.dumps(result[1] if isinstance(result, tuple) else result))
            for item in body.get('objects', [body]) if isinstance(body, dict) else []:
                if isinstance(item, dict):
                    item['status'] = '\x1b[31mrunning\x1b[0m' + 'x' * 500
            return status, body
        if kind == 'error_control':
            raise error(400, 'validation', 'bad \x1b[2J\x1b[31mvalue\x07 ' + 'y' * 2000, 'cpu')
        if kind == 'wrong_types':
            return status, {'objects': 'not a list', 'meta': [], 'status': 7}
        raise Answer(500, {'detail': f'unknown hostile kind {kind}'})

    # -- the API ---------------------------------------------------------------------------

    def libdrives(self, account: Account, query: Dict[str, str]) -> Any:
        return listing(list(LIBDRIVES.values()), query, True)

    def libdrive(self, account: Account, query: Dict[str, str], uid: str) -> Any:
        if uid not in LIBDRIVES:
            raise error(404, 'notexist', f'Object with uuid {uid} does not exist')
        return LIBDRIVES[uid]

    def clone(self, account: Account, query: Dict[str, str], uid: str) -> Any:
        drive = self.cloud.clone(account, uid, self.body_value)
        return 202, {'objects': [self.cloud.drive_view(account, drive)]}

    def drives(self, account: Account, query: Dict[str, str], detail: str = '') -> Any:
        views = [self.cloud.drive_view(account, d) for d in account.drives.values()]
        return listing(views, query, bool(detail))

    def get_drive(self, account: Account, query: Dict[str, str], uid: str) -> Any:
        return self.cloud.drive_view(account, self.cloud.drive(account, uid))

    def delete_drive(self, account: Account, query: Dict[str, str], uid: str) -> Any:
        self.cloud.delete_drive(account, uid)
        return 204, None

    def create_server(self, account: Account, query: Dict[str, str]) -> Any:
        body = self.body_value
        specs = body.get('objects') if isinstance(body, dict) and 'objects' in body else [body]
        if not isinstance(specs, list) or len(specs) != 1:
            raise error(400, 'validation', 'Expected one server object', 'objects')
        server = self.cloud.create_server(account, specs[0])
        return 201, {'objects': [self.cloud.server_view(server)]}

    def servers(self, account: Account, query: Dict[str, str], detail: str = '') -> Any:
        views = [self.cloud.server_view(s) for s in account.servers.values()]
        return listing(views, query, bool(detail))

    def get_server(self, account: Account, query: Dict[str, str], uid: str) -> Any:
        return self.cloud.server_view(self.cloud.server(account, uid))

    def server_action(self, account: Account, query: Dict[str, str], uid: str) -> Any:
        return 202, self.cloud.action(account, uid, query.get('do', ''))

    def delete_server(self, account: Account, query: Dict[str, str], uid: str) -> Any:
        self.cloud.delete_server(account, uid, query.get('recurse'))
        return 204, None

    # -- the test's side -------------------------------------------------------------------

    def peer_account(self, query: Dict[str, str]) -> Any:
        body = self.body_value or {}
        self.cloud.add_account(str(body['email']), str(body['password']))
        return 201, {'email': body['email']}

    def peer_config(self, query: Dict[str, str]) -> Any:
        body = dict(self.body_value or {})
        with self.cloud.lock:
            account = self.cloud.accounts.get(str(body.pop('account', DEMO[0])))
            if account is None:
                raise Answer(404, {'error': 'no such account'})
            unknown = set(body) - set(DEFAULTS)
            if unknown:
                raise Answer(400, {'error': f'unknown setting(s): {", ".join(sorted(unknown))}'})
            account.config.update(body)
            if 'hold' in body:
                account.held.clear()
                if body['hold']:
                    account.release.clear()
                else:
                    account.release.set()
            return {'config': account.config}

    def peer_state(self, query: Dict[str, str]) -> Any:
        with self.cloud.lock:
            account = self.cloud.accounts.get(query.get('account', DEMO[0]))
            if account is None:
                raise Answer(404, {'error': 'no such account'})
            return self.cloud.state(account)

    def peer_release(self, query: Dict[str, str]) -> Any:
        with self.cloud.lock:
            account = self.cloud.accounts.get(query.get('account', DEMO[0]))
        if account is not None:
            account.release.set()
        return {'released': True}

    def peer_reset(self, query: Dict[str, str]) -> Any:
        self.cloud.reset()
        return {'reset': True}

    _routes: Optional[List[Route]] = None

    @classmethod
    def routes(cls) -> List[Route]:
        if cls._routes is None:
            uid = r'(?P<uid>[^/]+)'
            api = r'/api/2\.0'
            table = [
                ('GET', rf'{api}/libdrives', 'list_libdrives', cls.libdrives),
                ('GET', rf'{api}/libdrives/{uid}', 'get_libdrive', cls.libdrive),
                ('POST', rf'{api}/libdrives/{uid}/action', 'clone', cls.clone),
                ('GET', rf'{api}/drives(?P<detail>/detail)?', 'list_drives', cls.drives),
                ('GET', rf'{api}/drives/{uid}', 'get_drive', cls.get_drive),
                ('DELETE', rf'{api}/drives/{uid}', 'delete_drive', cls.delete_drive),
                ('POST', rf'{api}/servers', 'create_server', cls.create_server),
                ('GET', rf'{api}/servers(?P<detail>/detail)?', 'list_servers', cls.servers),
                ('GET', rf'{api}/servers/{uid}', 'get_server', cls.get_server),
                ('POST', rf'{api}/servers/{uid}/action', 'action', cls.server_action),
                ('DELETE', rf'{api}/servers/{uid}', 'delete_server', cls.delete_server),
                ('POST', r'/_peer/accounts', '_peer', cls.peer_account),
                ('POST', r'/_peer/config', '_peer', cls.peer_config),
                ('GET', r'/_peer/state', '_peer', cls.peer_state),
                ('POST', r'/_peer/release', '_peer', cls.peer_release),
                ('POST', r'/_peer/reset', '_peer', cls.peer_reset),
            ]
            cls._routes = [(verb, re.compile(p), route, action) for verb, p, route, action in table]
        return cls._routes


class CloudSigmaPeer(ThreadedPeer):
    """The peer in a thread of this process (``with CloudSigmaPeer() as peer: peer.url``)."""

    name = 'cloudsigmapeer'

    def __init__(self, host: str = '127.0.0.1', port: int = 0, verbose: bool = False) -> None:
        self.cloud = Cloud()
        super().__init__(type('PeerHandler', (Handler,), {'cloud': self.cloud,
                                                          'verbose': verbose}), host, port)
        self.api = f'{self.url}/api/2.0/'

    def release(self) -> None:
        self.cloud.reset()  # releases held answers


def main(argv: Optional[List[str]] = None) -> int:
    return serve('A small CloudSigma API 2.0 for trying the cloudsigma resource handler.',
                 CloudSigmaPeer,
                 lambda peer: f'cloudsigmapeer listening on {peer.api} (email {DEMO[0]}, '
                              f'password {DEMO[1]}, libdrive_id {LIBDRIVE_ID})', argv)


if __name__ == '__main__':
    sys.exit(main())
