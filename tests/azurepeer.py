"""A small Azure for tests: the Entra ID token endpoint and the ARM calls of the ``azure_vm``
and ``azure_aci`` resource handlers, over HTTPS on loopback.

azure-identity (through MSAL) and the azure-mgmt SDKs talk to it exactly as to Azure: an
OpenID configuration and a client-credentials token endpoint per tenant, then Bearer tokens
on every ARM call, long-running operations with ``Azure-AsyncOperation`` headers that answer
``retry-after-ms`` (so the SDK's polls are quick), ARM's error bodies.  Addresses it hands out
are fake (``10.0.x.y`` private, ``203.0.113.x`` public, ``*.azurecontainer.io``) and never
contacted.

Run it alone (users, the benchmark)::

    python tests/azurepeer.py --port 8443

It makes a throw-away CA and prints where its certificate is; trust it with
``REQUESTS_CA_BUNDLE`` (the system bundle plus that CA), then use ``endpoint:
https://127.0.0.1:8443`` with the auth data ``{tenant_id: <any>, client_id: occopus-test,
client_secret: occopus-test-secret, subscription_id: <any>, authority: https://127.0.0.1:8443}``.

The cloud:

* Entra ID: ``GET /<tenant>/v2.0/.well-known/openid-configuration``, ``POST
  /<tenant>/oauth2/v2.0/token`` (``client_credentials``; a wrong client or secret answers 401
  ``invalid_client``); ``/common/discovery/instance`` is counted (the handlers must never ask it).
* ARM (every subscription exists; tests keep apart by subscription id): resource groups
  (``HEAD``/``GET``/``PUT``), generic listing with a tag filter
  (``GET /subscriptions/<s>/resources?$filter=tagName eq 'k' and tagValue eq 'v'``), virtual
  networks and subnets, public IPs, NICs, network security groups, virtual machines (with
  ``$expand=instanceView`` and ``/instanceView``) and their OS disks, container groups.  PUT
  and DELETE are long-running operations; deleting what something still uses answers 400
  (``NicInUse``, ``InUseSubnetCannotBeDeleted``, ``PublicIPAddressCannotBeDeleted``), deleting
  what is not there answers 404.  Unknown VM sizes answer ``SkuNotAvailable``, unknown images
  ``PlatformImageNotFound``, cores past the quota ``OperationNotAllowed``.

Knobs (:meth:`Cloud.configure`, or ``POST /_peer/config`` with ``subscription``): ``vm_delay``
and ``aci_delay`` (seconds in ``Creating``), ``stuck`` (VMs and groups stay ``Creating``),
``fail`` (``{code, message}``: provisioning ends ``Failed``), ``quota_cores`` (the cores of
VMs, and of container groups, a subscription may hold), ``faults`` (``{"PUT virtualMachines":
[{status, body, headers}, ...]}``: the next calls of that kind get those answers; a ``raw``
body is sent as it is; with ``after: true`` the call is carried out first and its answer lost:
replaced by the fault's, or with ``close: true`` by a connection closed without an answer),
``hold`` (kinds of call kept waiting until :meth:`Cloud.release`, before their faults are looked
at; :attr:`Cloud.held` is set when one waits), ``refuse_tokens`` (every ARM call of the
subscription answers 401 ``InvalidAuthenticationToken``), ``lro`` (``"location"``: long-running
operations answer only a ``Location`` header, which answers 202 until they end (one poll at
least), then 200 with the resource (204 for a delete); the default ``"async"`` answers
``Azure-AsyncOperation``, and ``Location`` as well for deletes).
Container images are pulled from a registry holding :data:`REGISTRY` only (any tag); others
answer ``InaccessibleImage``.
``GET /_peer/state?subscription=S`` lists what a subscription holds.
"""
from __future__ import annotations

import base64
import ipaddress
import json
import re
import secrets
import ssl
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from peerhttp import ThreadedPeer, serve

CLIENT_ID = 'occopus-test'
CLIENT_SECRET = 'occopus-test-secret-9f2c'
SIZES = {'Standard_B1s': 1, 'Standard_DS1_v2': 1, 'Standard_D2s_v3': 2, 'Standard_D4s_v3': 4}
IMAGES = {('Canonical', 'UbuntuServer', '18.04-LTS'), ('Canonical', '0001-com-ubuntu-server-jammy',
                                                      '22_04-lts')}
#: repositories the fake registry holds (any tag)
REGISTRY = {'alpine', 'busybox', 'nginx', 'mcr.microsoft.com/azuredocs/aci-helloworld'}
POLL_MS = 20  # what every long-running operation answers in retry-after-ms
HOLD_LIMIT = 120.0  # seconds a held call waits at most
DEFAULTS: Dict[str, Any] = {'vm_delay': 0.1, 'aci_delay': 0.1, 'stuck': False, 'fail': None,
                            'quota_cores': None, 'faults': {}, 'hold': [],
                            'refuse_tokens': False, 'lro': 'async'}
