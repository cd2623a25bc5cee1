"""Amazon EC2 (and EC2-compatible clouds such as OpenNebula's EC2 interface) through boto3.

One boto3 client per endpoint, region and credentials, with botocore's ``adaptive`` retry
mode (a few attempts; the engine retries further what stays transient) and bounded socket
waits.  An instance is launched with ``RunInstances`` (one at a time, the node id as its
idempotency ``ClientToken``) and tagged at launch with the infrastructure id, node id, node
name and a ``Name``; its states are read for many instances at once with one (paginated)
``DescribeInstances`` per endpoint; ``find`` lists the infrastructure's instances by their
``occopus:infra_id`` tag; drop terminates.  The cloud's errors become one line each, without
credentials: :class:`~occo.errors.CloudError` when trying again cannot help,
:class:`~occo.errors.TransientCloudError` (throttling, 5xx, a lost connection, a time-out) when
it may.  boto3 is imported only when a client is made.
"""
from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from occo.errors import AuthError, CloudError, OccoError, TransientCloudError
from occo.instances import Instance
from occo.plugins.resources.base import (
    PENDING, RUNNING, SHUTDOWN, UNKNOWN, CreateRequest, Created, Found, ResourceHandler,
    ResourceStatus, resource_keys)
from occo.redact import MASK, excerpt, mask_urls, printable
from occo.schema import Problem, expect_list, is_template, type_name

#: AWS accepts at most this many bytes of user data (counted before base64).
USER_DATA_LIMIT = 16384
#: botocore's own retries (3 after the first attempt, paced by adaptive mode's client-side
#: rate limiter): few, the engine retries what stays transient within its deadlines.
RETRIES = {'mode': 'adaptive', 'max_attempts': 3}
CONNECT_TIMEOUT = 10  # seconds
READ_TIMEOUT = 60     # seconds
POOL_CONNECTIONS = 50  # more than the engine's calls at once per endpoint, so none is discarded
#: values one DescribeInstances filter may carry on AWS
FILTER_VALUES = 200
PAGE_SIZE = 1000
#: pages of one DescribeInstances listing at most (an endpoint that keeps handing out next
#: tokens is refused, not followed for ever)
MAX_PAGES = 100
#: seconds after its create during which an instance the cloud does not list yet is taken
#: for pending, not gone (EC2's eventual consistency)
NOT_LISTED_GRACE = 120.0
#: every state but terminated: what find reports (and drop may still have to terminate)
LIVE_STATES = ('pending', 'running', 'shutting-down', 'stopping', 'stopped')

TAG_INFRA_ID = 'occopus:infra_id'
TAG_NODE_ID = 'occopus:node_id'
TAG_NODE = 'occopus:node'
TAG_NAME = 'Name'
TAG_KEY_LIMIT, TAG_VALUE_LIMIT = 128, 256

STATES = {'pending': (PENDING, None), 'running': (RUNNING, None),
          'shutting-down': (SHUTDOWN, 'the instance is shutting down (terminated)'),
          'terminated': (SHUTDOWN, 'the instance was terminated'),
          'stopping': (SHUTDOWN, 'the instance is stopping (stopped instances are not used)'),
          'stopped': (SHUTDOWN, 'the instance is stopped (stopped instances are not used)')}

#: error codes that may pass: botocore's adaptive mode retried them already, the engine goes on
TRANSIENT_CODES = frozenset((
    'RequestLimitExceeded', 'Throttling', 'ThrottlingException', 'ThrottledException',
    'RequestThrottled', 'RequestThrottledException', 'TooManyRequestsException',
    'SlowDown', 'ServiceUnavailable', 'Unavailable', 'InternalError', 'InternalFailure',
    'InsufficientInstanceCapacity', 'InsufficientHostCapacity', 'RequestTimeout',
    'RequestTimeoutException', 'PriorRequestNotComplete', 'EC2ThrottledException'))
