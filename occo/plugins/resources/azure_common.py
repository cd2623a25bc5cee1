"""What the Azure handlers (``azure_vm``, ``azure_aci``) share: credentials, clients, tags,
bounded long-running operations, deletes, the tag listing and the mapping of errors.

One :class:`Clients` per ARM endpoint and credentials, made on first use and shared by every
call and thread of the run: a ``ClientSecretCredential`` (client-credentials flow at the
entry's ``authority``, instance discovery off then, so the public login host is never asked)
and the management clients, made lazily, all with the SDK's retries off (``retry_total=0``:
the engine retries what :class:`~occo.errors.TransientCloudError` says may pass) and bounded
socket waits.  The SDKs are imported only when a client is made.

Every resource a handler makes carries the tags ``occopus_infra_id``, ``occopus_node_id`` and
``occopus_node`` (Azure tag names cannot hold ``:``), so that :func:`tagged` finds what a build
killed mid-create left.
"""
from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from occo.errors import AuthError, CloudError, OccoError, TransientCloudError
from occo.instances import Instance
from occo.plugins.http import exception_chain
from occo.plugins.resources.base import CreateRequest, Found, ResourceHandler
from occo.plugins.resources.common import (META_INFRA_ID, META_NODE, META_NODE_ID, Tags,
                                           one_line)
from occo.redact import MASK, excerpt, printable
from occo.schema import is_template

DEFAULT_AUTHORITY = 'https://login.microsoftonline.com'
CONNECT_TIMEOUT = 10.0  # seconds
READ_TIMEOUT = 60.0     # seconds
POLL_INTERVAL = 2.0     # seconds between polls of an operation that names no retry-after
PART_WAIT = 600.0       # seconds a part's create may take (create_timeout and cancel cut it)
DELETE_WAIT = 300.0     # seconds the deletes of one drop (or undo) may take in all
LISTED_LIMIT = 10000    # resources of one tag listing at most
MESSAGE_LIMIT = 500     # characters of what the cloud said
AUTH_KEYS = ('tenant_id', 'client_id', 'client_secret', 'subscription_id')

#: the tags of a node instance's parts (Azure tag names cannot hold ':')
TAG_INFRA_ID, TAG_NODE_ID, TAG_NODE = META_INFRA_ID, META_NODE_ID, META_NODE

#: ARM resource types by the short names used here, and what to call them for people
KINDS = {'virtualMachines': ('Microsoft.Compute/virtualMachines', 'virtual machine'),
         'disks': ('Microsoft.Compute/disks', 'disk'),
         'networkInterfaces': ('Microsoft.Network/networkInterfaces', 'network interface'),
         'publicIPAddresses': ('Microsoft.Network/publicIPAddresses', 'public IP address'),
         'networkSecurityGroups': ('Microsoft.Network/networkSecurityGroups',
                                   'network security group'),
         'virtualNetworks': ('Microsoft.Network/virtualNetworks', 'virtual network'),
         'containerGroups': ('Microsoft.ContainerInstance/containerGroups', 'container group')}
#: the order parts are deleted in: what uses a part goes before it
DROP_ORDER = ('containerGroups', 'virtualMachines', 'disks', 'networkInterfaces',
              'publicIPAddresses', 'networkSecurityGroups', 'virtualNetworks')
_BY_TYPE = {arm.lower(): short for short, (arm, _) in KINDS.items()}

#: codes that may pass (the engine retries); codes of a delete refused because something
#: still uses the part (its user's delete is under way: retried as well)
TRANSIENT_CODES = frozenset(('RetryableError', 'TooManyRequests', 'InternalServerError',
                             'ServerBusy', 'ServiceUnavailable', 'GatewayTimeout',
                             'OperationPreempted', 'AnotherOperationInProgress',
                             'RetryableErrorDueToAnotherOperation', 'Conflict'))
IN_USE_CODES = frozenset(('NicInUse', 'InUseSubnetCannotBeDeleted',
                          'PublicIPAddressCannotBeDeleted', 'PublicIPAddressInUse',
                          'InUseNetworkSecurityGroupCannotBeDeleted', 'NicReservedForAnotherVm',
                          'OperationNotAllowed', 'DiskInUse'))
