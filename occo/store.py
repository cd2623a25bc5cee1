"""The only module that talks to Redis.

Every key is built by the functions at the top of this module; nothing else spells a key.
Values are JSON.  Keys of one infrastructure share the hash tag ``{<infra_id>}`` so that
multi-key transactions work on Redis Cluster too.

Layout (``P`` = the configured prefix, ``occo:`` by default; ``{ID}`` an infrastructure id)::

    P nodedefs:<namespace>        hash    node type -> JSON node definition
    P infras                      hash    infra id -> JSON summary (the shared registry)
    P {ID}:infra                  string  JSON: description, compiled graph, owner, state
    P {ID}:instances              hash    node id -> JSON instance record
    P {ID}:targets                hash    node name -> target instance count
    P {ID}:failtimes              hash    node id -> epoch of its first failed health check
    P {ID}:events                 stream  what happened, when, to which node, and why (capped)
    P dummycloud                  hash    resource id -> JSON (the simulated cloud's resources)
    P localcloud                  hash    resource id -> JSON (local-backend instances)
    P localcloud:addresses        set     loopback addresses held by local-backend instances
"""
from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence
from urllib.parse import urlsplit, urlunsplit

from occo.errors import StoreError

DEFAULT_PREFIX = 'occo:'
CONNECT_TIMEOUT = 5.0
EVENTS_KEPT = 10_000


# -- keys ------------------------------------------------------------------------------------

def nodedefs_key(prefix: str, namespace: str) -> str:
    return f'{prefix}nodedefs:{namespace}'


def infras_key(prefix: str) -> str:
    return f'{prefix}infras'


def infra_key(prefix: str, infra_id: str) -> str:
    return f'{prefix}{{{infra_id}}}:infra'


def instances_key(prefix: str, infra_id: str) -> str:
    return f'{prefix}{{{infra_id}}}:instances'


def targets_key(prefix: str, infra_id: str) -> str:
    return f'{prefix}{{{infra_id}}}:targets'


def failtimes_key(prefix: str, infra_id: str) -> str:
    return f'{prefix}{{{infra_id}}}:failtimes'


def events_key(prefix: str, infra_id: str) -> str:
    return f'{prefix}{{{infra_id}}}:events'


def infra_keys(prefix: str, infra_id: str) -> List[str]:
    """Every key that belongs to one infrastructure."""
    return [infra_key(prefix, infra_id), instances_key(prefix, infra_id),
            targets_key(prefix, infra_id), failtimes_key(prefix, infra_id),
            events_key(prefix, infra_id)]


def dummycloud_key(prefix: str) -> str:
    return f'{prefix}dummycloud'


def localcloud_key(prefix: str) -> str:
    return f'{prefix}localcloud'


def localcloud_addresses_key(prefix: str) -> str:
    return f'{prefix}localcloud:addresses'


# -- helpers ---------------------------------------------------------------------------------

def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return '<invalid URL>'
    if parts.password is None:
        return url
    user = parts.username or ''
    host = parts.hostname or ''
    netloc = f"{user}:***@{host}" + (f':{parts.port}' if parts.port else '')
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(',', ':'), sort_keys=False)


WHO = f'{socket.gethostname()}:{os.getpid()}'


def event(kind: str, node: Optional[str] = None, node_id: Optional[str] = None,
          reason: Optional[str] = None) -> Dict[str, str]:
    """An event-stream entry: what happened, to which node, why, when and by whom."""
    entry = {'event': kind, 'time': f'{time.time():.3f}', 'who': WHO}
    if node:
        entry['node'] = node
    if node_id:
        entry['node_id'] = node_id
    if reason:
        entry['reason'] = reason
    return entry


