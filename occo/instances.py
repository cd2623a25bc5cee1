"""One home for an instance's life: its record, its states, and the judgement of its health.

An :class:`Instance` is what the store keeps for one node instance (JSON in the
``instances`` hash), what handlers are given to watch and drop, and what the executor, the
management pass and the reports reason about.  :func:`judge` is the one place that decides,
from the cloud's answer, the config manager, the health checks and the clock, whether an
instance is ready, still pending, failed, timed out or gone.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional


class State(str, enum.Enum):
    """The state of an instance in Occopus' records."""

    CREATING = 'creating'  # recorded before its cloud was asked; no resource id yet
    PENDING = 'pending'    # the cloud made it; not ready yet
    READY = 'ready'        # running, configured and healthy
    FAILED = 'failed'      # it will never be ready: dropped and replaced

    def __str__(self) -> str:
        return self.value


class InfraStatus(str, enum.Enum):
    """The state of a whole infrastructure, in its registry entry."""

    BUILDING = 'building'
    READY = 'ready'                # every node at its target, every instance ready
    DEGRADED = 'degraded'          # some instances missing or failing; passes keep at it
    DESTROYING = 'destroying'      # a destroy began: nothing may build it up again
    DESTROY_FAILED = 'destroy_failed'

    def __str__(self) -> str:
        return self.value


class CloudState(str, enum.Enum):
    """What a cloud says of a resource, mapped by each handler onto these (as Libcloud's
    ``NodeState``): no cloud-specific state leaks out of a handler."""

    PENDING = 'pending'
    RUNNING = 'running'
    FAILED = 'failed'
    SHUTDOWN = 'shutdown'
    UNKNOWN = 'unknown'

    def __str__(self) -> str:
        return self.value


@dataclass
class ResourceStatus:
    """The state of one resource, in Occopus' words."""

    state: CloudState
    addresses: List[str] = field(default_factory=list)
    private_address: Optional[str] = None
    reason: Optional[str] = None


@dataclass
class Instance:
    """The record of one node instance."""

    node_id: str
    node: str
    infra_id: str = ''
    state: State = State.CREATING
    implementation: int = 0
    resource_type: str = ''
    resource: Dict[str, Any] = field(default_factory=dict)
    instance_id: Optional[str] = None
    addresses: List[str] = field(default_factory=list)
    private_address: Optional[str] = None
    created_at: float = 0.0
    ready_at: Optional[float] = None
    error: Optional[str] = None
    health_check: Dict[str, Any] = field(default_factory=dict)
    config_management: Dict[str, Any] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)
    #: fingerprints of what it was made from (its type's definition, filter, variables)
    spec: Dict[str, str] = field(default_factory=dict)
    #: a resource found by its tags that no record knew (never stored)
    untracked: bool = False

    def to_json(self) -> Dict[str, Any]:
        """The stored form (empty optional parts left out)."""
        data: Dict[str, Any] = {
            'node_id': self.node_id, 'node': self.node, 'infra_id': self.infra_id,
            'state': self.state.value, 'implementation': self.implementation,
            'resource_type': self.resource_type, 'resource': self.resource,
            'instance_id': self.instance_id, 'addresses': list(self.addresses),
            'private_address': self.private_address, 'created_at': self.created_at}
        for name in ('ready_at', 'error'):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        for name in ('health_check', 'config_management', 'extra', 'spec'):
            if getattr(self, name):
                data[name] = getattr(self, name)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> 'Instance':
        """An instance from its stored form; unknown keys are ignored, a missing or unknown
        state counts as ``creating``."""
        values = {k: v for k, v in data.items() if k in _STORED and v is not None}
        try:
            state = State(data.get('state'))
        except ValueError:
            state = State.CREATING
        instance = cls(state=state, **values)
        instance.addresses = [str(a) for a in instance.addresses or []]
        return instance

    @property
    def short(self) -> str:
        """``node/abcd1234``: how progress lines name it."""
        return f'{self.node}/{self.node_id[:8]}'

    def address(self) -> str:
        """Its first public address, else its private one, else ''."""
        return self.addresses[0] if self.addresses else self.private_address or ''

    def public_state(self) -> str:
        """The original's node states: ready, pending, failed (creating counts as pending)."""
        return self.state.value if self.state in (State.READY, State.FAILED) else 'pending'


