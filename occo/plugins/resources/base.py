"""The resource-handler interface shared by every cloud.

A handler creates, watches and drops the resources of node instances.  Like Libcloud's
drivers, every handler maps its cloud's states onto one small set (:data:`PENDING`,
:data:`RUNNING`, :data:`FAILED`, :data:`SHUTDOWN`, :data:`UNKNOWN`); no cloud-specific state
leaks out.  Handlers answer the states of many instances in one call, make ``drop`` idempotent,
and tag what they create with the infrastructure and node ids so that :meth:`find` can list
resources whose creation was never recorded (a build killed mid-call).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from occo.errors import NotImplementedYet
from occo.plugins.base import Plugin
from occo.schema import KeySchema, Problem, expect_number

PENDING = 'pending'
RUNNING = 'running'
FAILED = 'failed'
SHUTDOWN = 'shutdown'
UNKNOWN = 'unknown'

#: Keys every resource section may carry, whatever its type (our extension).
COMMON_OPTIONAL = ('create_timeout',)

VM_CONTEXTS = ('cloudinit', 'basic')


def resource_keys(required: Tuple[str, ...] = (), optional: Tuple[str, ...] = ()) -> KeySchema:
    return KeySchema(required=required, optional=optional + COMMON_OPTIONAL)


@dataclass
class HandlerContext:
    """What a handler may use: a Redis client for emulated clouds, settings, credentials."""

    redis: Any
    prefix: str
    config: Any
    auth: Any
    log: logging.Logger = field(default_factory=lambda: logging.getLogger('occo.resources'))


@dataclass
class CreateRequest:
    """Everything a handler needs to create the resource of one node instance."""

    infra_id: str
    infra_name: str
    node: str
    node_id: str
    resource: Dict[str, Any]
    context: Any  # occo.plugins.contexts.base.RenderedContext


@dataclass
class Created:
    """What a create call returns: the cloud's id for the resource, and addresses if known."""

    instance_id: str
    addresses: List[str] = field(default_factory=list)
    private_address: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ResourceStatus:
    """The state of one resource, in Occopus' words."""

    state: str
    addresses: List[str] = field(default_factory=list)
    private_address: Optional[str] = None
    reason: Optional[str] = None


def find_in_registry(redis: Any, key: str, infra_id: str) -> List[Dict[str, Any]]:
    """The resources of ``infra_id`` in an emulated cloud's Redis hash (resource id -> JSON
    with ``infra_id``, ``node_id``, ``node``), as :meth:`ResourceHandler.find` returns them."""
    import json
    found = []
    for resource_id, value in redis.hscan_iter(key, count=1000):
        resource = json.loads(value)
        if resource.get('infra_id') == infra_id:
            found.append({'instance_id': resource_id, 'node_id': resource.get('node_id'),
                          'node': resource.get('node')})
    return found


class ResourceHandler(Plugin):
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

    def __init__(self, ctx: HandlerContext) -> None:
        self.ctx = ctx

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

    def states(self, records: Sequence[Mapping[str, Any]]) -> Dict[str, ResourceStatus]:
        """The states of many instances (records with ``instance_id``), by node id."""
        raise self._not_implemented()

    def drop(self, record: Mapping[str, Any]) -> None:
        """Destroy the resource of an instance record; dropping what is gone is not an error."""
        raise self._not_implemented()

    def find(self, infra_id: str) -> List[Dict[str, Any]]:
        """Resources this cloud holds for ``infra_id`` (found by their tags), as minimal
        instance records: ``node_id``, ``node``, ``instance_id``."""
        return []