class Store:
    """Occopus' records in one Redis database.

    :param client: a ``redis.Redis`` client (``decode_responses=True``).
    :param prefix: prefix of every key.
    :param url: where the client points (for messages only; a password is masked).
    """

    def __init__(self, client: Any, prefix: str = DEFAULT_PREFIX, url: str = '') -> None:
        self.client = client
        self.prefix = prefix
        self.url = mask_url(url)

    @classmethod
    def connect(cls, url: str, prefix: str = DEFAULT_PREFIX) -> 'Store':
        """A store on the Redis server at ``url`` (``redis://``, ``rediss://`` or ``unix://``).

        :raises StoreError: if the URL is malformed.  The connection is made lazily.
        """
        import redis
        try:
            client = redis.Redis.from_url(url, decode_responses=True,
                                          socket_connect_timeout=CONNECT_TIMEOUT)
        except ValueError as exc:
            raise StoreError(f'invalid Redis URL {mask_url(url)!r}: {exc} '
                             '(expected e.g. redis://127.0.0.1:6379/0)') from None
        return cls(client, prefix, url)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        import redis
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            reason = str(exc).split('. ')[-1].rstrip('.') or type(exc).__name__
            raise StoreError(f'cannot reach Redis at {self.url}: {reason} (start redis-server, or '
                             'point OCCOPUS_REDIS_URL or the configuration at a running one)') from None
        except redis.AuthenticationError:
            raise StoreError(f'Redis at {self.url} refused the credentials') from None
        except redis.RedisError as exc:
            raise StoreError(f'Redis at {self.url} answered an error: {exc}') from None

    def ping(self) -> None:
        """:raises StoreError: if Redis cannot be reached."""
        with self._errors():
            self.client.ping()

    # -- node definitions --------------------------------------------------------------------

    def put_node_definitions(self, namespace: str, definitions: Mapping[str, Any]) -> None:
        """Store every definition (type name -> JSON-able data) of ``namespace`` at once,
        replacing definitions of the same types.  One command: all or nothing."""
        if not definitions:
            return
        with self._errors():
            self.client.hset(nodedefs_key(self.prefix, namespace),
                             mapping={name: _dumps(value) for name, value in definitions.items()})

    def get_node_definitions(self, namespace: str, types: Sequence[str]) -> Dict[str, Any]:
        """The stored definitions of ``types`` (absent types are left out), in one round trip."""
        types = list(dict.fromkeys(types))
        if not types:
            return {}
        with self._errors():
            values = self.client.hmget(nodedefs_key(self.prefix, namespace), types)
        return {name: json.loads(value) for name, value in zip(types, values) if value is not None}

    def node_definition_types(self, namespace: str) -> List[str]:
        """Every node type imported in ``namespace``, sorted."""
        with self._errors():
            return sorted(self.client.hkeys(nodedefs_key(self.prefix, namespace)))

    # -- infrastructures ---------------------------------------------------------------------

    def create_infra(self, infra_id: str, record: Mapping[str, Any], summary: Mapping[str, Any],
                     targets: Mapping[str, int]) -> bool:
        """Store a new infrastructure (its record, registry entry, targets and a created event)
        unless the id is taken; returns False if it was."""
        with self._errors():
            if not self.client.set(infra_key(self.prefix, infra_id), _dumps(record), nx=True):
                return False
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(infras_key(self.prefix), infra_id, _dumps(summary))
            if targets:
                pipe.hset(targets_key(self.prefix, infra_id), mapping=targets)
            self._xadd(pipe, infra_id, event('infra_created', reason=summary.get('name')))
            pipe.execute()
        return True

    def infra(self, infra_id: str) -> Optional[Dict[str, Any]]:
        """The stored record of an infrastructure, or None."""
        with self._errors():
            value = self.client.get(infra_key(self.prefix, infra_id))
        return json.loads(value) if value is not None else None

    def infras(self) -> Dict[str, Dict[str, Any]]:
        """The registry: every known infrastructure id with its summary."""
        with self._errors():
            return {k: json.loads(v) for k, v in self.client.hgetall(infras_key(self.prefix)).items()}

    def set_infra_state(self, infra_id: str, state: str, summary: Mapping[str, Any],
                        reason: Optional[str] = None) -> None:
        """Record the state of a whole infrastructure (in its summary) with an event."""
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(infras_key(self.prefix), infra_id, _dumps(dict(summary, state=state)))
            self._xadd(pipe, infra_id, event(f'infra_{state}', reason=reason))
            pipe.execute()

    def delete_infra(self, infra_id: str) -> None:
        """Forget an infrastructure: every key of it, and its registry entry."""
        with self._errors():
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(*infra_keys(self.prefix, infra_id))
            pipe.hdel(infras_key(self.prefix), infra_id)
            pipe.execute()

    # -- instances ---------------------------------------------------------------------------

    def put_instances(self, infra_id: str, records: Iterable[Mapping[str, Any]],
                      events: Iterable[Mapping[str, str]] = ()) -> None:
        """Write instance records (whole, by node id) and events in one round trip."""
        records, events = list(records), list(events)
        if not records and not events:
            return
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            if records:
                pipe.hset(instances_key(self.prefix, infra_id),
                          mapping={r['node_id']: _dumps(r) for r in records})
            for entry in events:
                self._xadd(pipe, infra_id, entry)
            pipe.execute()

    def instances(self, infra_id: str) -> Dict[str, Dict[str, Any]]:
        """Every instance record of an infrastructure, by node id."""
        with self._errors():
            raw = self.client.hgetall(instances_key(self.prefix, infra_id))
        return {node_id: json.loads(value) for node_id, value in raw.items()}

    def remove_instances(self, infra_id: str, node_ids: Sequence[str],
                         events: Iterable[Mapping[str, str]] = ()) -> None:
        """Forget instances (after their resources are dropped), with events."""
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            if node_ids:
                pipe.hdel(instances_key(self.prefix, infra_id), *node_ids)
                pipe.hdel(failtimes_key(self.prefix, infra_id), *node_ids)
            for entry in events:
                self._xadd(pipe, infra_id, entry)
            pipe.execute()

    def targets(self, infra_id: str) -> Dict[str, int]:
        with self._errors():
            return {k: int(v) for k, v in self.client.hgetall(targets_key(self.prefix, infra_id)).items()}

    # -- events ------------------------------------------------------------------------------

    def _xadd(self, pipe: Any, infra_id: str, entry: Mapping[str, str]) -> None:
        pipe.xadd(events_key(self.prefix, infra_id), dict(entry), maxlen=EVENTS_KEPT, approximate=True)

    def add_events(self, infra_id: str, events: Iterable[Mapping[str, str]]) -> None:
        self.put_instances(infra_id, (), events)

    def events(self, infra_id: str, count: Optional[int] = None) -> List[Dict[str, str]]:
        """The event stream of an infrastructure, oldest first (the last ``count`` if given)."""
        with self._errors():
            if count:
                entries = list(reversed(self.client.xrevrange(events_key(self.prefix, infra_id),
                                                              count=count)))
            else:
                entries = self.client.xrange(events_key(self.prefix, infra_id))
        return [dict(fields, id=entry_id) for entry_id, fields in entries]
