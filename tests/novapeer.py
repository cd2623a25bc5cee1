"""A small OpenStack for tests: Keystone v3, Nova, and the few Neutron, Cinder and Glance calls
the ``nova`` resource handler makes, over real HTTP on loopback.

No public emulator speaks Keystone v3, so the tests carry this one.  python-novaclient and
keystoneauth1 talk to it exactly as to a cloud: tokens with a service catalog, microversion
headers, Nova's and Neutron's error bodies.  Addresses it hands out are fake (fixed
``10.0.x.y``, floating ``203.0.113.x``) and never contacted.

Run it alone (users, the benchmark)::

    python tests/novapeer.py --port 8774

then point a ``nova`` resource at ``http://127.0.0.1:8774/identity`` with
``auth_data: {username: demo, password: demo-password}`` and any ``project_id``; the image,
flavor and network ids are the constants below (``GET /_peer/state`` lists them too).

The cloud:

* Keystone (``/identity/v3`` or ``/v3``): ``POST auth/tokens`` with the ``password`` method
  (user ``demo``, domain ``Default``, scoped to any project id, which it creates) or the
  ``application_credential`` method (credentials registered through ``POST
  /_peer/app_credentials``); a wrong password answers 401.  Catalog: compute, network,
  volumev3 and image in region ``RegionOne``, public interface.
* Nova (``/compute/v2.1``): versions, flavors, ``POST /servers`` (checks image, flavor,
  networks, key pair, security groups, boot volumes; keeps metadata and user data; quota),
  ``GET /servers/detail`` (paginated: ``limit``, ``marker``, ``servers_links``),
  ``GET``/``DELETE /servers/<id>``.  A server is BUILD for ``build_delay`` seconds, then
  ACTIVE (or ERROR with a fault, if ``error`` is set).
* Neutron (``/network/v2.0``): networks, ports (``?device_id=``), floating IPs (create, list,
  show, update to associate, delete).
* Cinder (``/volume/v3/<project>``): volumes from an image (create, list, show, delete),
  ``creating`` for ``volume_delay`` seconds, ``in-use`` while a server boots from them.
* Glance (``/image/v2/images/<id>``): show.

The test knobs (``POST /_peer/config`` with a JSON object; ``project`` names the project it
applies to, without it the defaults of every project): ``build_delay``, ``error`` (a fault
message: servers end in ERROR), ``burst_503`` (the next N cloud calls answer 503),
``quota_servers``, ``create_delay`` (``POST /servers`` makes the server at once but answers
that many seconds later), ``fail_after_create`` (the next N ``POST /servers`` make the
server, then answer 503 as if the answer were lost), ``redirect`` (every cloud call of the
project answers 302 to that URL), ``next_href`` (server listings carry that next link),
``volume_delay``, ``page_size``.  ``GET /_peer/state[?project=P]``
lists servers (with their decoded user data), volumes, floating IPs and the calls counted;
``POST /_peer/delete_server`` deletes a server out of band; ``POST /_peer/reset`` forgets
everything.
"""
from __future__ import annotations

import base64
import json
import math
import re
import secrets
import sys
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlencode, urlsplit

from peerhttp import RoutedHandler, ThreadedPeer, serve

REGION = 'RegionOne'
DOMAIN = 'Default'
USERS = {'demo': 'demo-password'}
KEYPAIRS = ('demo-key',)
SECURITY_GROUPS = ('default', 'ssh')

IMAGE_ID = '6f1c2a3e-0000-4000-8000-00000000c1a0'      # cirros, 16 MiB, min_disk 1
BIG_IMAGE_ID = '6f1c2a3e-0000-4000-8000-00000000b16a'  # ubuntu, 2.5 GiB, min_disk 3
NETWORK_ID = '0e7a1c5d-0000-4000-8000-0000000000a1'    # 'private'
PUBLIC_NETWORK_ID = '0e7a1c5d-0000-4000-8000-0000000000e1'  # 'public', external
GiB = 1 << 30
IMAGES = {
    IMAGE_ID: {'id': IMAGE_ID, 'name': 'cirros', 'size': 16 << 20, 'min_disk': 1, 'status': 'active'},
    BIG_IMAGE_ID: {'id': BIG_IMAGE_ID, 'name': 'ubuntu', 'size': int(2.5 * GiB), 'min_disk': 3,
                   'status': 'active'},
}
FLAVORS = [{'id': '1', 'name': 'm1.tiny', 'ram': 512, 'vcpus': 1, 'disk': 1},
           {'id': '2', 'name': 'm1.small', 'ram': 2048, 'vcpus': 1, 'disk': 20},
           {'id': '3', 'name': 'm1.medium', 'ram': 4096, 'vcpus': 2, 'disk': 40}]
NETWORKS = [{'id': NETWORK_ID, 'name': 'private', 'router:external': False, 'status': 'ACTIVE',
             'shared': True, 'subnets': []},
            {'id': PUBLIC_NETWORK_ID, 'name': 'public', 'router:external': True, 'status': 'ACTIVE',
             'shared': True, 'subnets': []}]
MAX_MICROVERSION = '2.79'
DEFAULTS: Dict[str, Any] = {'build_delay': 0.0, 'error': None, 'burst_503': 0, 'quota_servers': None,
                            'create_delay': 0.0, 'volume_delay': 0.0, 'page_size': 1000,
                            'fail_after_create': 0, 'redirect': None, 'next_href': None}