GONE_CODES = ('InvalidInstanceID.NotFound', 'InvalidInstanceID.Malformed')
AUTH_CODES = ('AuthFailure', 'InvalidClientTokenId', 'SignatureDoesNotMatch',
              'UnrecognizedClientException', 'InvalidAccessKeyId', 'IncompleteSignature',
              'MissingAuthenticationToken', 'ExpiredToken', 'ExpiredTokenException')
URL = re.compile(r'https?://[^/\s]')
#: access key ids as AWS writes them (AKIA..., ASIA...): never echoed back to a user
ACCESS_KEY_ID = re.compile(r'\b(?:AKIA|ASIA|AROA|AIDA|ANPA|AGPA)[A-Z0-9]{12,124}\b')


@dataclass(frozen=True)
class Target:
    """Where calls go: the endpoint URL and the region they are signed for."""

    url: str
    region: str


@dataclass(frozen=True)
class Keys:
    """An access key pair (never printed: its repr hides it)."""

    access: str = field(repr=False)
    secret: str = field(repr=False)

    def hide(self, text: str) -> str:
        """``text`` without the key pair, nor anything that looks like an access key id."""
        for value in (self.secret, self.access):
            if value:
                text = text.replace(value, MASK)
        return ACCESS_KEY_ID.sub(MASK, text)


@dataclass
class Seen:
    """One instance as DescribeInstances or RunInstances reported it (checked, printable)."""

    instance_id: str
    state: str
    reason: str = ''
    addresses: List[str] = field(default_factory=list)
    private_address: Optional[str] = None
    tags: Dict[str, str] = field(default_factory=dict)

    def status(self) -> ResourceStatus:
        state, why = STATES.get(self.state, (UNKNOWN, None))
        if state == UNKNOWN:
            why = (f'the cloud reports the state {excerpt(mask_urls(self.state))}, which Occopus '
                   'does not know'
                   if self.state else 'the cloud reports no state for the instance')
        if why and self.reason:
            why = f'{why}: {self.reason}'
        return ResourceStatus(state, list(self.addresses), self.private_address, why)


def _text(value: Any, limit: int = 255) -> Optional[str]:
    """``value`` if it is short printable text, else None (cloud answers are not trusted)."""
    if isinstance(value, str) and value and len(value) <= limit and printable(value) == value:
        return value
    return None


def _seen(raw: Any) -> Optional[Seen]:
    if not isinstance(raw, Mapping):
        return None
    instance_id = _text(raw.get('InstanceId'))
    if instance_id is None:
        return None
    state = raw.get('State')
    name = state.get('Name') if isinstance(state, Mapping) else None
    reason = raw.get('StateReason')
    why = reason.get('Message') if isinstance(reason, Mapping) else raw.get('StateTransitionReason')
    addresses: List[str] = []
    for key in ('PublicDnsName', 'PublicIpAddress', 'PrivateIpAddress'):
        address = _text(raw.get(key))
        if address and address not in addresses:
            addresses.append(address)
    tags = {}
    for tag in raw.get('Tags') or () if isinstance(raw.get('Tags'), list) else ():
        key, value = (tag.get('Key'), tag.get('Value')) if isinstance(tag, Mapping) else (None, None)
        if isinstance(key, str) and isinstance(value, str):
            tags[key] = value
    return Seen(instance_id, name if isinstance(name, str) else '',
                _clean(why, 300) if isinstance(why, str) else '',
                addresses, _text(raw.get('PrivateIpAddress')), tags)


def _clean(text: str, limit: int) -> str:
    """What the cloud said on one printable line, known secrets and URL secrets masked
    *before* it is cut to ``limit`` characters (a secret across the cut would leak its start)."""
    return mask_urls(printable(' '.join(text.split())))[:limit]


def _instances(pages: Iterable[Any]) -> Iterator[Seen]:
    """Every instance of DescribeInstances answers (reservations of instances)."""
    for page in pages:
        reservations = page.get('Reservations') if isinstance(page, Mapping) else None
        for reservation in reservations if isinstance(reservations, list) else ():
            found = reservation.get('Instances') if isinstance(reservation, Mapping) else None
            for raw in found if isinstance(found, list) else ():
                seen = _seen(raw)
                if seen is not None:
                    yield seen