KINDS = {'virtualnetworks': 'Microsoft.Network/virtualNetworks',
         'publicipaddresses': 'Microsoft.Network/publicIPAddresses',
         'networkinterfaces': 'Microsoft.Network/networkInterfaces',
         'networksecuritygroups': 'Microsoft.Network/networkSecurityGroups',
         'virtualmachines': 'Microsoft.Compute/virtualMachines',
         'disks': 'Microsoft.Compute/disks',
         'containergroups': 'Microsoft.ContainerInstance/containerGroups'}
SHORT = {v.lower(): v.split('/')[1] for v in KINDS.values()}


Reply = Tuple[int, Any, Dict[str, str]]


class Answer(Exception):
    """An HTTP answer other than the usual one."""

    def __init__(self, status: int, body: Any = None, headers: Optional[Dict[str, str]] = None,
                 raw: Optional[bytes] = None, close: bool = False) -> None:
        super().__init__(status)
        self.status, self.body, self.headers, self.raw = status, body, headers or {}, raw
        #: close the connection without answering at all
        self.close = close

    @classmethod
    def of_fault(cls, fault: Dict[str, Any]) -> 'Answer':
        raw = fault.get('raw')
        return cls(fault.get('status', 500), fault.get('body'), fault.get('headers'),
                   raw.encode() if isinstance(raw, str) else raw, bool(fault.get('close')))


def arm_error(status: int, code: str, message: str) -> Answer:
    return Answer(status, {'error': {'code': code, 'message': message}})


class Cloud:
    """The state of the fake Azure; every method runs under one lock."""

    def __init__(self) -> None:
        self.base_url = ''
        self.lock = threading.RLock()
        self.held = threading.Event()
        self._release = threading.Event()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.groups: Dict[str, Dict[str, Any]] = {}      # lower id -> group
            self.resources: Dict[str, Dict[str, Any]] = {}   # lower id -> resource (+ '_' keys)
            self.operations: Dict[str, Dict[str, Any]] = {}
            self.tokens: Dict[str, str] = {}                 # access token -> tenant
            self.config: Dict[str, Dict[str, Any]] = {}
            self.calls: List[Tuple[str, str]] = []           # (kind, path) in order
            self.ips = iter(ipaddress.ip_network('10.0.0.0/16').hosts())
            self.public_ips = iter(ipaddress.ip_network('203.0.113.0/24').hosts())

    # -- knobs -----------------------------------------------------------------------------

    def configure(self, subscription: str, **settings: Any) -> None:
        with self.lock:
            self.config.setdefault(subscription.lower(), {}).update(settings)

    def setting(self, subscription: str, name: str) -> Any:
        with self.lock:
            return self.config.get(subscription.lower(), {}).get(name, DEFAULTS[name])

    def release(self) -> None:
        """Let held calls go on (and hold no more)."""
        self._release.set()

    def arm_hold(self) -> None:
        """Hold the calls named by the ``hold`` knob again (a new test)."""
        self.held.clear()
        self._release.clear()

    def fault(self, subscription: str, kind: str) -> Optional[Dict[str, Any]]:
        with self.lock:
            queue = self.config.get(subscription.lower(), {}).get('faults', {}).get(kind)
            return queue.pop(0) if queue else None

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.calls if k == kind)

    # -- what a test looks at ----------------------------------------------------------------

    def held_resources(self, subscription: str) -> List[Dict[str, Any]]:
        """Every resource of a subscription as ARM shows it (subnets included)."""
        prefix = f'/subscriptions/{subscription.lower()}/'
        with self.lock:
            return [self.show(r) for key, r in sorted(self.resources.items())
                    if key.startswith(prefix)]

    def tagged(self, subscription: str, infra_id: str) -> List[Dict[str, Any]]:
        return [r for r in self.held_resources(subscription)
                if (r.get('tags') or {}).get('occopus_infra_id') == infra_id]

    def group(self, subscription: str, name: str) -> Optional[Dict[str, Any]]:
        with self.lock:
            return self.groups.get(f'/subscriptions/{subscription}/resourcegroups/{name}'.lower())

    def add_group(self, subscription: str, name: str, location: str = 'westeurope') -> None:
        with self.lock:
            rid = f'/subscriptions/{subscription}/resourceGroups/{name}'
            self.groups[rid.lower()] = {'id': rid, 'name': name, 'location': location, 'tags': {},
                                        'properties': {'provisioningState': 'Succeeded'}}

    def state(self, subscription: str) -> Dict[str, Any]:
        with self.lock:
            return {'groups': [g for k, g in self.groups.items()
                               if k.startswith(f'/subscriptions/{subscription.lower()}/')],
                    'resources': self.held_resources(subscription),
                    'calls': [list(c) for c in self.calls]}

    # -- resources -----------------------------------------------------------------------

    def show(self, resource: Dict[str, Any]) -> Dict[str, Any]:
        """A resource as ARM answers it (internal '_' keys left out, states as of now)."""
        shown = {k: v for k, v in resource.items() if not k.startswith('_')}
        properties = dict(shown.get('properties') or {})
        ready = resource.get('_ready_at')
        if ready is not None:
            if resource.get('_stuck') or time.time() < ready:
                properties['provisioningState'] = 'Creating'
            else:
                properties['provisioningState'] = 'Failed' if resource.get('_fail') else 'Succeeded'
        if shown.get('type') == KINDS['virtualnetworks']:
            properties['subnets'] = [self.show(s) for k, s in sorted(self.resources.items())
                                     if k.startswith(shown['id'].lower() + '/subnets/')]
        if shown.get('type') == KINDS['containergroups']:
            state = properties['provisioningState']
            properties['instanceView'] = {'state': {'Succeeded': 'Running', 'Failed': 'Failed'}.get(
                state, 'Pending'), 'events': []}
        shown['properties'] = properties
        return shown

    def state_of(self, resource: Dict[str, Any]) -> str:
        return self.show(resource)['properties'].get('provisioningState', 'Succeeded')

    def instance_view(self, vm: Dict[str, Any]) -> Dict[str, Any]:
        state = self.state_of(vm)
        power = {'Succeeded': 'PowerState/running', 'Failed': 'PowerState/stopped'}.get(
            state, 'PowerState/starting')
        statuses = [{'code': f'ProvisioningState/{state.lower()}', 'level': 'Info',
                     'displayStatus': f'Provisioning {state.lower()}'},
                    {'code': power, 'level': 'Info', 'displayStatus': power.split('/')[1]}]
        fail = vm.get('_fail')
        if fail and state == 'Failed':
            statuses[0].update(level='Error', message=fail.get('message', ''))
        return {'statuses': statuses}

    def users(self, rid: str) -> List[str]:
        """Ids of what refers to ``rid`` (or to a child of it)."""
        low = rid.lower()
        found = []
        for key, resource in self.resources.items():
            if key == low or key.startswith(low + '/'):
                continue
            text = json.dumps(resource.get('properties') or {}).lower()
            if f'"{low}"' in text or f'"{low}/' in text:
                found.append(resource['id'])
        return found

    def operation(self, subscription: str, status: str = 'Succeeded', error: Any = None,
                  resource: Optional[str] = None, location: bool = False) -> str:
        op = uuid.uuid4().hex
        self.operations[op] = {'status': status, 'error': error, 'resource': resource, 'polls': 0,
                               'location': location}
        return f'{self.base_url}/subscriptions/{subscription}/providers/Microsoft.Peer/' \
               f'locations/peer/operations/{op}?api-version=2024-01-01'

    def lro_headers(self, subscription: str, status: str = 'Succeeded',
                    resource: Optional[str] = None) -> Dict[str, str]:
        """The headers of a long-running operation's first answer (``lro`` knob)."""
        headers = {'retry-after-ms': str(POLL_MS)}
        if self.setting(subscription, 'lro') == 'location':
            headers['Location'] = self.operation(subscription, 'InProgress', None, resource,
                                                 location=True)
        else:
            headers['Azure-AsyncOperation'] = self.operation(subscription, status, None, resource)
        return headers


