"""OpenStack Nova (Keystone v3 authentication), with python-novaclient and keystoneauth1.

One keystoneauth session per Keystone URL, project and credentials is made on first use and
shared by every call and thread of the run (:meth:`NovaHandler.make_client`); novaclient
talks to Nova through it at the fixed microversion :data:`MICROVERSION`, and the few Neutron
(floating IPs, ports, networks), Cinder (boot volumes) and Glance (image size) calls go through
the same session as plain REST with an ``endpoint_filter``.  Neither layer retries: the engine
retries what :class:`~occo.errors.TransientCloudError` says may pass.

What a node instance is made of, and how it is found again:

* the server, with the metadata ``occopus_infra_id``, ``occopus_node_id`` and ``occopus_node``;
* with ``volume_size``: a bootable Cinder volume made from the image first (same metadata,
  plus ``occopus_persist`` when ``volume_persist`` is true), which the server boots from;
* with ``floating_ip`` or ``floating_ip_pool``: a Neutron floating IP allocated right after
  the server (its ``description`` is ``occopus:<infra_id>:<node_id>``), and associated with
  the server's port by :meth:`NovaHandler.states` once the server is ACTIVE: the create call
  does not wait for the boot, and the instance reads as pending until the address is on.

Dropping deletes the server, releases the floating IP and deletes the volume (never a
persistent one, neither by drop nor by the orphan sweep of ``occopus-destroy``).
"""
from __future__ import annotations

import base64
import json
import math
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import parse_qs, urlencode, urlsplit

from occo.errors import AuthError, CloudError, TransientCloudError
from occo.instances import Instance
from occo.plugins.http import REDIRECTS, never_sent, url_part
from occo.plugins.resources.base import (
    FAILED, PENDING, RUNNING, SHUTDOWN, UNKNOWN, CreateRequest, Created, Found, ResourceHandler,
    ResourceStatus, resource_keys)
from occo.plugins.resources.common import (
    META_INFRA_ID, META_NODE, META_NODE_ID, Tags, as_dict, as_list, one_line, truthy)
from occo.redact import MASK, excerpt, mask_url, printable
from occo.schema import Problem, expect_list, is_int

#: The Nova API microversion asked for: every Nova since Liberty has it, and nothing used here
#: needs a later one (later ones would also require ``networks`` on every boot).
MICROVERSION = '2.1'
CONNECT_TIMEOUT = 10.0  # seconds
READ_TIMEOUT = 60.0     # seconds
POOL_CONNECTIONS = 50   # more than the engine's calls at once per endpoint, so none is discarded
VOLUME_WAIT = 600.0     # seconds a new volume may take to become available (create_timeout cuts it)
VOLUME_POLL = (0.5, 5.0)  # first and longest pause between looks at a new volume
UNDO_WAIT = 30.0        # seconds an undone create waits for its volume to be detached
ASSOCIATE_PER_CALL = 20  # floating IPs associated by one states call (one update each)
MAX_PAGES = 100         # pages of one listing (of up to 1000 items each, as Nova pages)
USER_DATA_LIMIT = 65535  # bytes of base64 Nova takes
MESSAGE_LIMIT = 300     # characters of a cloud's message quoted
BODY_LIMIT = 100_000    # characters of an error body kept to find its message in (masked, then cut)

META_PERSIST = 'occopus_persist'
SERVER, VOLUME, FLOATING_IP = 'server', 'volume', 'floating_ip'  # kinds of what drop is given
KIND_FIELDS = {'server': 'server_id', 'volume': 'volume_id', 'floating IP': 'floating_ip_id'}

PENDING_STATUSES = frozenset(('BUILD', 'REBUILD', 'RESIZE', 'VERIFY_RESIZE', 'MIGRATING'))
SHUTDOWN_STATUSES = {
    'DELETED': 'the server was deleted', 'SOFT_DELETED': 'the server was (soft) deleted',
    'SHUTOFF': 'the server is shut off', 'SUSPENDED': 'the server is suspended',
    'PAUSED': 'the server is paused', 'SHELVED': 'the server is shelved',
    'SHELVED_OFFLOADED': 'the server is shelved (offloaded)'}
VOLUME_BUSY = frozenset(('creating', 'downloading', 'attaching', 'detaching', 'in-use', 'reserved',
                         'maintenance', 'uploading', 'deleting'))


def keystone_url(endpoint: str) -> str:
    """The Keystone v3 URL of an ``endpoint``: ``/v3`` appended unless it ends in ``/vN``."""
    url = endpoint.strip()
    last = url.rstrip('/').rsplit('/', 1)[-1]
    if last[:1] == 'v' and last[1:].isdigit():
        return url.rstrip('/')
    return url.rstrip('/') + '/v3'



@dataclass(frozen=True)
class Target:
    """Where a session authenticates: the Keystone v3 URL, the project and the user's domain."""

    auth_url: str
    project_id: str
    user_domain_name: str


@dataclass(frozen=True)
class Secret:
    """The credentials of one auth-data entry, checked (never printed: the repr hides them)."""

    kind: str  # 'password' or 'application_credential'
    user: str = field(repr=False)
    secret: str = field(repr=False)

    @classmethod
    def of(cls, auth: Mapping[str, Any], where: str) -> 'Secret':
        kind = auth.get('type')
        if kind is None:
            if auth.get('username') is None or auth.get('password') is None:
                raise AuthError(f'The nova credentials for {where} need username and password '
                                '(or type: application_credential with id and secret)')
            return cls('password', str(auth['username']), str(auth['password']))
        if kind == 'application_credential':
            if auth.get('id') is None or auth.get('secret') is None:
                raise AuthError(f'The nova application credential for {where} needs id and secret')
            return cls('application_credential', str(auth['id']), str(auth['secret']))
        raise AuthError(f'The nova credentials for {where} have a type Occopus does not support '
                        '(VOMS proxies were dropped in Occopus 1.10): use username and password, '
                        'or type: application_credential with id and secret')

    def hide(self, text: str) -> str:
        return text.replace(self.secret, MASK) if self.secret else text


