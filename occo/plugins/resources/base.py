"""The resource-handler interface shared by every cloud.

A handler creates, watches and drops the resources of node instances, and only speaks its
cloud's API: the engine bounds every call in time, limits calls per endpoint and retries
:class:`~occo.errors.TransientCloudError` (see :mod:`occo.calls`).  Like Libcloud's drivers,
every handler maps its cloud's states onto :class:`~occo.instances.CloudState`; no
cloud-specific state leaks out.  Handlers answer the states of many instances of one endpoint
in one call, make ``drop`` idempotent, and tag what they create with the infrastructure and
node ids so that :meth:`find` can list resources whose creation was never recorded (a build
killed mid-call).  A handler never sees Redis: an emulated cloud keeps its resources in the
:class:`~occo.store.CloudRegistry` its context hands out.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import (Any, Callable, ClassVar, Dict, Iterable, List, Mapping, Optional, Sequence,
                    Tuple)

from occo.errors import AuthError, NotImplementedYet
from occo.instances import CloudState, Instance, ResourceStatus
from occo.plugins.base import ServicePlugin
from occo.redact import printable
from occo.schema import KeySchema, Problem, expect_number

PENDING = CloudState.PENDING
RUNNING = CloudState.RUNNING
FAILED = CloudState.FAILED
SHUTDOWN = CloudState.SHUTDOWN
UNKNOWN = CloudState.UNKNOWN

#: Keys every resource section may carry, whatever its type (our extension).
COMMON_OPTIONAL = ('create_timeout',)

VM_CONTEXTS = ('cloudinit', 'basic')


def resource_keys(required: Tuple[str, ...] = (), optional: Tuple[str, ...] = ()) -> KeySchema:
    return KeySchema(required=required, optional=optional + COMMON_OPTIONAL)


def _no_credentials(section: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    return None


@dataclass
class HandlerContext:
    """What a handler is given: its own section of the configuration (``resources.<type>``),
    a way to find the credentials of a resource section (``auth_data.yaml``), a logger, and --
    for emulated clouds -- the registry of their resources by name."""

    settings: Mapping[str, Any] = field(default_factory=dict)
    credentials: Callable[[Mapping[str, Any]], Optional[Dict[str, Any]]] = _no_credentials
    log: logging.Logger = field(default_factory=lambda: logging.getLogger('occo.resources'))
    registry: Optional[Callable[[str], Any]] = None


@dataclass
class CreateRequest:
    """Everything a handler needs to create the resource of one node instance."""

    infra_id: str
    infra_name: str
    node: str
    node_id: str
    resource: Dict[str, Any]
    context: Any  # occo.plugins.contexts.base.RenderedContext
    #: set by the engine when it stopped waiting for the call: make nothing more if you can
    cancelled: threading.Event = field(default_factory=threading.Event)
    #: how many times the engine has called ``create`` with this request, this call included:
    #: above 1, an earlier attempt may have made the resource although its answer was lost
    #: (look for it by its tags and take it, rather than making a second one)
    attempts: int = 0

    @property
    def vm_name(self) -> str:
        """The original's default name of a node instance's resource:
        ``occopus-{infra_name[:18]}-{infra_id[:8]}-{node[:18]}-{node_id[:8]}``."""
        return (f'occopus-{self.infra_name[:18]}-{self.infra_id[:8]}-{self.node[:18]}-'
                f'{self.node_id[:8]}')


@dataclass
class Created:
    """What a create call returns: the cloud's id for the resource, and addresses if known."""

    instance_id: str
    addresses: List[str] = field(default_factory=list)
    private_address: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    #: the resource's state as the create call reported it, if it did (saves a first poll)
    state: Optional[CloudState] = None


@dataclass
class Found:
    """A resource a cloud holds for an infrastructure, found by its tags (:meth:`ResourceHandler.find`).

    ``resource`` is the resource section it can be dropped with (at least what names its
    endpoint); ``extra`` what the handler's :meth:`~ResourceHandler.drop` needs beside the id
    (for example which kind of resource it is); ``what`` says it to a person (``server``,
    ``volume``, ``floating IP 203.0.113.5``).
    """

    instance_id: str
    node_id: Optional[str] = None
    node: Optional[str] = None
    resource: Dict[str, Any] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)
    what: str = 'resource'