AUTH_CODES = frozenset(('InvalidAuthenticationToken', 'InvalidAuthenticationTokenTenant',
                        'AuthenticationFailed', 'ExpiredAuthenticationToken',
                        'InvalidAuthenticationTokenAudience'))


class Expired(Exception):
    """A long-running operation was still running at its deadline (or was given up)."""


@dataclass(frozen=True)
class Account:
    """Where calls go and who makes them (never printed: the secret is hidden)."""

    endpoint: str
    authority: Optional[str]
    tenant_id: str
    client_id: str
    client_secret: str = field(repr=False)
    subscription_id: str = ''

    def hide(self, text: str) -> str:
        return text.replace(self.client_secret, MASK) if self.client_secret else text

    def key(self) -> Dict[str, Any]:
        return {'authority': self.authority, 'tenant_id': self.tenant_id,
                'client_id': self.client_id, 'client_secret': self.client_secret,
                'subscription_id': self.subscription_id}

    @property
    def login(self) -> str:
        return self.authority or DEFAULT_AUTHORITY


@dataclass(frozen=True)
class Part:
    """One ARM resource a handler made or uses, by its id."""

    rid: str

    @classmethod
    def of(cls, subscription: str, group: str, kind: str, name: str) -> 'Part':
        return cls(f'/subscriptions/{subscription}/resourceGroups/{group}/providers/'
                   f'{KINDS[kind][0]}/{name}')

    @property
    def segments(self) -> List[str]:
        return self.rid.strip('/').split('/')

    @property
    def group(self) -> str:
        parts = self.segments
        return parts[3] if len(parts) > 3 else ''

    @property
    def name(self) -> str:
        return self.segments[-1]

    @property
    def kind(self) -> Optional[str]:
        parts = self.segments
        if len(parts) != 8 or parts[0].lower() != 'subscriptions' or \
                parts[4].lower() != 'providers':
            return None
        return _BY_TYPE.get(f'{parts[5]}/{parts[6]}'.lower())

    @property
    def what(self) -> str:
        return KINDS[self.kind][1] if self.kind else 'resource'

    @property
    def rank(self) -> int:
        return DROP_ORDER.index(self.kind) if self.kind in DROP_ORDER else len(DROP_ORDER)


def in_drop_order(rids: List[str]) -> List[Part]:
    """Parts (distinct) in the order they are deleted in."""
    seen: Dict[str, Part] = {}
    for rid in rids:
        if isinstance(rid, str) and Part(rid).kind and rid.lower() not in seen:
            seen[rid.lower()] = Part(rid)
    return sorted(seen.values(), key=lambda p: p.rank)


def node_tags(request: CreateRequest) -> Dict[str, str]:
    return Tags(request.infra_id, request.node_id, request.node).metadata()


def azure_name(request: CreateRequest, limit: int = 58) -> str:
    """The node instance's resource name (:attr:`CreateRequest.vm_name`) with what Azure
    refuses in names replaced by ``-``, short enough for the parts' suffixes."""
    name = ''.join(c if c.isascii() and (c.isalnum() or c == '-') else '-' for c in request.vm_name)
    if len(name) > limit:
        name = name[:limit - 9].rstrip('-') + '-' + request.node_id[:8]
    return name


def endpoint_url(value: Any) -> str:
    """The ARM base URL without a trailing slash."""
    return str(value or '').strip().rstrip('/')


def attr(obj: Any, *path: str) -> Any:
    """``obj.a.b...``, None where a step is missing (answers are not trusted)."""
    for name in path:
        if obj is None:
            return None
        try:
            obj = getattr(obj, name, None)
        except Exception:  # noqa: BLE001 - a model that cannot read its own data
            return None
    return obj


def short_text(value: Any, limit: int = 255) -> Optional[str]:
    if isinstance(value, str) and value and len(value) <= limit and printable(value) == value:
        return value
    return None


@dataclass
class Made:
    """What a create made so far (deleted, newest first, if a later step fails)."""

    parts: List[str] = field(default_factory=list)

    def add(self, part: Part) -> Part:
        if part.rid.lower() not in {p.lower() for p in self.parts}:
            self.parts.append(part.rid)
        return part

    def has(self, part: Part) -> bool:
        return part.rid.lower() in {p.lower() for p in self.parts}


