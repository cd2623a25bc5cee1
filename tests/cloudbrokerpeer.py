"""A small CloudBroker platform for tests: the XML calls of the ``cloudbroker`` resource handler
over real HTTP on loopback.

No public emulator of the CloudBroker platform exists, so the tests carry this one.  It speaks
the shapes of the original Occopus' calls, plus a listing (an assumption: the handler finds the
instances of an infrastructure by their names in it):

* ``POST /instances.xml`` with an ``<instance>`` document (HTTP basic authentication): checks
  ``deployment_id`` (unknown: 404), ``instance_type_id`` and ``key_pair_id`` (unknown: 422),
  the account's quota (403); answers ``201`` with the new ``<instance>`` (its ``<id>``);
* ``GET /instances/<id>.xml``: the instance, ``starting`` for ``start_delay`` seconds, then
  ``running`` with its four addresses (``external-hostname``, ``external-ip-address``,
  ``internal-hostname``, ``internal-ip-address``: fake, never contacted);
* ``PUT /instances/<id>/stop``: ``stopping``, ``halted`` ``stop_delay`` seconds later; an
  instance that is stopping or halted already is refused with 422;
* ``GET /instances.xml``: every instance of the account, halted ones included.

Errors are Rails' ``<errors><error>...</error></errors>``; a wrong password answers 401.

Run it alone (users, the docs)::

    python tests/cloudbrokerpeer.py --port 8099

then point a ``cloudbroker`` resource at ``http://127.0.0.1:8099/`` with ``auth_data: {email:
demo@example.org, password: demo-password}``, ``deployment_id: dep-ubuntu-22`` and
``instance_type_id: it-small``.

Test knobs (``POST /_peer/config`` with a JSON object naming the ``email`` of the account it
applies to): ``start_delay``, ``stop_delay``, ``quota`` (live instances at most),
``create_delay`` (``POST`` makes the instance at once, answers that many seconds later),
``fail_after_create`` (the next N ``POST`` make the instance, then answer 503 as if the answer
were lost), ``faults`` (``{route: [status, ...]}``: the next calls of ``create``, ``show``,
``stop`` or ``list`` answer those statuses, nothing done), ``hostile`` (``{route: text}``:
that route answers 200 with this body, after doing its work), ``echo_password`` (a 401
quotes the password it was given).  ``POST /_peer/accounts`` (``email``, ``password``) adds an
account; ``GET /_peer/state?email=E`` lists its instances (the document each was created with,
parsed and raw), the calls counted, the faults served, and requests no route knew;
``POST /_peer/set_status`` (``id``, ``status``) changes an instance behind Occopus' back.
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
from xml.etree import ElementTree

from defusedxml.ElementTree import fromstring

from peerhttp import RoutedHandler, ThreadedPeer, serve

DEMO = ('demo@example.org', 'demo-password')
DEPLOYMENTS = {'dep-ubuntu-22': ('it-small', 'it-large'), 'dep-centos-7': ('it-small',)}
KEY_PAIRS = ('kp-demo',)
LIVE = ('starting', 'running')
DEFAULTS = {'start_delay': 0.2, 'stop_delay': 0.1, 'quota': None, 'create_delay': 0.0,
            'fail_after_create': 0, 'faults': {}, 'hostile': {}, 'echo_password': False}


class Reply(Exception):
    """An answer: status, body (XML text or bytes) and headers."""

    def __init__(self, status: int, body: Any = b'',
                 headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def error(status: int, *messages: str) -> Reply:
    root = ElementTree.Element('errors')
    for message in messages:
        ElementTree.SubElement(root, 'error').text = message
    return Reply(status, ElementTree.tostring(root, encoding='utf-8', xml_declaration=True))


class Platform:
    """The accounts, their instances and knobs (one lock for all)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accounts: Dict[str, str] = dict([DEMO])
        self.settings: Dict[str, Dict[str, Any]] = {}
        self.instances: Dict[str, Dict[str, Any]] = {}
        self.calls: Dict[str, Dict[str, int]] = {}
        self.served: Dict[str, int] = {}
        self.unrouted: List[str] = []
        self.counter = 0

    def setting(self, email: str, name: str) -> Any:
        return self.settings.get(email, {}).get(name, DEFAULTS[name])

    def configure(self, body: Dict[str, Any]) -> None:
        email = body.pop('email')
        unknown = set(body) - set(DEFAULTS)
        if unknown:
            raise Reply(400, json.dumps({'error': f'unknown knobs {sorted(unknown)}'}))
        with self.lock:
            self.settings.setdefault(email, {}).update(body)

    def fault(self, email: str, route: str) -> int:
        """The status queued for the next call of ``route``, or 0 (and counts the call)."""
        with self.lock:
            queued = self.settings.get(email, {}).get('faults', {}).get(route) or []
            if queued:
                self.served[email] = self.served.get(email, 0) + 1
                return int(queued.pop(0))
            counted = self.calls.setdefault(email, {})
            counted[route] = counted.get(route, 0) + 1
            return 0

    def settle(self, instance: Dict[str, Any]) -> None:
        """Move an instance along with time (starting -> running, stopping -> halted)."""
        now = time.time()
        if instance['status'] == 'starting' and now >= instance['running_at']:
            instance['status'] = 'running'
        if instance['status'] == 'stopping' and now >= instance['halted_at']:
            instance['status'] = 'halted'

    def view(self, instance: Dict[str, Any]) -> bytes:
        self.settle(instance)
        return ElementTree.tostring(self.element(instance), encoding='utf-8', xml_declaration=True)

    def element(self, instance: Dict[str, Any]) -> ElementTree.Element:
        root = ElementTree.Element('instance')
        running = instance['status'] == 'running'
        for key, value in (('id', instance['id']), ('name', instance['name']),
                           ('status', instance['status']),
                           ('deployment-id', instance['fields'].get('deployment_id')),
                           ('instance-type-id', instance['fields'].get('instance_type_id')),
                           ('created-at', instance['created_at']),
                           ('external-hostname', instance['external_hostname'] if running else ''),
                           ('external-ip-address', instance['external_ip'] if running else ''),
                           ('internal-hostname', instance['internal_hostname'] if running else ''),
                           ('internal-ip-address', instance['internal_ip'] if running else '')):
            ElementTree.SubElement(root, key).text = value or ''
        return root

    # -- the platform's calls --------------------------------------------------------------

    def create(self, email: str, raw: bytes) -> Tuple[Dict[str, Any], float, bool]:
        try:
            root = fromstring(raw, forbid_dtd=True)
        except Exception as exc:  # noqa: BLE001 - any refusal of the parser
            raise error(400, f'The request body is not valid XML: {type(exc).__name__}') from None
        if root.tag != 'instance':
            raise error(400, f'Expected an <instance> document, got <{root.tag}>')
        fields = {child.tag: child.text or '' for child in root}
        deployment, size = fields.get('deployment_id', ''), fields.get('instance_type_id', '')
        if deployment not in DEPLOYMENTS:
            raise error(404, f"Deployment with id '{deployment}' could not be found")
        if size not in DEPLOYMENTS[deployment]:
            raise error(422, f"Instance type '{size}' is not available for deployment "
                             f"'{deployment}'")
        if fields.get('key_pair_id') and fields['key_pair_id'] not in KEY_PAIRS:
            raise error(422, f"Key pair '{fields['key_pair_id']}' does not exist")
        with self.lock:
            quota = self.setting(email, 'quota')
            live = [i for i in self.instances.values() if i['owner'] == email
                    and (self.settle(i) or i['status'] in LIVE)]
            if quota is not None and len(live) >= quota:
                raise error(403, f'Instance quota exceeded: the account may run at most {quota} '
                                 'instances')
            self.counter += 1
            number = self.counter
            instance_id = str(uuid.uuid4())
            instance = {
                'id': instance_id, 'owner': email, 'name': fields.get('name', ''), 'fields': fields,
                'raw': raw.decode('utf-8', 'replace'), 'status': 'starting',
                'created_at': time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime()) + f'.{number:06d}Z',
                'running_at': time.time() + float(self.setting(email, 'start_delay')),
                'halted_at': 0.0,
                'external_hostname': f'vm-{number}.platform.example',
                'external_ip': f'203.0.113.{number % 250 + 1}',
                'internal_hostname': f'vm-{number}.internal',
                'internal_ip': f'10.1.{number // 250}.{number % 250 + 1}'}
            self.instances[instance_id] = instance
            lost = self.setting(email, 'fail_after_create') > 0
            if lost:
                self.settings[email]['fail_after_create'] -= 1
            return instance, float(self.setting(email, 'create_delay')), lost

    def owned(self, email: str, instance_id: str) -> Dict[str, Any]:
        instance = self.instances.get(instance_id)
        if instance is None or instance['owner'] != email:
            raise error(404, f"Instance with id '{instance_id}' could not be found")
        return instance

    def stop(self, email: str, instance_id: str) -> bytes:
        with self.lock:
            instance = self.owned(email, instance_id)
            self.settle(instance)
            if instance['status'] not in LIVE:
                raise error(422, f"Instance '{instance_id}' is already {instance['status']}")
            instance['status'] = 'stopping'
            instance['halted_at'] = time.time() + float(self.setting(email, 'stop_delay'))
            return self.view(instance)

    def listing(self, email: str) -> bytes:
        with self.lock:
            root = ElementTree.Element('instances', {'type': 'array'})
            for instance in self.instances.values():
                if instance['owner'] == email:
                    self.settle(instance)
                    root.append(self.element(instance))
            return ElementTree.tostring(root, encoding='utf-8', xml_declaration=True)

    def state(self, email: str) -> Dict[str, Any]:
        with self.lock:
            instances = []
            for instance in self.instances.values():
                if instance['owner'] != email:
                    continue
                self.settle(instance)
                shown = {k: v for k, v in instance.items() if k not in ('owner',)}
                cloud_init = instance['fields'].get('cloud-init')
                if cloud_init is not None:
                    shown['cloud_init'] = base64.b64decode(cloud_init).decode('utf-8', 'replace')
                instances.append(shown)
            return {'instances': instances, 'calls': dict(self.calls.get(email, {})),
                    'served_faults': self.served.get(email, 0), 'unrouted': list(self.unrouted)}