@dataclass
class InfraState:
    """Everything a management pass reads of one infrastructure (see ``Store.load``)."""

    infra: Dict[str, Any]
    instances: Dict[str, Instance]
    targets: Dict[str, int]
    requests: List[Dict[str, Any]]
    failtimes: Dict[str, float]
    backoff: Dict[str, Dict[str, Any]]

    @classmethod
    def from_store(cls, raw: Optional[Mapping[str, Any]]) -> Optional['InfraState']:
        if raw is None:
            return None
        return cls(infra=raw['infra'],
                   instances={k: Instance.from_json(v) for k, v in raw['instances'].items()},
                   targets=dict(raw['targets']), requests=list(raw['requests']),
                   failtimes=dict(raw['failtimes']), backoff=dict(raw['backoff']))


_STORED = frozenset(f.name for f in fields(Instance)) - {'untracked', 'state'}


class Verdict(enum.Enum):
    """What :func:`judge` concludes about an instance."""

    READY = 'ready'
    PENDING = 'pending'      # not ready yet, within its time
    CHECK = 'check'          # running and configured: its health checks decide
    FAILED = 'failed'
    TIMED_OUT = 'timed out'
    GONE = 'gone'            # shut down, deleted, or never made


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: Optional[str] = None

    @property
    def final(self) -> bool:
        """True if the instance must be dropped and replaced."""
        return self.verdict in (Verdict.FAILED, Verdict.TIMED_OUT, Verdict.GONE)


@dataclass(frozen=True)
class Health:
    """The outcome of an instance's health checks: ``reason`` why they fail (None: they
    pass), whether they can never pass here, and since when they have been failing."""

    reason: Optional[str] = None
    never: bool = False
    failing_since: Optional[float] = None
    limit: float = 600.0


def create_timeout(instance: Instance, default: float) -> float:
    """How long an instance may take to become ready (its resource's ``create_timeout``)."""
    return float(instance.resource.get('create_timeout') or default)


def judge(instance: Instance, status: Optional[ResourceStatus], *, configured: bool = True,
          wants_health: bool = False, health: Optional[Health] = None,
          timeout: float = 1800.0, now: Optional[float] = None) -> Judgement:
    """Decide what an instance is, from what its cloud says (``status``; None when the cloud
    could not be asked this time), whether its config manager is done, its health checks
    (``wants_health``: it has some to run; ``health``: their outcome, once run) and the
    clock (``timeout``: its create timeout, counted from ``created_at``).

    A ready instance stays ready while its cloud cannot be asked or says it is pending; only
    the cloud (failed, shut down) or its health checks failing for longer than their limit
    take it down.  Any other instance times out once it has waited longer than ``timeout``.
    """
    now = time.time() if now is None else now
    if instance.state == State.FAILED:
        return Judgement(Verdict.FAILED, instance.error or 'it failed')
    if not instance.instance_id and not instance.untracked:
        return Judgement(Verdict.GONE, 'its creation was interrupted before the cloud answered')
    waiting = Judgement(Verdict.PENDING, 'the resource is still pending')
    if status is not None:
        if status.state == CloudState.FAILED:
            return Judgement(Verdict.FAILED, status.reason or 'the resource is failed')
        if status.state == CloudState.SHUTDOWN:
            return Judgement(Verdict.GONE, status.reason or 'the resource is shutdown')
        if status.state == CloudState.RUNNING:
            if not configured:
                waiting = Judgement(Verdict.PENDING, 'its config manager is not done yet')
            elif not wants_health:
                return Judgement(Verdict.READY)
            elif health is None:
                return Judgement(Verdict.CHECK)
            elif health.reason is None:
                return Judgement(Verdict.READY)
            elif health.never:
                return Judgement(Verdict.FAILED, health.reason)
            else:
                failing = now - (health.failing_since or now)
                if failing >= health.limit:
                    return Judgement(Verdict.FAILED,
                                     f'health check failing for {failing:.0f} s: {health.reason}')
                waiting = Judgement(Verdict.PENDING, f'health check: {health.reason}')
        else:
            waiting = Judgement(Verdict.PENDING, f'the resource is {status.state.value}'
                                + (f': {status.reason}' if status.reason else ''))
    if instance.state != State.READY and now - (instance.created_at or now) > timeout:
        return Judgement(Verdict.TIMED_OUT, f'not ready after {timeout:.0f} s ({waiting.reason}; '
                                            'create_timeout bounds the wait)')
    return waiting