class Clients:
    """The credential and the management clients of one endpoint and account (lazily)."""

    def __init__(self, account: Account) -> None:
        import logging
        # The SDKs log answers they could not read with tracebacks (which may quote what the
        # cloud echoed, secrets included): our errors say it in one masked line instead.
        for name in ('azure', 'msal'):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        self.account = account
        self._lock = threading.Lock()
        self._made: Dict[str, Any] = {}

    def _options(self) -> Dict[str, Any]:
        return dict(retry_total=0, connection_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT)

    @property
    def credential(self) -> Any:
        with self._lock:
            if 'credential' not in self._made:
                from azure.identity import ClientSecretCredential
                account, options = self.account, self._options()
                if account.authority:
                    options.update(authority=account.authority, disable_instance_discovery=True)
                self._made['credential'] = ClientSecretCredential(
                    account.tenant_id, account.client_id, account.client_secret, **options)
            return self._made['credential']

    def _client(self, name: str) -> Any:
        credential = self.credential
        with self._lock:
            if name not in self._made:
                if name == 'compute':
                    from azure.mgmt.compute import ComputeManagementClient as Client
                elif name == 'network':
                    from azure.mgmt.network import NetworkManagementClient as Client
                elif name == 'resource':
                    from azure.mgmt.resource.resources import ResourceManagementClient as Client
                else:
                    from azure.mgmt.containerinstance import \
                        ContainerInstanceManagementClient as Client
                endpoint = self.account.endpoint
                self._made[name] = Client(credential, self.account.subscription_id,
                                          base_url=endpoint,
                                          credential_scopes=[f'{endpoint}/.default'],
                                          polling_interval=POLL_INTERVAL, **self._options())
            return self._made[name]

    @property
    def compute(self) -> Any:
        return self._client('compute')

    @property
    def network(self) -> Any:
        return self._client('network')

    @property
    def resource(self) -> Any:
        return self._client('resource')

    @property
    def aci(self) -> Any:
        return self._client('containerinstance')


def _bounded_polling(until: float, cancelled: Optional[threading.Event]) -> Any:
    """The SDK's ARM polling (``Azure-AsyncOperation``, ``Location``, ``retry-after-ms``),
    ending with :class:`Expired` at ``until`` or when ``cancelled`` is set."""
    from azure.mgmt.core.polling.arm_polling import ARMPolling

    class Bounded(ARMPolling):
        def _sleep(self, delay: float) -> None:
            left = until - time.monotonic()
            if left <= 0 or (cancelled is not None and cancelled.is_set()):
                raise Expired()
            pause = min(max(float(delay), 0.01), left, 30.0)
            if cancelled is not None and cancelled.wait(pause):
                raise Expired()
            if cancelled is None:
                time.sleep(pause)
    return Bounded(POLL_INTERVAL)


def finish(start: Any, until: float, cancelled: Optional[threading.Event] = None) -> Any:
    """Run a ``begin_*`` call (``start(polling)``) to its end, at most until ``until``.

    :raises Expired: if it is still running then, or ``cancelled`` was set.
    """
    poller = start(_bounded_polling(until, cancelled))
    while not poller.done():
        left = until - time.monotonic()
        if left <= 0 or (cancelled is not None and cancelled.is_set()):
            raise Expired()
        poller.wait(min(left, 0.5))
    return poller.result()


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ''


def said_by(exc: Any) -> Tuple[int, str, str]:
    """(HTTP status, error code, message) of an azure-core error ('' where unknown)."""
    status = getattr(exc, 'status_code', None)
    error = getattr(exc, 'error', None)
    code, message = _text(getattr(error, 'code', None)), _text(getattr(error, 'message', None))
    if not code and status == 401:  # a HEAD has no body: what the challenge header says
        code, said = _challenge(getattr(exc, 'response', None))
        message = message or said
    if not message:
        message = _text(getattr(exc, 'message', None)) or _text(str(exc))
    return (status if isinstance(status, int) else 0), code, message