@dataclass
class Spec:
    """The keys of a rendered ``nova`` resource section, typed."""

    endpoint: str
    target: Target
    region: Optional[str]
    image_id: str
    flavor: str
    network_id: Optional[str] = None
    key_name: Optional[str] = None
    security_groups: List[str] = field(default_factory=list)
    server_name: Optional[str] = None
    floating_ip: bool = False
    floating_ip_pool: Optional[str] = None
    volume_size: Optional[int] = None
    volume_persist: bool = False

    @classmethod
    def of(cls, section: Mapping[str, Any]) -> 'Spec':
        def text(key: str) -> Optional[str]:
            value = section.get(key)
            return None if value is None or value == '' else str(value)
        endpoint = str(section.get('endpoint') or '')
        if not endpoint.startswith(('http://', 'https://')):
            raise CloudError(f'nova at {printable(mask_url(endpoint))}: the endpoint must be the '
                             'http(s) URL of Keystone, such as https://keystone.example.org:5000/v3')
        size = section.get('volume_size')
        try:
            size = None if size is None else int(size)
        except (TypeError, ValueError):
            raise CloudError(f'nova at {printable(mask_url(endpoint))}: volume_size must be a whole '
                             f'number of GB, not {excerpt(size)}') from None
        return cls(
            endpoint=endpoint,
            target=Target(keystone_url(endpoint), str(section.get('project_id') or ''),
                          text('user_domain_name') or 'Default'),
            region=text('region_name'), image_id=str(section.get('image_id') or ''),
            flavor=str(section.get('flavor_name') or ''), network_id=text('network_id'),
            key_name=text('key_name'),
            security_groups=[str(g) for g in section.get('security_groups') or []],
            server_name=text('server_name'),
            floating_ip='floating_ip' in section or 'floating_ip_pool' in section,
            floating_ip_pool=text('floating_ip_pool'),
            volume_size=size,
            volume_persist=truthy(section.get('volume_persist', False)))


@dataclass
class Made:
    """What a create made so far (undone if a later step fails); becomes ``Created.extra``."""

    server_id: Optional[str] = None
    volume_id: Optional[str] = None
    volume_persist: bool = False
    floating_ip_id: Optional[str] = None
    floating_ip: Optional[str] = None

    def extra(self) -> Dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != 'server_id' and v not in (None, False)}


class Refusal(Exception):
    """Something the cloud's answers rule out (no such flavor...): a permanent error, worded
    by the handler with the endpoint."""


class CredentialsRefused(CloudError):
    """Keystone refused the credentials (HTTP 401)."""


