"""CloudSigma (API 2.0), with ``requests`` (not the ``cloudsigma`` package: it sets no time-outs
and pulls in test and serial-port libraries).

One ``requests.Session`` per API base and credentials (HTTP basic: ``email`` and ``password``)
is made on first use and shared by every call and thread of the run; every call has a connect
and a read time-out, nothing is retried by the session and redirects are never followed (they
would carry the credentials elsewhere): the engine retries what
:class:`~occo.errors.TransientCloudError` says may pass.

What a node instance is made of, and how it is found again:

* a drive cloned from the library drive ``libdrive_id``; its *name* is
  ``occopus:<infra_id>:<node_id>``, given in the clone call itself, so that a build killed
  right after the clone still leaves a drive :meth:`CloudSigmaHandler.find` can trace (a
  separate meta update would leave a window);
* the server, made from ``description`` once the drive is ``unmounted``, with the drive as its
  boot disk and ``meta`` holding ``occopus_infra_id``, ``occopus_node_id``, ``occopus_node``
  and -- as the original -- the cloud-init user data in base64 under ``cloudinit-user-data``,
  named by ``base64_fields``; then started.

Dropping stops the server (waiting, bounded, for ``stopped``), deletes it with
``recurse=all_drives`` and deletes the clone too if it is still there; a server or drive that is
gone is no error.  A create that fails after the clone deletes what it made before it raises.
"""
from __future__ import annotations

import base64
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from occo.errors import CloudError, TransientCloudError
from occo.instances import Instance
from occo.plugins.http import (REDIRECTS, AnswerTooLong, never_sent, read_bounded, session,
                               url_part)
from occo.plugins.resources.base import (
    PENDING, RUNNING, SHUTDOWN, UNKNOWN, CreateRequest, Created, Found, ResourceHandler,
    ResourceStatus, resource_keys)
from occo.plugins.resources.common import (
    META_INFRA_ID, META_NODE, META_NODE_ID, BasicAuth, Tags, as_dict, as_list, check_description,
    one_line)
from occo.redact import excerpt, mask_url, printable
from occo.schema import Problem, is_template

DESCRIPTION_REQUIRED = ('cpu', 'mem', 'vnc_password')
CONNECT_TIMEOUT = 10.0  # seconds
READ_TIMEOUT = 60.0     # seconds
MAX_BODY = 16 << 20     # bytes of one answer read at most (a listing of thousands of servers fits)
PAGE_SIZE = 500         # objects asked for per page of a listing
MAX_PAGES = 100         # pages of one listing
DRIVE_WAIT = 600.0      # seconds a clone may take to become unmounted (create_timeout cuts it)
START_WAIT = 120.0      # seconds a started server may take to leave ``stopped``
STOP_WAIT = 30.0        # seconds a drop waits for a stopped server (then the engine tries again)
UNDO_WAIT = 30.0        # seconds an undone create waits for its server to stop
POLL = (0.2, 5.0)       # first and longest pause between looks at a drive or server
#: the share of a section's ``create_timeout`` the clone may take, so that a drive stuck
#: cloning is said as such rather than as the engine's time-out of the whole call
DRIVE_SHARE = 0.8

USER_DATA_FIELD = 'cloudinit-user-data'
BASE64_FIELDS = 'base64_fields'
SERVER, DRIVE = 'server', 'drive'  # kinds of what drop is given

DRIVE_BUSY = frozenset(('creating', 'cloning_dst', 'cloning_src', 'uploading', 'resizing'))
STATES = {
    'running': (RUNNING, None),
    'starting': (PENDING, 'the server is starting'),
    'paused': (PENDING, 'the server is paused'),
    'stopping': (SHUTDOWN, 'the server is stopping (stopped servers are not used)'),
    'stopped': (SHUTDOWN, 'the server is stopped (stopped servers are not used)'),
    'unavailable': (UNKNOWN, 'the server is unavailable (its host cannot be reached now)'),
}
_NOT_JSON = object()  # what an answer that does not parse reads as