class Handler(BaseHTTPRequestHandler):
    cloud: Cloud
    verbose = False
    protocol_version = 'HTTP/1.1'

    def log_message(self, fmt: str, *args: Any) -> None:
        if self.verbose:
            sys.stderr.write('azurepeer: ' + fmt % args + '\n')

    def _answer(self, status: int, body: Any = None, headers: Optional[Dict[str, str]] = None,
                raw: Optional[bytes] = None) -> None:
        data = raw if raw is not None else (b'' if body is None else json.dumps(body).encode())
        self.send_response(status)
        self.send_header('Content-Type', 'application/json; charset=utf-8')
        self.send_header('Content-Length', str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)

    def _body(self) -> bytes:
        """The request's body, read once (also when a fault answers without looking at it:
        what is left unread would be taken for the next request of the connection)."""
        if getattr(self, '_read', None) is None:
            length = int(self.headers.get('Content-Length') or 0)
            self._read = self.rfile.read(length) if length else b''
        return self._read

    def _json(self) -> Dict[str, Any]:
        try:
            body = json.loads(self._body() or b'{}')
        except ValueError:
            raise arm_error(400, 'InvalidRequestContent', 'The request content was invalid'
                            ) from None
        if not isinstance(body, dict):
            raise arm_error(400, 'InvalidRequestContent', 'The request content must be an object')
        return body

    def do_GET(self) -> None:
        self._serve()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_GET

    def _serve(self) -> None:
        self._read: Optional[bytes] = None
        try:
            self._body()
            status, body, headers = self._route()
            self._answer(status, body, headers)
        except Answer as answer:
            if answer.close:
                self.close_connection = True
                return
            self._answer(answer.status, answer.body, answer.headers, answer.raw)
        except (OSError, ssl.SSLError):  # the client went away (a killed build)
            pass

    def _route(self) -> Reply:
        url = urlsplit(self.path)
        path = unquote(url.path).rstrip('/')
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = path.strip('/').split('/')
        if path.startswith('/_peer/'):
            return self._peer(path, query)
        if path.lower() == '/common/discovery/instance':
            self.cloud.calls.append(('GET discovery', path))
            raise Answer(400, {'error': 'the peer is no public login host'})
        if len(parts) == 4 and parts[1:] == ['v2.0', '.well-known', 'openid-configuration']:
            base = f'{self.cloud.base_url}/{parts[0]}'
            self.cloud.calls.append(('GET openid-configuration', path))
            return 200, {'issuer': f'{base}/v2.0', 'token_endpoint': f'{base}/oauth2/v2.0/token',
                         'authorization_endpoint': f'{base}/oauth2/v2.0/authorize',
                         'tenant_region_scope': 'EU'}, {}
        if len(parts) == 4 and parts[1:] == ['oauth2', 'v2.0', 'token'] and self.command == 'POST':
            return self._token(parts[0], path)
        if len(parts) < 2 or parts[0].lower() != 'subscriptions':
            raise arm_error(404, 'NotFound', f'No route for {path}')
        return self._arm(parts, path, query)

    # -- Entra ID ---------------------------------------------------------------------------

    def _token(self, tenant: str, path: str) -> Reply:
        form = {k: v[-1] for k, v in parse_qs(self._body().decode('utf-8', 'replace')).items()}
        self.cloud.calls.append(('POST token', path))
        fault = self.cloud.fault(tenant, 'POST token')
        if fault:
            raise Answer.of_fault(fault)
        if form.get('grant_type') != 'client_credentials' or not form.get('scope', '').endswith(
                '/.default'):
            raise Answer(400, {'error': 'invalid_request', 'error_description':
                               'AADSTS900144: grant_type client_credentials and a scope are '
                               'needed'})
        if form.get('client_id') != CLIENT_ID or form.get('client_secret') != CLIENT_SECRET:
            raise Answer(401, {'error': 'invalid_client', 'error_codes': [7000215],
                               'error_description': 'AADSTS7000215: Invalid client secret '
                               f"provided. Ensure the secret being sent in the request is the "
                               f"client secret value, not the client secret ID, for a secret "
                               f"added to app '{form.get('client_id')}'."})
        token = secrets.token_urlsafe(24)
        with self.cloud.lock:
            self.cloud.tokens[token] = tenant
        return 200, {'token_type': 'Bearer', 'expires_in': 3599, 'ext_expires_in': 3599,
                     'access_token': token}, {}

    # -- ARM -------------------------------------------------------------------------------

    def _arm(self, parts: List[str], path: str, query: Dict[str, str]) -> Reply:
        cloud, subscription = self.cloud, parts[1]
        auth = self.headers.get('Authorization') or ''
        kind = self._kind(parts)
        cloud.calls.append((f'{self.command} {kind}', path))
        if not auth.startswith('Bearer ') or auth[7:] not in cloud.tokens or \
                cloud.setting(subscription, 'refuse_tokens'):
            raise Answer(401, {'error': {'code': 'InvalidAuthenticationToken',
                                         'message': 'The access token is invalid.'}},
                         {'WWW-Authenticate': f'Bearer authorization_uri="{cloud.base_url}/'
                          'common", error="invalid_token", error_description="The access '
                          'token is invalid."'})
        if 'api-version' not in query:
            raise arm_error(400, 'MissingApiVersionParameter',
                            "The api-version query parameter (?api-version=) is required")
        key = f'{self.command} {kind}'
        if key in cloud.setting(subscription, 'hold') and not cloud._release.is_set():
            cloud.held.set()
            cloud._release.wait(HOLD_LIMIT)
        fault = cloud.fault(subscription, key)
        if fault and not fault.get('after'):
            raise Answer.of_fault(fault)
        with cloud.lock:
            reply = self._arm_call(parts, path, query, kind)
        if fault:  # carried out, and its answer lost
            raise Answer.of_fault(fault)
        return reply

    @staticmethod
    def _kind(parts: List[str]) -> str:
        lowered = [p.lower() for p in parts]
        if len(parts) == 2:
            return 'subscription'
        if lowered[2] == 'resources':
            return 'resources'
        if lowered[2] == 'providers' and 'operations' in lowered:
            return 'operation'
        if lowered[2] == 'resourcegroups' and len(parts) == 4:
            return 'resourceGroups'
        if len(parts) >= 8 and lowered[4] == 'providers':
            if len(parts) == 10 and lowered[8] == 'subnets':
                return 'subnets'
            if len(parts) == 9 and lowered[8] == 'instanceview':
                return 'instanceView'
            return SHORT.get(f'{lowered[5]}/{lowered[6]}', 'unknown')
        return 'unknown'

    def _arm_call(self, parts: List[str], path: str, query: Dict[str, str],
                  kind: str) -> Reply:
        cloud, subscription, method = self.cloud, parts[1], self.command
        if kind == 'operation':
            op = cloud.operations.get(parts[-1])
            if op is None:
                raise arm_error(404, 'NotFound', 'No such operation')
            status = op['status']
            resource = cloud.resources.get(op['resource'] or '')
            if resource is not None and status == 'InProgress' and (
                    op['polls'] or not op['location']):
                state = cloud.state_of(resource)
                if state != 'Creating':
                    op['status'] = status = state
                    if state == 'Failed':
                        op['error'] = dict(resource.get('_fail') or {})
            elif op['resource'] is None and op['polls'] and status == 'InProgress':
                op['status'] = status = 'Succeeded'  # a delete: done after one poll
            op['polls'] += 1
            if op['location']:
                return self._location_poll(op, status, resource)
            body: Dict[str, Any] = {'status': status, 'name': parts[-1]}
            if op['error']:
                body['error'] = op['error']
            return 200, body, {'retry-after-ms': str(POLL_MS)} if status == 'InProgress' else {}
        if kind == 'resources':
            return 200, {'value': self._listing(subscription, query.get('$filter', ''))}, {}
        if kind == 'resourceGroups':
            return self._group(parts, method)
        if kind == 'unknown' or kind == 'subscription':
            raise arm_error(404, 'NotFound', f'No route for {path}')
        if ('/' + '/'.join(parts[:4])).lower() not in cloud.groups:
            raise arm_error(404, 'ResourceGroupNotFound', f"Resource group '{parts[3]}' could not "
                            'be found.')
        rid = '/' + '/'.join(parts)
        if kind == 'instanceView':
            vm = cloud.resources.get(rid.lower().rsplit('/', 1)[0])
            if vm is None:
                raise arm_error(404, 'ResourceNotFound', 'The Resource was not found.')
            return 200, cloud.instance_view(vm), {}
        if method == 'GET':
            resource = cloud.resources.get(rid.lower())
            if resource is None:
                what = KINDS.get(kind.lower(), kind)
                raise arm_error(404, 'ResourceNotFound', f"The Resource '{what}/"
                                f"{parts[-1]}' under resource group '{parts[3]}' was not found.")
            shown = cloud.show(resource)
            if kind == 'virtualMachines' and query.get('$expand') == 'instanceView':
                shown['properties']['instanceView'] = cloud.instance_view(resource)
            return 200, shown, {}
        if method == 'PUT':
            return self._put(subscription, rid, kind, self._json())
        if method == 'DELETE':
            return self._delete(subscription, rid, kind)
        raise arm_error(405, 'MethodNotAllowed', f'{method} is not supported here')

    def _location_poll(self, op: Dict[str, Any], status: str, resource: Any) -> Reply:
        """A ``Location`` URL: 202 while running, then the resource (200), or none (204), or
        the error (400)."""
        if status == 'InProgress':
            return 202, None, {'Location': f'{self.cloud.base_url}{self.path}',
                               'retry-after-ms': str(POLL_MS)}
        if status == 'Failed':
            raise Answer(400, {'error': op['error'] or {'code': 'Failed', 'message': 'failed'}})
        if resource is None:
            return 204, None, {}
        return 200, self.cloud.show(resource), {}

    def _group(self, parts: List[str], method: str) -> Reply:
        cloud = self.cloud
        rid = f'/subscriptions/{parts[1]}/resourceGroups/{parts[3]}'
        group = cloud.groups.get(rid.lower())
        if method in ('GET', 'HEAD'):
            if group is None:
                if method == 'HEAD':
                    return 404, None, {}
                raise arm_error(404, 'ResourceGroupNotFound', f"Resource group '{parts[3]}' could "
                                'not be found.')
            return (204 if method == 'HEAD' else 200), (None if method == 'HEAD' else group), {}
        if method == 'PUT':
            body = self._json()
            if not body.get('location'):
                raise arm_error(400, 'LocationRequired', 'The location property is required')
            made = group is None
            cloud.groups[rid.lower()] = dict(group or {}, id=rid, name=parts[3],
                                             location=body['location'], tags=body.get('tags') or {},
                                             properties={'provisioningState': 'Succeeded'})
            return (201 if made else 200), cloud.groups[rid.lower()], {}
        raise arm_error(405, 'MethodNotAllowed', 'the peer does not delete resource groups')

    def _listing(self, subscription: str, text: str) -> List[Dict[str, Any]]:
        match = re.fullmatch(r"\s*tagName eq '([^']*)' and tagValue eq '([^']*)'\s*", text)
        if text and not match:
            raise arm_error(400, 'InvalidFilterInQueryString', f'Invalid $filter {text!r}')
        found = []
        for resource in self.cloud.held_resources(subscription):
            if resource['type'].count('/') != 1:
                continue  # subnets are no top-level resources
            tags = resource.get('tags') or {}
            if match and tags.get(match.group(1)) != match.group(2):
                continue
            found.append({k: resource.get(k) for k in ('id', 'name', 'type', 'location', 'tags')})
        return found

    # -- PUT -------------------------------------------------------------------------------

    def _put(self, subscription: str, rid: str, kind: str, body: Dict[str, Any]) -> Reply:
        cloud = self.cloud
        existing = cloud.resources.get(rid.lower())
        properties = body.get('properties') if isinstance(body.get('properties'), dict) else {}
        if kind != 'subnets' and not body.get('location'):
            raise arm_error(400, 'LocationRequired', 'The location property is required')
        type_name = KINDS.get(kind.lower(), 'Microsoft.Network/virtualNetworks/subnets')
        resource: Dict[str, Any] = {'id': rid, 'name': rid.rsplit('/', 1)[1], 'type': type_name,
                                    'properties': dict(properties)}
        if kind != 'subnets':
            resource.update(location=body['location'], tags=dict(body.get('tags') or {}))
        check = getattr(self, f'_check_{kind}', None)
        if check is not None:
            check(subscription, rid, resource, existing)
        if existing is not None:  # an update keeps what was made (addresses, disks...)
            for key in ('_ready_at', '_fail', '_stuck', '_ip', '_private_ip', '_fqdn'):
                if key in existing:
                    resource[key] = existing[key]
        cloud.resources[rid.lower()] = resource
        if kind == 'virtualNetworks':
            for subnet in properties.get('subnets') or []:
                sid = f'{rid}/subnets/{subnet.get("name")}'
                cloud.resources[sid.lower()] = {'id': sid, 'name': subnet.get('name'),
                                                'type': f'{type_name}/subnets',
                                                'properties': dict(subnet.get('properties') or {})}
            resource['properties'].pop('subnets', None)
        self._fill(resource)
        slow = '_ready_at' in resource and cloud.state_of(resource) == 'Creating'
        headers = cloud.lro_headers(subscription, 'InProgress' if slow else 'Succeeded',
                                    rid.lower())
        return (200 if existing is not None else 201), cloud.show(resource), headers

    def _fill(self, resource: Dict[str, Any]) -> None:
        """What Azure adds: addresses, the OS disk, DNS names, states."""
        cloud, properties = self.cloud, resource['properties']
        kind = resource['type'].split('/')[-1]
        properties.setdefault('provisioningState', 'Succeeded')
        if kind == 'publicIPAddresses':
            resource.setdefault('_ip', str(next(cloud.public_ips)))
            properties['ipAddress'] = resource['_ip']
        elif kind == 'networkInterfaces':
            resource.setdefault('_private_ip', str(next(cloud.ips)))
            for config in properties.get('ipConfigurations') or []:
                config.setdefault('properties', {})['privateIPAddress'] = resource['_private_ip']
                config['properties']['provisioningState'] = 'Succeeded'
                config.setdefault('id', f"{resource['id']}/ipConfigurations/{config.get('name')}")
        elif kind == 'virtualMachines':
            if '_ready_at' not in resource:
                sub = resource['id'].split('/')[2]
                resource['_ready_at'] = time.time() + float(cloud.setting(sub, 'vm_delay'))
                resource['_stuck'] = bool(cloud.setting(sub, 'stuck'))
                resource['_fail'] = cloud.setting(sub, 'fail')
            properties['vmId'] = properties.get('vmId') or str(uuid.uuid4())
            os_disk = properties['storageProfile']['osDisk']
            name = os_disk.get('name') or f"{resource['name']}_OsDisk_1_{uuid.uuid4().hex}"
            did = '/'.join(resource['id'].split('/')[:5]) + \
                f'/providers/Microsoft.Compute/disks/{name}'
            os_disk.update(name=name, managedDisk={'id': did})
            if did.lower() not in cloud.resources:
                cloud.resources[did.lower()] = {
                    'id': did, 'name': name, 'type': KINDS['disks'],
                    'location': resource['location'], 'tags': {}, 'managedBy': resource['id'],
                    'properties': {'provisioningState': 'Succeeded', 'diskState': 'Attached',
                                   'osType': 'Linux'}}
            properties.pop('provisioningState', None)
        elif kind == 'containerGroups':
            if '_ready_at' not in resource:
                sub = resource['id'].split('/')[2]
                resource['_ready_at'] = time.time() + float(cloud.setting(sub, 'aci_delay'))
                resource['_stuck'] = bool(cloud.setting(sub, 'stuck'))
                resource['_fail'] = cloud.setting(sub, 'fail')
            address = properties.get('ipAddress')
            if isinstance(address, dict):
                if str(address.get('type')).lower() == 'public':
                    resource.setdefault('_ip', str(next(cloud.public_ips)))
                else:
                    resource.setdefault('_ip', str(next(cloud.ips)))
                address['ip'] = resource['_ip']
                if address.get('dnsNameLabel'):
                    address['fqdn'] = \
                        f"{address['dnsNameLabel']}.{resource['location']}.azurecontainer.io"
            properties.pop('provisioningState', None)

    def _exists(self, rid: Any, what: str) -> None:
        if not isinstance(rid, str) or rid.lower() not in self.cloud.resources:
            raise arm_error(400, 'InvalidResourceReference', f'Resource {rid} referenced by '
                            f'{what} was not found.')

    def _check_subnets(self, subscription: str, rid: str, resource: Dict[str, Any],
                       existing: Any) -> None:
        if rid.lower().rsplit('/subnets/', 1)[0] not in self.cloud.resources:
            raise arm_error(404, 'ResourceNotFound', 'The virtual network was not found.')
        if not resource['properties'].get('addressPrefix'):
            raise arm_error(400, 'InvalidRequestFormat', 'addressPrefix is required')

    def _check_virtualNetworks(self, subscription: str, rid: str, resource: Dict[str, Any],
                               existing: Any) -> None:
        space = resource['properties'].get('addressSpace') or {}
        if not space.get('addressPrefixes'):
            raise arm_error(400, 'InvalidRequestFormat', 'addressSpace.addressPrefixes is required')

    def _check_networkInterfaces(self, subscription: str, rid: str, resource: Dict[str, Any],
                                 existing: Any) -> None:
        configs = resource['properties'].get('ipConfigurations') or []
        if not configs:
            raise arm_error(400, 'InvalidRequestFormat', 'ipConfigurations are required')
        for config in configs:
            props = config.get('properties') or {}
            self._exists((props.get('subnet') or {}).get('id'), rid)
            if props.get('publicIPAddress'):
                self._exists(props['publicIPAddress'].get('id'), rid)

    def _check_virtualMachines(self, subscription: str, rid: str, resource: Dict[str, Any],
                               existing: Any) -> None:
        cloud, props = self.cloud, resource['properties']
        size = (props.get('hardwareProfile') or {}).get('vmSize')
        storage = props.get('storageProfile') or {}
        image = storage.get('imageReference') or {}
        if size not in SIZES:
            raise arm_error(409, 'SkuNotAvailable', f"The requested VM size '{size}' is not "
                            f"available in location '{resource['location']}'. Please try another "
                            'size or deploy to a different location or different zone.')
        if (image.get('publisher'), image.get('offer'), image.get('sku')) not in IMAGES:
            raise arm_error(404, 'PlatformImageNotFound', "The platform image '"
                            f"{image.get('publisher')}:{image.get('offer')}:{image.get('sku')}:"
                            f"{image.get('version')}' is not available. Verify that all fields "
                            'in the storage profile are correct.')
        if not isinstance(storage.get('osDisk'), dict):
            raise arm_error(400, 'InvalidParameter', 'storageProfile.osDisk is required')
        profile = props.get('osProfile') or {}
        keys = (((profile.get('linuxConfiguration') or {}).get('ssh') or {}).get('publicKeys'))
        if not profile.get('adminUsername') or not (profile.get('adminPassword') or keys):
            raise arm_error(400, 'InvalidParameter', 'Required parameter adminPassword or '
                            'ssh publicKeys is missing (null).')
        if profile.get('customData'):
            try:
                base64.b64decode(profile['customData'], validate=True)
            except ValueError:
                raise arm_error(400, 'InvalidParameter', 'customData must be base64') from None
        nics = (props.get('networkProfile') or {}).get('networkInterfaces') or []
        if not nics:
            raise arm_error(400, 'InvalidParameter', 'networkProfile.networkInterfaces is required')
        for nic in nics:
            self._exists(nic.get('id'), rid)
        quota = cloud.setting(subscription, 'quota_cores')
        if quota is not None and existing is None:
            used = sum(SIZES.get(r['properties'].get('hardwareProfile', {}).get('vmSize'), 0)
                       for r in cloud.resources.values() if r['type'] == KINDS['virtualmachines']
                       and r['id'].lower().startswith(f'/subscriptions/{subscription.lower()}/'))
            if used + SIZES[size] > quota:
                raise arm_error(409, 'OperationNotAllowed', 'Operation could not be completed as '
                                'it results in exceeding approved Total Regional Cores quota. '
                                'Location: '
                                f"{resource['location']}, Current Limit: {quota}, Current Usage: "
                                f'{used}, Additional Required: {SIZES[size]}.')

    def _check_containerGroups(self, subscription: str, rid: str, resource: Dict[str, Any],
                               existing: Any) -> None:
        props = resource['properties']
        containers = props.get('containers') or []
        if not containers or not props.get('osType'):
            raise arm_error(400, 'InvalidRequestFormat', 'containers and osType are required')
        for container in containers:
            cprops = container.get('properties') or {}
            requests = ((cprops.get('resources') or {}).get('requests') or {})
            image = str(cprops.get('image') or '')
            if not re.fullmatch(r'[a-z0-9][a-z0-9./:_@-]*', image):
                raise arm_error(400, 'InvalidImageName', f"The image '{cprops.get('image')}' in "
                                f"container group '{resource['name']}' is invalid.")
            if re.split(r'[:@]', image, maxsplit=1)[0] not in REGISTRY:
                raise arm_error(400, 'InaccessibleImage', f"The image '{image}' in container "
                                f"group '{resource['name']}' is not accessible. Please check the "
                                'image and registry credential.')
            if not isinstance(requests.get('cpu'), (int, float)) or \
                    not isinstance(requests.get('memoryInGB'), (int, float)):
                raise arm_error(400, 'InvalidRequestFormat', 'resources.requests cpu and '
                                'memoryInGB are required')
        for subnet in props.get('subnetIds') or []:
            self._exists(subnet.get('id'), rid)
        quota = self.cloud.setting(subscription, 'quota_cores')
        if quota is not None and existing is None:
            def cores(group: Dict[str, Any]) -> float:
                return sum(float(((c.get('properties') or {}).get('resources') or {})
                                 .get('requests', {}).get('cpu') or 0)
                           for c in group['properties'].get('containers') or [])
            used = sum(cores(r) for r in self.cloud.resources.values()
                       if r['type'] == KINDS['containergroups'] and
                       r['id'].lower().startswith(f'/subscriptions/{subscription.lower()}/'))
            if used + cores(resource) > quota:
                raise arm_error(400, 'ContainerGroupQuotaReached', "Resource type "
                                "'Microsoft.ContainerInstance/containerGroups' container group "
                                f"quota 'StandardCores' exceeded in region "
                                f"'{resource['location']}'. Limit: '{quota}', Usage: "
                                f"'{used:g}' Requested: '{cores(resource):g}'.")

    # -- DELETE ------------------------------------------------------------------------------

    def _delete(self, subscription: str, rid: str, kind: str) -> Reply:
        cloud = self.cloud
        resource = cloud.resources.get(rid.lower())
        if resource is None:
            raise arm_error(404, 'ResourceNotFound', f"The Resource '{rid}' was not found.")
        users = [] if kind == 'virtualMachines' else cloud.users(rid)
        if users:
            code = {'networkInterfaces': 'NicInUse',
                    'publicIPAddresses': 'PublicIPAddressCannotBeDeleted',
                    'virtualNetworks': 'InUseSubnetCannotBeDeleted',
                    'subnets': 'InUseSubnetCannotBeDeleted'}.get(kind, 'InUse')
            raise arm_error(400, code, f'{rid} is in use by {users[0]} and cannot be deleted.')
        if kind == 'virtualMachines':
            disk = resource['properties']['storageProfile']['osDisk']
            if str(disk.get('deleteOption')).lower() == 'delete':
                cloud.resources.pop(disk['managedDisk']['id'].lower(), None)
            else:
                cloud.resources[disk['managedDisk']['id'].lower()].update(managedBy=None)
        low = rid.lower()
        for key in [k for k in cloud.resources if k == low or k.startswith(low + '/')]:
            del cloud.resources[key]
        headers = cloud.lro_headers(subscription)
        if 'Azure-AsyncOperation' in headers:
            headers['Location'] = cloud.operation(subscription)
        return 202, None, headers

    # -- the test's side -------------------------------------------------------------------

    def _peer(self, path: str, query: Dict[str, str]) -> Reply:
        if path == '/_peer/state':
            return 200, self.cloud.state(query.get('subscription', '')), {}
        if path == '/_peer/config' and self.command == 'POST':
            body = self._json()
            self.cloud.configure(str(body.pop('subscription', '')), **body)
            return 200, {'configured': True}, {}
        if path == '/_peer/group' and self.command == 'POST':
            body = self._json()
            self.cloud.add_group(str(body['subscription']), str(body['name']),
                                 str(body.get('location', 'westeurope')))
            return 200, {'made': True}, {}
        raise Answer(404, {'error': 'no such peer call'})