def _challenge(response: Any) -> Tuple[str, str]:
    """(error, error_description) of a 401's ``WWW-Authenticate: Bearer ...`` header, the
    error as ARM's code (``invalid_token`` -> ``InvalidAuthenticationToken``)."""
    try:
        header = response.headers.get('WWW-Authenticate')
    except Exception:  # noqa: BLE001 - no response, or headers that cannot be read
        return '', ''
    if not isinstance(header, str) or len(header) > 4000:
        return '', ''
    values = dict(re.findall(r'(\w+)="([^"]*)"', header))
    error = values.get('error', '').strip()
    code = 'InvalidAuthenticationToken' if error == 'invalid_token' else error
    return code, values.get('error_description', '').strip()


class AzureHandler(ResourceHandler):
    """What both Azure handlers do alike."""

    needs_credentials = True
    buildable = True
    #: the kinds of parts a node instance may be made of (each handler's own)
    parts: ClassVar[Tuple[str, ...]] = ()

    @classmethod
    def endpoint(cls, resource: Mapping[str, Any]) -> str:
        return endpoint_url(resource.get('endpoint'))

    def drop(self, instance: Instance) -> None:
        """Delete the instance's resource and every part its create made, in order."""
        if not instance.instance_id:
            return
        parts = instance.extra.get('parts')
        rids = [str(instance.instance_id)] + (list(parts) if isinstance(parts, list) else [])
        clients, account = self.clients(instance.resource)
        self.delete_all(clients, account, instance.resource, rids)

    def find(self, infra_id: str, resources: Sequence[Mapping[str, Any]]) -> List[Found]:
        """The parts tagged with ``infra_id``, one :class:`Found` per node instance (its VM or
        container group, or if a killed build made none, its first part in drop order;
        ``extra['parts']`` lists them all, so its drop deletes them all), asking each
        endpoint and account once."""
        return find_parts(self, infra_id, resources, self.parts)

    # -- clients ---------------------------------------------------------------------------

    def account(self, resource: Mapping[str, Any]) -> Account:
        """The endpoint and credentials of ``resource``.

        :raises AuthError: if the auth-data entry lacks one of the four keys.
        """
        found = self.credentials(resource)
        values = {k: str(found[k]) if isinstance(found.get(k), (str, int)) and
                  not isinstance(found.get(k), bool) else '' for k in AUTH_KEYS}
        missing = [k for k in AUTH_KEYS if not values[k]]
        if missing:
            names = ', '.join(sorted(str(k) for k in found)) or 'nothing'
            raise AuthError(f'the auth_data of {self.type} {printable(self.endpoint(resource))} '
                            f"needs {', '.join(AUTH_KEYS)} (it lacks {', '.join(missing)}; it has "
                            f'{printable(names)})')
        authority = found.get('authority')
        return Account(self.endpoint(resource), endpoint_url(authority) if authority else None,
                       **values)

    def clients(self, resource: Mapping[str, Any]) -> Tuple[Clients, Account]:
        account = self.account(resource)
        if not account.endpoint.startswith('https://') or len(account.endpoint) <= 8:
            raise CloudError(self.cloud_said(
                resource, 'the endpoint must be an https URL such as https://management.azure.com, '
                f'not {excerpt(account.endpoint)}'))
        if account.authority and not account.authority.startswith('https://'):
            raise CloudError(self.cloud_said(
                resource, 'the authority of the auth data must be an https URL such as '
                'https://login.microsoftonline.com, not '
                f'{excerpt(account.hide(account.authority))}'))
        return self.client(account.endpoint, account.key()), account

    def make_client(self, endpoint: str, credentials: Optional[Mapping[str, Any]]) -> Clients:
        assert credentials is not None
        return Clients(Account(endpoint, **credentials))

    # -- errors ----------------------------------------------------------------------------

    def say(self, resource: Mapping[str, Any], account: Account, said: str) -> str:
        """One line without the client secret, nor the VM's admin password should the cloud
        echo it."""
        said = account.hide(said)
        password = resource.get('password')
        if isinstance(password, str) and len(password) >= 4:
            said = said.replace(password, MASK)
        return self.cloud_said(resource, said)

    @contextmanager
    def errors(self, resource: Mapping[str, Any], account: Account, doing: str,
               deleting: bool = False) -> Iterator[None]:
        """azure-core's exceptions as ours: one line, the secret hidden, transient where it
        may pass (in a delete, also a part still in use: what uses it is being deleted)."""
        from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError,
                                           ServiceRequestError, ServiceResponseError)
        try:
            yield
        except OccoError:
            raise
        except Expired:
            raise CloudError(self.say(resource, account, f'{doing}: still not finished at its '
                                                         'deadline (given up)')) from None
        except ClientAuthenticationError as exc:
            status, code, message = said_by(exc)
            if getattr(exc, 'response', None) is None:
                # azure-identity wraps a login host it could not reach (refused, TLS, reset) in
                # this error too: that is no matter of the credentials
                cause = next((e for e in exception_chain(exc) if isinstance(
                    e, (ServiceRequestError, ServiceResponseError))), None)
                if cause is not None:
                    raise self._unreachable(resource, account, doing, cause) from None
            if getattr(exc, 'response', None) is None or (code not in AUTH_CODES and
                                                          status != 401):
                raise self._login_failed(resource, account, doing, exc) from None
            raise self._refused(resource, account, doing, exc, deleting) from None
        except HttpResponseError as exc:
            raise self._refused(resource, account, doing, exc, deleting) from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise self._unreachable(resource, account, doing, exc) from None
        except Exception as exc:  # noqa: BLE001 - an answer the SDK could not make sense of
            raise CloudError(self.say(resource, account, f'{doing}: the answer could not be read '
                                      f'({type(exc).__name__}: {exc})')) from None

    def _unreachable(self, resource: Mapping[str, Any], account: Account, doing: str,
                     exc: Any) -> CloudError:
        """No answer: a request that could not be sent (a TLS failure is for good: the CA is
        missing), or an answer that broke off (transient)."""
        from azure.core.exceptions import ServiceRequestError
        if not isinstance(exc, ServiceRequestError):
            return TransientCloudError(self.say(resource, account, f'{doing}: {exc}'))
        if _is_tls(exc):
            return CloudError(self.say(resource, account, f'{doing}: TLS failed ({exc}); is the '
                                       'CA of the endpoint in REQUESTS_CA_BUNDLE?'))
        return TransientCloudError(self.say(resource, account, f'{doing}: {exc}'), unsent=True)

    def _clean(self, account: Account, text: str, limit: int = MESSAGE_LIMIT) -> str:
        return one_line(text, limit, account)

    def _login_failed(self, resource: Mapping[str, Any], account: Account, doing: str,
                      exc: Any) -> CloudError:
        status, _, message = said_by(exc)
        text = self._clean(account, message)
        transient = status == 429 or status >= 500 or any(
            f'({n})' in text or f' {n} ' in text for n in ('429', '500', '502', '503', '504'))
        said = (f'{doing}: the login at {account.login} (tenant {excerpt(account.tenant_id)}) '
                f'failed: {text}')
        if transient:
            return TransientCloudError(self.say(resource, account, said))
        return CloudError(self.say(resource, account, said + ' -- check tenant_id, client_id and '
                                   f'client_secret of the matching {self.type} entry of '
                                   'auth_data.yaml (and its authority)'))

    def _refused(self, resource: Mapping[str, Any], account: Account, doing: str, exc: Any,
                 deleting: bool) -> CloudError:
        status, code, message = said_by(exc)
        label = ', '.join(p for p in (self._clean(account, code, 100),
                                      f'HTTP {status}' if status else '') if p)
        said = f'{doing} refused' + (f' ({label})' if label else '') + \
            (f': {self._clean(account, message)}' if message else '')
        transient = status == 429 or status >= 500 or code in TRANSIENT_CODES or (
            deleting and code in IN_USE_CODES)
        hint = '' if transient else self.hint(resource, code, message, status)
        text = self.say(resource, account, said + (f' -- {hint}' if hint else ''))
        error = TransientCloudError(text) if transient else CloudError(text)
        error.cloud_code = code  # type: ignore[attr-defined]
        return error

    def hint(self, resource: Mapping[str, Any], code: str, message: str, status: int) -> str:
        """What to fix, for errors a user's section or auth data can cause."""
        low = f'{code} {message}'.lower()
        if code in AUTH_CODES or status == 401:
            return ('ARM refused the token: check tenant_id, subscription_id and the endpoint '
                    '(and authority) of the auth data')
        if code in ('AuthorizationFailed', 'LinkedAuthorizationFailed') or status == 403:
            return 'the client is not allowed this call: give it a role on the subscription'
        if 'quota' in low or code in ('QuotaExceeded', 'OperationNotAllowed'):
            return ('a quota of the subscription is used up: drop resources or ask for a '
                    'higher limit')
        if code == 'ResourceGroupNotFound':
            return f"check resource_group ({excerpt(resource.get('resource_group'))})"
        if code in ('SubscriptionNotFound', 'InvalidSubscriptionId'):
            return 'check subscription_id of the auth data'
        if code in ('LocationNotAvailableForResourceType', 'NoRegisteredProviderFound') or \
                'location' in code.lower():
            return f"check location ({excerpt(resource.get('location'))})"
        return ''

    # -- shared calls ----------------------------------------------------------------------

    def ensure_group(self, clients: Clients, account: Account, resource: Mapping[str, Any],
                     infra_id: str) -> bool:
        """Make the resource group if it is missing (tagged with the infrastructure; never
        deleted by Occopus); True if it was made."""
        group = str(resource['resource_group'])
        with self.errors(resource, account, f'looking up resource group {group}'):
            if clients.resource.resource_groups.check_existence(group):
                return False
        from azure.mgmt.resource.resources.models import ResourceGroup
        with self.errors(resource, account, f'creating resource group {group}'):
            clients.resource.resource_groups.create_or_update(group, ResourceGroup(
                location=str(resource['location']), tags={TAG_INFRA_ID: infra_id}))
        return True

    def existing_subnet(self, clients: Clients, account: Account, resource: Mapping[str, Any],
                group: str) -> str:
        """The id of the existing subnet ``subnet_name`` (default: the first) of ``vnet_name``."""
        vnet_name, wanted = str(resource['vnet_name']), resource.get('subnet_name')
        with self.errors(resource, account, f'looking up virtual network {vnet_name}'):
            vnet = clients.network.virtual_networks.get(group, vnet_name)
        subnets = attr(vnet, 'subnets')
        for subnet in subnets if isinstance(subnets, list) else ():
            subnet_id = short_text(attr(subnet, 'id'), 1000)
            if subnet_id and (wanted is None or attr(subnet, 'name') == str(wanted)):
                return subnet_id
        raise CloudError(self.cloud_said(
            resource, f'the virtual network {excerpt(vnet_name)} has no subnet'
            + (f' {excerpt(wanted)}' if wanted is not None else '')))

    def delete(self, clients: Clients, account: Account, resource: Mapping[str, Any], part: Part,
               until: Optional[float] = None) -> None:
        """Delete one part and wait for it to be gone; a part that is gone is no error."""
        from azure.core.exceptions import ResourceNotFoundError
        operations = {
            'virtualMachines': lambda: clients.compute.virtual_machines,
            'disks': lambda: clients.compute.disks,
            'networkInterfaces': lambda: clients.network.network_interfaces,
            'publicIPAddresses': lambda: clients.network.public_ip_addresses,
            'networkSecurityGroups': lambda: clients.network.network_security_groups,
            'virtualNetworks': lambda: clients.network.virtual_networks,
            'containerGroups': lambda: clients.aci.container_groups}
        if part.kind not in operations:
            return
        target = operations[part.kind]()
        deadline = until if until is not None else time.monotonic() + DELETE_WAIT
        with self.errors(resource, account, f'deleting {part.what} {part.name}', deleting=True):
            try:
                finish(lambda polling: target.begin_delete(part.group, part.name, polling=polling),
                       deadline)
            except ResourceNotFoundError:
                return

    def earlier(self, clients: Clients, account: Account, request: CreateRequest,
                kinds: Tuple[str, ...]) -> Made:
        """What this create made so far: on a repeated attempt (``request.attempts > 1``),
        the parts of ``kinds`` tagged with this node instance (an earlier attempt's answer may
        have been lost after it made them); nothing on the first."""
        made = Made()
        if request.attempts > 1:
            for part, tags in self.tagged(clients, account, request.resource, request.infra_id,
                                          kinds):
                if tags.get(TAG_NODE_ID) == request.node_id:
                    made.add(part)
        return made

    def failed(self, clients: Clients, account: Account, request: CreateRequest, made: Made,
               exc: BaseException) -> None:
        """After a create failed with ``exc``: if it may pass (a transient error, the create
        not given up), what it made stays for the engine's next attempt, which takes it (and
        the engine's rollback finds it by its tags if no attempt comes); else it is deleted,
        newest first."""
        if isinstance(exc, TransientCloudError) and not request.cancelled.is_set():
            if made.parts:
                exc.unsent = False  # something was made: the rollback must look for it
            return
        until = time.monotonic() + DELETE_WAIT  # for all of them together
        for part in in_drop_order(made.parts):
            try:
                self.delete(clients, account, request.resource, part, until)
            except OccoError as error:  # it stays tagged: occopus-destroy finds it
                self.ctx.log.warning('could not undo %s: %s', part.rid, error)

    def delete_all(self, clients: Clients, account: Account, resource: Mapping[str, Any],
                   rids: List[str]) -> None:
        """Delete parts in dependency order, all within :data:`DELETE_WAIT`."""
        until = time.monotonic() + DELETE_WAIT
        for part in in_drop_order(rids):
            self.delete(clients, account, resource, part, until)

    def tagged(self, clients: Clients, account: Account, resource: Mapping[str, Any],
               infra_id: str, kinds: Tuple[str, ...]) -> List[Tuple[Part, Dict[str, str]]]:
        """The parts of ``kinds`` tagged with ``infra_id`` and their tags (at most
        :data:`LISTED_LIMIT`; an endpoint that lists more is refused)."""
        value = infra_id.replace("'", "''")
        found = []
        with self.errors(resource, account, 'listing resources by tag'):
            for number, item in enumerate(clients.resource.resources.list(
                    filter=f"tagName eq '{TAG_INFRA_ID}' and tagValue eq '{value}'")):
                if number >= LISTED_LIMIT:
                    raise CloudError(self.say(resource, account, 'the tag listing named more than '
                                              f'{LISTED_LIMIT} resources: listing stopped'))
                rid, tags = getattr(item, 'id', None), getattr(item, 'tags', None)
                if not isinstance(rid, str) or len(rid) > 1000 or printable(rid) != rid or \
                        not isinstance(tags, Mapping):
                    continue
                tags = {str(k): str(v) for k, v in tags.items()}
                part = Part(rid)
                if part.kind in kinds and tags.get(TAG_INFRA_ID) == infra_id:
                    found.append((part, tags))
        return found


