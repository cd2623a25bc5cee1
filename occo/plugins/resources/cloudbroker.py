"""The CloudBroker platform, through its XML REST API with ``requests``.

The calls are the original's: ``POST /instances.xml`` with the resource's ``description`` as an
``<instance>`` document (one child element per key; ``disable_autostop`` and ``isolated`` are
``true`` unless the description says otherwise; the rendered contextualisation goes in
base64 as ``cloud-init`` with ``cloud-init-b64: true``), ``GET /instances/<id>.xml`` for the
state and the four addresses of an instance, and ``PUT /instances/<id>/stop`` to drop it (an
instance that is stopping, halted or gone already is no error).  HTTP basic authentication
with the ``email`` and ``password`` of the matching ``auth_data.yaml`` entry.

CloudBroker instances carry no tags, so Occopus names each one
``occopus:<infra_id>:<node_id>:<node>`` (its ``name`` element; a ``name`` the description gives
is kept after it, ``...:<node>:<name>``) and finds an infrastructure's
instances -- those of a killed build, or the one a create whose answer was lost made -- by
listing them with ``GET /instances.xml`` (a call the original did not make).

One ``requests`` session per endpoint and credentials, without retries of its own and with
explicit connect and read time-outs; every answer is read up to :data:`BODY_LIMIT` bytes and
parsed with defusedxml (no DTD, no entities).  The platform's errors become one line each,
without credentials: :class:`~occo.errors.CloudError` when trying again cannot help,
:class:`~occo.errors.TransientCloudError` (429, 5xx, a lost connection, a time-out) when it may.
"""
from __future__ import annotations

import base64
import json
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from occo.errors import CloudError, OccoError, TransientCloudError
from occo.instances import Instance
from occo.plugins.http import (REDIRECTS, AnswerTooLong, never_sent, read_bounded, session,
                               url_part)
from occo.plugins.resources.base import (
    PENDING, RUNNING, SHUTDOWN, UNKNOWN, CreateRequest, Created, Found, ResourceHandler,
    ResourceStatus, resource_keys)
from occo.plugins.resources.common import BasicAuth, check_description, one_line
from occo.redact import excerpt, printable
from occo.schema import Problem, is_template, type_name

DESCRIPTION_REQUIRED = ('deployment_id', 'instance_type_id')
#: added to the description unless it has them (the original's defaults)
DEFAULTS = {'disable_autostop': 'true', 'isolated': 'true'}
CONNECT_TIMEOUT = 10.0  # seconds
READ_TIMEOUT = 60.0     # seconds, per read and for a whole answer
BODY_LIMIT = 8 << 20    # bytes of an answer read at most (a listing of many instances fits)
STATES_PER_CALL = 50    # instances asked about by one states call (the others at the next)
ASKED_LIMIT = 100_000  # node ids remembered for that order at most
NAME_PREFIX = 'occopus'
QUOTA_WORDS = ('quota', 'limit exceeded', 'limit reached', 'too many instances')

PENDING_STATUSES = frozenset(('starting', 'initializing', 'preparing'))
SHUTDOWN_STATUSES = {'stopping': 'the instance is stopping', 'halted': 'the instance is halted',
                     'stopped': 'the instance is stopped'}
#: the address elements, in the order of the node's address list (``-address`` optional)
ADDRESS_FIELDS = ('external-hostname', 'external-ip-address', 'internal-hostname',
                  'internal-ip-address')
XML_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9._-]{0,99}$')
#: characters XML 1.0 cannot carry (a description value with one cannot be sent)
NOT_XML = re.compile('[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]')
ID_TEXT = re.compile(r'^[^\s/?#]{1,128}$')