class ResourceHandler(ServicePlugin):
    """Base of resource handlers.

    :attr:`contexts` lists the contextualisation types this cloud can take; an implementation
    without a ``contextualisation`` section counts as ``basic``.  A handler that can build
    resources overrides :meth:`create`, :meth:`states`, :meth:`drop` and :meth:`find`.
    """

    contexts: ClassVar[Tuple[str, ...]] = VM_CONTEXTS
    #: Whether this handler can create resources in this release (others are checked,
    #: planned and rendered only).
    buildable: ClassVar[bool] = False
    #: True for emulated clouds whose addresses are made up: health checks never contact them.
    fake_addresses: ClassVar[bool] = False
    #: what this cloud calls the resource of a node instance, for people (``instance``,
    #: ``server``, ``container``)
    noun: ClassVar[str] = 'resource'
    #: whether every call needs an auth-data entry (checked before a build creates anything)
    needs_credentials: ClassVar[bool] = False

    #: keys of this handler's settings section (``resources: {<type>: {...}}``)
    settings_keys: ClassVar[KeySchema] = KeySchema()

    ctx: HandlerContext

    @classmethod
    def no_credentials(cls, resource: Mapping[str, Any]) -> AuthError:
        """The error for a resource section no auth-data entry matches."""
        where = resource.get('endpoint') or resource.get('name') or ''
        return AuthError(f"Cannot find credentials for {cls.type} {printable(str(where))}".rstrip()
                         + f': add an entry with type: {cls.type} (and endpoint) to the '
                         'resource section of auth_data.yaml')

    def make_client(self, endpoint: str, credentials: Optional[Mapping[str, Any]]) -> Any:
        """A new client of the cloud SDK (handlers that have one override this)."""
        raise self._not_implemented()

    @classmethod
    def describe(cls) -> str:
        return f"resource type '{cls.type}'"

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield expect_number(section, 'create_timeout', minimum=1)

    @classmethod
    def check_context(cls, context: Optional[Mapping[str, Any]]) -> Optional[Problem]:
        """Problem if this cloud cannot take ``context`` (the contextualisation section)."""
        context_type = (context or {}).get('type', 'basic')
        if context_type not in cls.contexts:
            if context is None:
                return Problem(f"{cls.describe()} needs a contextualisation section of type "
                               f"{' or '.join(cls.contexts)}")
            return Problem(f"contextualisation type '{context_type}' cannot be used with "
                           f"{cls.describe()} (use {' or '.join(cls.contexts)})", ('type',))
        return None

    # -- operations ------------------------------------------------------------------------

    def _not_implemented(self) -> NotImplementedYet:
        return NotImplementedYet(f"{self.describe()} can be checked and planned, but creating "
                                 'resources on it is not implemented in this release')

    def create(self, request: CreateRequest) -> Created:
        """Create the resource; returns as soon as the cloud has accepted it."""
        raise self._not_implemented()

    def states(self, instances: Sequence[Instance]) -> Dict[str, ResourceStatus]:
        """The states of many instances of one endpoint (each with an ``instance_id``), by
        node id; an instance left out is asked about again later."""
        raise self._not_implemented()

    def drop(self, instance: Instance) -> None:
        """Destroy the resource of an instance; dropping what is gone is not an error."""
        raise self._not_implemented()

    def find(self, infra_id: str, resources: Sequence[Mapping[str, Any]]) -> List[Found]:
        """Every resource this cloud holds for ``infra_id``, found by its tags (servers,
        and also volumes or addresses left without one), so that a build killed between the
        cloud's create and the store's write leaves nothing behind.

        :param resources: the resource sections of this type the infrastructure uses or may
            use (distinct; ask each endpoint and credentials once).
        """
        return []
