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
    P {ID}:requests               list    scaling requests, appended atomically, consumed by passes
    P {ID}:backoff                hash    node name -> JSON: creates failing in a row, next try
    P {ID}:lease                  string  JSON {token, holder, since}: who changes it now (PX ttl)
    P {ID}:fence                  string  counter giving every new lease a larger token
    P dummycloud                  hash    resource id -> JSON (the simulated cloud's resources)
    P localcloud                  hash    resource id -> JSON (local-backend instances)
    P localcloud:addresses        set     loopback addresses held by local-backend instances
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

from occo.errors import LeaseHeld, LeaseLost, StoreError
from occo.redact import mask_url

DEFAULT_PREFIX = 'occo:'
CONNECT_TIMEOUT = 5.0
SOCKET_TIMEOUT = 60.0
EVENTS_KEPT = 10_000
FIELDS_PER_OP = 500  # keeps each command's argument list short inside Lua

# A new lease, unless someone holds one: returns {1, value} or {0, holder's value, ms left}.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current then return {0, current, redis.call('PTTL', KEYS[1])} end
local token = redis.call('INCR', KEYS[2])
local value = cjson.encode({token = token, holder = ARGV[1], since = tonumber(ARGV[3]), ns = ARGV[4]})
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {1, value, tonumber(ARGV[2])}
"""
# Extend (ARGV[2] = ttl ms) or release (ARGV[2] = 0) our lease; 0 if it is no longer ours.
# Released, the lease of an infrastructure that does not exist (any more) takes its fencing
# counter along (KEYS[2], KEYS[3]: fence and record keys).
_KEEP = """
local current = redis.call('GET', KEYS[1])
if not current or cjson.decode(current)['token'] ~= tonumber(ARGV[1]) then return 0 end
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('DEL', KEYS[2]) end
return 1
"""
# A scaling request, appended only while the infrastructure exists (returns 0 if it is gone).
_REQUEST = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('RPUSH', KEYS[2], ARGV[1])
"""
# Writes guarded by a fencing token: refused unless the lease still holds that token.
# ARGV[2] is a JSON list of commands whose second item is the index of their key in KEYS.
_FENCED = """
local current = redis.call('GET', KEYS[1])
if not current or cjson.decode(current)['token'] ~= tonumber(ARGV[1]) then
  return redis.error_reply('STALE the lease on this infrastructure is no longer ours')
end
for _, op in ipairs(cjson.decode(ARGV[2])) do
  op[2] = KEYS[op[2]]
  redis.call(unpack(op))
end
return 1
"""


# -- keys ------------------------------------------------------------------------------------

def nodedefs_key(prefix: str, namespace: str) -> str:
    return f'{prefix}nodedefs:{namespace}'


def infras_key(prefix: str) -> str:
    return f'{prefix}infras'


def _infra_part(part: str) -> Callable[[str, str], str]:
    """The builder of one key of an infrastructure: ``<prefix>{<infra_id>}:<part>``."""
    def build(prefix: str, infra_id: str) -> str:
        return f'{prefix}{{{infra_id}}}:{part}'
    build.__name__ = f'{part}_key'
    return build


infra_key = _infra_part('infra')
instances_key = _infra_part('instances')
targets_key = _infra_part('targets')
failtimes_key = _infra_part('failtimes')
events_key = _infra_part('events')
requests_key = _infra_part('requests')
backoff_key = _infra_part('backoff')
lease_key = _infra_part('lease')
fence_key = _infra_part('fence')
_INFRA_KEYS = (infra_key, instances_key, targets_key, failtimes_key, events_key, requests_key,
               backoff_key, fence_key, lease_key)


def infra_keys(prefix: str, infra_id: str) -> List[str]:
    """Every key that belongs to one infrastructure (its lease last)."""
    return [build(prefix, infra_id) for build in _INFRA_KEYS]


def dummycloud_key(prefix: str) -> str:
    return f'{prefix}dummycloud'


def localcloud_key(prefix: str) -> str:
    return f'{prefix}localcloud'


def localcloud_addresses_key(prefix: str) -> str:
    return f'{prefix}localcloud:addresses'


# -- helpers ---------------------------------------------------------------------------------

def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(',', ':'), sort_keys=False)