class Answer(Exception):
    """An HTTP error answer of a REST call made through the session."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f'{message} (HTTP {status})')
        self.status, self.message = status, message


def _said(body: Any, fallback: str) -> str:
    """The message of an OpenStack error body (Nova, Cinder, Neutron, Keystone, Glance)."""
    if isinstance(body, dict):
        for value in [body.get('NeutronError'), body.get('error')] + list(body.values()):
            if isinstance(value, dict) and isinstance(value.get('message'), str):
                return value['message']
        if isinstance(body.get('message'), str):
            return body['message']
    return fallback


def _addresses(server: Mapping[str, Any]) -> Tuple[List[str], Optional[str]]:
    """The addresses of a server, floating ones first; and its first fixed address."""
    floating, fixed = [], []
    for entries in as_dict(server.get('addresses')).values():
        for entry in as_list(entries):
            address = as_dict(entry).get('addr')
            if not isinstance(address, str) or not address or len(address) > 64:
                continue
            kind = as_dict(entry).get('OS-EXT-IPS:type')
            (floating if kind == 'floating' else fixed).append(printable(address))
    ordered = list(dict.fromkeys(floating + fixed))
    return ordered, (fixed[0] if fixed else None)


def _no_redirect(response: Any, *args: Any, **kwargs: Any) -> Any:
    """A ``requests`` response hook: a redirect answer is an error, never followed."""
    if response.status_code in REDIRECTS:
        where = response.headers.get('Location')
        raise Answer(response.status_code, 'the cloud answered with a redirect' + (
            f' to {excerpt(where, 200)}' if isinstance(where, str) else '') + ', which Occopus does not '
            'follow (it would carry the token elsewhere): give the URL it points to as the endpoint, '
            'or fix the service catalog')
    return response


class Cloud:
    """One authenticated keystoneauth session (one Keystone, project and credentials) and the
    novaclient clients on it, one per region; made once, shared by every thread."""

    def __init__(self, target: Target, secret: Secret) -> None:
        import requests
        from keystoneauth1 import session as ks_session
        from keystoneauth1.identity import v3
        if secret.kind == 'application_credential':
            auth = v3.ApplicationCredential(auth_url=target.auth_url, application_credential_id=secret.user,
                                            application_credential_secret=secret.secret)
        else:
            auth = v3.Password(auth_url=target.auth_url, username=secret.user, password=secret.secret,
                               project_id=target.project_id or None,
                               user_domain_name=target.user_domain_name)
        http = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=POOL_CONNECTIONS,
                                                pool_maxsize=POOL_CONNECTIONS, max_retries=0)
        http.mount('http://', adapter)
        http.mount('https://', adapter)
        http.hooks['response'].append(_no_redirect)
        # redirects are never followed (keystoneauth would send the token, or the password,
        # to wherever they point): novaclient's calls included, since they use this session
        self.session = ks_session.Session(auth=auth, session=http, user_agent='occopus', redirect=False)
        # keystoneauth hands its timeout to requests as it is: connect and read bounded apart
        self.session.timeout = (CONNECT_TIMEOUT, READ_TIMEOUT)
        self.secret = secret
        self._novas: Dict[Optional[str], Any] = {}
        self._known: Dict[Tuple[str, Optional[str], Optional[str]], str] = {}  # flavors, pools
        self._looking: Dict[Tuple[str, Optional[str], Optional[str]], threading.Lock] = {}
        self._lock = threading.Lock()

    def nova(self, region: Optional[str]) -> Any:
        with self._lock:
            if region not in self._novas:
                from novaclient import client as nova_client
                self._novas[region] = nova_client.Client(
                    MICROVERSION, session=self.session, region_name=region, endpoint_type='public',
                    connect_retries=0)
            return self._novas[region]

    def call(self, service: str, region: Optional[str], method: str, path: str,
             body: Any = None, gone_ok: bool = False) -> Any:
        """A REST call to ``service`` (``compute``, ``network``, ``volumev3``, ``image``) through
        the session; the JSON answer ({} if none, or None for a 404 with ``gone_ok``).

        :raises Answer: for any other HTTP error.
        """
        if service == 'compute':  # with novaclient's microversion headers
            from novaclient import exceptions as nova_exceptions
            client = self.nova(region).client
            try:
                _, answer = client.request(path, method, redirect=False,
                                           **({'body': body} if body is not None else {}))
            except nova_exceptions.NotFound:
                if gone_ok:
                    return None
                raise
            return answer if isinstance(answer, dict) else {}
        response = self.session.request(
            path, method, json=body, raise_exc=False, redirect=False, headers={'Accept': 'application/json'},
            endpoint_filter={'service_type': service, 'interface': 'public', 'region_name': region})
        try:
            answer = response.json() if response.content else {}
        except (ValueError, RecursionError):  # not JSON, or nested too deep to parse
            answer = None
        if response.status_code == 404 and gone_ok:
            return None
        if response.status_code >= 400:
            raise Answer(response.status_code, _said(answer, response.text[:BODY_LIMIT] or response.reason or ''))
        if not isinstance(answer, dict):
            raise Answer(response.status_code, 'the answer is not a JSON object')
        return answer

    def offers(self, service: str, region: Optional[str]) -> bool:
        """Whether the catalog has a public ``service`` endpoint in ``region`` (a cloud
        without Cinder or Neutron has no volumes or floating IPs to look for)."""
        from keystoneauth1 import exceptions as ks
        try:
            return bool(self.session.get_endpoint(service_type=service, interface='public',
                                                  region_name=region))
        except ks.EndpointNotFound:
            return False

    def listing(self, service: str, region: Optional[str], path: str, key: str) -> Iterator[Dict[str, Any]]:
        """Every item of a (paginated) listing: pages are followed by their ``marker`` only, so
        a next link can never send the token elsewhere."""
        query: Dict[str, str] = {}
        for _ in range(MAX_PAGES):
            joint = '&' if '?' in path else '?'
            answer = self.call(service, region, 'GET', path + (f'{joint}{urlencode(query)}' if query else ''))
            items = as_list(answer.get(key))
            for item in items:
                if isinstance(item, dict) and isinstance(item.get('id'), str):
                    yield item
            after = [link for link in as_list(answer.get(f'{key}_links'))
                     if as_dict(link).get('rel') == 'next' and isinstance(link.get('href'), str)]
            if not items or not after:
                return
            try:
                given = parse_qs(urlsplit(after[0]['href']).query)
            except ValueError:
                raise Refusal(f"the next page of the {key} is a link that does not parse: "
                              f"{excerpt(after[0]['href'])}") from None
            marker = (given.get('marker') or [None])[-1]
            if not marker or marker == query.get('marker'):
                return
            query = {k: v[-1] for k, v in given.items() if k in ('marker', 'limit')}
        raise Refusal(f'listing {key} took more than {MAX_PAGES} pages')

    def _once(self, key: Tuple[str, Optional[str], Optional[str]], look_up: Callable[[], str]) -> str:
        """``look_up()`` once per run for ``key`` (threads asking at the same time wait for
        the first one's answer)."""
        with self._lock:
            if key in self._known:
                return self._known[key]
            busy = self._looking.setdefault(key, threading.Lock())
        with busy:
            with self._lock:
                if key in self._known:
                    return self._known[key]
            value = look_up()
            with self._lock:
                self._known[key] = value
            return value

    def flavor_id(self, region: Optional[str], flavor: str) -> str:
        """The id of the flavor named (or identified) ``flavor``."""
        return self._once(('flavor', region, flavor), lambda: self._flavor_id(region, flavor))

    def _flavor_id(self, region: Optional[str], flavor: str) -> str:
        flavors = list(self.listing('compute', region, '/flavors/detail', 'flavors'))
        matches = [f for f in flavors if f.get('id') == flavor] or \
            [f for f in flavors if f.get('name') == flavor]
        if not matches:  # a private flavor is not listed, but can be asked for by id
            found = self.call('compute', region, 'GET', f'/flavors/{url_part(flavor)}', gone_ok=True)
            matches = [found['flavor']] if found and isinstance(as_dict(found.get('flavor')).get('id'), str) else []
        if not matches:
            names = ', '.join(sorted(one_line(f.get('name'), 40) for f in flavors if f.get('name')))[:300]
            raise Refusal(f"there is no flavor {excerpt(flavor)} (flavor_name takes a flavor's name "
                          f'or id; the cloud has: {names or "none"})')
        if len(matches) > 1:
            raise Refusal(f'flavor_name {excerpt(flavor)} names {len(matches)} flavors: give its id')
        return str(matches[0]['id'])

    def external_network(self, region: Optional[str], pool: Optional[str]) -> str:
        """The id of the external network called (or identified) ``pool``, or of the first one."""
        return self._once(('pool', region, pool), lambda: self._external_network(region, pool))

    def _external_network(self, region: Optional[str], pool: Optional[str]) -> str:
        networks = [n for n in self.listing('network', region, '/v2.0/networks?router%3Aexternal=True', 'networks')
                    if n.get('router:external', True)]
        if pool is None:
            matches = networks[:1]
        else:
            matches = [n for n in networks if n['id'] == pool] or [n for n in networks if n.get('name') == pool]
        if not matches:
            names = ', '.join(one_line(n.get('name') or n['id'], 40) for n in networks)[:300]
            raise Refusal(f'no external network {excerpt(pool)} to allocate a floating IP from '
                          f'(floating_ip_pool takes the name or id of one of: {names or "none"})'
                          if pool else 'the cloud has no external network to allocate a floating IP from')
        return str(matches[0]['id'])


class NovaHandler(ResourceHandler):
    type = 'nova'
    needs_credentials = True
    noun = 'server'
    buildable = True
    keys = resource_keys(
        required=('endpoint', 'project_id', 'image_id', 'flavor_name'),
        optional=('user_domain_name', 'region_name', 'network_id', 'server_name', 'key_name',
                  'security_groups', 'floating_ip', 'floating_ip_pool', 'volume_size',
                  'volume_persist', 'tenant_name', 'name'))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield from super().validate(section)
        yield expect_list(section, 'security_groups')
        if 'volume_size' in section:
            value = section['volume_size']
            try:
                size = int(value) if not isinstance(value, bool) and (
                    is_int(value) or isinstance(value, str)) else None
            except ValueError:
                size = None
            if size is None:
                yield Problem(f'Could not convert volume_size value "{value}" to integer! '
                              '(expected a whole number of GB, 0 = size of the image)', ('volume_size',))
            elif size < 0:
                yield Problem('Negative numbers for volume_size are prohibited! '
                              '(expected 0 or more GB)', ('volume_size',))

    # -- clients and errors ----------------------------------------------------------------

    def make_client(self, endpoint: Any, credentials: Optional[Mapping[str, Any]]) -> Cloud:
        assert isinstance(endpoint, Target) and credentials is not None
        return Cloud(endpoint, Secret(**credentials))

    def _cloud(self, section: Mapping[str, Any]) -> Tuple[Cloud, Spec]:
        """The shared session for a resource section, and the section's keys."""
        spec = Spec.of(section)
        secret = Secret.of(self.credentials(section), spec.endpoint)
        return self.client(spec.target, asdict(secret)), spec

    @staticmethod
    def _section(instance: Instance) -> Mapping[str, Any]:
        """The resource section to reach an instance's cloud with: its own, or -- for a record
        matched to a resource through its tags before its section was stored -- the one
        :meth:`find` found it with."""
        if instance.resource.get('endpoint'):
            return instance.resource
        return as_dict(instance.extra.get('section')) or instance.resource

    def _say(self, section: Mapping[str, Any], cloud: Optional[Cloud], said: str) -> str:
        return self.cloud_said(section, cloud.secret.hide(said) if cloud else said)

    @contextmanager
    def _errors(self, section: Mapping[str, Any], cloud: Optional[Cloud], doing: str,
                busy: bool = False) -> Iterator[None]:
        """The SDKs' exceptions as ours: one line naming the endpoint, no secret, transient
        where trying again may help (with ``busy``, a 409 Conflict too: a resource in the middle
        of a task cannot be deleted yet), ``unsent`` when the request never left.  Anything
        else a hostile answer may provoke in the SDKs or here becomes a :class:`CloudError`."""
        from keystoneauth1 import exceptions as ks
        from novaclient import exceptions as nova_exceptions
        secret = cloud.secret if cloud else None
        try:
            yield
        except (CloudError, AuthError):
            raise
        except Refusal as exc:
            raise CloudError(self._say(section, cloud, f'{doing}: {one_line(exc, 600, secret)}')) from None
        except Answer as exc:
            raise self._refused(section, cloud, doing, exc.status, exc.message, busy) from None
        except nova_exceptions.ClientException as exc:
            code = exc.code if isinstance(exc.code, int) else 0
            raise self._refused(section, cloud, doing, code, getattr(exc, 'message', '') or str(exc),
                                busy) from None
        except ks.HttpError as exc:
            raise self._refused(section, cloud, doing, exc.http_status or 0, exc.message or '', busy) from None
        except ks.EndpointNotFound as exc:
            raise CloudError(self._say(section, cloud, f'{doing}: the service catalog has no such endpoint '
                                                       f'(check region_name): {one_line(exc, secret=secret)}')) from None
        except ks.SSLError as exc:
            raise CloudError(self._say(section, cloud, f'{doing}: TLS failed: {one_line(exc, secret=secret)}')) from None
        except ks.ConnectionError as exc:
            unsent = never_sent(exc)
            raise TransientCloudError(self._say(section, cloud, f'{doing}: cannot reach the cloud: '
                                                                f'{one_line(exc, secret=secret)}'),
                                      unsent=unsent) from None
        except ks.ClientException as exc:
            raise CloudError(self._say(section, cloud, f'{doing}: {one_line(exc, secret=secret)}')) from None
        except Exception as exc:  # noqa: BLE001 - a hostile answer must not escape as a traceback
            raise CloudError(self._say(section, cloud, f'{doing}: the answer could not be used '
                                                       f'({type(exc).__name__}: {one_line(exc, secret=secret)})')) from None

    def _refused(self, section: Mapping[str, Any], cloud: Optional[Cloud], doing: str, status: int,
                 message: str, busy: bool = False) -> CloudError:
        message = one_line(message, secret=cloud.secret if cloud else None)
        if status == 401:
            target = Spec.of(section).target
            if cloud is not None and cloud.secret.kind == 'application_credential':
                said = 'the application credential of auth_data.yaml: check its id and secret'
            else:
                said = (f'the credentials of auth_data.yaml for project {excerpt(target.project_id, 40)} '
                        f'(user domain {excerpt(target.user_domain_name, 40)}): check them')
            return CredentialsRefused(self._say(
                section, cloud, f'{doing}: authentication failed (HTTP 401): Keystone refused {said}'))
        if status in (403, 413) and (status == 413 or 'quota' in message.lower()):
            return CloudError(self._say(section, cloud, f'{doing}: quota exceeded (HTTP {status}): {message}'))
        said = f'{doing}: {message or "no message"} (HTTP {status or "error"})'
        if status in (408, 429) or status >= 500 or (busy and status == 409):
            return TransientCloudError(self._say(section, cloud, said))
        return CloudError(self._say(section, cloud, said))

    # -- create ----------------------------------------------------------------------------

    def create(self, request: CreateRequest) -> Created:
        """Boot volume (if asked), server, floating IP (if asked).  ``POST`` is not idempotent:
        after a transient failure of a create call, and whenever the engine calls again with the
        same request (``request.attempts > 1``), what the node instance's tags find is taken
        (the oldest one; duplicates are deleted) rather than made a second time."""
        section = request.resource
        cloud, spec = self._cloud(section)
        tags = Tags(request.infra_id, request.node_id, request.node)
        user_data = getattr(request.context, 'user_data', None)
        if user_data is not None and len(base64.b64encode(user_data.encode())) > USER_DATA_LIMIT:
            raise CloudError(self._say(section, cloud, f'the user data takes {len(user_data.encode())} '
                                                       f'bytes; Nova takes at most {USER_DATA_LIMIT} bytes of base64'))
        made = Made(volume_persist=spec.volume_persist)
        unsure = False  # a server may exist that the create could not find (its volume is in use)
        try:
            if request.attempts > 1:
                self._earlier(section, cloud, spec, tags, made)
            if made.server_id is None:
                with self._errors(section, cloud, 'looking up the flavor'):
                    flavor = cloud.flavor_id(spec.region, spec.flavor)
                if spec.volume_size is not None:
                    self._make_volume(request, cloud, spec, tags, made)
                self._given_up(request)
                try:
                    with self._errors(section, cloud, 'creating the server'):
                        server = cloud.nova(spec.region).servers.create(
                            spec.server_name or request.vm_name,
                            None if made.volume_id else spec.image_id, flavor, meta=tags.metadata(),
                            userdata=user_data, key_name=spec.key_name,
                            security_groups=spec.security_groups or None,
                            nics=[{'net-id': spec.network_id, 'v4-fixed-ip': ''}] if spec.network_id else None,
                            block_device_mapping_v2=[{
                                'uuid': made.volume_id, 'source_type': 'volume', 'destination_type': 'volume',
                                'boot_index': 0, 'delete_on_termination': False}] if made.volume_id else None)
                        server_id = getattr(server, 'id', None)
                        if not isinstance(server_id, str) or not server_id:
                            raise Refusal(f'Nova made a server without an id ({excerpt(server_id)})')
                    made.server_id = server_id
                except TransientCloudError as exc:
                    unsure = not exc.unsent
                    made.server_id = self._lost(section, cloud, spec.region, exc, 'server',
                                                lambda: self._servers(cloud, spec.region, tags))['id']
                    unsure = False
            if spec.floating_ip and made.floating_ip_id is None:
                self._make_floating_ip(section, cloud, spec, tags, made)
        except BaseException:
            self._undo(section, cloud, spec.region, made, 0.0 if unsure else UNDO_WAIT)
            raise
        return Created(made.server_id, extra=made.extra(), state=PENDING)

    # what the tags of a node instance find (one listing each)

    @staticmethod
    def _servers(cloud: Cloud, region: Optional[str], tags: Tags) -> List[Dict[str, Any]]:
        return _oldest_first(s for s in cloud.listing('compute', region, '/servers/detail', 'servers')
                             if _tagged(s, tags))

    @staticmethod
    def _volumes(cloud: Cloud, region: Optional[str], tags: Tags) -> List[Dict[str, Any]]:
        return _oldest_first(v for v in cloud.listing('volumev3', region, '/volumes/detail', 'volumes')
                             if _tagged(v, tags) and v.get('status') not in ('deleting', 'error_deleting'))

    @staticmethod
    def _floating_ips(cloud: Cloud, region: Optional[str], tags: Tags) -> List[Dict[str, Any]]:
        path = '/v2.0/floatingips?' + urlencode({'description': tags.description()})
        return _oldest_first(f for f in cloud.listing('network', region, path, 'floatingips')
                             if f.get('description') == tags.description())

    def _earlier(self, section: Mapping[str, Any], cloud: Cloud, spec: Spec, tags: Tags, made: Made) -> None:
        """Take what an earlier attempt of this create made (its answer may have been lost)."""
        region = spec.region
        with self._errors(section, cloud, 'looking for what an earlier attempt of this create made'):
            servers = self._servers(cloud, region, tags)
            volumes = self._volumes(cloud, region, tags) if spec.volume_size is not None else []
            fips = self._floating_ips(cloud, region, tags) if spec.floating_ip else []
        if servers:
            made.server_id = self._keep_first(section, cloud, region, 'server', servers, lambda s: Made(
                server_id=s['id'], volume_id=next((v['id'] for v in volumes if v['id'] in _attached(s)), None),
                volume_persist=spec.volume_persist))['id']
            [kept] = [s for s in servers if s['id'] == made.server_id]
            volumes = [v for v in volumes if v['id'] in _attached(kept)] or \
                [v for v in volumes if v.get('status') == 'available']
        if volumes:
            made.volume_id = self._keep_first(section, cloud, region, 'volume', volumes)['id']
        if fips:
            fip = self._keep_first(section, cloud, region, 'floating IP', fips)
            made.floating_ip_id = fip['id']
            made.floating_ip = str(fip.get('floating_ip_address') or '') or None

    def _lost(self, section: Mapping[str, Any], cloud: Cloud, region: Optional[str],
              failed: TransientCloudError, what: str, look: Callable[[], List[Dict[str, Any]]]) -> Dict[str, Any]:
        """After a create call failed in a way that may have made the ``what`` (a time-out, a
        5xx, a lost answer): the one its tags find, else the failure is raised."""
        if failed.unsent:
            raise failed
        try:
            with self._errors(section, cloud, f'looking for the {what} a failed create call may have made'):
                found = look()
        except CloudError:
            raise failed from None
        if not found:
            raise failed
        self.ctx.log.info('%s', self._say(section, cloud, f'the {what} {found[0]["id"]} was made although '
                                                          f'the create call failed: it is taken'))
        return self._keep_first(section, cloud, region, what, found)

    def _keep_first(self, section: Mapping[str, Any], cloud: Cloud, region: Optional[str], what: str,
                    items: List[Dict[str, Any]],
                    made_of: Optional[Callable[[Dict[str, Any]], Made]] = None) -> Dict[str, Any]:
        """The first of ``items`` (listed oldest first); the others, duplicates made by create
        calls whose answers were lost, are deleted (``made_of`` says what goes with each)."""
        made_of = made_of or (lambda item: Made(**{KIND_FIELDS[what]: item['id']}))
        for item in items[1:]:
            self.ctx.log.warning('%s', self._say(section, cloud, f'deleting the {what} {item["id"]}: a duplicate '
                                                                 'made by a create call whose answer was lost'))
            self._undo(section, cloud, region, made_of(item), 0.0)
        return items[0]

    def _make_floating_ip(self, section: Mapping[str, Any], cloud: Cloud, spec: Spec, tags: Tags,
                          made: Made) -> None:
        with self._errors(section, cloud, 'looking up the floating IP pool'):
            network = cloud.external_network(spec.region, spec.floating_ip_pool)
        try:
            with self._errors(section, cloud, 'allocating a floating IP'):
                fip = as_dict(cloud.call('network', spec.region, 'POST', '/v2.0/floatingips', {'floatingip': {
                    'floating_network_id': network, 'description': tags.description()}}).get('floatingip'))
        except TransientCloudError as exc:
            fip = self._lost(section, cloud, spec.region, exc, 'floating IP',
                             lambda: self._floating_ips(cloud, spec.region, tags))
        made.floating_ip_id = str(fip.get('id') or '') or None
        made.floating_ip = str(fip.get('floating_ip_address') or '') or None
        if made.floating_ip_id is None:
            raise CloudError(self._say(section, cloud, 'Neutron allocated a floating IP without an id'))

    def _given_up(self, request: CreateRequest) -> None:
        if request.cancelled.is_set():
            raise TransientCloudError('the create call was given up by Occopus; what it made is deleted')

    def _make_volume(self, request: CreateRequest, cloud: Cloud, spec: Spec, tags: Tags, made: Made) -> None:
        """A bootable volume from the image (or the one an earlier attempt made), available
        (bounded wait, honouring cancellation)."""
        section = request.resource
        if made.volume_id is None:
            volume = self._new_volume(request, cloud, spec, tags)
            if not isinstance(volume.get('id'), str):
                raise CloudError(self._say(section, cloud, 'Cinder made a volume without an id'))
            made.volume_id = volume['id']
        else:
            volume = {}  # looked at below
        deadline, pause = time.monotonic() + VOLUME_WAIT, VOLUME_POLL[0]
        while True:
            status = volume.get('status')
            if status == 'available':
                return
            if volume and status not in VOLUME_BUSY:
                raise CloudError(self._say(section, cloud, f'the boot volume {made.volume_id} became '
                                                           f'{excerpt(status, 40)}, not available'))
            if time.monotonic() + pause > deadline:
                raise CloudError(self._say(section, cloud, f'the boot volume {made.volume_id} was not '
                                                           f'available within {VOLUME_WAIT:.0f} s'))
            if volume and request.cancelled.wait(pause):
                self._given_up(request)
            pause = min(pause * 2, VOLUME_POLL[1]) if volume else pause
            with self._errors(section, cloud, 'waiting for the boot volume'):
                volume = as_dict(as_dict(cloud.call('volumev3', spec.region, 'GET',
                                                f'/volumes/{url_part(made.volume_id)}')).get('volume'))

    def _new_volume(self, request: CreateRequest, cloud: Cloud, spec: Spec, tags: Tags) -> Dict[str, Any]:
        section = request.resource
        size = spec.volume_size or 0
        with self._errors(section, cloud, f'looking up the image {spec.image_id}'):
            if size == 0:  # the image's own size
                image = cloud.call('image', spec.region, 'GET', f'/v2/images/{url_part(spec.image_id)}', gone_ok=True)
                if image is None:
                    raise CloudError(self._say(section, cloud, f'Image {spec.image_id} could not be found '
                                                               '(image_id)'))
                size = max(1, _whole(image.get('min_disk')),
                           math.ceil(_whole(image.get('size')) / (1 << 30)))
        metadata = dict(tags.metadata(), **({META_PERSIST: 'true'} if spec.volume_persist else {}))
        try:
            with self._errors(section, cloud, 'creating the boot volume'):
                return as_dict(cloud.call('volumev3', spec.region, 'POST', '/volumes', {'volume': {
                    'size': size, 'imageRef': spec.image_id, 'metadata': metadata,
                    'name': f'{spec.server_name or request.vm_name}-boot',
                }}).get('volume'))
        except TransientCloudError as exc:
            return self._lost(section, cloud, spec.region, exc, 'volume',
                              lambda: self._volumes(cloud, spec.region, tags))

    def _undo(self, section: Mapping[str, Any], cloud: Cloud, region: Optional[str], made: Made,
              wait: float = UNDO_WAIT) -> None:
        """Delete what a failed create made (best effort: what is left is still tagged)."""
        try:
            self._delete(section, cloud, region, made, wait)
        except Exception as exc:  # noqa: BLE001 - the create's own error is the one to report
            self.ctx.log.warning('%s', self._say(section, cloud, f'undoing a failed create: {exc}'))

    # -- drop ------------------------------------------------------------------------------

    def drop(self, instance: Instance) -> None:
        if not instance.instance_id:
            return
        section = self._section(instance)
        cloud, spec = self._cloud(section)
        extra = instance.extra
        kind = extra.get('kind', SERVER)
        if kind == VOLUME:
            made = Made(volume_id=instance.instance_id)
        elif kind == FLOATING_IP:
            made = Made(floating_ip_id=instance.instance_id)
        else:
            made = Made(server_id=instance.instance_id, volume_id=extra.get('volume_id'),
                        volume_persist=bool(extra.get('volume_persist')),
                        floating_ip_id=extra.get('floating_ip_id'))
        self._delete(section, cloud, spec.region, made, 0.0)

    def _delete(self, section: Mapping[str, Any], cloud: Cloud, region: Optional[str], made: Made,
                wait: float) -> None:
        """Delete the server, release the floating IP, delete the volume (unless persistent)
        once no server uses it: waiting up to ``wait`` seconds for that, else the volume
        still in use is a transient error (the engine tries the drop again)."""
        if made.server_id:
            with self._errors(section, cloud, f'deleting the server {made.server_id}', busy=True):
                cloud.call('compute', region, 'DELETE', f'/servers/{url_part(made.server_id)}', gone_ok=True)
        if made.floating_ip_id:
            with self._errors(section, cloud, f'releasing the floating IP {made.floating_ip_id}', busy=True):
                cloud.call('network', region, 'DELETE', f'/v2.0/floatingips/{url_part(made.floating_ip_id)}', gone_ok=True)
        if not made.volume_id or made.volume_persist:
            return
        deadline = time.monotonic() + wait
        while True:
            with self._errors(section, cloud, f'deleting the volume {made.volume_id}', busy=True):
                found = cloud.call('volumev3', region, 'GET', f'/volumes/{url_part(made.volume_id)}', gone_ok=True)
                volume = as_dict(as_dict(found).get('volume'))
                if found is None or as_dict(volume.get('metadata')).get(META_PERSIST) == 'true':
                    return
                status = volume.get('status')
                if status not in VOLUME_BUSY:
                    cloud.call('volumev3', region, 'DELETE', f'/volumes/{url_part(made.volume_id)}', gone_ok=True)
                    return
            if time.monotonic() >= deadline:
                raise TransientCloudError(self._say(section, cloud, f'the volume {made.volume_id} is still '
                                                                    f'{excerpt(status, 30)}: it is deleted once '
                                                                    'its server is gone'))
            time.sleep(1.0)

    # -- states ----------------------------------------------------------------------------

    def _clouds(self, sections: Iterable[Mapping[str, Any]]) -> Dict[str, Tuple[Cloud, Spec]]:
        """The session and keys of each distinct section (credentials looked up once each)."""
        found: Dict[str, Tuple[Cloud, Spec]] = {}
        for section in sections:
            key = json.dumps(section, sort_keys=True, default=str)
            if key not in found:
                found[key] = self._cloud(section)
        return found

    def states(self, instances: Sequence[Instance]) -> Dict[str, ResourceStatus]:
        """One paginated server listing per Keystone, project, credentials and region; then
        the floating IPs of servers that just became ACTIVE are associated (a bounded number
        per call: the others are pending until the next call)."""
        result: Dict[str, ResourceStatus] = {}
        keys = {i.node_id: json.dumps(self._section(i), sort_keys=True, default=str) for i in instances}
        clouds = self._clouds(self._section(i) for i in instances)
        groups: Dict[Tuple[int, Optional[str]], List[Instance]] = {}
        for instance in instances:
            cloud, spec = clouds[keys[instance.node_id]]
            groups.setdefault((id(cloud), spec.region), []).append(instance)
        for members in groups.values():
            section = self._section(members[0])
            cloud, spec = clouds[keys[members[0].node_id]]
            with self._errors(section, cloud, 'listing the servers'):
                servers = {s['id']: s for s in cloud.listing('compute', spec.region, '/servers/detail', 'servers')}
            waiting = []
            for instance in members:
                status = self._status(instance, cloud, servers.get(instance.instance_id))
                floating = instance.extra.get('floating_ip')
                if status.state == RUNNING and instance.extra.get('floating_ip_id') and \
                        floating not in status.addresses:
                    waiting.append((instance, status))
                else:
                    result[instance.node_id] = status
            if waiting:
                result.update(self._associate(section, cloud, spec.region, waiting))
        return result

    def _status(self, instance: Instance, cloud: Cloud, server: Optional[Dict[str, Any]]) -> ResourceStatus:
        section = self._section(instance)
        if server is None:
            return ResourceStatus(SHUTDOWN, reason=self._say(
                section, cloud, f'the server {instance.instance_id} is gone (deleted outside Occopus?)'))
        status = server.get('status')
        status = status if isinstance(status, str) else repr(status)
        addresses, private = _addresses(server)
        if status in PENDING_STATUSES:
            return ResourceStatus(PENDING, addresses, private, self._say(
                section, cloud, f'the server is {status}'))
        if status == 'ACTIVE':
            return ResourceStatus(RUNNING, addresses, private)
        if status == 'ERROR':
            fault = as_dict(server.get('fault')).get('message')
            return ResourceStatus(FAILED, addresses, private, self._say(
                section, cloud, f'the server went into ERROR: {one_line(fault, secret=cloud.secret) if fault else "Nova gave no reason"}'))
        if status in SHUTDOWN_STATUSES:
            return ResourceStatus(SHUTDOWN, addresses, private, self._say(
                section, cloud, f'{SHUTDOWN_STATUSES[status]} ({status})'))
        return ResourceStatus(UNKNOWN, addresses, private, self._say(
            section, cloud, f'the server is in state {excerpt(status, 40)}, which Occopus does not know'))

    def _associate(self, section: Mapping[str, Any], cloud: Cloud, region: Optional[str],
                   waiting: List[Tuple[Instance, ResourceStatus]]) -> Dict[str, ResourceStatus]:
        """Put the floating IPs of ACTIVE servers on their ports (the port on ``network_id``,
        else the first): two listings for all of them, then one update each, for at most
        :data:`ASSOCIATE_PER_CALL` servers.  A server reads as running once its floating IP is on."""
        result: Dict[str, ResourceStatus] = {}
        for instance, status in waiting[ASSOCIATE_PER_CALL:]:
            result[instance.node_id] = ResourceStatus(PENDING, status.addresses, status.private_address, self._say(
                section, cloud, 'the server is ACTIVE; its floating IP is associated next'))
        waiting = waiting[:ASSOCIATE_PER_CALL]
        try:
            with self._errors(section, cloud, 'looking up the floating IPs and ports of new servers'):
                fips = {f['id']: f for f in cloud.listing('network', region, '/v2.0/floatingips?' + urlencode(
                    [('id', i.extra['floating_ip_id']) for i, _ in waiting]), 'floatingips')}
                ports: Dict[str, List[Dict[str, Any]]] = {}
                for port in cloud.listing('network', region, '/v2.0/ports?' + urlencode(
                        [('device_id', i.instance_id) for i, _ in waiting]), 'ports'):
                    ports.setdefault(str(port.get('device_id')), []).append(port)
        except TransientCloudError as exc:
            return dict(result, **{i.node_id: ResourceStatus(PENDING, s.addresses, s.private_address, str(exc))
                                   for i, s in waiting})
        for instance, status in waiting:
            result[instance.node_id] = self._put_on(instance, cloud, region, status, fips.get(
                instance.extra['floating_ip_id']), ports.get(str(instance.instance_id), []))
        return result

    def _put_on(self, instance: Instance, cloud: Cloud, region: Optional[str], status: ResourceStatus,
                fip: Optional[Dict[str, Any]], ports: List[Dict[str, Any]]) -> ResourceStatus:
        section = self._section(instance)
        addresses, private = status.addresses, status.private_address
        floating = instance.extra.get('floating_ip')
        if fip is None:
            return ResourceStatus(FAILED, addresses, private, self._say(
                section, cloud, f"the floating IP {floating} ({instance.extra['floating_ip_id']}) is gone"))
        if not fip.get('port_id'):
            network = Spec.of(section).network_id
            ports = sorted(ports, key=lambda p: p.get('network_id') != network)
            if not ports:
                return ResourceStatus(PENDING, addresses, private, self._say(
                    section, cloud, 'the server is ACTIVE but has no port for its floating IP yet'))
            try:
                with self._errors(section, cloud, f'associating the floating IP {floating}'):
                    fip = as_dict(cloud.call('network', region, 'PUT', f"/v2.0/floatingips/{url_part(fip['id'])}",
                                           {'floatingip': {'port_id': ports[0]['id']}}).get('floatingip'))
            except TransientCloudError as exc:
                return ResourceStatus(PENDING, addresses, private, str(exc))
            except CloudError as exc:
                return ResourceStatus(FAILED, addresses, private, str(exc))
        address = fip.get('floating_ip_address') or floating
        if isinstance(address, str) and address:
            addresses = [printable(address)] + [a for a in addresses if a != address]
        return ResourceStatus(RUNNING, addresses, private)

    # -- find ------------------------------------------------------------------------------

    def find(self, infra_id: str, resources: Sequence[Mapping[str, Any]]) -> List[Found]:
        """Servers, volumes (not persistent ones) and floating IPs tagged with ``infra_id``,
        asking each Keystone, project, credentials and region once.

        Credentials that cannot be found, or that Keystone refuses, raise (:class:`AuthError`,
        :class:`CloudError`) like any cloud that cannot be asked: the engine then keeps the
        records whose create was under way rather than forgetting what they may have made
        (the credentials may have changed since the build).  Sections whose endpoint is an
        unrendered template (from raw node definitions) name no cloud and are skipped."""
        asked = set()
        found: List[Found] = []
        for section in resources:
            endpoint = section.get('endpoint')
            if not endpoint or any(mark in str(endpoint) for mark in ('{{', '{%')):
                continue  # a create that never began, or a section not rendered: no cloud to ask
            cloud, spec = self._cloud(section)
            if (id(cloud), spec.region) in asked:
                continue
            asked.add((id(cloud), spec.region))
            found += self._find(infra_id, section)
        return found

    def _find(self, infra_id: str, section: Mapping[str, Any]) -> List[Found]:
        """Servers, volumes and floating IPs of ``infra_id`` on one cloud and region; the
        volume and floating IP of a found server go with it (dropped with it)."""
        cloud, spec = self._cloud(section)
        region, keep = spec.region, dict(section)
        with self._errors(section, cloud, 'looking for the servers of the infrastructure'):
            servers = [s for s in cloud.listing('compute', region, '/servers/detail', 'servers')
                       if as_dict(s.get('metadata')).get(META_INFRA_ID) == infra_id]
        with self._errors(section, cloud, 'looking for the volumes of the infrastructure'):
            volumes = [v for v in cloud.listing('volumev3', region, '/volumes/detail', 'volumes')
                       if as_dict(v.get('metadata')).get(META_INFRA_ID) == infra_id
                       and as_dict(v.get('metadata')).get(META_PERSIST) != 'true'
                       ] if cloud.offers('volumev3', region) else []
        with self._errors(section, cloud, 'looking for the floating IPs of the infrastructure'):
            fips = [f for f in cloud.listing('network', region, '/v2.0/floatingips', 'floatingips')
                    if Tags.owner(f.get('description'), infra_id)] if cloud.offers('network', region) else []
        result, by_node = [], {}
        for server in servers:
            meta = as_dict(server.get('metadata'))
            entry = Found(server['id'], one_line(meta.get(META_NODE_ID), 80) or None,
                          one_line(meta.get(META_NODE), 80) or None, keep,
                          {'kind': SERVER, 'section': keep}, 'server')
            result.append(entry)
            if entry.node_id:
                by_node[entry.node_id] = entry
        attached = {s['id']: _attached(s) for s in servers}
        for volume in volumes:
            meta = as_dict(volume.get('metadata'))
            owner = by_node.get(str(meta.get(META_NODE_ID)))
            if owner is not None and 'volume_id' not in owner.extra and \
                    volume['id'] in (attached[owner.instance_id] or [volume['id']]):
                owner.extra['volume_id'] = volume['id']
                continue
            result.append(Found(volume['id'], one_line(meta.get(META_NODE_ID), 80) or None,
                                one_line(meta.get(META_NODE), 80) or None, keep,
                                {'kind': VOLUME, 'section': keep}, 'volume'))
        for fip in fips:
            node_id = Tags.owner(fip.get('description'), infra_id)
            owner = by_node.get(str(node_id))
            if owner is not None and 'floating_ip_id' not in owner.extra:
                owner.extra.update(floating_ip_id=fip['id'])
                continue
            address = one_line(fip.get('floating_ip_address') or '', 64)
            result.append(Found(fip['id'], one_line(node_id, 80), None, keep,
                                {'kind': FLOATING_IP, 'section': keep},
                                f'floating IP {address}'.strip()))
        return result


def _attached(server: Mapping[str, Any]) -> List[str]:
    """The ids of the volumes a server (as listed) has attached."""
    return [str(as_dict(v).get('id')) for v in as_list(server.get('os-extended-volumes:volumes_attached'))]


def _tagged(item: Mapping[str, Any], tags: 'Tags') -> bool:
    """Whether a listed server or volume carries the metadata of ``tags``' node instance."""
    meta = as_dict(item.get('metadata'))
    return meta.get(META_INFRA_ID) == tags.infra_id[:255] and meta.get(META_NODE_ID) == tags.node_id[:255]


def _oldest_first(items: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Listed servers, volumes or floating IPs, the oldest first (by their creation time)."""
    return sorted(items, key=lambda i: (str(i.get('created') or i.get('created_at') or ''), i['id']))


def _whole(value: Any) -> int:
    """A non-negative whole number the cloud gave, or 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


__all__ = ['NovaHandler', 'keystone_url']