class CloudBrokerHandler(ResourceHandler):
    type = 'cloudbroker'
    needs_credentials = True
    noun = 'instance'
    buildable = True
    keys = resource_keys(required=('endpoint', 'description'), optional=('name', 'start_in_vpc'))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield from super().validate(section)
        description = section.get('description')
        problem = check_description(description, DESCRIPTION_REQUIRED)
        yield problem
        if problem is None:
            yield from check_values(description)

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self._asked: Dict[str, float] = {}  # node id -> when its state was last asked
        self._asked_lock = threading.Lock()

    # -- clients and errors ----------------------------------------------------------------

    def _platform(self, resource: Mapping[str, Any]) -> 'Platform':
        """The shared session for ``resource``'s endpoint and credentials.

        :raises AuthError: if the matching entry has no ``email`` and ``password``.
        :raises CloudError: if the endpoint is no http(s) URL.
        """
        endpoint = str(resource.get('endpoint') or '')
        login = BasicAuth.of(self.credentials(resource), self.type, endpoint)
        if not re.match(r'https?://[^/\s]', endpoint):
            raise CloudError(self.cloud_said(
                resource, 'the endpoint must be the http(s) URL of the CloudBroker API, such as '
                f'https://cola-prototype.cloudbroker.com/, not {excerpt(endpoint)}'))
        return self.client(endpoint.rstrip('/'), {'email': login.email,
                                                  'password': login.password})

    def make_client(self, endpoint: str, credentials: Optional[Mapping[str, Any]]) -> 'Platform':
        assert credentials is not None
        return Platform(endpoint, BasicAuth(credentials['email'], credentials['password']))

    def _say(self, resource: Mapping[str, Any], platform: Optional['Platform'], said: str) -> str:
        return self.cloud_said(resource, platform.account.hide(said) if platform else said)

    @contextmanager
    def _errors(self, resource: Mapping[str, Any], platform: 'Platform',
                doing: str) -> Iterator[None]:
        """What ``requests``, defusedxml and the platform raise, as one line naming the
        endpoint: transient where trying again may help, ``unsent`` when the request never
        left; anything else an answer may provoke is a :class:`CloudError`."""
        import requests
        try:
            yield
        except OccoError:
            raise
        except Answer as exc:
            raise self._refused(resource, platform, doing, exc) from None
        except Unreadable as exc:
            raise CloudError(self._say(resource, platform, f'{doing}: {exc}')) from None
        except requests.exceptions.SSLError as exc:
            raise CloudError(self._say(resource, platform, f'{doing}: TLS failed: '
                                       f'{one_line(exc, secret=platform.account)}')) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            raise TransientCloudError(
                self._say(resource, platform, f'{doing}: cannot reach the platform: '
                                              f'{one_line(exc, secret=platform.account)}'),
                unsent=never_sent(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a hostile answer must not escape as a traceback
            said = one_line(exc, secret=platform.account)
            raise CloudError(self._say(resource, platform, f'{doing}: the answer could not be used '
                                       f'({type(exc).__name__}: {said})')) from None

    def _refused(self, resource: Mapping[str, Any], platform: 'Platform', doing: str,
                 answer: 'Answer') -> CloudError:
        status, message = answer.status, one_line(answer.message, secret=platform.account)
        low = message.lower()
        said = f'{doing}: {message or "no message"} (HTTP {status})'
        if status in REDIRECTS:
            said = (f'{doing}: the platform answered with a redirect{answer.location}, which '
                    'Occopus does not follow (it would carry the password elsewhere): give the '
                    'URL it points to as the endpoint')
        elif status == 401:
            said = (f'{doing}: authentication failed (HTTP 401): the platform refused the email '
                    'and password of the matching cloudbroker entry of auth_data.yaml' +
                    (f' ({message})' if message else ''))
        elif status in (403, 409, 413, 422) and any(w in low for w in QUOTA_WORDS):
            said = f'{doing}: quota exceeded (HTTP {status}): {message}'
        elif status in (400, 404, 422) and doing == CREATING:
            said += _hint(resource, low)
        elif status == 403:
            said += ' -- the account is not allowed this call'
        if status in (408, 425, 429) or status >= 500:
            return TransientCloudError(self._say(resource, platform, said))
        return CloudError(self._say(resource, platform, said))

    # -- create ----------------------------------------------------------------------------

    def create(self, request: CreateRequest) -> Created:
        """One ``POST /instances.xml``.  It is not idempotent: when the engine calls again with
        the same request (``request.attempts > 1``), and after a failure that may have made
        the instance (a time-out, a 5xx, a lost answer), the instance named for the node
        instance is looked for and taken instead (duplicates are stopped)."""
        resource = request.resource
        platform = self._platform(resource)
        description = resource.get('description')
        label = description.get('name') if isinstance(description, Mapping) else None
        name = instance_name(request.infra_id, request.node_id, request.node, label)
        document = self._document(request, platform, name)
        if request.attempts > 1:
            with self._errors(resource, platform,
                              'looking for an instance an earlier attempt made'):
                earlier = self._named(platform, name)
            if earlier:
                return self._take(resource, platform, earlier)
        if request.cancelled.is_set():
            raise TransientCloudError('the create call was given up by Occopus; nothing made')
        accepted = False  # the platform answered 2xx: the instance exists, whatever the body
        try:
            with self._errors(resource, platform, CREATING):
                reply = platform.call('POST', '/instances.xml', document)
                accepted = True
                made = _seen(_instance_element(parse(reply.body)))
                if made is None:
                    raise Unreadable('the answer names no instance id')
        except TransientCloudError as exc:
            if exc.unsent:
                raise
            try:
                with self._errors(resource, platform, 'looking for the instance a failed create '
                                                      'call may have made'):
                    found = self._named(platform, name)
            except CloudError:
                raise exc from None
            if not found:
                raise
            self.ctx.log.info('%s', self._say(
                resource, platform, f'the instance {found[0].instance_id} was made although the '
                                    'create call failed: it is taken'))
            return self._take(resource, platform, found)
        except CloudError:
            if accepted:  # a permanent error must leave nothing: stop what the answer hid
                self._stop_named(resource, platform, name)
            raise
        status = made.status() if made.status_text else None
        return Created(made.instance_id, made.addresses, made.private_address,
                       state=status.state if status and status.state != UNKNOWN else PENDING)

    def _document(self, request: CreateRequest, platform: 'Platform', name: str) -> bytes:
        """The ``<instance>`` document of a create: the description (values as text), the
        defaults it lacks, the name, and the contextualisation in base64."""
        from xml.etree import ElementTree
        resource = request.resource
        description = resource.get('description')
        problems = [check_description(description, DESCRIPTION_REQUIRED)]
        if problems[0] is None:
            problems = list(check_values(description))
        problems = [p for p in problems if p is not None]
        if problems:
            raise CloudError(self._say(resource, platform, problems[0].message))
        fields = {str(k): _xml_text(v) for k, v in dict(DEFAULTS, **description).items()}
        fields['name'] = name
        if resource.get('start_in_vpc') is not None:
            fields.setdefault('start-in-vpc', _xml_text(resource['start_in_vpc']))
        user_data = getattr(request.context, 'user_data', None)
        if user_data is not None:
            fields['cloud-init'] = base64.b64encode(user_data.encode('utf-8')).decode('ascii')
            fields['cloud-init-b64'] = 'true'
        for key, value in fields.items():
            if NOT_XML.search(value):
                raise CloudError(self._say(resource, platform, f'description: the value of {key} '
                                           'has a control character, which XML cannot carry'))
        root = ElementTree.Element('instance')
        for key, value in fields.items():
            ElementTree.SubElement(root, key).text = value
        return ElementTree.tostring(root, encoding='utf-8', xml_declaration=True)

    def _stop_named(self, resource: Mapping[str, Any], platform: 'Platform', name: str) -> None:
        """Stop the live instances called ``name`` (as far as the platform lets us: what is
        left is still named for the node, and ``occopus-destroy`` finds it)."""
        try:
            with self._errors(resource, platform, 'looking for the instance the create made'):
                found = self._named(platform, name)
            for seen in found:
                self._stop(resource, platform, seen.instance_id)
        except CloudError as exc:
            self.ctx.log.warning('%s', exc)

    def _named(self, platform: 'Platform', name: str) -> List['Seen']:
        """The live instances called ``name``, oldest first."""
        return sorted((s for s in self._listing(platform) if s.name == name and s.live()),
                      key=lambda s: (s.created, s.instance_id))

    def _take(self, resource: Mapping[str, Any], platform: 'Platform',
              found: List['Seen']) -> Created:
        """The first of ``found``; the others, duplicates made by create calls whose answers
        were lost, are stopped."""
        for duplicate in found[1:]:
            self.ctx.log.warning('%s', self._say(resource, platform, f'stopping the instance '
                                                 f'{duplicate.instance_id}: a duplicate made by a '
                                                 'create call whose answer was lost'))
            try:
                self._stop(resource, platform, duplicate.instance_id)
            except CloudError as exc:  # still named for the node: occopus-destroy finds it
                self.ctx.log.warning('%s', exc)
        kept = found[0]
        status = kept.status()
        return Created(kept.instance_id, kept.addresses, kept.private_address,
                       state=status.state if status.state != UNKNOWN else PENDING)

    # -- states ----------------------------------------------------------------------------

    def states(self, instances: Sequence[Instance]) -> Dict[str, ResourceStatus]:
        """``GET /instances/<id>.xml`` for each instance (as the original), those asked about
        longest ago first, at most :data:`STATES_PER_CALL` per call.  An answer that cannot be
        read makes the state unknown; an instance the platform does not know is gone."""
        with self._asked_lock:
            ordered = sorted((i for i in instances if i.instance_id),
                             key=lambda i: self._asked.get(i.node_id, 0.0))[:STATES_PER_CALL]
        result: Dict[str, ResourceStatus] = {}
        platforms: Dict[str, 'Platform'] = {}  # credentials looked up once per distinct section
        failed: Optional[CloudError] = None
        for instance in ordered:
            with self._asked_lock:  # asked, answered or not: the others come first next time
                if len(self._asked) > ASKED_LIMIT:
                    self._asked.clear()
                self._asked[instance.node_id] = time.monotonic()
            try:
                key = json.dumps(instance.resource, sort_keys=True, default=str)
                if key not in platforms:
                    platforms[key] = self._platform(instance.resource)
                result[instance.node_id] = self._state(instance, platforms[key])
            except CloudError as exc:  # left out: asked again later; the others still answered
                failed = failed or exc
        if failed is not None and not result:
            raise failed
        return result

    def _state(self, instance: Instance, platform: 'Platform') -> ResourceStatus:
        resource, instance_id = instance.resource, instance.instance_id
        doing = f'reading the instance {instance_id}'
        with self._errors(resource, platform, doing):
            try:
                reply = platform.call('GET', f'/instances/{url_part(instance_id)}.xml',
                                      accept=(404,))
                if reply.status == 404:
                    return ResourceStatus(SHUTDOWN, reason=self._say(
                        resource, platform, f'the platform has no instance {instance_id} '
                                            '(stopped and gone)'))
                seen = _seen(_instance_element(parse(reply.body)))
                if seen is None:
                    raise Unreadable('the answer names no instance')
            except Unreadable as exc:
                return ResourceStatus(UNKNOWN,
                                      reason=self._say(resource, platform, f'{doing}: {exc}'))
        status = seen.status()
        if status.reason:
            status.reason = self._say(resource, platform, status.reason)
        return status

    # -- drop ------------------------------------------------------------------------------

    def drop(self, instance: Instance) -> None:
        if not instance.instance_id:
            return
        platform = self._platform(instance.resource)
        self._stop(instance.resource, platform, str(instance.instance_id))

    def _stop(self, resource: Mapping[str, Any], platform: 'Platform', instance_id: str) -> None:
        """``PUT /instances/<id>/stop``; refused for an instance that is stopping, halted or
        gone already, it is no error."""
        doing = f'stopping the instance {instance_id}'
        with self._errors(resource, platform, doing):
            try:
                platform.call('PUT', f'/instances/{url_part(instance_id)}/stop', accept=(404,))
                return
            except Answer as refusal:
                if refusal.status in REDIRECTS or refusal.status in (401, 408, 425, 429) or \
                        refusal.status >= 500:
                    raise
                reply = platform.call('GET', f'/instances/{url_part(instance_id)}.xml',
                                      accept=(404,))
                if reply.status == 404:
                    return
                try:
                    seen = _seen(_instance_element(parse(reply.body)))
                except Unreadable:
                    seen = None
                if seen is not None and not seen.live():
                    return
                raise refusal from None

    # -- find ------------------------------------------------------------------------------

    def find(self, infra_id: str, resources: Sequence[Mapping[str, Any]]) -> List[Found]:
        """Instances named for ``infra_id`` that are not stopping or halted, from one
        ``GET /instances.xml`` per endpoint and credentials.

        Sections whose endpoint is an unrendered template or no http(s) URL name no platform
        (no call was made there) and are skipped; credentials that cannot be found or that
        the platform refuses raise, so that the caller does not forget what may be there."""
        found: Dict[str, Found] = {}
        asked = set()
        prefix = f'{NAME_PREFIX}:{infra_id}:'
        for resource in resources:
            endpoint = resource.get('endpoint')
            if is_template(endpoint) or not re.match(r'https?://[^/\s]', str(endpoint or '')):
                continue
            platform = self._platform(resource)
            if id(platform) in asked:
                continue
            asked.add(id(platform))
            with self._errors(resource, platform, 'listing the instances'):
                listed = self._listing(platform)
            for seen in listed:
                if seen.name.startswith(prefix) and seen.live():
                    node_id, _, node = seen.name[len(prefix):].partition(':')
                    node = node.partition(':')[0]  # without the description's own name
                    found.setdefault(seen.instance_id, Found(
                        seen.instance_id, node_id or None, node or None, dict(resource),
                        what='instance'))
        return list(found.values())

    @staticmethod
    def _listing(platform: 'Platform') -> List['Seen']:
        reply = platform.call('GET', '/instances.xml')
        root = parse(reply.body)
        if _tag(root) == 'instance':
            elements = [root]
        else:
            elements = [e for e in root if _tag(e) == 'instance']
        return [s for s in map(_seen, elements) if s is not None]


CREATING = 'creating the instance'


def check_values(description: Mapping[str, Any]) -> Iterator[Problem]:
    """What a CloudBroker description cannot say: keys that are no XML element names, values
    that are not text, numbers or true/false."""
    for key, value in description.items():
        if not isinstance(key, str) or not XML_NAME.match(key) or key.lower().startswith('xml'):
            yield Problem(f'description key {excerpt(key)} cannot be an XML element name '
                          '(letters, digits, _ . - ; not starting with a digit or xml)',
                          ('description',))
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            yield Problem(f'description value of {key} must be text, a number or true/false, '
                          f'got {type_name(value)}', ('description', key))


def instance_name(infra_id: str, node_id: str, node: str, label: Any = None) -> str:
    """The ``name`` of a node instance's CloudBroker instance (``label``: the name the
    description gives, kept at the end)."""
    name = f'{NAME_PREFIX}:{infra_id}:{node_id}:{node}'
    return name if label in (None, '') else f'{name}:{_xml_text(label)}'


def _xml_text(value: Any) -> str:
    if value is None:
        return ''
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


def _hint(resource: Mapping[str, Any], low: str) -> str:
    """What to fix in the description, for the platform's refusals of a create."""
    description = resource.get('description')
    description = description if isinstance(description, Mapping) else {}
    checks = [key for key, words in (('deployment_id', ('deployment',)),
                                     ('instance_type_id', ('instance type', 'instance_type',
                                                           'instance-type')),
                                     ('key_pair_id', ('key pair', 'key_pair', 'key-pair')))
              if any(w in low for w in words)]
    if not checks:
        return ''
    return ' -- check ' + ' and '.join(f'{k} ({excerpt(description.get(k), 40)})' for k in checks)


# -- the wire --------------------------------------------------------------------------------

@dataclass
class Reply:
    status: int
    body: bytes


class Answer(Exception):
    """An HTTP answer the call does not accept (an error, or a redirect)."""

    def __init__(self, status: int, message: str, location: str = '') -> None:
        super().__init__(f'{message} (HTTP {status})')
        self.status, self.message, self.location = status, message, location


class Unreadable(Exception):
    """An answer Occopus cannot make sense of (not XML, too big, no id...)."""


class Platform:
    """One ``requests`` session (one endpoint and account), shared by every thread."""

    def __init__(self, base: str, account: BasicAuth) -> None:
        self.base = base
        self.account = account
        self.session = session('application/xml', (account.email, account.password))

    def call(self, method: str, path: str, body: Optional[bytes] = None,
             accept: Tuple[int, ...] = ()) -> Reply:
        """``method`` on ``base + path``; the answer if it is 2xx or its status is in ``accept``.

        :raises Answer: for any other status (redirects are never followed).
        :raises Unreadable: for an answer over :data:`BODY_LIMIT` bytes, or slower than
            :data:`READ_TIMEOUT` seconds in all.
        """
        headers = {'Content-Type': 'application/xml'} if body is not None else {}
        response = self.session.request(method, self.base + path, data=body, headers=headers,
                                        timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                                        allow_redirects=False, stream=True)
        try:
            data = _read(response)
        finally:
            response.close()
        status = response.status_code
        if 200 <= status < 300 or status in accept:
            return Reply(status, data)
        location = response.headers.get('Location')
        reason = response.reason if isinstance(response.reason, str) else ''
        raise Answer(status, _said(data) or reason,
                     f' to {excerpt(location, 200)}' if isinstance(location, str) else '')


def _read(response: Any) -> bytes:
    try:
        return read_bounded(response, BODY_LIMIT, READ_TIMEOUT)
    except AnswerTooLong as exc:
        raise Unreadable(str(exc)) from None


def parse(body: bytes) -> Any:
    """The root element of an XML answer, parsed safely (no DTD, no entities).

    :raises Unreadable: if it is not such XML.
    """
    from xml.etree.ElementTree import ParseError
    try:
        from defusedxml import DefusedXmlException
        from defusedxml.ElementTree import fromstring
    except ImportError:  # pragma: no cover - the extra is not installed
        raise CloudError('the cloudbroker resource type needs defusedxml: '
                         'pip install occopus[cloudbroker]') from None
    if not body.strip():
        raise Unreadable('the answer is empty, not XML')
    try:
        return fromstring(body, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise Unreadable(f'the answer is XML Occopus refuses to read ({type(exc).__name__}: '
                         'a DTD or entities)') from None
    except (ParseError, ValueError, UnicodeError, RecursionError) as exc:
        raise Unreadable(f'the answer is not XML ({one_line(exc, 120)}): '
                         f'{one_line(body[:200].decode("utf-8", "replace"), 120)}') from None


def _said(data: bytes) -> str:
    """The message of an error answer: its ``<error>`` elements (Rails' ``<errors>``), or
    ``<message>``, or the text of a short plain answer; '' if none can be told."""
    try:
        root = parse(data)
    except Unreadable:
        text = data[:2000].decode('utf-8', 'replace').strip()
        return '' if not text or text.startswith('<') else text
    parts = [_plain(e) for e in root.iter() if _tag(e) in ('error', 'message')] or [_plain(root)]
    return '; '.join(p for p in parts if p)[:2000]


def _tag(element: Any) -> str:
    """An element's name, without namespace, lower case, ``_`` read as ``-``."""
    tag = element.tag if isinstance(element.tag, str) else ''
    return tag.rsplit('}', 1)[-1].lower().replace('_', '-')


def _plain(element: Any) -> str:
    return ' '.join(''.join(element.itertext()).split())[:2000]


def _field(element: Any, *names: str, strict: bool = True) -> str:
    """The text of the first child called one of ``names`` that holds a short value without
    elements of its own (with ``strict``, only printable text without spaces); '' if none."""
    for child in element:
        if _tag(child) in names and len(child) == 0:
            text = (child.text or '').strip()
            plain = printable(text) == text and ' ' not in text
            if text and len(text) <= 255 and (plain or not strict):
                return text
    return ''


def _instance_element(root: Any) -> Any:
    """The ``<instance>`` of an answer (the root, or a child of it)."""
    if _tag(root) == 'instance':
        return root
    return next((child for child in root if _tag(child) == 'instance'), root)


@dataclass
class Seen:
    """One instance as the platform described it (checked, printable)."""

    instance_id: str
    status_text: str = ''
    name: str = ''
    created: str = ''
    addresses: List[str] = field(default_factory=list)
    private_address: Optional[str] = None

    def live(self) -> bool:
        return self.status_text not in SHUTDOWN_STATUSES

    def status(self) -> ResourceStatus:
        state = self.status_text
        if state in PENDING_STATUSES:
            return ResourceStatus(PENDING, self.addresses, self.private_address,
                                  f'the instance is {state}')
        if state == 'running':
            return ResourceStatus(RUNNING, self.addresses, self.private_address)
        if state in SHUTDOWN_STATUSES:
            return ResourceStatus(SHUTDOWN, self.addresses, self.private_address,
                                  SHUTDOWN_STATUSES[state])
        why = (f'the platform reports the status {excerpt(state, 40)}, which Occopus does not know'
               if state else 'the platform reports no status for the instance')
        return ResourceStatus(UNKNOWN, self.addresses, self.private_address, why)


def _seen(element: Any) -> Optional[Seen]:
    """The instance an ``<instance>`` element describes, or None without a usable id."""
    instance_id = _field(element, 'id')
    if not ID_TEXT.match(instance_id):
        return None
    addresses: List[str] = []
    for name in ADDRESS_FIELDS:
        address = _field(element, name, name[:-len('-address')] if name.endswith('-address')
                         else name)
        if address and address not in addresses:
            addresses.append(address)
    name = next((_plain(c) for c in element if _tag(c) == 'name'), '')
    return Seen(instance_id, _field(element, 'status', strict=False).lower(),
                name if printable(name) == name else '', _field(element, 'created-at'),
                addresses, _field(element, 'internal-ip-address', 'internal-ip') or None)


__all__ = ['CloudBrokerHandler', 'instance_name']