Op = List[Any]  # a Redis command: name, key, arguments


def _hset(key: str, mapping: Mapping[str, Any]) -> List[Op]:
    items = [(field, value if isinstance(value, str) else _dumps(value))
             for field, value in mapping.items()]
    return [['HSET', key] + [part for item in items[i:i + FIELDS_PER_OP] for part in item]
            for i in range(0, len(items), FIELDS_PER_OP)]


def _hdel(key: str, fields: Sequence[str]) -> List[Op]:
    return [['HDEL', key] + list(fields[i:i + FIELDS_PER_OP])
            for i in range(0, len(fields), FIELDS_PER_OP)]


@dataclass(frozen=True)
class Lease:
    """The right to change one infrastructure; ``token`` fences every write made under it."""

    infra_id: str
    token: int
    holder: str
    ttl: float


WHO = f'{socket.gethostname()}:{os.getpid()}'


def _pid_namespace() -> str:
    try:
        return os.readlink('/proc/self/ns/pid')
    except OSError:
        return ''


#: Which pid namespace our pid belongs to (containers sharing a host name have their own).
PID_NAMESPACE = _pid_namespace()


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

    def __init__(self, client: Any, prefix: str = DEFAULT_PREFIX, url: str = '',
                 lease: Optional[Lease] = None, lost: Optional[threading.Event] = None) -> None:
        self.client = client
        self.prefix = prefix
        self.url = mask_url(url)
        self.lease = lease
        #: set once the lease is known to be lost: callers must stop acting for it
        self.lost = lost
        self._scripts: Dict[str, Any] = {}

    def _script(self, source: str) -> Any:
        """A registered Lua script (EVALSHA, loaded once per client)."""
        if source not in self._scripts:
            self._scripts[source] = self.client.register_script(source)
        return self._scripts[source]

    def under(self, lease: Lease, lost: Optional[threading.Event] = None) -> 'Store':
        """This store, with every write to ``lease``'s infrastructure fenced by its token;
        ``lost`` is set by whoever keeps the lease once it is gone."""
        view = Store(self.client, self.prefix, '', lease, lost or threading.Event())
        view.url, view._scripts = self.url, self._scripts
        return view

    @classmethod
    def connect(cls, url: str, prefix: str = DEFAULT_PREFIX) -> 'Store':
        """A store on the Redis server at ``url`` (``redis://``, ``rediss://`` or ``unix://``).

        :raises StoreError: if the URL is malformed.  The connection is made lazily.
        """
        import redis
        try:
            client = redis.Redis.from_url(url, decode_responses=True,
                                          socket_connect_timeout=CONNECT_TIMEOUT,
                                          socket_timeout=SOCKET_TIMEOUT)
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
        except redis.ResponseError as exc:
            if str(exc).startswith('STALE'):
                if self.lost is not None:
                    self.lost.set()
                raise LeaseLost(str(exc)[len('STALE '):]) from None
            raise StoreError(f'Redis at {self.url} answered an error: {exc}') from None
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

    # -- writing ------------------------------------------------------------------------------

    def _apply(self, infra_id: str, ops: Sequence[Op]) -> None:
        """Run ``ops`` (keys of ``infra_id`` only) in one round trip; fenced under a lease."""
        if not ops:
            return
        with self._errors():
            if self.lease is None or self.lease.infra_id != infra_id:
                pipe = self.client.pipeline(transaction=False)
                for op in ops:
                    pipe.execute_command(*op)
                pipe.execute()
                return
            keys = [lease_key(self.prefix, infra_id)]
            index = {}
            encoded = []
            for op in ops:
                if op[1] not in index:
                    keys.append(op[1])
                    index[op[1]] = len(keys)
                encoded.append([op[0], index[op[1]]] + [str(a) for a in op[2:]])
            self._script(_FENCED)(keys=keys, args=[self.lease.token, _dumps(encoded)])

    def _event_ops(self, infra_id: str, events: Iterable[Mapping[str, str]]) -> List[Op]:
        ops = []
        for entry in events:
            ops.append(['XADD', events_key(self.prefix, infra_id), 'MAXLEN', '~', EVENTS_KEPT, '*']
                       + [part for item in entry.items() for part in item])
        return ops

    def write(self, infra_id: str, *, records: Iterable[Mapping[str, Any]] = (),
              removed: Sequence[str] = (), targets: Optional[Mapping[str, int]] = None,
              failtimes: Optional[Mapping[str, float]] = None, cleared: Sequence[str] = (),
              backoff: Optional[Mapping[str, Any]] = None, backoff_cleared: Sequence[str] = (),
              consumed_requests: int = 0, events: Iterable[Mapping[str, str]] = ()) -> None:
        """Apply a batch of changes to one infrastructure in one round trip: instance records
        (whole, by node id), removed instances, targets, first-failure times (set, cleared),
        retry backoff per node (set, cleared), the first ``consumed_requests`` scaling
        requests taken off the list, and events."""
        ops: List[Op] = []
        records = {r['node_id']: r for r in records}
        if records:
            ops += _hset(instances_key(self.prefix, infra_id), records)
        if removed:
            ops += _hdel(instances_key(self.prefix, infra_id), list(removed))
            ops += _hdel(failtimes_key(self.prefix, infra_id), list(removed))
        if targets:
            ops += _hset(targets_key(self.prefix, infra_id), {k: str(v) for k, v in targets.items()})
        if failtimes:
            ops += _hset(failtimes_key(self.prefix, infra_id), {k: repr(v) for k, v in failtimes.items()})
        if cleared:
            ops += _hdel(failtimes_key(self.prefix, infra_id), list(cleared))
        if backoff:
            ops += _hset(backoff_key(self.prefix, infra_id), backoff)
        if backoff_cleared:
            ops += _hdel(backoff_key(self.prefix, infra_id), list(backoff_cleared))
        if consumed_requests:
            ops.append(['LTRIM', requests_key(self.prefix, infra_id), consumed_requests, -1])
        ops += self._event_ops(infra_id, events)
        self._apply(infra_id, ops)

    # -- infrastructures ---------------------------------------------------------------------

    def create_infra(self, infra_id: str, record: Mapping[str, Any], summary: Mapping[str, Any],
                     targets: Mapping[str, int]) -> bool:
        """Store a new infrastructure (its record, registry entry, targets and a created event)
        unless the id is taken; returns False if it was."""
        with self._errors():
            if not self.client.set(infra_key(self.prefix, infra_id), _dumps(record), nx=True):
                return False
            self.client.hset(infras_key(self.prefix), infra_id, _dumps(summary))
        self.write(infra_id, targets=targets,
                   events=[event('infra_created', reason=summary.get('name'))])
        return True

    def replace_infra(self, infra_id: str, record: Mapping[str, Any], summary: Mapping[str, Any],
                      reason: str) -> None:
        """Store a changed description of an existing infrastructure (fenced)."""
        self._apply(infra_id, [['SET', infra_key(self.prefix, infra_id), _dumps(record)]]
                    + self._event_ops(infra_id, [event('infra_updated', reason=reason)]))
        with self._errors():
            self.client.hset(infras_key(self.prefix), infra_id, _dumps(summary))

    def infra(self, infra_id: str) -> Optional[Dict[str, Any]]:
        """The stored record of an infrastructure, or None."""
        with self._errors():
            value = self.client.get(infra_key(self.prefix, infra_id))
        return json.loads(value) if value is not None else None

    def summary(self, infra_id: str) -> Dict[str, Any]:
        """The registry entry of one infrastructure ({} if it has none)."""
        with self._errors():
            value = self.client.hget(infras_key(self.prefix), infra_id)
        return json.loads(value) if value else {}

    def infras(self) -> Dict[str, Dict[str, Any]]:
        """The registry: every known infrastructure id with its summary."""
        with self._errors():
            return {k: json.loads(v) for k, v in self.client.hgetall(infras_key(self.prefix)).items()}

    def set_infra_state(self, infra_id: str, state: str, summary: Mapping[str, Any],
                        reason: Optional[str] = None, quiet: bool = False) -> None:
        """Record the state of a whole infrastructure in its registry summary, with an event
        (unless ``quiet``).  Under a lease, the registry (a key of its own, outside the
        infrastructure's hash tag) is written only after a fenced write succeeded, so that a
        process that lost its lease cannot bring back a destroyed infrastructure."""
        self._apply(infra_id, [['EXISTS', infra_key(self.prefix, infra_id)]] + (
            [] if quiet else self._event_ops(infra_id, [event(f'infra_{state}', reason=reason)])))
        with self._errors():
            self.client.hset(infras_key(self.prefix), infra_id, _dumps(dict(summary, state=state)))

    def delete_infra(self, infra_id: str) -> None:
        """Forget an infrastructure: every key of it (its lease too), and its registry entry."""
        self._apply(infra_id, [['DEL', key] for key in infra_keys(self.prefix, infra_id)])
        with self._errors():
            self.client.hdel(infras_key(self.prefix), infra_id)

    def load(self, infra_id: str) -> Optional[Dict[str, Any]]:
        """Everything a management pass reads, in one round trip: ``infra`` (the record),
        ``instances``, ``targets``, ``requests``, ``failtimes`` and ``backoff``; None if the
        infrastructure does not exist."""
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            pipe.get(infra_key(self.prefix, infra_id))
            pipe.hgetall(instances_key(self.prefix, infra_id))
            pipe.hgetall(targets_key(self.prefix, infra_id))
            pipe.lrange(requests_key(self.prefix, infra_id), 0, -1)
            pipe.hgetall(failtimes_key(self.prefix, infra_id))
            pipe.hgetall(backoff_key(self.prefix, infra_id))
            record, instances, targets, requests, failtimes, backoff = pipe.execute()
        if record is None:
            return None
        return {'infra': json.loads(record),
                'instances': {k: json.loads(v) for k, v in instances.items()},
                'targets': {k: int(v) for k, v in targets.items()},
                'requests': [json.loads(r) for r in requests],
                'failtimes': {k: float(v) for k, v in failtimes.items()},
                'backoff': {k: json.loads(v) for k, v in backoff.items()}}

    def load_many(self, infra_ids: Sequence[str]) -> Dict[str, Optional[Dict[str, Dict[str, Any]]]]:
        """The instance records of several infrastructures, in one round trip (None for one
        whose record does not exist)."""
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            for infra_id in infra_ids:
                pipe.exists(infra_key(self.prefix, infra_id))
                pipe.hgetall(instances_key(self.prefix, infra_id))
            results = pipe.execute()
        return {infra_id: {k: json.loads(v) for k, v in raw.items()} if exists else None
                for infra_id, exists, raw in zip(infra_ids, results[::2], results[1::2])}

    def forget(self, infra_id: str) -> None:
        """Remove a registry entry whose infrastructure record is gone."""
        with self._errors():
            self.client.hdel(infras_key(self.prefix), infra_id)

    # -- instances ---------------------------------------------------------------------------

    def put_instances(self, infra_id: str, records: Iterable[Mapping[str, Any]],
                      events: Iterable[Mapping[str, str]] = ()) -> None:
        """Write instance records (whole, by node id) and events in one round trip."""
        self.write(infra_id, records=records, events=events)

    def instances(self, infra_id: str) -> Dict[str, Dict[str, Any]]:
        """Every instance record of an infrastructure, by node id."""
        with self._errors():
            raw = self.client.hgetall(instances_key(self.prefix, infra_id))
        return {node_id: json.loads(value) for node_id, value in raw.items()}

    def remove_instances(self, infra_id: str, node_ids: Sequence[str],
                         events: Iterable[Mapping[str, str]] = ()) -> None:
        """Forget instances (after their resources are dropped), with events."""
        self.write(infra_id, removed=node_ids, events=events)

    def targets(self, infra_id: str) -> Dict[str, int]:
        with self._errors():
            return {k: int(v) for k, v in self.client.hgetall(targets_key(self.prefix, infra_id)).items()}

    # -- scaling requests (no lease needed: appended atomically) -----------------------------

    def add_request(self, infra_id: str, request: Mapping[str, Any]) -> int:
        """Append a scaling request while the infrastructure exists (atomically, so that no
        request outlives a destroy); returns how many are pending, 0 if it is gone."""
        with self._errors():
            return int(self._script(_REQUEST)(
                keys=[infra_key(self.prefix, infra_id), requests_key(self.prefix, infra_id)],
                args=[_dumps(request)]))

    # -- leases ------------------------------------------------------------------------------

    def acquire_lease(self, infra_id: str, holder: str, ttl: float) -> Lease:
        """Take the lease of an infrastructure for ``ttl`` seconds.

        :raises LeaseHeld: naming the holder, if someone else has it.
        """
        with self._errors():
            ok, value, left = self._script(_ACQUIRE)(
                keys=[lease_key(self.prefix, infra_id), fence_key(self.prefix, infra_id)],
                args=[holder, int(ttl * 1000), f'{time.time():.3f}', PID_NAMESPACE])
        data = json.loads(value)
        if not ok:
            raise LeaseHeld(infra_id, data.get('holder', '?'), float(data.get('since') or 0),
                            max(0, int(left)) / 1000, int(data.get('token') or 0),
                            str(data.get('ns') or ''))
        return Lease(infra_id, int(data['token']), holder, ttl)

    def _lease_keys(self, infra_id: str) -> List[str]:
        return [lease_key(self.prefix, infra_id), fence_key(self.prefix, infra_id),
                infra_key(self.prefix, infra_id)]

    def renew_lease(self, lease: Lease) -> bool:
        """Extend ``lease`` by its ttl; False if it is no longer ours."""
        with self._errors():
            return bool(self._script(_KEEP)(keys=self._lease_keys(lease.infra_id),
                                            args=[lease.token, int(lease.ttl * 1000)]))

    def break_lease(self, infra_id: str, token: int) -> bool:
        """Remove a lease whose holder is known to be dead (only if it still has ``token``)."""
        with self._errors():
            return bool(self._script(_KEEP)(keys=self._lease_keys(infra_id), args=[token, 0]))

    def release_lease(self, lease: Lease) -> None:
        """Give ``lease`` back (nothing happens if it is no longer ours)."""
        with self._errors():
            self._script(_KEEP)(keys=self._lease_keys(lease.infra_id), args=[lease.token, 0])

    # -- events ------------------------------------------------------------------------------

    def add_events(self, infra_id: str, events: Iterable[Mapping[str, str]]) -> None:
        self.write(infra_id, events=events)

    def events(self, infra_id: str, count: Optional[int] = None) -> List[Dict[str, str]]:
        """The event stream of an infrastructure, oldest first (the last ``count`` if given)."""
        with self._errors():
            if count:
                entries = list(reversed(self.client.xrevrange(events_key(self.prefix, infra_id),
                                                              count=count)))
            else:
                entries = self.client.xrange(events_key(self.prefix, infra_id))
        return [dict(fields, id=entry_id) for entry_id, fields in entries]