def _is_tls(exc: BaseException) -> bool:
    import ssl
    return any(isinstance(e, ssl.SSLError) or type(e).__name__ == 'SSLError'
               for e in exception_chain(exc))


def find_parts(handler: AzureHandler, infra_id: str, resources: Sequence[Mapping[str, Any]],
               kinds: tuple) -> List[Found]:
    """:meth:`AzureHandler.find` for the parts of ``kinds``."""
    found: List[Found] = []
    asked = set()
    for resource in resources:
        endpoint = resource.get('endpoint')
        if is_template(endpoint) or not str(endpoint or '').startswith('https://'):
            continue
        clients, account = handler.clients(resource)
        if (account.endpoint, account.subscription_id, account.client_id) in asked:
            continue
        asked.add((account.endpoint, account.subscription_id, account.client_id))
        nodes: Dict[str, List[Any]] = {}
        for part, tags in handler.tagged(clients, account, resource, infra_id, kinds):
            nodes.setdefault(tags.get(TAG_NODE_ID) or part.rid, []).append((part, tags))
        for key, members in nodes.items():
            members.sort(key=lambda m: m[0].rank)
            head, tags = members[0]
            others = [p.what + ' ' + p.name for p, _ in members[1:]]
            what = f'{head.what} {head.name}' + (f" (with {', '.join(others)})" if others else '')
            found.append(Found(head.rid, tags.get(TAG_NODE_ID), tags.get(TAG_NODE), dict(resource),
                               extra={'parts': [p.rid for p, _ in members]}, what=what))
    return found