def make_ca_and_cert(folder: Path) -> Tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 and localhost signed by it, in
    ``folder``: (ca.pem, server.pem, server.key)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'occopus test CA')])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, '127.0.0.1')]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName('localhost'), x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / 'ca.pem', folder / 'server.pem', folder / 'server.key'
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class AzurePeer(ThreadedPeer):
    """The peer in a thread of this process (``with AzurePeer(cert, key) as peer: peer.url``)."""

    name = 'azurepeer'

    def __init__(self, cert: Path, key: Path, host: str = '127.0.0.1', port: int = 0,
                 verbose: bool = False) -> None:
        self.cloud = Cloud()
        super().__init__(type('PeerHandler', (Handler,), {'cloud': self.cloud,
                                                          'verbose': verbose}), host, port)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = self.cloud.base_url = f'https://{host}:{self.server.server_address[1]}'

    def release(self) -> None:
        self.cloud.release()


def main(argv: Optional[List[str]] = None) -> int:
    folder = Path(tempfile.mkdtemp(prefix='azurepeer-'))
    ca, cert, key = make_ca_and_cert(folder)
    return serve('A small Entra ID + ARM over HTTPS for trying the azure_vm and azure_aci '
                 'resource handlers.',
                 lambda host, port, verbose: AzurePeer(cert, key, host, port, verbose),
                 lambda peer: f'azurepeer listening on {peer.url}; its CA certificate is {ca}; '
                              f'client_id {CLIENT_ID}, client_secret {CLIENT_SECRET}; create '
                              'resource groups with POST /_peer/group {"subscription": S, '
                              '"name": G}', argv)


if __name__ == '__main__':
    sys.exit(main())