def api_base(endpoint: str) -> str:
    """The API base of an ``endpoint`` with exactly one trailing slash (paths are joined to it)."""
    return endpoint.strip().rstrip('/') + '/'


@dataclass
class Spec:
    """The keys of a rendered ``cloudsigma`` resource section, checked."""

    endpoint: str
    base: str
    libdrive_id: str
    description: Dict[str, Any]

    @classmethod
    def of(cls, section: Mapping[str, Any]) -> 'Spec':
        endpoint = str(section.get('endpoint') or '')
        where = printable(mask_url(endpoint))
        if not endpoint.strip().startswith(('http://', 'https://')):
            raise CloudError(f'cloudsigma at {where}: the endpoint must be the http(s) URL of the '
                             'API base, such as https://zrh.cloudsigma.com/api/2.0/')
        description = section.get('description')
        return cls(endpoint, api_base(endpoint), str(section.get('libdrive_id') or ''),
                   dict(description) if isinstance(description, Mapping) else {})


class Refusal(Exception):
    """Something the cloud's answers rule out (not JSON, no uuid...): a permanent error."""


class Unreadable(CloudError):
    """An answer that could not be read: a call that changes something may have done it."""


class Answer(Exception):
    """An HTTP error answer: its status, the error types of its body and its message."""

    def __init__(self, status: int, kinds: Tuple[str, ...], message: str) -> None:
        super().__init__(f'{message} (HTTP {status})')
        self.status, self.kinds, self.message = status, kinds, message


def _said(body: Any, fallback: str) -> Tuple[Tuple[str, ...], str]:
    """The error types and the message of a CloudSigma error body: a list of
    ``{error_type, error_message, error_point}`` (an object alone is taken too)."""
    errors = body if isinstance(body, list) else [body] if isinstance(body, dict) else []
    kinds, messages = [], []
    for error in errors[:10]:
        error = as_dict(error)
        kind, message, point = (error.get(k) for k in
                                ('error_type', 'error_message', 'error_point'))
        if isinstance(kind, str) and kind:
            kinds.append(kind[:40])
        if isinstance(message, str) and message:
            messages.append(f'{point}: {message}' if isinstance(point, str) and point else message)
        elif isinstance(error.get('detail'), str):  # the throttling answer of the web framework
            messages.append(error['detail'])
    return tuple(dict.fromkeys(kinds)), '; '.join(messages) or fallback