def _now_iso(at: Optional[float] = None) -> str:
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(at if at is not None else time.time()))


class Answer(Exception):
    """An HTTP answer other than the usual one (an error, mostly)."""

    def __init__(self, status: int, body: Any = None, headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def nova_error(status: int, message: str) -> Answer:
    kind = {400: 'badRequest', 401: 'unauthorized', 403: 'forbidden', 404: 'itemNotFound',
            409: 'conflictingRequest', 413: 'overLimit'}.get(status, 'computeFault')
    return Answer(status, {kind: {'message': message, 'code': status}})


def neutron_error(status: int, kind: str, message: str) -> Answer:
    return Answer(status, {'NeutronError': {'type': kind, 'message': message, 'detail': ''}})


class Cloud:
    """The state of the fake OpenStack; every method runs under one lock."""

    def __init__(self, base_url: str = '') -> None:
        self.base_url = base_url  # http://127.0.0.1:PORT, known once the socket is bound
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.tokens: Dict[str, Dict[str, str]] = {}
            self.app_credentials: Dict[str, Dict[str, str]] = {}
            self.servers: Dict[str, Dict[str, Any]] = {}
            self.ports: Dict[str, Dict[str, Any]] = {}
            self.floating_ips: Dict[str, Dict[str, Any]] = {}
            self.volumes: Dict[str, Dict[str, Any]] = {}
            self.config: Dict[str, Dict[str, Any]] = {}
            self.calls: Dict[str, int] = {}
            self.calls_by: Dict[str, int] = {}
            self.served_503: Dict[str, int] = {}
            self.fixed_used: set = set()
            self.floating_used: set = set()

    # -- knobs -----------------------------------------------------------------------------

    def setting(self, project: str, name: str) -> Any:
        for scope in (project, '*'):
            if name in self.config.get(scope, {}):
                return self.config[scope][name]
        return DEFAULTS[name]

    def configure(self, body: Dict[str, Any]) -> Dict[str, Any]:
        scope = str(body.pop('project', '*'))
        unknown = set(body) - set(DEFAULTS)
        if unknown:
            raise Answer(400, {'error': f'unknown setting(s): {", ".join(sorted(unknown))}'})
        self.config.setdefault(scope, {}).update(body)
        return {'config': self.config}

    def count(self, project: str, route: str) -> None:
        self.calls[project] = self.calls.get(project, 0) + 1
        self.calls_by[route] = self.calls_by.get(route, 0) + 1

    def burst(self, project: str) -> bool:
        """True if this call of ``project`` is one of a configured burst of 503 answers."""
        for scope in (project, '*'):
            left = self.config.get(scope, {}).get('burst_503', 0)
            if left:
                self.config[scope]['burst_503'] = left - 1
                self.served_503[project] = self.served_503.get(project, 0) + 1
                return True
        return False

    # -- keystone --------------------------------------------------------------------------

    def issue_token(self, body: Any) -> Tuple[str, Dict[str, Any]]:
        try:
            identity = body['auth']['identity']
            methods = identity['methods']
        except (KeyError, TypeError):
            raise Answer(400, {'error': {'code': 400, 'message': 'Expecting to find auth.identity',
                                         'title': 'Bad Request'}})
        unauthorized = Answer(401, {'error': {'code': 401, 'title': 'Unauthorized',
                                              'message': 'The request you have made requires authentication.'}})
        if 'password' in methods:
            user = identity['password'].get('user', {})
            name = user.get('name')
            domain = (user.get('domain') or {}).get('name') or (user.get('domain') or {}).get('id')
            if domain not in (DOMAIN, 'default') or USERS.get(name) != user.get('password'):
                raise unauthorized
            scope = (body['auth'].get('scope') or {}).get('project') or {}
            project = scope.get('id') or scope.get('name')
            if not project:
                raise Answer(400, {'error': {'code': 400, 'title': 'Bad Request',
                                             'message': 'this cloud only gives project-scoped tokens'}})
        elif 'application_credential' in methods:
            given = identity['application_credential']
            known = self.app_credentials.get(given.get('id'))
            if known is None or known['secret'] != given.get('secret'):
                raise unauthorized
            name, project = 'demo', known['project_id']
        else:
            raise unauthorized
        token = secrets.token_hex(16)
        with self.lock:
            self.tokens[token] = {'project': str(project), 'user': str(name)}
        return token, {'token': {
            'methods': methods, 'expires_at': _now_iso(time.time() + 86400), 'issued_at': _now_iso(),
            'user': {'id': f'user-{name}', 'name': name, 'domain': {'id': 'default', 'name': DOMAIN}},
            'project': {'id': project, 'name': project, 'domain': {'id': 'default', 'name': DOMAIN}},
            'roles': [{'id': 'member', 'name': 'member'}], 'catalog': self.catalog(str(project))}}

    def catalog(self, project: str) -> List[Dict[str, Any]]:
        base = self.base_url

        def service(kind: str, name: str, url: str) -> Dict[str, Any]:
            return {'type': kind, 'name': name, 'id': f'svc-{kind}', 'endpoints': [
                {'id': f'ep-{kind}', 'interface': 'public', 'region': REGION, 'region_id': REGION,
                 'url': url}]}
        return [service('compute', 'nova', f'{base}/compute/v2.1'),
                service('network', 'neutron', f'{base}/network'),
                service('volumev3', 'cinderv3', f'{base}/volume/v3/{project}'),
                service('image', 'glance', f'{base}/image'),
                service('identity', 'keystone', f'{base}/identity')]

    def project_of(self, token: Optional[str]) -> str:
        found = self.tokens.get(token or '')
        if found is None:
            raise Answer(401, {'error': {'code': 401, 'title': 'Unauthorized',
                                         'message': 'The request you have made requires authentication.'}})
        return found['project']

    # -- nova ------------------------------------------------------------------------------

    def settle(self, server: Dict[str, Any]) -> Dict[str, Any]:
        if server['status'] == 'BUILD' and time.time() >= server['_active_at']:
            if server['_error']:
                server['status'] = 'ERROR'
                server['fault'] = {'code': 500, 'message': server['_error'], 'created': _now_iso()}
            else:
                server['status'] = 'ACTIVE'
            server['updated'] = _now_iso()
        return server

    def server_view(self, server: Dict[str, Any]) -> Dict[str, Any]:
        self.settle(server)
        view = {k: v for k, v in server.items() if not k.startswith('_')}
        view['addresses'] = {}
        for port in self.ports.values():
            if port['device_id'] != server['id']:
                continue
            net = next(n['name'] for n in NETWORKS if n['id'] == port['network_id'])
            entries = view['addresses'].setdefault(net, [])
            entries.append({'addr': port['fixed_ips'][0]['ip_address'], 'version': 4,
                            'OS-EXT-IPS:type': 'fixed', 'OS-EXT-IPS-MAC:mac_addr': port['mac_address']})
            for fip in self.floating_ips.values():
                if fip['port_id'] == port['id']:
                    entries.append({'addr': fip['floating_ip_address'], 'version': 4,
                                    'OS-EXT-IPS:type': 'floating',
                                    'OS-EXT-IPS-MAC:mac_addr': port['mac_address']})
        view['os-extended-volumes:volumes_attached'] = [
            {'id': v['id'], 'delete_on_termination': False} for v in self.volumes.values()
            if any(a['server_id'] == server['id'] for a in v['attachments'])]
        return view

    def create_server(self, project: str, body: Any) -> Dict[str, Any]:
        try:
            spec = body['server']
            name = spec['name']
        except (KeyError, TypeError):
            raise nova_error(400, "Invalid input for field/attribute server. 'name' is a required property")
        flavor = next((f for f in FLAVORS if f['id'] == str(spec.get('flavorRef'))), None)
        if flavor is None:
            raise nova_error(400, f"Flavor {spec.get('flavorRef')} could not be found.")
        image = spec.get('imageRef') or ''
        boot_volumes = [b for b in spec.get('block_device_mapping_v2') or []
                        if b.get('source_type') == 'volume' and str(b.get('boot_index')) == '0']
        if boot_volumes:
            volume = self.volumes.get(boot_volumes[0].get('uuid'))
            if volume is None or volume['_project'] != project:
                raise nova_error(400, f"Volume {boot_volumes[0].get('uuid')} could not be found.")
            if volume['status'] != 'available':
                raise nova_error(400, f"Volume {volume['id']} status must be available, but is {volume['status']}")
        elif image not in IMAGES:
            raise nova_error(400, f'Image {image} could not be found.')
        networks = spec.get('networks') or [{'uuid': NETWORK_ID}]
        if networks in ('auto', 'none'):
            networks = [{'uuid': NETWORK_ID}] if networks == 'auto' else []
        for net in networks:
            if not any(n['id'] == net.get('uuid') for n in NETWORKS):
                raise nova_error(400, f"Network {net.get('uuid')} could not be found.")
        key_name = spec.get('key_name')
        if key_name is not None and key_name not in KEYPAIRS:
            raise nova_error(400, 'Invalid key_name provided.')
        groups = [g.get('name') for g in spec.get('security_groups') or []]
        for group in groups:
            if group not in SECURITY_GROUPS:
                raise nova_error(400, f"Unable to find security_group with name or id '{group}'")
        quota = self.setting(project, 'quota_servers')
        used = sum(1 for s in self.servers.values() if s['tenant_id'] == project)
        if quota is not None and used >= quota:
            raise nova_error(403, f'Quota exceeded for instances: Requested 1, but already used '
                                  f'{used} of {quota} instances')
        metadata = spec.get('metadata') or {}
        if not isinstance(metadata, dict) or not all(
                isinstance(v, str) and len(v) <= 255 for v in metadata.values()):
            raise nova_error(400, 'Invalid input for field/attribute metadata.')
        user_data = spec.get('user_data')
        if user_data is not None:
            try:
                user_data = base64.b64decode(user_data, validate=True).decode('utf-8')
            except ValueError:
                raise nova_error(400, 'User data needs to be valid base 64.')
        server_id = str(uuid.uuid4())
        now = time.time()
        error = self.setting(project, 'error')
        server = {
            'id': server_id, 'name': name, 'status': 'BUILD', 'tenant_id': project,
            'user_id': 'user-demo', 'metadata': metadata, 'hostId': '', 'progress': 0,
            'image': {'id': image, 'links': []} if not boot_volumes else '',
            'flavor': {'id': flavor['id'], 'links': []}, 'created': _now_iso(now),
            'updated': _now_iso(now), 'key_name': key_name, 'accessIPv4': '', 'accessIPv6': '',
            'security_groups': [{'name': g} for g in groups or ['default']],
            'OS-DCF:diskConfig': 'MANUAL', 'config_drive': '',
            'links': [{'rel': 'self', 'href': f'{self.base_url}/compute/v2.1/servers/{server_id}'}],
            '_active_at': now + float(self.setting(project, 'build_delay')), '_error': error,
            '_user_data': user_data}
        self.servers[server_id] = server
        for net in networks:
            self.add_port(project, server_id, net['uuid'])
        for volume in boot_volumes:
            self.volumes[volume['uuid']]['status'] = 'in-use'
            self.volumes[volume['uuid']]['attachments'] = [
                {'server_id': server_id, 'attachment_id': str(uuid.uuid4()),
                 'volume_id': volume['uuid'], 'device': '/dev/vda'}]
        return server

    def add_port(self, project: str, server_id: str, network_id: str) -> None:
        index = next(i for i in range(1, 1 << 16) if i not in self.fixed_used)
        self.fixed_used.add(index)
        port_id = str(uuid.uuid4())
        self.ports[port_id] = {
            'id': port_id, 'device_id': server_id, 'device_owner': 'compute:nova',
            'network_id': network_id, 'tenant_id': project, 'project_id': project,
            'status': 'ACTIVE', 'mac_address': 'fa:16:3e:%02x:%02x:%02x' % (
                index >> 16 & 255, index >> 8 & 255, index & 255),
            'fixed_ips': [{'subnet_id': 'subnet-private',
                           'ip_address': f'10.0.{index // 254}.{index % 254 + 1}'}],
            '_index': index}

    def delete_server(self, server_id: str) -> None:
        server = self.servers.pop(server_id, None)
        if server is None:
            raise nova_error(404, f'Instance {server_id} could not be found.')
        for port_id in [p for p, port in self.ports.items() if port['device_id'] == server_id]:
            port = self.ports.pop(port_id)
            self.fixed_used.discard(port['_index'])
            for fip in self.floating_ips.values():
                if fip['port_id'] == port_id:
                    fip.update(port_id=None, fixed_ip_address=None, status='DOWN')
        for volume in self.volumes.values():
            if any(a['server_id'] == server_id for a in volume['attachments']):
                volume.update(status='available', attachments=[])

    def server(self, project: str, server_id: str) -> Dict[str, Any]:
        server = self.servers.get(server_id)
        if server is None or server['tenant_id'] != project:
            raise nova_error(404, f'Instance {server_id} could not be found.')
        return server

    # -- neutron ---------------------------------------------------------------------------

    def create_floating_ip(self, project: str, body: Any) -> Dict[str, Any]:
        spec = (body or {}).get('floatingip') or {}
        network = next((n for n in NETWORKS if n['id'] == spec.get('floating_network_id')), None)
        if network is None:
            raise neutron_error(404, 'NetworkNotFound',
                                f"Network {spec.get('floating_network_id')} could not be found.")
        if not network['router:external']:
            raise neutron_error(400, 'BadRequest', f"Bad floatingip request: Network {network['id']} "
                                                   'is not a valid external network.')
        free = [i for i in range(1, 255) if i not in self.floating_used]
        if not free:
            raise neutron_error(409, 'IpAddressGenerationFailure',
                                f"No more IP addresses available on network {network['id']}.")
        self.floating_used.add(free[0])
        fip_id = str(uuid.uuid4())
        fip = {'id': fip_id, 'floating_ip_address': f'203.0.113.{free[0]}',
               'floating_network_id': network['id'], 'port_id': None, 'fixed_ip_address': None,
               'router_id': None, 'status': 'DOWN', 'tenant_id': project, 'project_id': project,
               'description': str(spec.get('description') or ''), 'tags': [],
               'created_at': _now_iso()}
        self.floating_ips[fip_id] = fip
        return fip

    def floating_ip(self, project: str, fip_id: str) -> Dict[str, Any]:
        fip = self.floating_ips.get(fip_id)
        if fip is None or fip['project_id'] != project:
            raise neutron_error(404, 'FloatingIPNotFound', f'Floating IP {fip_id} could not be found')
        return fip

    def associate(self, project: str, fip_id: str, body: Any) -> Dict[str, Any]:
        fip = self.floating_ip(project, fip_id)
        port_id = ((body or {}).get('floatingip') or {}).get('port_id')
        if port_id is None:
            fip.update(port_id=None, fixed_ip_address=None, status='DOWN')
            return fip
        port = self.ports.get(port_id)
        if port is None or port['project_id'] != project:
            raise neutron_error(404, 'PortNotFound', f'Port {port_id} could not be found.')
        fip.update(port_id=port_id, fixed_ip_address=port['fixed_ips'][0]['ip_address'],
                   status='ACTIVE', router_id='router-1')
        return fip

    def delete_floating_ip(self, project: str, fip_id: str) -> None:
        fip = self.floating_ip(project, fip_id)
        del self.floating_ips[fip_id]
        self.floating_used.discard(int(fip['floating_ip_address'].rsplit('.', 1)[1]))

    # -- cinder ----------------------------------------------------------------------------

    def create_volume(self, project: str, body: Any) -> Dict[str, Any]:
        spec = (body or {}).get('volume') or {}
        try:
            size = int(spec.get('size'))
        except (TypeError, ValueError):
            raise Answer(400, {'badRequest': {'code': 400, 'message': 'Invalid input for field/attribute size.'}})
        image = IMAGES.get(spec.get('imageRef') or '')
        if spec.get('imageRef') and image is None:
            raise Answer(400, {'badRequest': {'code': 400, 'message':
                                              f"Invalid image identifier or unable to access requested image. (image {spec.get('imageRef')})"}})
        if image and size < max(image['min_disk'], math.ceil(image['size'] / GiB)):
            raise Answer(400, {'badRequest': {'code': 400, 'message':
                                              f"Volume size {size}GB cannot be smaller than the image minDisk size {image['min_disk']}GB."}})
        volume_id = str(uuid.uuid4())
        volume = {'id': volume_id, 'name': spec.get('name'), 'size': size, 'status': 'creating',
                  'metadata': dict(spec.get('metadata') or {}), 'attachments': [],
                  'bootable': 'true' if image else 'false', 'created_at': _now_iso(),
                  'volume_image_metadata': {'image_id': image['id']} if image else {},
                  'os-vol-tenant-attr:tenant_id': project, '_project': project,
                  '_available_at': time.time() + float(self.setting(project, 'volume_delay'))}
        self.volumes[volume_id] = volume
        return volume

    def volume_view(self, volume: Dict[str, Any]) -> Dict[str, Any]:
        if volume['status'] == 'creating' and time.time() >= volume['_available_at']:
            volume['status'] = 'available'
        return {k: v for k, v in volume.items() if not k.startswith('_')}

    def volume(self, project: str, volume_id: str) -> Dict[str, Any]:
        volume = self.volumes.get(volume_id)
        if volume is None or volume['_project'] != project:
            raise Answer(404, {'itemNotFound': {'code': 404, 'message': f'Volume {volume_id} could not be found.'}})
        return volume

    def delete_volume(self, project: str, volume_id: str) -> None:
        volume = self.volume(project, volume_id)
        if volume['status'] not in ('available', 'error'):
            raise Answer(400, {'badRequest': {'code': 400, 'message':
                                              'Invalid volume: Volume status must be available or error '
                                              f"or error_restoring or error_extending or error_managing and must not "
                                              f"be migrating, attached, belong to a group, have snapshots or be "
                                              f"disassociated from snapshots after volume transfer. (status {volume['status']})"}})
        del self.volumes[volume_id]

    # -- test view -------------------------------------------------------------------------

    def state(self, project: Optional[str]) -> Dict[str, Any]:
        def mine(owner: str) -> bool:
            return project is None or owner == project
        servers = []
        for server in self.servers.values():
            if mine(server['tenant_id']):
                view = self.server_view(server)
                view['user_data'] = server['_user_data']
                servers.append(view)
        return {
            'servers': servers,
            'volumes': [self.volume_view(v) for v in self.volumes.values() if mine(v['_project'])],
            'floating_ips': [dict(f) for f in self.floating_ips.values() if mine(f['project_id'])],
            'ports': [{k: v for k, v in p.items() if not k.startswith('_')}
                      for p in self.ports.values() if mine(p['project_id'])],
            'calls': sum(n for p, n in self.calls.items() if mine(p)),
            'calls_by_route': dict(self.calls_by) if project is None else None,
            'served_503': sum(n for p, n in self.served_503.items() if mine(p)),
            'images': list(IMAGES.values()), 'flavors': FLAVORS, 'networks': NETWORKS,
        }


def _page(items: List[Dict[str, Any]], query: Dict[str, str], default_limit: int, key: str,
          url: str) -> Dict[str, Any]:
    """Nova/Cinder style pagination: ``limit`` and ``marker``, and a ``<key>_links`` next link
    when the page is full."""
    try:
        limit = min(int(query.get('limit', default_limit)), default_limit)
    except ValueError:
        raise nova_error(400, 'limit must be an integer')
    start = 0
    marker = query.get('marker')
    if marker:
        ids = [item['id'] for item in items]
        if marker not in ids:
            raise nova_error(400, f'marker [{marker}] not found')
        start = ids.index(marker) + 1
    page = items[start:start + limit]
    body: Dict[str, Any] = {key: page}
    if page and len(page) == limit:
        body[f'{key}_links'] = [{'rel': 'next', 'href': f"{url}?{urlencode(dict(query, marker=page[-1]['id']))}"}]
    return body


def _matches(item: Dict[str, Any], query: Dict[str, List[str]]) -> bool:
    """Neutron-style filters: every query parameter names the item's field value (one of its
    values, if repeated; booleans as text)."""
    for name, values in query.items():
        if name in ('fields', 'limit', 'marker', 'sort_key', 'sort_dir'):
            continue
        field = item.get(name)
        if isinstance(field, bool):
            field, values = str(field), [v.capitalize() for v in values]
        if str(field) not in values:
            return False
    return True


Route = Tuple[str, 're.Pattern[str]', Callable[..., Any]]


class Handler(RoutedHandler):
    protocol_version = 'HTTP/1.1'
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms stalls
    cloud: Cloud = Cloud()
    verbose = False

    @property
    def base_url(self) -> str:
        return self.cloud.base_url

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        if self.verbose:
            sys.stderr.write('novapeer: ' + format % args + '\n')

    # -- plumbing --------------------------------------------------------------------------


    def body(self) -> Any:
        length = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(length) if length else b''
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise Answer(400, {'error': 'the body is not JSON'})

    def send(self, status: int, body: Any = None, headers: Optional[Dict[str, str]] = None) -> None:
        data = b'' if body is None else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(data)))
            self.send_header('X-Openstack-Request-Id', f'req-{uuid.uuid4()}')
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if data:
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (a killed build): fine

    def dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = parts.path.rstrip('/') or '/'
        self.filters = parse_qs(parts.query)  # every value of repeated parameters (Neutron)
        query = {k: v[-1] for k, v in self.filters.items()}
        for verb, pattern, action in self.routes():
            match = pattern.fullmatch(path)
            if verb == method and match:
                break
        else:
            self.send(404, {'error': f'no route for {method} {path}'})
            return
        try:
            result = action(self, query, **match.groupdict())
        except Answer as answer:
            self.send(answer.status, answer.body, answer.headers)
            return
        status, body, headers = result if isinstance(result, tuple) else (200, result, None)
        self.send(status, body, headers)

    def project(self, route: str) -> str:
        """The project of this call's token; counts the call; a 503 of a burst if one is due."""
        with self.cloud.lock:
            project = self.cloud.project_of(self.headers.get('X-Auth-Token'))
            self.cloud.count(project, route)
            elsewhere = self.cloud.setting(project, 'redirect')
            if elsewhere:
                raise Answer(302, None, {'Location': elsewhere})
            if self.cloud.burst(project):
                raise Answer(503, {'computeFault': {'code': 503, 'message': 'Service Unavailable (a burst)'}},
                             {'Retry-After': '0'})
        return project

    def nova_headers(self) -> Dict[str, str]:
        asked = (self.headers.get('X-OpenStack-Nova-API-Version') or '2.1').strip()
        if asked == 'latest':
            asked = MAX_MICROVERSION
        if not re.fullmatch(r'2\.\d+', asked) or int(asked.split('.')[1]) > int(MAX_MICROVERSION.split('.')[1]):
            raise nova_error(406, f'Version {asked} is not supported by the API. Minimum is 2.1 '
                                  f'and maximum is {MAX_MICROVERSION}.')
        return {'X-OpenStack-Nova-API-Version': asked, 'OpenStack-API-Version': f'compute {asked}',
                'Vary': 'X-OpenStack-Nova-API-Version'}

    # -- keystone --------------------------------------------------------------------------

    def keystone_versions(self, query: Dict[str, str], prefix: str = '') -> Any:
        version = {'id': 'v3.14', 'status': 'stable', 'updated': '2020-04-07T00:00:00Z',
                   'links': [{'rel': 'self', 'href': f'{self.base_url}{prefix}/v3/'}],
                   'media-types': [{'base': 'application/json',
                                    'type': 'application/vnd.openstack.identity-v3+json'}]}
        return {'version': version} if self.path.rstrip('/').endswith('/v3') else (
            300, {'versions': {'values': [version]}}, None)

    def keystone_tokens(self, query: Dict[str, str], prefix: str = '') -> Any:
        body = self.body()
        with self.cloud.lock:
            self.cloud.count('(keystone)', 'POST auth/tokens')
        token, answer = self.cloud.issue_token(body)
        return 201, answer, {'X-Subject-Token': token}

    # -- nova ------------------------------------------------------------------------------

    def nova_versions(self, query: Dict[str, str]) -> Any:
        version = {'id': 'v2.1', 'status': 'CURRENT', 'version': MAX_MICROVERSION, 'min_version': '2.1',
                   'updated': '2013-07-23T11:33:21Z',
                   'links': [{'rel': 'self', 'href': f'{self.base_url}/compute/v2.1/'}]}
        if self.path.rstrip('/').endswith('/v2.1'):
            return {'version': version}
        return {'versions': [version]}

    def nova_flavors(self, query: Dict[str, str], detail: str = '') -> Any:
        self.project('GET flavors')
        headers = self.nova_headers()
        flavors = [dict(f, links=[]) if detail else {'id': f['id'], 'name': f['name'], 'links': []}
                   for f in FLAVORS]
        return 200, {'flavors': flavors}, headers

    def nova_flavor(self, query: Dict[str, str], flavor_id: str) -> Any:
        self.project('GET flavor')
        headers = self.nova_headers()
        flavor = next((f for f in FLAVORS if f['id'] == flavor_id), None)
        if flavor is None:
            raise nova_error(404, f'Flavor {flavor_id} could not be found.')
        return 200, {'flavor': dict(flavor, links=[])}, headers

    def nova_create(self, query: Dict[str, str]) -> Any:
        project = self.project('POST servers')
        headers = self.nova_headers()
        body = self.body()
        with self.cloud.lock:
            server = self.cloud.create_server(project, body)
            delay = float(self.cloud.setting(project, 'create_delay'))
            lose = int(self.cloud.setting(project, 'fail_after_create'))
            if lose:
                self.cloud.config.setdefault(project, {})['fail_after_create'] = lose - 1
        time.sleep(delay)  # the server exists; the answer is late (a build killed meanwhile)
        if lose:  # the server exists; its answer is lost
            raise nova_error(503, 'Service Unavailable (the answer of a create was lost)')
        return 202, {'server': {'id': server['id'], 'links': server['links'], 'adminPass': 'x' * 12,
                                'OS-DCF:diskConfig': 'MANUAL',
                                'security_groups': server['security_groups']}}, headers

    def nova_list(self, query: Dict[str, str], detail: str = '') -> Any:
        project = self.project('GET servers')
        headers = self.nova_headers()
        with self.cloud.lock:
            servers = [self.cloud.server_view(s) for s in self.cloud.servers.values()
                       if s['tenant_id'] == project]
            size = int(self.cloud.setting(project, 'page_size'))
            href = self.cloud.setting(project, 'next_href')
        if not detail:
            servers = [{'id': s['id'], 'name': s['name'], 'links': s['links']} for s in servers]
        body = _page(servers, query, size, 'servers', f'{self.base_url}/compute/v2.1/servers{detail}')
        if href is not None:
            body['servers_links'] = [{'rel': 'next', 'href': href}]
        return 200, body, headers

    def nova_show(self, query: Dict[str, str], server_id: str) -> Any:
        project = self.project('GET server')
        headers = self.nova_headers()
        with self.cloud.lock:
            return 200, {'server': self.cloud.server_view(self.cloud.server(project, server_id))}, headers

    def nova_delete(self, query: Dict[str, str], server_id: str) -> Any:
        project = self.project('DELETE server')
        headers = self.nova_headers()
        with self.cloud.lock:
            self.cloud.server(project, server_id)
            self.cloud.delete_server(server_id)
        return 204, None, headers

    # -- neutron ---------------------------------------------------------------------------

    def neutron_networks(self, query: Dict[str, str]) -> Any:
        self.project('GET networks')
        return {'networks': [n for n in NETWORKS if _matches(n, self.filters)]}

    def neutron_ports(self, query: Dict[str, str]) -> Any:
        project = self.project('GET ports')
        with self.cloud.lock:
            return {'ports': [{k: v for k, v in p.items() if not k.startswith('_')}
                              for p in self.cloud.ports.values()
                              if p['project_id'] == project and _matches(p, self.filters)]}

    def neutron_fips(self, query: Dict[str, str]) -> Any:
        project = self.project('GET floatingips')
        with self.cloud.lock:
            return {'floatingips': [dict(f) for f in self.cloud.floating_ips.values()
                                    if f['project_id'] == project and _matches(f, self.filters)]}

    def neutron_fip_create(self, query: Dict[str, str]) -> Any:
        project = self.project('POST floatingips')
        body = self.body()
        with self.cloud.lock:
            return 201, {'floatingip': dict(self.cloud.create_floating_ip(project, body))}, None

    def neutron_fip(self, query: Dict[str, str], fip_id: str) -> Any:
        project = self.project('GET floatingip')
        with self.cloud.lock:
            return {'floatingip': dict(self.cloud.floating_ip(project, fip_id))}

    def neutron_fip_update(self, query: Dict[str, str], fip_id: str) -> Any:
        project = self.project('PUT floatingip')
        body = self.body()
        with self.cloud.lock:
            return {'floatingip': dict(self.cloud.associate(project, fip_id, body))}

    def neutron_fip_delete(self, query: Dict[str, str], fip_id: str) -> Any:
        project = self.project('DELETE floatingip')
        with self.cloud.lock:
            self.cloud.delete_floating_ip(project, fip_id)
        return 204, None, None

    # -- cinder and glance -----------------------------------------------------------------

    def cinder_check(self, owner: str, route: str) -> str:
        project = self.project(route)
        if owner != project:
            raise Answer(403, {'forbidden': {'code': 403, 'message': 'Policy does not allow this project'}})
        return project

    def cinder_create(self, query: Dict[str, str], owner: str) -> Any:
        project = self.cinder_check(owner, 'POST volumes')
        body = self.body()
        with self.cloud.lock:
            return 202, {'volume': self.cloud.volume_view(self.cloud.create_volume(project, body))}, None

    def cinder_list(self, query: Dict[str, str], owner: str, detail: str = '') -> Any:
        project = self.cinder_check(owner, 'GET volumes')
        with self.cloud.lock:
            volumes = [self.cloud.volume_view(v) for v in self.cloud.volumes.values() if v['_project'] == project]
            size = int(self.cloud.setting(project, 'page_size'))
        if not detail:
            volumes = [{'id': v['id'], 'name': v['name']} for v in volumes]
        return _page(volumes, query, size, 'volumes', f'{self.base_url}/volume/v3/{owner}/volumes{detail}')

    def cinder_show(self, query: Dict[str, str], owner: str, volume_id: str) -> Any:
        project = self.cinder_check(owner, 'GET volume')
        with self.cloud.lock:
            return {'volume': self.cloud.volume_view(self.cloud.volume(project, volume_id))}

    def cinder_delete(self, query: Dict[str, str], owner: str, volume_id: str) -> Any:
        project = self.cinder_check(owner, 'DELETE volume')
        with self.cloud.lock:
            self.cloud.volume_view(self.cloud.volume(project, volume_id))
            self.cloud.delete_volume(project, volume_id)
        return 202, None, None

    def glance_image(self, query: Dict[str, str], image_id: str) -> Any:
        self.project('GET image')
        image = IMAGES.get(image_id)
        if image is None:
            raise Answer(404, {'message': f'No image found with ID {image_id}', 'code': '404 Not Found'})
        return dict(image, visibility='public', disk_format='qcow2', container_format='bare')

    # -- the test's side -------------------------------------------------------------------

    def peer_config(self, query: Dict[str, str]) -> Any:
        body = self.body()
        if not isinstance(body, dict):
            raise Answer(400, {'error': 'a JSON object is expected'})
        with self.cloud.lock:
            return self.cloud.configure(body)

    def peer_state(self, query: Dict[str, str]) -> Any:
        with self.cloud.lock:
            return self.cloud.state(query.get('project'))

    def peer_reset(self, query: Dict[str, str]) -> Any:
        self.cloud.reset()
        return {'reset': True}

    def peer_app_credential(self, query: Dict[str, str]) -> Any:
        body = self.body() or {}
        with self.cloud.lock:
            self.cloud.app_credentials[str(body['id'])] = {'secret': str(body['secret']),
                                                           'project_id': str(body['project_id'])}
        return 201, {'application_credential': {'id': body['id']}}, None

    def peer_delete_server(self, query: Dict[str, str]) -> Any:
        body = self.body() or {}
        with self.cloud.lock:
            self.cloud.delete_server(str(body.get('id')))
        return {'deleted': body.get('id')}

    _routes: Optional[List[Route]] = None

    @classmethod
    def routes(cls) -> List[Route]:
        if cls._routes is None:
            ident = r'(?P<prefix>(?:/identity)?)'
            uid = r'[^/]+'
            table = [
                ('GET', rf'{ident}(?:/v3)?', cls.keystone_versions),
                ('POST', rf'{ident}/v3/auth/tokens', cls.keystone_tokens),
                ('GET', r'/compute(?:/v2\.1)?', cls.nova_versions),
                ('GET', r'/compute/v2\.1/flavors(?P<detail>/detail)?', cls.nova_flavors),
                ('GET', rf'/compute/v2\.1/flavors/(?P<flavor_id>{uid})', cls.nova_flavor),
                ('POST', r'/compute/v2\.1/servers', cls.nova_create),
                ('GET', r'/compute/v2\.1/servers(?P<detail>/detail)?', cls.nova_list),
                ('GET', rf'/compute/v2\.1/servers/(?P<server_id>{uid})', cls.nova_show),
                ('DELETE', rf'/compute/v2\.1/servers/(?P<server_id>{uid})', cls.nova_delete),
                ('GET', r'/network/v2\.0/networks', cls.neutron_networks),
                ('GET', r'/network/v2\.0/ports', cls.neutron_ports),
                ('GET', r'/network/v2\.0/floatingips', cls.neutron_fips),
                ('POST', r'/network/v2\.0/floatingips', cls.neutron_fip_create),
                ('GET', rf'/network/v2\.0/floatingips/(?P<fip_id>{uid})', cls.neutron_fip),
                ('PUT', rf'/network/v2\.0/floatingips/(?P<fip_id>{uid})', cls.neutron_fip_update),
                ('DELETE', rf'/network/v2\.0/floatingips/(?P<fip_id>{uid})', cls.neutron_fip_delete),
                ('POST', rf'/volume/v3/(?P<owner>{uid})/volumes', cls.cinder_create),
                ('GET', rf'/volume/v3/(?P<owner>{uid})/volumes(?P<detail>/detail)?', cls.cinder_list),
                ('GET', rf'/volume/v3/(?P<owner>{uid})/volumes/(?P<volume_id>{uid})', cls.cinder_show),
                ('DELETE', rf'/volume/v3/(?P<owner>{uid})/volumes/(?P<volume_id>{uid})', cls.cinder_delete),
                ('GET', rf'/image/v2/images/(?P<image_id>{uid})', cls.glance_image),
                ('POST', r'/_peer/config', cls.peer_config),
                ('GET', r'/_peer/state', cls.peer_state),
                ('POST', r'/_peer/reset', cls.peer_reset),
                ('POST', r'/_peer/app_credentials', cls.peer_app_credential),
                ('POST', r'/_peer/delete_server', cls.peer_delete_server),
            ]
            cls._routes = [(verb, re.compile(pattern), action) for verb, pattern, action in table]
        return cls._routes


class NovaPeer(ThreadedPeer):
    """The peer in a thread of this process (``with NovaPeer() as peer: peer.url``)."""

    name = 'novapeer'

    def __init__(self, host: str = '127.0.0.1', port: int = 0, verbose: bool = False) -> None:
        self.cloud = Cloud()
        super().__init__(type('PeerHandler', (Handler,), {'cloud': self.cloud,
                                                          'verbose': verbose}), host, port)
        self.cloud.base_url = self.url


def main(argv: Optional[List[str]] = None) -> int:
    return serve('A small Keystone v3 + Nova (+ Neutron, Cinder, Glance) for trying the nova '
                 'resource handler.', NovaPeer,
                 lambda peer: f'novapeer listening on {peer.url} (Keystone: {peer.url}/identity, '
                              'user demo, password demo-password)', argv)


if __name__ == '__main__':
    sys.exit(main())