class Handler(RoutedHandler):
    protocol_version = 'HTTP/1.1'
    platform: Platform
    verbose = False

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        if self.verbose:
            super().log_message(format, *args)


    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get('Content-Length') or 0))

    def send(self, reply: Reply) -> None:
        data = reply.body if isinstance(reply.body, bytes) else str(reply.body).encode('utf-8')
        self.send_response(reply.status)
        kind = 'application/json' if self.path.startswith('/_peer/') else 'application/xml'
        self.send_header('Content-Type', reply.headers.pop('Content-Type', kind))
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            for verb, pattern, action in ROUTES:
                match = pattern.fullmatch(url.path)
                if verb == method and match:
                    reply = action(self, query, **match.groupdict())
                    break
            else:
                self.body()
                with self.platform.lock:
                    self.platform.unrouted.append(f'{method} {self.path}')
                reply = error(404, f'No route matches [{method}] "{url.path}"')
        except Reply as answer:
            reply = answer
        self.send(reply)

    # -- the platform ----------------------------------------------------------------------

    def account(self) -> str:
        header = self.headers.get('Authorization') or ''
        try:
            email, _, password = base64.b64decode(header[len('Basic '):]).decode().partition(':')
        except ValueError:
            email = password = ''
        known = self.platform.accounts.get(email)
        if not header.startswith('Basic ') or not email or known != password:
            self.body()
            said = 'Invalid email or password'
            if email and self.platform.setting(email, 'echo_password'):
                said += f" (email {email}, password '{password}')"
            raise error(401, said)
        return email

    def platform_call(self, route: str, work: Callable[[str], bytes], status: int = 200) -> Reply:
        email = self.account()
        fault = self.platform.fault(email, route)
        if fault:
            self.body()
            raise error(fault, 'Service temporarily unavailable' if fault >= 500 else
                        'Rate limit exceeded, slow down', )
        answer = work(email)
        hostile = self.platform.setting(email, 'hostile').get(route)
        return Reply(status, hostile if hostile is not None else answer)

    def create(self, query: Dict[str, str]) -> Reply:
        holder: Dict[str, Any] = {}

        def work(email: str) -> bytes:
            instance, delay, lost = self.platform.create(email, self.body())
            holder.update(delay=delay, lost=lost)
            with self.platform.lock:
                return self.platform.view(instance)
        reply = self.platform_call('create', work, 201)
        time.sleep(holder['delay'])
        if holder['lost']:
            raise error(503, 'Service temporarily unavailable')
        return reply

    def show(self, query: Dict[str, str], instance_id: str) -> Reply:
        def work(email: str) -> bytes:
            with self.platform.lock:
                return self.platform.view(self.platform.owned(email, instance_id))
        return self.platform_call('show', work)

    def stop(self, query: Dict[str, str], instance_id: str) -> Reply:
        self.body()
        return self.platform_call('stop', lambda email: self.platform.stop(email, instance_id))

    def list(self, query: Dict[str, str]) -> Reply:
        return self.platform_call('list', self.platform.listing)

    # -- the test's side -------------------------------------------------------------------

    def json_body(self) -> Dict[str, Any]:
        try:
            body = json.loads(self.body() or b'{}')
        except ValueError:
            raise Reply(400, json.dumps({'error': 'not JSON'})) from None
        if not isinstance(body, dict):
            raise Reply(400, json.dumps({'error': 'not a JSON object'}))
        return body

    def peer_accounts(self, query: Dict[str, str]) -> Reply:
        body = self.json_body()
        with self.platform.lock:
            self.platform.accounts[str(body['email'])] = str(body['password'])
        return Reply(200, b'{}')

    def peer_config(self, query: Dict[str, str]) -> Reply:
        self.platform.configure(self.json_body())
        return Reply(200, b'{}')

    def peer_state(self, query: Dict[str, str]) -> Reply:
        return Reply(200, json.dumps(self.platform.state(query.get('email', DEMO[0]))))

    def peer_set_status(self, query: Dict[str, str]) -> Reply:
        body = self.json_body()
        with self.platform.lock:
            instance = self.platform.instances[str(body['id'])]
            instance['status'] = str(body['status'])
            instance['running_at'] = instance['halted_at'] = float('inf')
        return Reply(200, b'{}')