class Api:
    """One ``requests`` session (one API base and credentials), shared by every thread."""

    def __init__(self, base: str, secret: BasicAuth) -> None:
        self.base, self.secret = base, secret
        self.session = session('application/json', (secret.email, secret.password))

    def call(self, method: str, path: str, body: Any = None, gone_ok: bool = False) -> Any:
        """One call of ``path`` (relative to the API base): the JSON answer ({} if none; None
        for a 404 with ``gone_ok``).

        :raises Answer: for an HTTP error; :raises Refusal: for an answer that cannot be read.
        """
        response = self.session.request(method, self.base + path, json=body, stream=True,
                                        allow_redirects=False,
                                        timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
        try:
            raw = self._read(response)
        finally:
            response.close()
        status = response.status_code
        if status in REDIRECTS:
            where = response.headers.get('Location')
            raise Answer(status, (), 'the cloud answered with a redirect' + (
                f' to {excerpt(mask_url(where), 200)}' if isinstance(where, str) else '') +
                ', which Occopus does not follow (it would carry the credentials elsewhere): '
                'give the URL of the API base as the endpoint')
        if status == 404 and gone_ok:
            return None
        try:
            answer = json.loads(raw) if raw.strip() else None
        except (ValueError, RecursionError):
            answer = _NOT_JSON
        if status >= 400:
            text = raw.decode('utf-8', 'replace') if answer is _NOT_JSON else ''
            kinds, message = _said(answer, text or response.reason or 'no message')
            raise Answer(status, kinds, message)
        if answer is _NOT_JSON:
            raise Refusal(f'the answer is not JSON: {excerpt(raw.decode("utf-8", "replace"), 80)}')
        return {} if answer is None else answer

    @staticmethod
    def _read(response: Any) -> bytes:
        try:
            return read_bounded(response, MAX_BODY, READ_TIMEOUT)
        except AnswerTooLong as exc:
            raise Refusal(str(exc)) from None

    def objects(self, answer: Any, what: str) -> List[Dict[str, Any]]:
        """The ``objects`` of an answer that have a uuid."""
        objects = as_dict(answer).get('objects')
        if not isinstance(objects, list):
            raise Refusal(f'the answer about {what} has no list of objects')
        return [o for o in objects if isinstance(o, dict) and _uuid(o)]

    def listing(self, path: str, what: str) -> Iterator[Dict[str, Any]]:
        """Every object of a listing, page by page (``limit`` and ``offset``), bounded."""
        offset = 0
        for _ in range(MAX_PAGES):
            answer = self.call('GET', f'{path}?limit={PAGE_SIZE}&offset={offset}')
            page = as_dict(answer).get('objects')
            if not isinstance(page, list):
                raise Refusal(f'the listing of the {what} has no list of objects')
            yield from (o for o in page if isinstance(o, dict) and _uuid(o))
            offset += len(page)
            total = as_dict(as_dict(answer).get('meta')).get('total_count')
            if len(page) < PAGE_SIZE or (isinstance(total, int) and offset >= total):
                return
        raise Refusal(f'the listing of the {what} took more than {MAX_PAGES} pages')


def _uuid(item: Mapping[str, Any]) -> Optional[str]:
    """The uuid of a listed object, if it is short printable text."""
    value = item.get('uuid')
    if isinstance(value, str) and 0 < len(value) <= 100 and printable(value) == value and \
            '/' not in value:
        return value
    return None


def _drive_of(attachment: Any) -> Optional[str]:
    """The uuid of the drive of a server's drive attachment (an object or a uuid)."""
    drive = as_dict(attachment).get('drive')
    return _uuid(drive) if isinstance(drive, dict) else _uuid({'uuid': drive})


def _addresses(server: Mapping[str, Any]) -> List[str]:
    """The IPv4 addresses of a running server, its first runtime NIC's first."""
    found = []
    for nic in as_list(as_dict(server.get('runtime')).get('nics')):
        address = as_dict(as_dict(nic).get('ip_v4')).get('uuid')
        if isinstance(address, str) and 0 < len(address) <= 64 and printable(address) == address:
            found.append(address)
    return list(dict.fromkeys(found))


@dataclass
class Made:
    """What a create made so far (undone if a later step fails)."""

    server_id: Optional[str] = None
    drive_id: Optional[str] = None


class CloudSigmaHandler(ResourceHandler):
    type = 'cloudsigma'
    needs_credentials = True
    noun = 'server'
    buildable = True
    keys = resource_keys(required=('endpoint', 'libdrive_id', 'description'), optional=('name',))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield from super().validate(section)
        yield check_description(section.get('description'), DESCRIPTION_REQUIRED)

    # -- clients and errors ----------------------------------------------------------------

    def make_client(self, endpoint: Any, credentials: Optional[Mapping[str, Any]]) -> Api:
        assert isinstance(endpoint, str) and credentials is not None
        return Api(endpoint, BasicAuth(**credentials))

    def _api(self, section: Mapping[str, Any]) -> Tuple[Api, Spec]:
        """The shared session for a resource section, and the section's keys."""
        spec = Spec.of(section)
        login = BasicAuth.of(self.credentials(section), self.type, spec.endpoint)
        return self.client(spec.base, {'email': login.email, 'password': login.password}), spec

    @staticmethod
    def _section(instance: Instance) -> Mapping[str, Any]:
        """The section to reach an instance's cloud with: its own, or the one :meth:`find`
        found it with (a record whose section was not stored yet)."""
        if instance.resource.get('endpoint'):
            return instance.resource
        return as_dict(instance.extra.get('section')) or instance.resource

    def _say(self, section: Mapping[str, Any], api: Optional[Api], said: str) -> str:
        return self.cloud_said(section, api.secret.hide(said) if api else said)

    def _fail(self, section: Mapping[str, Any], api: Optional[Api], said: str) -> CloudError:
        return CloudError(self._say(section, api, said))

    @contextmanager
    def _errors(self, section: Mapping[str, Any], api: Api, doing: str, hint: str = '',
                busy: bool = False) -> Iterator[None]:
        """What ``requests`` and the cloud raise, as ours: one line naming the endpoint and
        what the service said, the password hidden, transient where trying again may help
        (with ``busy``, a refusal of a resource in the middle of a task too)."""
        import requests
        try:
            yield
        except CloudError:
            raise
        except Refusal as exc:
            said = f'{doing}: {one_line(exc, 400, api.secret)}'
            raise Unreadable(self._say(section, api, said)) from None
        except Answer as exc:
            raise self._refused(section, api, doing, exc, hint, busy) from None
        except requests.exceptions.SSLError as exc:
            said = one_line(exc, secret=api.secret)
            raise CloudError(self._say(section, api, f'{doing}: TLS failed: {said}')) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            said = one_line(exc, secret=api.secret)
            raise TransientCloudError(self._say(section, api, f'{doing}: cannot reach the cloud: '
                                                              f'{said}'),
                                      unsent=never_sent(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a hostile answer must not escape as a traceback
            said = one_line(exc, secret=api.secret)
            raise CloudError(self._say(section, api, f'{doing}: the answer could not be used '
                                                     f'({type(exc).__name__}: {said})')) from None

    def _refused(self, section: Mapping[str, Any], api: Api, doing: str, answer: Answer,
                 hint: str = '', busy: bool = False) -> CloudError:
        status, kinds = answer.status, answer.kinds
        message = one_line(answer.message, secret=api.secret)
        said = f'HTTP {status}' + (f', {", ".join(kinds)}' if kinds else '')
        if status == 401:
            return CloudError(self._say(section, api, f'{doing}: authentication failed ({said}): '
                                                      'CloudSigma refused the email and password '
                                                      'of the cloudsigma entry of auth_data.yaml: '
                                                      'check them'))
        if 'limits' in kinds or status == 402 or 'billing' in kinds or 'payment' in kinds:
            return CloudError(self._say(section, api, f'{doing}: quota exceeded ({said}): {message}'
                                                      ' -- drop servers or drives, or ask for a '
                                                      'higher limit'))
        text = f'{doing}: {message} ({said})' + (
            f' -- {hint}' if hint and (status == 404 or 'notexist' in kinds) else '')
        if status in (408, 429) or status >= 500 or 'concurrency' in kinds or \
                (busy and status in (403, 409)):
            return TransientCloudError(self._say(section, api, text))
        return CloudError(self._say(section, api, text))

    @staticmethod
    def _given_up(request: CreateRequest) -> None:
        if request.cancelled.is_set():
            raise TransientCloudError('the create call was given up by Occopus; what it made is '
                                      'deleted')

    # -- create ----------------------------------------------------------------------------

    def create(self, request: CreateRequest) -> Created:
        """Clone the library drive, wait for it to be unmounted, create the server with it and
        start it.  A create that the engine calls again (``request.attempts > 1``), or whose
        clone or server call failed in a way that may have made it, takes what the node
        instance's name and meta find rather than making a second one."""
        section = request.resource
        api, spec = self._api(section)
        if not spec.description:
            raise self._fail(section, api, 'description must be a mapping of server fields with '
                                           + ', '.join(DESCRIPTION_REQUIRED))
        tags = Tags(request.infra_id, request.node_id, request.node)
        started = time.monotonic()
        made = Made()
        try:
            if request.attempts > 1:
                self._earlier(section, api, tags, made)
            if made.server_id is None:
                if made.drive_id is None:
                    self._clone(request, api, spec, tags, made)
                self._wait_for_drive(request, api, spec, made, started)
                self._make_server(request, api, spec, tags, made)
            self._start(request, api, made)
        except BaseException:
            self._undo(section, api, made)
            raise
        extra = {'drive_id': made.drive_id} if made.drive_id else {}
        return Created(str(made.server_id), extra=extra, state=PENDING)

    def _clone(self, request: CreateRequest, api: Api, spec: Spec, tags: Tags, made: Made) -> None:
        section = request.resource
        self._given_up(request)
        doing = f'cloning the library drive {spec.libdrive_id}'
        hint = f'check libdrive_id ({excerpt(spec.libdrive_id)})'
        look = lambda: self._drives(api, tags)  # noqa: E731
        try:
            with self._errors(section, api, doing, hint=hint):
                path = f'libdrives/{url_part(spec.libdrive_id)}/action/?do=clone'
                answer = api.call('POST', path, {'name': tags.description()})
                drives = api.objects(answer, 'the clone')
                if not drives:
                    raise Refusal('the clone answer names no drive')
            made.drive_id = _uuid(drives[0])
        except TransientCloudError as exc:
            made.drive_id = _uuid(self._lost(section, api, exc, DRIVE, look))
        except Unreadable as exc:  # the drive may be there: found, it is deleted with the rest
            made.drive_id = _uuid(self._lost(section, api, exc, DRIVE, look))
            raise exc

    def _wait_for_drive(self, request: CreateRequest, api: Api, spec: Spec, made: Made,
                        started: float) -> None:
        """Until the clone is ``unmounted``: bounded by :data:`DRIVE_WAIT` (and a share of the
        section's ``create_timeout``), honouring the engine's cancellation."""
        section = request.resource
        limit = DRIVE_WAIT
        if isinstance(section.get('create_timeout'), (int, float)) and \
                not isinstance(section.get('create_timeout'), bool):
            limit = min(limit, float(section['create_timeout']) * DRIVE_SHARE)
        deadline, pause = started + limit, POLL[0]
        clone = f'the drive {made.drive_id} cloned from the library drive {spec.libdrive_id}'
        while True:
            with self._errors(section, api, f'waiting for the drive {made.drive_id}'):
                drive = api.call('GET', f'drives/{url_part(made.drive_id)}/', gone_ok=True)
            if drive is None:
                raise self._fail(section, api, f'{clone} is gone')
            status = as_dict(drive).get('status')
            if status == 'unmounted':
                return
            if status not in DRIVE_BUSY:
                raise self._fail(section, api, f'{clone} became {excerpt(status, 40)}, not '
                                               'unmounted')
            if time.monotonic() >= deadline:
                waited = time.monotonic() - started
                raise self._fail(section, api, f'{clone} was still {status} after {waited:.0f} s '
                                               '(create_timeout bounds the wait)')
            if request.cancelled.wait(max(0.0, min(pause, deadline - time.monotonic()))):
                self._given_up(request)
            pause = min(pause * 2, POLL[1])

    @staticmethod
    def _server_body(request: CreateRequest, spec: Spec, tags: Tags,
                     drive_id: str) -> Dict[str, Any]:
        """The server: the description, its name (the original's default), the clone as
        its boot drive, and meta with the ids and the user data."""
        body = dict(spec.description)
        body['name'] = str(body.get('name') or request.vm_name)
        meta = {str(k): str(v) for k, v in as_dict(body.get('meta')).items()}
        meta.update(tags.metadata())
        user_data = getattr(request.context, 'user_data', None)
        if user_data is not None:
            meta[USER_DATA_FIELD] = base64.b64encode(str(user_data).encode()).decode()
            fields = [f for f in meta.get(BASE64_FIELDS, '').split(',') if f.strip()]
            meta[BASE64_FIELDS] = ','.join(dict.fromkeys(fields + [USER_DATA_FIELD]))
        body['meta'] = meta
        boot = {'boot_order': 1, 'dev_channel': '0:0', 'device': 'virtio', 'drive': drive_id}
        body['drives'] = [boot] + [d for d in as_list(body.get('drives')) if isinstance(d, dict)]
        return body

    def _make_server(self, request: CreateRequest, api: Api, spec: Spec, tags: Tags,
                     made: Made) -> None:
        section = request.resource
        self._given_up(request)
        body = self._server_body(request, spec, tags, str(made.drive_id))
        look = lambda: self._servers(api, tags)  # noqa: E731
        try:
            with self._errors(section, api, 'creating the server'):
                answer = api.call('POST', 'servers/', {'objects': [body]})
                servers = api.objects(answer, 'the new server')
                if not servers:
                    raise Refusal('the create answer names no server')
            made.server_id = _uuid(servers[0])
        except TransientCloudError as exc:
            made.server_id = _uuid(self._lost(section, api, exc, SERVER, look))
        except Unreadable as exc:  # the server may be there: found, it is deleted with the rest
            made.server_id = _uuid(self._lost(section, api, exc, SERVER, look))
            raise exc

    def _start(self, request: CreateRequest, api: Api, made: Made) -> None:
        """Start the server (unless it runs already) and wait, bounded, until it leaves
        ``stopped``: a started server never reads as stopped (shut down) to the engine."""
        section = request.resource
        path = f'servers/{url_part(made.server_id)}/'
        deadline, pause, asked = time.monotonic() + START_WAIT, POLL[0], False
        while True:
            with self._errors(section, api, f'starting the server {made.server_id}'):
                server = api.call('GET', path, gone_ok=True)
                if server is None:
                    raise Refusal(f'the server {made.server_id} is gone')
                status = as_dict(server).get('status')
                if status in ('starting', 'running'):
                    return
                if status == 'stopped' and not asked:
                    self._given_up(request)
                    api.call('POST', f'{path}action/?do=start', {})
                    asked = True
                    continue
            server_is = f'the server {made.server_id}'
            if status not in ('stopped', 'stopping', 'paused'):
                raise self._fail(section, api, f'{server_is} became {excerpt(status, 40)} when '
                                               'started')
            if time.monotonic() + pause > deadline:
                raise self._fail(section, api, f'{server_is} was still {status} '
                                               f'{START_WAIT:.0f} s after it was started')
            if request.cancelled.wait(pause):
                self._given_up(request)
            pause = min(pause * 2, POLL[1])

    # what a node instance's name and meta find

    @staticmethod
    def _servers(api: Api, tags: Tags) -> List[Dict[str, Any]]:
        want = tags.metadata()
        return [s for s in api.listing('servers/detail/', 'servers')
                if all(as_dict(s.get('meta')).get(k) == want[k]
                       for k in (META_INFRA_ID, META_NODE_ID))]

    @staticmethod
    def _drives(api: Api, tags: Tags) -> List[Dict[str, Any]]:
        return [d for d in api.listing('drives/detail/', 'drives')
                if d.get('name') == tags.description()]

    def _earlier(self, section: Mapping[str, Any], api: Api, tags: Tags, made: Made) -> None:
        """Take what an earlier attempt of this create made (its answer may have been lost)."""
        with self._errors(section, api, 'looking for what an earlier attempt of this create made'):
            servers = self._servers(api, tags)
            drives = self._drives(api, tags)
        if servers:
            server = self._keep_first(section, api, SERVER, servers)
            made.server_id = _uuid(server)
            attached = {_drive_of(a) for a in as_list(server.get('drives'))}
            drives = [d for d in drives if _uuid(d) in attached]
        if drives:
            made.drive_id = _uuid(self._keep_first(section, api, DRIVE, drives))

    def _lost(self, section: Mapping[str, Any], api: Api, failed: CloudError, what: str,
              look: Callable[[], List[Dict[str, Any]]]) -> Dict[str, Any]:
        """After a clone or server call failed in a way that may have made it (a time-out, a
        5xx, a lost or unreadable answer): the one the name or meta finds (so that it is taken,
        or deleted with the rest), else the failure is raised."""
        if getattr(failed, 'unsent', False):
            raise failed
        try:
            with self._errors(section, api, f'looking for the {what} a failed call may have made'):
                found = look()
        except CloudError:
            raise failed from None
        if not found:
            raise failed
        kept = self._keep_first(section, api, what, found)
        self.ctx.log.info('%s', self._say(section, api, f'the {what} {_uuid(kept)} was made '
                                                        'although the call failed'))
        return kept

    def _keep_first(self, section: Mapping[str, Any], api: Api, what: str,
                    items: List[Dict[str, Any]]) -> Dict[str, Any]:
        """The first of ``items``; the others, duplicates made by calls whose answers were
        lost, are deleted (a server with its drives)."""
        for item in items[1:]:
            said = f'deleting the {what} {_uuid(item)}: a duplicate made by a call whose ' \
                'answer was lost'
            self.ctx.log.warning('%s', self._say(section, api, said))
            self._undo(section, api, Made(server_id=_uuid(item)) if what == SERVER
                       else Made(drive_id=_uuid(item)))
        return items[0]

    def _undo(self, section: Mapping[str, Any], api: Api, made: Made) -> None:
        """Delete what a failed create made (best effort: what is left is still named)."""
        try:
            self._delete(section, api, made, UNDO_WAIT)
        except Exception as exc:  # noqa: BLE001 - the create's own error is the one to report
            self.ctx.log.warning('%s', self._say(section, api, f'undoing a failed create: {exc}'))

    # -- drop ------------------------------------------------------------------------------

    def drop(self, instance: Instance) -> None:
        if not instance.instance_id:
            return
        section = self._section(instance)
        api, _ = self._api(section)
        if instance.extra.get('kind') == DRIVE:
            made = Made(drive_id=instance.instance_id)
        else:
            drive = instance.extra.get('drive_id')
            made = Made(server_id=instance.instance_id,
                        drive_id=drive if isinstance(drive, str) else None)
        self._delete(section, api, made, STOP_WAIT)

    def _delete(self, section: Mapping[str, Any], api: Api, made: Made, wait: float) -> None:
        """Stop the server (waiting up to ``wait`` seconds for ``stopped``, else a transient
        error: the engine tries again), delete it with its drives, then the clone if it is
        still there."""
        if made.server_id:
            path = f'servers/{url_part(made.server_id)}/'
            doing = f'deleting the server {made.server_id}'
            deadline, pause, asked = time.monotonic() + wait, POLL[0], False
            while True:
                with self._errors(section, api, doing, busy=True):
                    server = api.call('GET', path, gone_ok=True)
                    status = as_dict(server).get('status')
                    if server is None or status == 'stopped':
                        break
                    if status != 'stopping' and not asked:
                        api.call('POST', f'{path}action/?do=stop', {}, gone_ok=True)
                        asked = True
                if time.monotonic() + pause > deadline:
                    said = f'{doing}: it is still {excerpt(status, 40)} after {wait:.0f} s; ' \
                        'it is deleted once stopped'
                    raise TransientCloudError(self._say(section, api, said))
                time.sleep(pause)
                pause = min(pause * 2, POLL[1])
            if server is not None:
                with self._errors(section, api, doing, busy=True):
                    api.call('DELETE', f'{path}?recurse=all_drives', gone_ok=True)
        if made.drive_id:
            with self._errors(section, api, f'deleting the drive {made.drive_id}', busy=True):
                api.call('DELETE', f'drives/{url_part(made.drive_id)}/', gone_ok=True)

    # -- states ----------------------------------------------------------------------------

    def states(self, instances: Sequence[Instance]) -> Dict[str, ResourceStatus]:
        """One (paginated) server listing per API base and credentials."""
        groups: Dict[int, List[Instance]] = {}
        apis: Dict[int, Tuple[Api, Mapping[str, Any]]] = {}
        for instance in instances:
            if instance.instance_id:
                section = self._section(instance)
                api, _ = self._api(section)
                groups.setdefault(id(api), []).append(instance)
                apis[id(api)] = (api, section)
        result: Dict[str, ResourceStatus] = {}
        for key, members in groups.items():
            api, section = apis[key]
            with self._errors(section, api, 'listing the servers'):
                servers = {_uuid(s): s for s in api.listing('servers/detail/', 'servers')}
            for instance in members:
                server = servers.get(instance.instance_id)
                result[instance.node_id] = self.status(self._section(instance), api,
                                                       instance.instance_id, server)
        return result

    def status(self, section: Mapping[str, Any], api: Optional[Api], server_id: Any,
               server: Optional[Mapping[str, Any]]) -> ResourceStatus:
        """What a listed server (or its absence) means to Occopus."""
        if server is None:
            return ResourceStatus(SHUTDOWN, reason=self._say(
                section, api, f'the server {server_id} is gone (deleted outside Occopus?)'))
        status = server.get('status')
        addresses = _addresses(server)
        state, why = STATES.get(status, (UNKNOWN, None)) if isinstance(status, str) else \
            (UNKNOWN, None)
        if state == UNKNOWN and why is None:
            why = f'the server is in state {excerpt(status, 40)}, which Occopus does not know'
        return ResourceStatus(state, addresses, None, self._say(section, api, why) if why else None)

    # -- find ------------------------------------------------------------------------------

    def find(self, infra_id: str, resources: Sequence[Mapping[str, Any]]) -> List[Found]:
        """Servers whose meta names ``infra_id`` (each with its clone) and clones named for it
        that no server uses, asking each API base and credentials once.

        Sections whose endpoint is an unrendered template or no http(s) URL are skipped (no
        call can have been made there); credentials that cannot be found or that the cloud
        refuses raise, so that the engine keeps what it cannot look for."""
        asked = set()
        found: List[Found] = []
        for section in resources:
            endpoint = str(section.get('endpoint') or '')
            if is_template(endpoint) or not endpoint.strip().startswith(('http://', 'https://')):
                continue
            api, _ = self._api(section)
            if id(api) not in asked:
                asked.add(id(api))
                found += self._find(infra_id, section, api)
        return found

    def _find(self, infra_id: str, section: Mapping[str, Any], api: Api) -> List[Found]:
        keep = dict(section)
        with self._errors(section, api, 'looking for the servers of the infrastructure'):
            servers = [s for s in api.listing('servers/detail/', 'servers')
                       if as_dict(s.get('meta')).get(META_INFRA_ID) == infra_id]
        with self._errors(section, api, 'looking for the drives of the infrastructure'):
            drives = [d for d in api.listing('drives/detail/', 'drives')
                      if Tags.owner(d.get('name'), infra_id)]
        result: List[Found] = []
        taken: set = set()
        for server in servers:
            meta = as_dict(server.get('meta'))
            node_id = one_line(meta.get(META_NODE_ID), 80) or None
            attached = [_drive_of(a) for a in as_list(server.get('drives'))]
            mine = next((_uuid(d) for d in drives if _uuid(d) in attached
                         and Tags.owner(d.get('name'), infra_id) == node_id), None)
            extra: Dict[str, Any] = {'kind': SERVER, 'section': keep}
            if mine:
                extra['drive_id'] = mine
                taken.add(mine)
            node = one_line(meta.get(META_NODE), 80) or None
            result.append(Found(str(_uuid(server)), node_id, node, keep, extra, 'server'))
        for drive in drives:
            if _uuid(drive) in taken:
                continue
            owner = one_line(Tags.owner(drive.get('name'), infra_id), 80)
            extra = {'kind': DRIVE, 'section': keep, 'what': 'drive'}
            result.append(Found(str(_uuid(drive)), owner, None, keep, extra, 'drive'))
        return result


__all__ = ['CloudSigmaHandler', 'api_base']
