"""Docker hosts and Swarm endpoints (no TLS), one container per node instance, through the
docker SDK (its low-level ``APIClient``).

One pair of clients per endpoint (short calls; image pulls and imports, which may read for
long), pinned to API version 1.41 so that making one costs no call.  A create makes sure the
image is there (pulled from Docker Hub, imported from a URL by the engine, or required to be
present: ``origin``), creates the container -- named after the instance, labelled with the
infrastructure id, node id and node name -- and starts it; a container that cannot be started
is removed before the error is raised.  States of many instances are read with one filtered
container list per infrastructure and endpoint; ``find`` lists by the ``occopus.infra_id``
label; drop removes with force.  The engine's errors become one line each:
:class:`~occo.errors.CloudError` when trying again cannot help,
:class:`~occo.errors.TransientCloudError` when it may (a refused connection, a time-out, 502,
503, 504 or 429, and 500 on reads and removals).  The SDK is imported only when a client is
made.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from occo.errors import CloudError, OccoError, TransientCloudError
from occo.instances import Instance
from occo.plugins.resources.base import (
    FAILED, PENDING, RUNNING, SHUTDOWN, UNKNOWN, CreateRequest, Created, Found, ResourceHandler,
    ResourceStatus, resource_keys)
from occo.redact import excerpt, mask_urls, printable
from occo.schema import Problem, is_template, type_name

API_VERSION = '1.41'   # Docker Engine 20.10+ and podman 4 speak it; no version probe per client
CONNECT_TIMEOUT = 10   # seconds (TCP endpoints; a unix socket connects at once)
READ_TIMEOUT = 60      # seconds for every call but image pulls and imports
IMAGE_TIMEOUT = 1800   # seconds a pull or import may go without an answer (create_timeout bounds it too)
PULL_LIMIT = 3600      # seconds a pull may take in all (the engine's cancel stops it sooner)
#: seconds a create waits for another create's pull or import of the same image on the same
#: endpoint before it gives its turn back (a transient error: the engine tries it again later)
IMAGE_LOCK_WAIT = 60
POOL_SIZE = 16         # connections kept per endpoint (more than the engine's calls at once)

LABEL_INFRA_ID = 'occopus.infra_id'
LABEL_NODE_ID = 'occopus.node_id'
LABEL_NODE = 'occopus.node'
#: ``extra`` key naming the endpoint a container was found at (its record may have no section)
FOUND_AT = 'endpoint'

DOCKER_HUB = ('', 'dockerhub')
LOCAL = 'local'
ENDPOINT_SCHEMES = ('unix://', 'tcp://', 'http://')
URL_SCHEMES = ('http://', 'https://')
#: HTTP statuses that may pass whatever the call
TRANSIENT_STATUSES = (429, 502, 503, 504)
#: what registries say when they throttle (a pull that may pass)
THROTTLED = re.compile(r'toomanyrequests|rate limit|too many requests', re.IGNORECASE)
IN_USE = re.compile(r'already in use|conflict', re.IGNORECASE)
EXITED_CODE = re.compile(r'exited \((-?\d+)\)', re.IGNORECASE)
NAME_CHARACTERS = re.compile(r'[^a-zA-Z0-9_.-]+')
TRANSPORT = re.compile(r'\bdocker://')
#: what an engine says when the downloaded origin is no tar archive (an error page...)
NOT_A_TARBALL = re.compile(r'unexpected EOF|invalid tar header|archive/tar', re.IGNORECASE)


# -- names and references -------------------------------------------------------------------

def container_name(request: CreateRequest) -> str:
    """The original's unique VM name (:attr:`CreateRequest.vm_name`) with what Docker refuses
    in a name (``[a-zA-Z0-9][a-zA-Z0-9_.-]*``) written as ``-``."""
    return NAME_CHARACTERS.sub('-', request.vm_name)


def base_url(endpoint: str) -> str:
    """``endpoint`` as the SDK takes it: the original's ``unix://var/run/docker.sock`` (two
    slashes) means ``/var/run/docker.sock``."""
    endpoint = endpoint.strip()
    if endpoint.startswith('unix://') and not endpoint.startswith('unix:///'):
        return 'unix:///' + endpoint[len('unix://'):]
    return endpoint


def socket_path(url: str) -> Optional[str]:
    return url[len('unix://'):] if url.startswith('unix://') else None


def names_tag(image: str) -> bool:
    """True if ``image`` already carries a tag or digest (``nginx:alpine``, ``x@sha256:...``)."""
    return '@' in image or ':' in image.rsplit('/', 1)[-1]


@dataclass(frozen=True)
class ImageRef:
    """The image a container is made of, and where it comes from (``origin``)."""

    repository: str
    tag: Optional[str]
    origin: str

    @classmethod
    def of(cls, resource: Mapping[str, Any]) -> 'ImageRef':
        image, tag = str(resource['image']).strip(), resource.get('tag')
        if names_tag(image) and tag is None:
            return cls(image, None, str(resource.get('origin') or '').strip())
        return cls(image, str(tag if tag is not None else 'latest'),
                   str(resource.get('origin') or '').strip())

    def __str__(self) -> str:
        return self.repository if self.tag is None else f'{self.repository}:{self.tag}'


@dataclass(frozen=True)
class Engine:
    """The clients of one endpoint: ``calls`` for short calls, ``images`` for pulls and
    imports (long reads)."""

    url: str
    calls: Any
    images: Any


# -- what the engine says, in Occopus' words --------------------------------------------------

def _state_of(info: Mapping[str, Any]) -> Tuple[str, Optional[int], str]:
    """``(state, exit code or None, error text)`` of a container list entry or inspect answer
    (``State`` is a word in the first and a mapping in the second)."""
    raw = info.get('State')
    code: Optional[int] = None
    error = ''
    if isinstance(raw, Mapping):
        state = raw.get('Status')
        if isinstance(raw.get('ExitCode'), int) and not isinstance(raw.get('ExitCode'), bool):
            code = raw['ExitCode']
        error = raw.get('Error') if isinstance(raw.get('Error'), str) else ''
        if raw.get('OOMKilled') is True:
            error = (error + '; ' if error else '') + 'killed for want of memory'
    else:
        state = raw
    if code is None and isinstance(info.get('Status'), str):
        found = EXITED_CODE.search(info['Status'][:200])
        code = int(found.group(1)) if found else None
    return (state.lower() if isinstance(state, str) else ''), code, error


def _exited(code: Optional[int], error: str, dead: bool = False) -> Tuple[Any, str]:
    said = 'the engine reports the container dead' if dead else 'the container exited'
    reason = said + ('' if code is None else f' with code {code}') + \
        (f' ({_clip(error, 200)})' if error else '')
    return (FAILED if (code or 0) != 0 and not dead else SHUTDOWN), reason


STATES: Dict[str, Tuple[Any, Optional[str]]] = {
    'running': (RUNNING, None),
    'created': (PENDING, 'the container is created and not started yet'),
    'restarting': (PENDING, 'the container is restarting'),
    'paused': (SHUTDOWN, 'the container is paused (paused containers are not used)'),
    'removing': (SHUTDOWN, 'the container is being removed'),
}


def addresses_of(info: Mapping[str, Any], network: Optional[str] = None) -> List[str]:
    """The container's IP address on its network (the network named ``network`` if it has
    one, else the first that has an address), or none (``host``/``none`` networking)."""
    settings = info.get('NetworkSettings')
    if not isinstance(settings, Mapping):
        return []
    networks = settings.get('Networks')
    candidates: List[Any] = []
    if isinstance(networks, Mapping):
        if network and isinstance(networks.get(network), Mapping):
            candidates.append(networks[network].get('IPAddress'))
        candidates += [v.get('IPAddress') for v in networks.values() if isinstance(v, Mapping)]
    candidates.append(settings.get('IPAddress'))
    for candidate in candidates:
        if isinstance(candidate, str) and candidate:
            try:
                return [str(ipaddress.ip_address(candidate[:64]))]
            except ValueError:
                continue
    return []


def status_of(info: Optional[Mapping[str, Any]], network: Optional[str] = None) -> ResourceStatus:
    """A container's state in Occopus' words, from its list entry or inspect answer (None: the
    engine does not have it).  Exited with a non-zero code is ``failed``, with code 0
    ``shutdown``."""
    if info is None:
        return ResourceStatus(SHUTDOWN, reason='the container is gone (removed outside Occopus)')
    state, code, error = _state_of(info)
    if state in ('exited', 'dead'):
        cloud_state, reason = _exited(code, error, dead=state == 'dead')
    elif state in STATES:
        cloud_state, reason = STATES[state]
    else:
        raw = info.get('State')
        said = 'in no state' if raw is None or raw == '' else _quote(
            raw.get('Status') if isinstance(raw, Mapping) else raw)
        cloud_state, reason = UNKNOWN, f'the engine reports the container {said}'
    addresses = addresses_of(info, network) if cloud_state in (RUNNING, PENDING) else []
    return ResourceStatus(cloud_state, addresses, addresses[0] if addresses else None, reason)


class DockerHandler(ResourceHandler):
    type = 'docker'
    noun = 'container'
    contexts = ('docker',)
    buildable = True
    # The original's docs give `tag` a default (latest) and let `origin` be empty (Docker Hub)
    # while its schema required both; we follow the docs, so existing files still pass.  The
    # issue lists `network_mode` (which the original's 1.4 had made an unknown key): the
    # container's network.
    keys = resource_keys(required=('endpoint', 'image'),
                         optional=('origin', 'tag', 'network_mode', 'name'))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        # The endpoint is checked when it is used, not here: the tutorials' placeholder
        # (replace_with_your_docker_endpoint) must import, and --dry-run warns about it.
        yield from super().validate(section)
        image = section.get('image')
        if not isinstance(image, str) or not image.strip():
            yield Problem(f"'image' must be an image name, got {type_name(image)}", ('image',))
        tag = section.get('tag')
        if isinstance(tag, float):
            yield Problem(f"'tag' must be text: write it in quotes (tag: '{tag}'), as YAML reads "
                          f'{tag} as a number', ('tag',))
        elif tag is not None and (isinstance(tag, bool) or not isinstance(tag, (str, int))):
            yield Problem(f"'tag' must be text, got {type_name(tag)}", ('tag',))
        elif tag is not None and isinstance(image, str) and names_tag(image):
            yield Problem(f"'image' ({excerpt(image)}) names its tag already: leave 'tag' out "
                          'or the tag out of image', ('tag',))
        origin = section.get('origin')
        if origin is not None and not is_template(origin) and not (
                isinstance(origin, str) and (origin.strip() in DOCKER_HUB + (LOCAL,)
                                             or origin.strip().startswith(URL_SCHEMES))):
            yield Problem("'origin' must be dockerhub (or empty), local, or the http(s) URL of "
                          f'an image tarball, got {type_name(origin)}', ('origin',))
        network = section.get('network_mode')
        if network is not None and not isinstance(network, str):
            yield Problem(f"'network_mode' must be a network name (bridge, host, none or a "
                          f'network of the engine), got {type_name(network)}', ('network_mode',))

    @classmethod
    def check_context(cls, context: Optional[Mapping[str, Any]]) -> Optional[Problem]:
        problem = super().check_context(context)
        if problem is None:
            for key in ('env', 'command'):
                if not (context or {}).get(key):
                    return Problem(f"resource type 'docker' needs a non-empty '{key}' in its docker "
                                   'contextualisation (both env and command)', (key,) if context else ())
        return problem

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self._image_locks: Dict[Tuple[str, str], threading.Lock] = {}
        self._image_locks_lock = threading.Lock()
        #: node ids whose container create may have reached the engine
        self._launched: set = set()

    # -- clients ---------------------------------------------------------------------------

    @classmethod
    def endpoint(cls, resource: Mapping[str, Any]) -> str:
        return base_url(str(resource.get('endpoint') or ''))

    def make_client(self, endpoint: str, credentials: Optional[Mapping[str, Any]]) -> Engine:
        import docker

        def client(read: float) -> Any:
            # A unix socket takes one number (its connect is immediate); TCP both bounds.
            timeout: Any = read if endpoint.startswith('unix://') else (CONNECT_TIMEOUT, read)
            return docker.APIClient(base_url=endpoint, version=API_VERSION, timeout=timeout,
                                    max_pool_size=POOL_SIZE)
        try:
            return Engine(endpoint, client(READ_TIMEOUT), client(IMAGE_TIMEOUT))
        except docker.errors.DockerException as exc:
            raise CloudError(self.cloud_said({'endpoint': endpoint}, 'cannot use this endpoint: '
                                             f'{_clip(str(exc), 300)}')) from None

    def _engine(self, resource: Mapping[str, Any]) -> Engine:
        endpoint = self.endpoint(resource)
        if not endpoint.startswith(ENDPOINT_SCHEMES):
            raise CloudError(f'{self.type} at {printable(endpoint[:100])}: the endpoint '
                             'must be unix://<socket path> or tcp://<host>:<port> (no TLS)')
        # Docker endpoints take no credentials (the original used none either).
        return self.client(endpoint, None)

    # -- errors ----------------------------------------------------------------------------

    @contextmanager
    def _speaking(self, resource: Mapping[str, Any], doing: str, *,
                  refusal_is_final: bool = False, may_have_acted: bool = False) -> Iterator[None]:
        """Turn what the SDK raises while ``doing`` into one-line cloud errors; nothing else
        escapes (an answer that cannot be read is a :class:`~occo.errors.CloudError` too).

        :param refusal_is_final: a 500 answer is final (image pulls and imports, container
            creates and starts: Docker and podman answer 500 for a command that does not
            exist, an unknown network, a broken tarball, ..., which trying again for the whole
            create_timeout would not mend); otherwise 500 may pass.
        :param may_have_acted: the call makes something (a container create): an answer that
            cannot be read is transient then, since the engine may have acted on the call (the
            next attempt takes the container of the same name and node id).
        """
        import docker.errors
        import requests.exceptions
        try:
            yield
        except OccoError:
            raise
        except docker.errors.APIError as exc:
            said = engine_text(exc.explanation if isinstance(exc.explanation, str) and
                               exc.explanation else str(exc))
            status = exc.status_code or 0
            text = self.cloud_said(resource, f'{doing}: {said} (HTTP {status})')
            if status in TRANSIENT_STATUSES or (status >= 500 and not refusal_is_final):
                raise TransientCloudError(text) from None
            raise CloudError(text) from None
        except requests.exceptions.Timeout:
            raise TransientCloudError(self.cloud_said(
                resource, f'{doing}: the engine did not answer in time')) from None
        except requests.exceptions.ConnectionError as exc:
            path = socket_path(self.endpoint(resource))
            if path is not None and not os.path.exists(path):
                raise CloudError(self.cloud_said(
                    resource, f'{doing}: there is no socket at {path}: start the Docker engine '
                    '(or podman system service) there, or fix endpoint')) from None
            raise TransientCloudError(self.cloud_said(
                resource, f'{doing}: cannot reach the Docker engine ({_cause(exc)}): is it '
                'running and listening there?'), unsent=_never_sent(exc)) from None
        except docker.errors.DockerException as exc:
            raise CloudError(self.cloud_said(resource, f'{doing}: {exc}')) from None
        except Exception as exc:  # noqa: BLE001 - an answer that is no JSON, of the wrong shape...
            text = self.cloud_said(resource, f'{doing}: the engine answered something that cannot '
                                   f'be read ({type(exc).__name__}: {exc})')
            raise (TransientCloudError if may_have_acted else CloudError)(text) from None

    # -- images ----------------------------------------------------------------------------

    def _image_lock(self, key: Tuple[str, str]) -> threading.Lock:
        with self._image_locks_lock:
            return self._image_locks.setdefault(key, threading.Lock())

    def _has_image(self, engine: Engine, resource: Mapping[str, Any], ref: ImageRef) -> bool:
        import docker.errors
        with self._speaking(resource, f'looking for image {ref}'):
            try:
                engine.calls.inspect_image(str(ref))
            except docker.errors.NotFound:
                return False
        return True

    def _ensure_image(self, engine: Engine, request: CreateRequest, ref: ImageRef) -> None:
        """Make sure the engine has the image: present already (as ``docker run`` does, an
        image is fetched only when missing), else pulled or imported as ``origin`` says.  One
        create at a time fetches a given image on an endpoint; the others wait at most
        :data:`IMAGE_LOCK_WAIT` seconds, then give their turn back (a transient error)."""
        resource = request.resource
        lock = self._image_lock((engine.url, str(ref)))
        if not lock.acquire(timeout=IMAGE_LOCK_WAIT):
            raise TransientCloudError(self.cloud_said(
                resource, f'image {ref} is being fetched for another node instance on this '
                f'endpoint: waited {IMAGE_LOCK_WAIT} s for it'), unsent=True)
        try:
            if self._has_image(engine, resource, ref):
                return
            if ref.origin == LOCAL:
                raise CloudError(self.cloud_said(
                    resource, f'image {ref} is not present on the engine (origin: local uses an '
                    'image already there: load or import it on the Docker host first, or give '
                    'an origin)'))
            if ref.origin in DOCKER_HUB:
                self._pull(engine, request, ref)
            else:
                self._import(engine, resource, ref)
            if not self._has_image(engine, resource, ref):
                raise CloudError(self.cloud_said(
                    resource, f'image {ref}: the engine reported no error, yet it does not have '
                    'the image afterwards'))
        finally:
            lock.release()

    def _pull(self, engine: Engine, request: CreateRequest, ref: ImageRef) -> None:
        """Pull ``ref``, reading the engine's progress messages until it is done, the create
        is given up (``request.cancelled``), or :data:`PULL_LIMIT` seconds have passed; the
        stream is closed whichever comes first."""
        resource = request.resource
        doing = f'pulling image {ref} from Docker Hub'
        error = None
        deadline = time.monotonic() + PULL_LIMIT
        with self._speaking(resource, doing, refusal_is_final=True):
            response, stream = _pull_stream(engine.images, ref)
            try:
                for message in stream:
                    if isinstance(message, Mapping) and message.get('error'):
                        error = engine_text(str(message['error']))
                    if request.cancelled.is_set():
                        raise TransientCloudError(self.cloud_said(
                            resource, f'{doing}: the create call was given up by its caller; '
                            'pull stopped'))
                    if time.monotonic() > deadline:
                        raise TransientCloudError(self.cloud_said(
                            resource, f'{doing}: not done after {PULL_LIMIT} s; pull stopped'))
            finally:
                response.close()
        if error is not None:
            text = self.cloud_said(resource, f'cannot pull image {ref}: {error}')
            raise (TransientCloudError if THROTTLED.search(error) else CloudError)(text)

    def _import(self, engine: Engine, resource: Mapping[str, Any], ref: ImageRef) -> None:
        """The engine downloads the tarball at ``origin`` and imports it (the original's
        behaviour: the URL must be reachable from the Docker host, and no byte of it passes
        through Occopus); then the image is tagged ``image:tag`` (podman ignores the tag
        given to an import)."""
        doing = f'importing image {ref} from {ref.origin}'
        try:
            with self._speaking(resource, doing, refusal_is_final=True):
                answer = engine.images.import_image(src=ref.origin)
        except CloudError as exc:
            if NOT_A_TARBALL.search(exc.message):
                raise type(exc)(exc.message + ' -- the engine got no tar archive there: check '
                                'that origin is the URL of an image tarball the Docker host can '
                                'download') from None
            raise
        image_id, error = _import_outcome(answer)
        if error is not None or image_id is None:
            raise CloudError(self.cloud_said(
                resource, f'{doing}: {error or "the engine did not say which image it made"}'))
        repository, tag = (ref.repository, ref.tag) if ref.tag is not None else \
            ref.repository.rsplit(':', 1)
        with self._speaking(resource, f'tagging the imported image as {ref}', refusal_is_final=True):
            engine.calls.tag(image_id, repository, tag, force=True)

    # -- operations ------------------------------------------------------------------------

    def create(self, request: CreateRequest) -> Created:
        resource = request.resource
        engine = self._engine(resource)
        ref = ImageRef.of(resource)
        name = container_name(request)
        network = resource.get('network_mode') or None
        # An earlier attempt whose container create may have reached the engine (its answer
        # lost): what fails before this attempt's own create cannot say "nothing made".
        earlier = request.node_id in self._launched
        try:
            self._ensure_image(engine, request, ref)
            if request.cancelled.is_set():
                raise TransientCloudError('the create call was given up by its caller; no '
                                          'container made', unsent=True)
            self._launched.add(request.node_id)
            container_id = self._create_container(engine, request, ref, name, network)
        except CloudError as exc:
            if not earlier and isinstance(exc, TransientCloudError) and exc.unsent:
                self._launched.discard(request.node_id)
            if earlier and (exc.unsent if isinstance(exc, TransientCloudError) else True):
                raise TransientCloudError(exc.message) from None  # an earlier attempt may have made it
            raise
        try:
            if request.cancelled.is_set():
                raise TransientCloudError('the create call was given up by its caller; '
                                          f'container {name} removed')
            with self._speaking(resource, f'starting container {name}', refusal_is_final=True):
                engine.calls.start(container_id)
        except BaseException as exc:
            if not self._remove_quietly(engine, container_id) and isinstance(exc, CloudError):
                raise TransientCloudError(f'{exc.message}; container {name} could not be removed '
                                          '(occopus-destroy finds it by its labels)') from None
            raise
        try:
            with self._speaking(resource, f'inspecting container {name}'):
                info = engine.calls.inspect_container(container_id)
        except CloudError:  # started: the engine's polls read its state and address
            return Created(container_id, extra={FOUND_AT: engine.url})
        status = status_of(info if isinstance(info, Mapping) else {}, network)
        return Created(container_id, status.addresses, status.private_address,
                       extra={FOUND_AT: engine.url}, state=status.state)

    def _create_container(self, engine: Engine, request: CreateRequest, ref: ImageRef,
                          name: str, network: Optional[str]) -> str:
        """The id of the new container; one this node id made before (a create tried again
        after its answer was lost) is taken instead of failing on its name."""
        import docker.errors
        resource, context = request.resource, request.context
        labels = {LABEL_INFRA_ID: request.infra_id, LABEL_NODE_ID: request.node_id,
                  LABEL_NODE: request.node}
        host_config = engine.calls.create_host_config(network_mode=network) if network else None
        with self._speaking(resource, f'creating container {name} from image {ref}',
                            refusal_is_final=True, may_have_acted=True):
            try:
                answer = engine.calls.create_container(
                    str(ref), command=context.command, environment=list(context.env or []),
                    labels=labels, name=name, host_config=host_config, detach=True)
            except docker.errors.APIError as exc:
                mine = self._listed(engine, resource, {'name': name, 'label': f'{LABEL_NODE_ID}={request.node_id}'}) \
                    if IN_USE.search(str(exc.explanation)) else []
                if not mine or not isinstance(mine[0].get('Id'), str):
                    raise
                answer = mine[0]
        if not isinstance(answer, Mapping) or not isinstance(answer.get('Id'), str):
            # It may have made the container all the same: the next attempt takes it by name.
            raise TransientCloudError(self.cloud_said(
                resource, f'creating container {name}: the engine answered no container id '
                f'({_quote(answer)})'))
        return answer['Id']

    def _remove_quietly(self, engine: Engine, container_id: str) -> bool:
        """Remove a container this create made; False if that failed (it is labelled:
        occopus-destroy finds it)."""
        try:
            engine.calls.remove_container(container_id, force=True, v=True)
        except Exception:  # noqa: BLE001 - reported by the caller
            return False
        return True

    def _listed(self, engine: Engine, resource: Mapping[str, Any],
                filters: Mapping[str, str]) -> List[Mapping[str, Any]]:
        """The containers (all states) matching ``filters``: one list call."""
        with self._speaking(resource, 'listing containers'):
            answer = engine.calls.containers(all=True, filters=dict(filters))
        return [c for c in answer or [] if isinstance(c, Mapping)] if isinstance(answer, list) else []

    def states(self, instances: Sequence[Instance]) -> Dict[str, ResourceStatus]:
        if not instances:
            return {}
        resource = instances[0].resource or {'endpoint': instances[0].extra.get(FOUND_AT, '')}
        engine = self._engine(resource)
        result: Dict[str, ResourceStatus] = {}
        for infra_id in sorted({i.infra_id for i in instances}):
            listed = {c['Id']: c for c in
                      self._listed(engine, resource, {'label': f'{LABEL_INFRA_ID}={infra_id}'})
                      if isinstance(c.get('Id'), str)}
            for instance in instances:
                if instance.infra_id == infra_id:
                    result[instance.node_id] = status_of(
                        listed.get(instance.instance_id),
                        (instance.resource or {}).get('network_mode') or None)
        return result

    def drop(self, instance: Instance) -> None:
        if not instance.instance_id:
            return
        import docker.errors
        resource = dict(instance.resource or {})
        if not resource.get('endpoint'):
            resource['endpoint'] = instance.extra.get(FOUND_AT, '')
        engine = self._engine(resource)
        with self._speaking(resource, f'removing container {instance.instance_id[:12]}'):
            try:
                engine.calls.remove_container(instance.instance_id, force=True, v=True)
            except docker.errors.NotFound:
                return  # gone already

    def find(self, infra_id: str, resources: Sequence[Mapping[str, Any]]) -> List[Found]:
        by_endpoint: Dict[str, Mapping[str, Any]] = {}
        for resource in resources:
            if not is_template(resource.get('endpoint')) and resource.get('endpoint'):
                by_endpoint.setdefault(self.endpoint(resource), resource)
        found = []
        for url, resource in sorted(by_endpoint.items()):
            engine = self._engine(resource)
            for container in self._listed(engine, resource, {'label': f'{LABEL_INFRA_ID}={infra_id}'}):
                labels = container.get('Labels') if isinstance(container.get('Labels'), Mapping) else {}
                names = container.get('Names') if isinstance(container.get('Names'), list) else []
                name = printable(str(names[0]).lstrip('/'))[:100] if names else ''
                if not isinstance(container.get('Id'), str) or labels.get(LABEL_INFRA_ID) != infra_id:
                    continue
                found.append(Found(container['Id'], _text(labels.get(LABEL_NODE_ID)),
                                   _text(labels.get(LABEL_NODE)),
                                   resource={'type': self.type, 'endpoint': url},
                                   extra={FOUND_AT: url},
                                   what=f'container {name}' if name else 'container'))
        return found


def _pull_stream(api: Any, ref: ImageRef) -> Tuple[Any, Iterator[Any]]:
    """The response of a pull and its decoded progress messages: ``APIClient.pull`` as the
    SDK writes it (auth header from the docker config included), but with the client's read
    time-out (the SDK's own waits for ever between two messages) and the response at hand so
    that the caller can close it."""
    from docker import auth, utils
    repository, image_tag = utils.parse_repository_tag(ref.repository)
    registry, _ = auth.resolve_repository_name(repository)
    header = auth.get_config_header(api, registry)
    response = api._post(api._url('/images/create'),
                         params={'tag': ref.tag or image_tag or 'latest', 'fromImage': repository},
                         headers={'X-Registry-Auth': header} if header else {},
                         stream=True, timeout=api.timeout)
    try:
        api._raise_for_status(response)
    except BaseException:
        response.close()
        raise
    return response, api._stream_helper(response, decode=True)


def engine_text(text: str) -> str:
    """What the engine said, without the ``docker://`` transport prefix podman writes before
    image references (it is no URL, and would be shown as one that does not parse)."""
    return TRANSPORT.sub('', text)


def _text(value: Any) -> Optional[str]:
    return _clip(value, 200) if isinstance(value, str) else None


def _clip(text: str, limit: int) -> str:
    """``text`` printable, with known secrets and URL secrets masked *before* it is cut to
    ``limit`` characters (a secret across the cut would leak its start)."""
    return mask_urls(printable(text))[:limit]


def _quote(value: Any, limit: int = 60) -> str:
    """A short quotation of what the engine answered (its ``repr``, as
    :func:`~occo.redact.excerpt` writes it), masked before it is cut."""
    text = _clip(repr(value), 100_000)
    return text if len(text) <= limit else PARTIAL_ESCAPE.sub('', text[:limit]) + '…'


#: the start of an escape (``\x1b``...) that a cut left unfinished
PARTIAL_ESCAPE = re.compile(r'\\(?:x[0-9a-f]?|u[0-9a-f]{0,3})?$')


#: what an OSError says when the connection was never made (the request was not sent)
NOT_CONNECTED = (errno.ECONNREFUSED, errno.ENOENT, errno.EHOSTUNREACH, errno.ENETUNREACH,
                 errno.EADDRNOTAVAIL)


def _never_sent(exc: BaseException) -> bool:
    """True if a connection error happened while connecting (refused, no socket file, no
    route, a name that does not resolve), so that the request never reached the engine; not
    for a reset or a lost answer after sending."""
    from urllib3.exceptions import NewConnectionError
    for item in _chain(exc):
        if isinstance(item, (NewConnectionError, socket.gaierror)):
            return True
        if isinstance(item, OSError) and item.errno in NOT_CONNECTED:
            return True
    return False


def _chain(exc: BaseException) -> List[BaseException]:
    """``exc`` and the exceptions it wraps (the SDK wraps urllib3's in requests'), at most 20."""
    seen: List[BaseException] = [exc]
    index = 0
    while index < min(len(seen), 20):
        item = seen[index]
        index += 1
        seen += [x for x in (getattr(item, 'reason', None), item.__cause__, item.__context__,
                             *getattr(item, 'args', ())) if isinstance(x, BaseException)
                 and all(x is not y for y in seen)]
    return seen[:20]


def _cause(exc: BaseException) -> str:
    """The innermost reason of a connection error (``Connection refused``...), short: the
    SDK wraps it in urllib3's and requests' errors."""
    for item in _chain(exc):
        if isinstance(item, OSError) and item.strerror:
            return _clip(item.strerror, 120)
    return _clip(str(exc), 120)


def _import_outcome(answer: Any) -> Tuple[Optional[str], Optional[str]]:
    """``(image id, error)`` from an import's answer: JSON lines of progress, an error, and
    the new image's id as the last ``status``."""
    import json
    image_id, error = None, None
    for line in str(answer or '').splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if not isinstance(message, Mapping):
            continue
        if message.get('error'):
            error = str(message['error'])
        for key in ('status', 'id'):
            value = message.get(key)
            if isinstance(value, str) and re.fullmatch(r'(sha256:)?[0-9a-f]{12,64}', value.strip()):
                image_id = value.strip()
    return image_id, error