UUID = r'[^/]+'
ROUTES = [(verb, re.compile(pattern), action) for verb, pattern, action in [
    ('POST', r'/instances\.xml', Handler.create),
    ('GET', r'/instances\.xml', Handler.list),
    ('GET', rf'/instances/(?P<instance_id>{UUID})\.xml', Handler.show),
    ('PUT', rf'/instances/(?P<instance_id>{UUID})/stop', Handler.stop),
    ('POST', r'/_peer/accounts', Handler.peer_accounts),
    ('POST', r'/_peer/config', Handler.peer_config),
    ('GET', r'/_peer/state', Handler.peer_state),
    ('POST', r'/_peer/set_status', Handler.peer_set_status),
]]


class CloudBrokerPeer(ThreadedPeer):
    """The peer in a thread of this process (``with CloudBrokerPeer() as peer: peer.url``)."""

    name = 'cloudbrokerpeer'

    def __init__(self, host: str = '127.0.0.1', port: int = 0, verbose: bool = False) -> None:
        self.platform = Platform()
        super().__init__(type('PeerHandler', (Handler,), {'platform': self.platform,
                                                          'verbose': verbose}), host, port)


def main(argv: Optional[List[str]] = None) -> int:
    return serve('A small CloudBroker platform (its XML instance calls) for trying the '
                 'cloudbroker resource handler.', CloudBrokerPeer,
                 lambda peer: f'cloudbrokerpeer listening on {peer.url}/ (email {DEMO[0]}, '
                              f'password {DEMO[1]}; deployments: {", ".join(DEPLOYMENTS)})',
                 argv)


if __name__ == '__main__':
    sys.exit(main())