def user_tags(tags: Any) -> Dict[str, str]:
    """The ``tags`` key as one mapping: a mapping, or a list of mappings (each either
    ``{Key: k, Value: v}`` as AWS writes them, or ``{k: v, ...}``)."""
    merged: Dict[str, str] = {}
    for item in ([tags] if isinstance(tags, Mapping) else tags if isinstance(tags, list) else ()):
        if not isinstance(item, Mapping):
            continue
        if set(item) == {'Key', 'Value'}:
            merged[str(item['Key'])] = '' if item['Value'] is None else str(item['Value'])
        else:
            merged.update({str(k): '' if v is None else str(v) for k, v in item.items()})
    return merged


def _part(exc: Any, key: str) -> Mapping[str, Any]:
    response = getattr(exc, 'response', None)
    value = response.get(key) if isinstance(response, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _said(exc: Any, key: str) -> str:
    """``Error.<key>`` of a botocore ClientError, as text ('' if absent)."""
    value = _part(exc, 'Error').get(key)
    return value.strip() if isinstance(value, str) else ''


def _code(exc: Any) -> str:
    return _said(exc, 'Code')


def _status(exc: Any) -> int:
    status = _part(exc, 'ResponseMetadata').get('HTTPStatusCode')
    return status if isinstance(status, int) else 0


def _chunks(values: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


class EC2Handler(ResourceHandler):
    type = 'ec2'
    needs_credentials = True
    noun = 'instance'
    buildable = True
    keys = resource_keys(
        required=('endpoint', 'regionname', 'image_id', 'instance_type'),
        optional=('key_name', 'security_group_ids', 'subnet_id', 'tags', 'name'))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield from super().validate(section)
        yield expect_list(section, 'security_group_ids')
        tags = section.get('tags')
        # The original needs a mapping; its docs say "list of key-value pairs": accept both.
        if 'tags' in section and not isinstance(tags, Mapping) and not (
                isinstance(tags, list) and all(isinstance(t, Mapping) for t in tags)):
            yield Problem(f"'tags' must be a mapping of tag names to values, got {type_name(tags)}",
                          ('tags',))

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        #: per thread: whether an attempt of the current call reached the endpoint
        self._wire = threading.local()
        #: node ids whose RunInstances may have reached the cloud (an attempt of their create
        #: that failed later cannot say "nothing made")
        self._launched: set = set()

    @classmethod
    def endpoint(cls, resource: Mapping[str, Any]) -> str:
        """The endpoint URL and its region: one EC2 endpoint may serve several regions."""
        url = str(resource.get('endpoint') or '')
        region = resource.get('regionname')
        return f'{url} ({region})' if region else url

    # -- clients and errors ----------------------------------------------------------------

    def _account(self, resource: Mapping[str, Any]) -> Tuple[Target, Keys]:
        """Where to call and with which keys, from the section and ``auth_data.yaml``.

        :raises AuthError: if the entry has no ``accesskey`` and ``secretkey`` (boto3 would
            otherwise look for keys of its own: environment, files, instance metadata).
        """
        found = self.credentials(resource)
        access, secret = (str(v) if isinstance(v, (str, int)) and not isinstance(v, bool) else ''
                          for v in (found.get('accesskey'), found.get('secretkey')))
        if not (access and secret):
            names = ', '.join(sorted(str(k) for k in found)) or 'nothing'
            raise AuthError(f'the auth_data of {self.type} {printable(self.endpoint(resource))} '
                            f'needs accesskey and secretkey (it has {printable(names)})')
        return Target(str(resource.get('endpoint') or ''), str(resource.get('regionname') or '')), \
            Keys(access, secret)

    def _client(self, resource: Mapping[str, Any]) -> Tuple[Any, Keys]:
        """The shared client for ``resource``'s endpoint, region and credentials, and the keys."""
        target, keys = self._account(resource)
        with self._errors(resource, keys, 'making a client'):
            return self.client(target, {'accesskey': keys.access, 'secretkey': keys.secret}), keys

    def make_client(self, endpoint: Any, credentials: Optional[Mapping[str, Any]]) -> Any:
        import boto3
        from botocore.config import Config
        assert isinstance(endpoint, Target) and credentials is not None
        if not URL.match(endpoint.url):
            raise ValueError('the endpoint must be an http(s) URL such as '
                             f'https://ec2.eu-west-1.amazonaws.com, not {excerpt(endpoint.url)}')
        session = boto3.session.Session(aws_access_key_id=credentials['accesskey'],
                                        aws_secret_access_key=credentials['secretkey'],
                                        region_name=endpoint.region)
        client = session.client('ec2', endpoint_url=endpoint.url, config=Config(
            retries=dict(RETRIES), connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
            max_pool_connections=POOL_CONNECTIONS))
        client.meta.events.register_first('needs-retry.ec2', self._attempted)
        return client

    def _attempted(self, caught_exception: Any = None, **_: Any) -> Optional[bool]:
        """botocore's hook after every attempt of a call (its own retries included): note
        whether this one reached the endpoint (it did unless the connection itself failed:
        refused, no route, a name that does not resolve).  Such a failure is not retried by
        botocore (False: the first answer of this hook decides) but given to the engine at
        once, which retries it with its own backoff within the node's deadline."""
        from botocore.exceptions import EndpointConnectionError
        if isinstance(caught_exception, EndpointConnectionError):
            return False
        self._wire.reached = True
        return None

    @contextmanager
    def _errors(self, resource: Mapping[str, Any], keys: Keys, call: str,
                ignore: Tuple[str, ...] = ()) -> Iterator[None]:
        """botocore's exceptions as ours: one line, the keys hidden, transient where it may
        pass; a refusal with an error code of ``ignore`` is no error."""
        from botocore.exceptions import (BotoCoreError, ClientError, ConnectionError,
                                         EndpointConnectionError, HTTPClientError, SSLError)
        self._wire.reached = False
        try:
            yield
        except OccoError:
            raise
        except ClientError as exc:
            if _code(exc) in ignore:
                return
            raise self._refused(resource, keys, call, exc) from None
        except (HTTPClientError, ConnectionError) as exc:
            if isinstance(exc, SSLError):
                raise CloudError(self._say(resource, keys, f'{call}: {exc}')) from None
            # The connection itself failed on every attempt botocore made: nothing was sent.
            unsent = isinstance(exc, EndpointConnectionError) and not self._wire.reached
            raise TransientCloudError(self._say(resource, keys, f'{call}: {exc}'),
                                      unsent=unsent) from None
        except (BotoCoreError, ValueError) as exc:  # bad parameters, a region boto3 refuses
            raise CloudError(self._say(resource, keys, f'{call}: {exc}')) from None
        except Exception as exc:  # noqa: BLE001 - an answer botocore could not make sense of
            raise CloudError(self._say(resource, keys, f'{call}: the answer could not be read '
                                                       f'({type(exc).__name__}: {exc})')) from None

    def _say(self, resource: Mapping[str, Any], keys: Keys, said: str) -> str:
        return self.cloud_said(resource, keys.hide(said))  # masked whole, cut after

    def _refused(self, resource: Mapping[str, Any], keys: Keys, call: str, exc: Any) -> CloudError:
        code, message, status = _code(exc) or 'an error', _said(exc, 'Message'), _status(exc)
        said = f'{call} refused ({_clean(keys.hide(code), 100)}{f", HTTP {status}" if status else ""})' + \
            (f': {_clean(keys.hide(message), 500)}' if message else '')
        transient = code in TRANSIENT_CODES or status >= 500 or status == 429
        hint = '' if transient else self._hint(resource, code, message)
        text = self._say(resource, keys, said + (f' -- {hint}' if hint else ''))
        error = TransientCloudError(text) if transient else CloudError(text)
        error.cloud_code = code  # type: ignore[attr-defined]
        return error

    @staticmethod
    def _hint(resource: Mapping[str, Any], code: str, message: str) -> str:
        """What to fix, for the errors a user's section or auth data can cause."""
        low = message.lower()
        if code.startswith('InvalidAMIID'):
            return f"check image_id ({excerpt(resource.get('image_id'))}): no such image in this region"
        about_type = 'instance type' in low or 'instancetype' in low
        if code.startswith('InvalidInstanceType') or (
                code in ('InvalidParameterValue', 'Unsupported') and about_type):
            return f"check instance_type ({excerpt(resource.get('instance_type'))})"
        if code.startswith('InvalidKeyPair'):
            return f"check key_name ({excerpt(resource.get('key_name'))}): no such key pair in this region"
        if code in AUTH_CODES:
            return 'the cloud refused the credentials: check accesskey and secretkey of the ' \
                   'matching ec2 entry of auth_data.yaml'
        if code.startswith('InvalidSubnetID'):
            return f"check subnet_id ({excerpt(resource.get('subnet_id'))})"
        if code.startswith('InvalidGroup') or code.startswith('InvalidSecurityGroupID'):
            return 'check security_group_ids'
        if code.endswith('LimitExceeded') or 'quota' in low:
            return 'a quota of the account is used up: drop instances or ask for a higher limit'
        if code in ('UnauthorizedOperation', 'AccessDenied', 'OptInRequired'):
            return 'the credentials are not allowed this call'
        return ''

    def _describe(self, resource: Mapping[str, Any], client: Any,
                  filters: List[Dict[str, Any]]) -> Iterator[Seen]:
        pages = client.get_paginator('describe_instances').paginate(
            Filters=filters, PaginationConfig={'PageSize': PAGE_SIZE})
        return _instances(self._capped(resource, pages))

    def _capped(self, resource: Mapping[str, Any], pages: Iterable[Any]) -> Iterator[Any]:
        """At most :data:`MAX_PAGES` pages: an endpoint that hands out next tokens for ever is
        refused rather than followed."""
        for number, page in enumerate(pages, 1):
            if number > MAX_PAGES:
                raise CloudError(self.cloud_said(
                    resource, f'DescribeInstances answered more than {MAX_PAGES} pages (of up to '
                    f'{PAGE_SIZE} instances each) and still named a next page: listing stopped'))
            yield page

    # -- operations ------------------------------------------------------------------------

    def create(self, request: CreateRequest) -> Created:
        resource = request.resource
        user_data = getattr(request.context, 'user_data', None) or ''
        size = len(user_data.encode('utf-8'))
        if size > USER_DATA_LIMIT:
            raise CloudError(self.cloud_said(
                resource, f'the user data (the rendered contextualisation) is {size} bytes, over '
                f"EC2's limit of {USER_DATA_LIMIT} bytes (16 KiB, before base64): make it shorter, "
                'e.g. let cloud-init download big files'))
        client, keys = self._client(resource)
        tags = user_tags(resource.get('tags'))
        tags.setdefault(TAG_NAME, request.vm_name)
        tags.update({TAG_INFRA_ID: request.infra_id, TAG_NODE_ID: request.node_id,
                     TAG_NODE: request.node})
        params: Dict[str, Any] = dict(
            ImageId=str(resource['image_id']), InstanceType=str(resource['instance_type']),
            MinCount=1, MaxCount=1, ClientToken=request.node_id,
            TagSpecifications=[{'ResourceType': 'instance', 'Tags': [
                {'Key': k[:TAG_KEY_LIMIT], 'Value': v[:TAG_VALUE_LIMIT]} for k, v in tags.items()]}])
        if user_data:
            params['UserData'] = user_data
        if resource.get('key_name'):
            params['KeyName'] = str(resource['key_name'])
        if resource.get('security_group_ids'):
            params['SecurityGroupIds'] = [str(g) for g in resource['security_group_ids']]
        if resource.get('subnet_id'):
            params['SubnetId'] = str(resource['subnet_id'])
        if request.cancelled.is_set():
            raise TransientCloudError('the create call was given up by its caller; nothing made')
        # The node id is the ClientToken: an attempt after one whose answer was lost gets the
        # same instance back.  An attempt that never reached the cloud made nothing only if
        # no earlier attempt of this create may have reached it.
        earlier = request.node_id in self._launched
        self._launched.add(request.node_id)
        try:
            with self._errors(resource, keys, 'RunInstances'):
                answer = client.run_instances(**params)
        except TransientCloudError as exc:
            if exc.unsent and earlier:
                exc.unsent = False
            elif exc.unsent:
                self._launched.discard(request.node_id)
            raise
        made = next(_instances([{'Reservations': [answer]}]), None)
        if made is None:
            raise CloudError(self.cloud_said(resource, 'RunInstances answered without an instance id'))
        return Created(made.instance_id, made.addresses, made.private_address,
                       state=made.status().state)

    def states(self, instances: Sequence[Instance]) -> Dict[str, ResourceStatus]:
        groups: Dict[Tuple[Target, Keys], List[Instance]] = {}
        for instance in instances:  # one endpoint; sections differing in image share a call
            if instance.instance_id:
                groups.setdefault(self._account(instance.resource), []).append(instance)
        result: Dict[str, ResourceStatus] = {}
        for members in groups.values():
            resource = members[0].resource
            client, keys = self._client(resource)
            ids = sorted({str(i.instance_id) for i in members})
            seen: Dict[str, Seen] = {}
            with self._errors(resource, keys, 'DescribeInstances'):
                for chunk in _chunks(ids, FILTER_VALUES):  # a filter ignores unknown ids
                    seen.update((s.instance_id, s) for s in self._describe(
                        resource, client, [{'Name': 'instance-id', 'Values': list(chunk)}]))
            for instance in members:
                result[instance.node_id] = self._status(instance, seen.get(str(instance.instance_id)))
        return result

    @staticmethod
    def _status(instance: Instance, seen: Optional[Seen]) -> ResourceStatus:
        if seen is not None:
            return seen.status()
        if time.time() - (instance.created_at or 0) < NOT_LISTED_GRACE:
            return ResourceStatus(PENDING, reason=f'the cloud does not list {instance.instance_id} yet')
        return ResourceStatus(SHUTDOWN, reason=f'the cloud has no instance {instance.instance_id} '
                                               '(terminated and gone)')

    def drop(self, instance: Instance) -> None:
        if not instance.instance_id:
            return
        client, keys = self._client(instance.resource)
        with self._errors(instance.resource, keys, 'TerminateInstances', ignore=GONE_CODES):
            client.terminate_instances(InstanceIds=[instance.instance_id])

    def find(self, infra_id: str, resources: Sequence[Mapping[str, Any]]) -> List[Found]:
        """Instances tagged with ``infra_id`` in every state but terminated, asking each
        endpoint, region and credentials once.

        Sections that cannot name a cloud are skipped: an endpoint that is an unrendered
        template (from a raw node definition), is no http(s) URL, or has no region (no call
        can be made there, so nothing was made).  Credentials that cannot be found or that
        the cloud refuses raise (:class:`~occo.errors.AuthError`,
        :class:`~occo.errors.CloudError`): the caller then knows this endpoint could not be
        asked, and does not forget what may be there."""
        found: Dict[str, Found] = {}
        asked = set()
        for resource in resources:
            endpoint = resource.get('endpoint')
            if is_template(endpoint) or not URL.match(str(endpoint or '')) or \
                    not resource.get('regionname'):
                continue
            account = self._account(resource)
            if account not in asked:
                asked.add(account)
                for seen in self._tagged(resource, infra_id):
                    found.setdefault(seen.instance_id, Found(
                        seen.instance_id, seen.tags.get(TAG_NODE_ID), seen.tags.get(TAG_NODE),
                        dict(resource), what='instance'))
        return list(found.values())

    def _tagged(self, resource: Mapping[str, Any], infra_id: str) -> List[Seen]:
        client, keys = self._client(resource)
        filters = [{'Name': f'tag:{TAG_INFRA_ID}', 'Values': [infra_id]},
                   {'Name': 'instance-state-name', 'Values': list(LIVE_STATES)}]
        with self._errors(resource, keys, 'DescribeInstances'):
            return [seen for seen in self._describe(resource, client, filters)
                    if seen.tags.get(TAG_INFRA_ID) == infra_id and seen.state != 'terminated']
