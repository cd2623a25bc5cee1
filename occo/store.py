"""The only module that talks to Redis.

Every key is built by the functions at the top of this module; nothing else spells a key.
Values are JSON.  Keys of one infrastructure share the hash tag ``{<infra_id>}`` so that
every multi-key operation (a Lua script, a fenced write) touches one hash slot and works on
Redis Cluster as on one server.

Layout (``P`` = the configured prefix, ``occo:`` by default; ``{ID}`` an infrastructure id)::

    P nodedefs:<namespace>        hash    node type -> JSON node definition
    P infras:<n>                  hash    infra id -> JSON summary: the registry, in
                                          REGISTRY_SHARDS shards (n = crc32(id) mod shards)
    P maintainers                 hash    maintainer id -> "<until ms> <JSON>": the members of
                                          the maintainer fleet, each until its heartbeat lapses
    P implementations             hash    implementation key -> JSON health record of the
                                          implementations whose creates failed lately (see
                                          occo.placement; shared by every infrastructure)
    P {ID}:infra                  string  JSON: description, compiled graph, owner, state
    P {ID}:instances              hash    node id -> JSON instance record
    P {ID}:targets                hash    node name -> target instance count
    P {ID}:failtimes              hash    node id -> epoch of its first failed health check
    P {ID}:events                 stream  what happened, when, to which node, and why (capped)
    P {ID}:passes                 stream  every management pass: who, lease token, start, end
                                          (capped at PASSES_KEPT)
    P {ID}:requests               list    scaling requests, appended atomically, consumed by passes
    P {ID}:backoff                hash    node name -> JSON: creates failing in a row, next try
    P {ID}:maintained             string  present while background maintainers keep it (from
                                          its build on, until it is detached)
    P {ID}:lease                  string  JSON {token, holder, since, ns, nonce}: who changes it
                                          now (PX ttl); the token is a string of digits
    P {ID}:fence                  string  the last token handed out: a new one is larger, and at
                                          least the server's time in microseconds
    P {ID}:outcome, P {ID}:cancel string  why a background build is gone; a request to stop it
    P <name>cloud                 hash    resource id -> JSON: an emulated cloud's resources
                                          (``dummycloud``, ``localcloud``; see CloudRegistry)
    P <name>cloud:addresses       set     addresses its live resources hold (local backend)

The registry is sharded so that a cluster spreads it over its primaries and no command on it
grows with more than one shard: registering, updating or forgetting an infrastructure is one
HSET/HDEL on its shard, listing is one HGETALL per shard in one pipeline (one round trip per
primary on a cluster), and nothing ever SCANs the keyspace.  A registry kept by an earlier
version in the single hash ``P infras`` is moved into the shards the first time it is listed.

Three kinds of Redis are reached by URL: one server (``redis://``, ``rediss://``, ``unix://``),
the primary that Sentinels name (``redis+sentinel://``; the writes that must survive a failover,
intent records and lease grants, wait until a replica has them) and a cluster
(``redis+cluster://``).
"""
from __future__ import annotations

import copy
import json
import os
import socket
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple,
                    TypeVar)

from occo.errors import LeaseHeld, LeaseLost, StoreError
from occo.redact import mask_known, mask_url

DEFAULT_PREFIX = 'occo:'
#: how long a call keeps trying while Redis is unreachable (or still loading its data)
DEFAULT_RETRY_WINDOW = 30.0
CONNECT_TIMEOUT = 2.0  # short: a retry loop must notice a server that is back quickly
SOCKET_TIMEOUT = 60.0
RETRY_FIRST_WAIT = 0.1  # waits between tries: random, up to this doubled per try...
RETRY_MAX_WAIT = 2.0    # ...but never longer than this
#: Until Redis has answered once, an unreachable server is a mistake in the configuration
#: more likely than an outage: the command says so after this long, not after the window.
FIRST_CONTACT_WINDOW = 2.0
EVENTS_KEPT = 10_000
PASSES_KEPT = 1_000
FIELDS_PER_OP = 500  # keeps each command's argument list short inside Lua

# Why a lease was lost (``Store.lost_reason``).
LOST_RECORDS_GONE = "Redis came back without this infrastructure's records"
LOST_TAKEN = 'another process took the lease'
LOST_EXPIRED = 'the lease expired while Redis was unreachable'
LOST_RAN_OUT = 'the lease ran out before it could be renewed'

# Tokens are strings of decimal digits: Lua numbers are doubles and cjson prints only 14
# significant digits, so every script compares whole tokens as strings and only the fence
# counter (below 2^53) is ever handled as a number.

# A new lease, unless someone holds one: returns {1, value, ms left} or {0, holder's value, ms
# left}.  The token is max(fence counter + 1, server time in microseconds), so that even a
# deleted counter (a destroyed and rebuilt infrastructure) never hands out an old token again.
# ARGV[5] is a nonce of this request: a retry whose first try took the lease (and whose reply
# was lost) finds its own lease and takes it as its own.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current then
  local ours = cjson.decode(current)['nonce'] == ARGV[5]
  return {ours and 1 or 0, current, redis.call('PTTL', KEYS[1])}
end
local now = redis.call('TIME')
local token = tonumber(now[1]) * 1000000 + tonumber(now[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if last >= token then token = last + 1 end
token = string.format('%.0f', token)
redis.call('SET', KEYS[2], token)
local value = cjson.encode({token = token, holder = ARGV[1], since = tonumber(ARGV[3]), ns = ARGV[4],
                            nonce = ARGV[5]})
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {1, value, tonumber(ARGV[2])}
"""
# Extend (ARGV[2] = ttl ms) or release (ARGV[2] = 0) our lease; 0 if it is no longer ours.
# Released, the lease of an infrastructure that does not exist (any more) takes its fencing
# counter along (KEYS[2], KEYS[3]: fence and record keys).
_KEEP = """
local current = redis.call('GET', KEYS[1])
if not current or cjson.decode(current)['token'] ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('DEL', KEYS[2]) end
return 1
"""
# The keeper's renewal (KEYS: lease, fence, record; ARGV: token, ttl ms, lease value or '').
# A lease key that is gone (Redis restarted without it) is put back with the same token, if the
# caller says it is still ours by its own clock (ARGV[3] is then its value), the record still
# exists and no later lease was handed out meanwhile (the fence counter is not above ours).
_RENEW = """
local current = redis.call('GET', KEYS[1])
if current then
  if cjson.decode(current)['token'] ~= ARGV[1] then return 'taken' end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 'kept'
end
if redis.call('EXISTS', KEYS[3]) == 0 then return 'gone' end
local fence = redis.call('GET', KEYS[2])
if fence and tonumber(fence) > tonumber(ARGV[1]) then return 'taken' end
if ARGV[3] == '' then return 'expired' end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
return 'restored'
"""
# A scaling request, appended only while the infrastructure exists (returns 0 if it is gone);
# one already there (a retry whose first try was applied) is not appended again.
_REQUEST = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('LPOS', KEYS[2], ARGV[1]) then return redis.call('LLEN', KEYS[2]) end
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[2]) then return -1 end
return redis.call('RPUSH', KEYS[2], ARGV[1])
"""
#: scaling requests that may wait for a pass (more are refused, not queued without end)
MAX_PENDING_REQUESTS = 10000
# Resources whose state is still ARGV[1] move to the state given with them (ARGV: id, state...).
_SETTLE = """
for i = 2, #ARGV, 2 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if current then
    local resource = cjson.decode(current)
    if resource['state'] == ARGV[1] then
      resource['state'] = ARGV[i + 1]
      redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(resource))
    end
  end
end
return 0
"""
# Events appended only while the infrastructure exists and nobody holds its lease.
_EVENTS_IF_FREE = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
for _, entry in ipairs(cjson.decode(ARGV[1])) do
  local fields = {}
  for k, v in pairs(entry) do table.insert(fields, k) table.insert(fields, v) end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
end
return 1
"""
# The members of the maintainer fleet: ARGV = member id ('' to only list), its JSON, ttl ms (0:
# it leaves).  Members whose heartbeat lapsed (or whose entry is not one: no deadline, or one
# more than a day ahead) are removed; returns the live ones (id, value...).
_MEMBERS = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if ARGV[1] ~= '' then
  if tonumber(ARGV[3]) > 0 then
    redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f', ms + tonumber(ARGV[3])) .. ' ' .. ARGV[2])
  else
    redis.call('HDEL', KEYS[1], ARGV[1])
  end
end
local live = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local deadline = tonumber(string.match(all[i + 1], '^(%d+) '))
  if deadline and deadline > ms and deadline <= ms + 86400000 then
    table.insert(live, all[i])
    table.insert(live, string.sub(all[i + 1], string.len(string.match(all[i + 1], '^%d+ ')) + 1))
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return live
"""
# Compare and set one field of a hash (ARGV: field, the value expected, '' for none, and the
# new value, '' to delete it): {1} if it was set, else {0, the value found}.
_HASH_CAS = """
local current = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if current ~= ARGV[2] then return {0, current} end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
return {1}
"""
#: tries of a compare-and-set that others keep changing under us
CAS_TRIES = 20
# Writes guarded by a fencing token: 0 (nothing written) unless the lease still holds that
# token.  ARGV[2] is a JSON list of commands whose second item is the index of their key in
# KEYS.  POPHEAD (key, values...) pops the values off the head of a list while they are still
# there, in order: consuming requests twice (a retry) takes nothing the second time.
_FENCED = """
local current = redis.call('GET', KEYS[1])
if not current or cjson.decode(current)['token'] ~= ARGV[1] then return 0 end
for _, op in ipairs(cjson.decode(ARGV[2])) do
  op[2] = KEYS[op[2]]
  if op[1] == 'POPHEAD' then
    for i = 3, #op do
      if redis.call('LINDEX', op[2], 0) ~= op[i] then break end
      redis.call('LPOP', op[2])
    end
  else
    redis.call(unpack(op))
  end
end
return 1
"""


# -- keys ------------------------------------------------------------------------------------

def nodedefs_key(prefix: str, namespace: str) -> str:
    return f'{prefix}nodedefs:{namespace}'


def infras_key(prefix: str) -> str:
    """The registry of earlier versions: one hash (moved into the shards when listed)."""
    return f'{prefix}infras'


#: shards of the registry (a fixed number: changing it would hide entries)
REGISTRY_SHARDS = 16


def registry_shard(infra_id: str) -> int:
    return zlib.crc32(infra_id.encode('utf-8', 'surrogatepass')) % REGISTRY_SHARDS


def registry_key(prefix: str, shard: int) -> str:
    return f'{prefix}infras:{shard}'


def maintainers_key(prefix: str) -> str:
    return f'{prefix}maintainers'


def implementations_key(prefix: str) -> str:
    return f'{prefix}implementations'


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
passes_key = _infra_part('passes')
requests_key = _infra_part('requests')
backoff_key = _infra_part('backoff')
lease_key = _infra_part('lease')
fence_key = _infra_part('fence')
maintained_key = _infra_part('maintained')
#: why a background build's infrastructure is gone (kept a while after its other keys)
outcome_key = _infra_part('outcome')
#: a request to stop a build under way, wherever it runs (a REST DELETE during the build)
cancel_key = _infra_part('cancel')
_INFRA_KEYS = (infra_key, instances_key, targets_key, failtimes_key, events_key, passes_key,
               requests_key, backoff_key, maintained_key, fence_key, lease_key)


def infra_keys(prefix: str, infra_id: str) -> List[str]:
    """Every key that belongs to one infrastructure (its lease last)."""
    return [build(prefix, infra_id) for build in _INFRA_KEYS]


def cloud_key(prefix: str, name: str) -> str:
    return f'{prefix}{name}cloud'


def cloud_addresses_key(prefix: str, name: str) -> str:
    return f'{prefix}{name}cloud:addresses'


# -- helpers ---------------------------------------------------------------------------------

def _json_or_empty(text: str) -> Dict[str, Any]:
    """A JSON object written by another process, or {} if it is not one."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


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
    """The right to change one infrastructure; ``token`` fences every write made under it.

    ``token`` is a string of decimal digits: tokens of one infrastructure id only ever grow
    (compare them as numbers, ``int(token)``), even across its destruction and rebuilding.
    """

    infra_id: str
    token: str
    holder: str
    ttl: float
    #: when it was taken (epoch seconds, as recorded in Redis)
    since: float = 0.0
    #: :func:`lease_clock` just before the request that took it: ours for ``ttl`` from then on
    started: float = field(default=0.0, compare=False)


WHO = f'{socket.gethostname()}:{os.getpid()}'


def _first_line(path: str) -> str:
    try:
        with open(path, encoding='ascii', errors='replace') as stream:
            return stream.readline().strip()
    except OSError:
        return ''


def _pid_namespace() -> str:
    try:
        return os.readlink('/proc/self/ns/pid')
    except OSError:
        return ''


def _place() -> str:
    """Where our pid means something: the host (``OCCOPUS_HOST_ID``, else the machine id, else
    the host name), its boot, and the pid namespace.  Two processes with the same pid are the
    same process only if their places are equal."""
    host = (os.environ.get('OCCOPUS_HOST_ID', '').strip() or _first_line('/etc/machine-id')
            or socket.gethostname())
    return f"{host}/{_first_line('/proc/sys/kernel/random/boot_id')}/{_pid_namespace()}"


#: Where this process runs (host, boot, pid namespace): recorded with every lease it takes, so
#: that only a process of the same place may conclude that the holder no longer runs.
PLACE = _place()


def lease_clock() -> float:
    """Seconds on a clock of this machine that never goes back and keeps counting while the
    process is stopped or the machine sleeps: our own judge of how long a lease lasts."""
    boottime = getattr(time, 'CLOCK_BOOTTIME', None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


def event(kind: str, node: Optional[str] = None, node_id: Optional[str] = None,
          reason: Optional[str] = None) -> Dict[str, str]:
    """An event-stream entry: what happened, to which node, why, when and by whom."""
    entry = {'event': kind, 'time': f'{time.time():.3f}', 'who': WHO}
    if node:
        entry['node'] = node
    if node_id:
        entry['node_id'] = node_id
    if reason:
        entry['reason'] = mask_known(reason)  # credentials never reach the event stream
    return entry


#: replies of a server that is changing roles (a failover under way): worth trying again
_PASSING_ERRORS = ('READONLY', 'MASTERDOWN', 'TRYAGAIN', 'CLUSTERDOWN', 'LOADING')


def _redis_errors() -> Tuple[type, ...]:
    """What redis-py raises: its errors, and a cluster client's own (not RedisErrors)."""
    from redis import exceptions
    return (exceptions.RedisError, exceptions.RedisClusterException)


def _transient(exc: BaseException) -> bool:
    """True for a Redis error worth trying again: the connection is lost or refused, a reply
    timed out, the server is still loading its data (BusyLoadingError), or a failover is under
    way (a demoted primary, a cluster slot without a primary, no cluster node answering)."""
    from redis import exceptions
    if isinstance(exc, (exceptions.AuthenticationError, exceptions.AuthorizationError)):
        return False
    if isinstance(exc, (exceptions.ConnectionError, exceptions.TimeoutError, exceptions.ClusterError,
                        exceptions.ClusterDownError, exceptions.TryAgainError,
                        exceptions.SlotNotCoveredError)):
        return True
    if isinstance(exc, exceptions.ResponseError):
        return str(exc).lstrip('-').split(' ', 1)[0] in _PASSING_ERRORS
    return (isinstance(exc, exceptions.RedisClusterException)
            and 'cannot be connected' in str(exc))


def _single_try() -> Any:
    """redis-py's own retries switched off: :meth:`Store._call` does the retrying."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    return Retry(NoBackoff(), 0)


class _Hold:
    """What the views of a store writing under one lease share: whether (and why) it is lost,
    and until when it is surely ours by our own clock."""

    def __init__(self, lease: Lease, lost: threading.Event) -> None:
        self.lost = lost
        self.reason = ''
        self.valid_until = lease.started + lease.ttl
        self._lock = threading.Lock()

    def kept(self, started: float, ttl: float) -> None:
        with self._lock:
            self.valid_until = max(self.valid_until, started + ttl)

    def give_up(self, reason: str) -> None:
        with self._lock:
            if not self.lost.is_set():
                self.reason = reason
                self.lost.set()


T = TypeVar('T')


def _replay(first: BaseException, fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` for a retry loop whose first attempt already happened and raised ``first``:
    the loop sees that attempt fail, then tries ``fn`` itself."""
    pending = [first]

    def attempt() -> T:
        if pending:
            raise pending.pop()
        return fn()
    return attempt



SENTINEL_SCHEME = 'redis+sentinel://'
CLUSTER_SCHEME = 'redis+cluster://'
#: writes that must survive a failover wait this long at most for a replica to have them
WAIT_TIMEOUT = 1.0


@dataclass(frozen=True)
class Login:
    """The user (an ACL user; None: the default one) and password of a URL."""

    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)


def _split_hosts(url: str, scheme: str, example: str) -> Tuple[Tuple[Tuple[str, int], ...], str,
                                                               Login]:
    """``(hosts, path, login)`` of ``scheme[[user]:password@]host:port[,host:port...][/path]``.

    :raises ValueError: saying what is wrong (never quoting the password)."""
    from urllib.parse import unquote
    hosts, _, path = url[len(scheme):].partition('/')
    login = Login()
    if '@' in hosts:
        auth, hosts = hosts.rsplit('@', 1)
        user, colon, password = auth.partition(':')
        login = (Login(unquote(user) or None, unquote(password) or None) if colon
                 else Login(None, unquote(auth) or None))
    found = []
    for item in hosts.split(','):
        host, _, port = item.strip().rpartition(':')
        if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise ValueError(f'each server must be host:port, e.g. {example}')
        found.append((host.strip('[]'), int(port)))
    return tuple(found), path, login


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]`` URL
    names: the Sentinels to ask, the monitored service (its primary is the server used), the
    database and the login (of the data servers; the Sentinels are asked without one)."""

    sentinels: Tuple[Tuple[str, int], ...]
    service: str
    db: int = 0
    login: Login = Login()

    @classmethod
    def parse(cls, url: str) -> 'SentinelTarget':
        """:raises ValueError: saying what is wrong (never quoting the password)."""
        from urllib.parse import unquote
        sentinels, path, login = _split_hosts(
            url, SENTINEL_SCHEME, 'redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster/0')
        service, _, db = path.partition('/')
        if not service:
            raise ValueError('the URL must name the monitored service after the Sentinels, e.g. '
                             'redis+sentinel://10.0.0.1:26379/mymaster')
        if db not in ('', '/') and not (db.strip('/').isascii() and db.strip('/').isdigit()):
            raise ValueError('the database must be a number, e.g. redis+sentinel://h:26379/mymaster/0')
        return cls(sentinels, unquote(service), int(db.strip('/') or 0), login)


@dataclass(frozen=True)
class ClusterTarget:
    """What a ``redis+cluster://[[user]:password@]host:port[,host:port...]`` URL names: some
    nodes of a Redis Cluster to learn its layout from (one that answers is enough), and the
    login."""

    nodes: Tuple[Tuple[str, int], ...]
    login: Login = Login()

    @classmethod
    def parse(cls, url: str) -> 'ClusterTarget':
        """:raises ValueError: saying what is wrong (never quoting the password)."""
        nodes, path, login = _split_hosts(url, CLUSTER_SCHEME,
                                          'redis+cluster://10.0.0.1:7000,10.0.0.2:7000')
        if path not in ('', '0'):
            raise ValueError('a cluster has one database: nothing may follow the nodes but '
                             '"/" or "/0", e.g. redis+cluster://10.0.0.1:7000,10.0.0.2:7000')
        return cls(nodes, login)


def redis_url_problem(url: str) -> Optional[str]:
    """What is wrong with the database number of a Redis URL (``redis://host:port/DB``,
    ``unix:///path?db=DB``), or with a Sentinel or cluster URL, or ``None``.  redis-py would
    read ``/abc`` as database 0."""
    from urllib.parse import parse_qs, unquote, urlsplit
    for scheme, target in ((SENTINEL_SCHEME, SentinelTarget), (CLUSTER_SCHEME, ClusterTarget)):
        if url.startswith(scheme):
            try:
                target.parse(url)
            except ValueError as exc:
                return str(exc)
            return None
    try:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
    except ValueError:
        return 'it does not parse (expected e.g. redis://127.0.0.1:6379/0)'
    wanted = []
    if parts.scheme in ('redis', 'rediss'):
        path = unquote(parts.path)
        if path not in ('', '/'):
            wanted.append(path[1:] if path.startswith('/') else path)
    wanted.extend(query.get('db', []))
    for db in wanted:
        if not (db.isascii() and db.isdigit()):
            shown = db if len(db) <= 20 else db[:20] + '…'
            return (f'the database must be a number (e.g. redis://127.0.0.1:6379/0 or '
                    f'unix:///run/redis.sock?db=0), got {shown!r}')
    return None


Factory = Callable[[float], Any]  # socket timeout (s) -> a new client
#: the longest URL a message shows whole
URL_SHOWN = 120


def _shown(url: str) -> str:
    return url if len(url) <= URL_SHOWN else url[:URL_SHOWN] + '…'



def client_factory(url: str) -> Tuple[Factory, int]:
    """How to make clients of the Redis at ``url`` (each with the given socket timeout), and
    how many replicas the writes that must survive a failover wait for (1 behind Sentinels,
    where a replica is what a failover promotes; 0 elsewhere).

    :raises ValueError: if the URL is malformed.
    """
    import redis
    timeouts = dict(socket_connect_timeout=CONNECT_TIMEOUT, decode_responses=True,
                    retry=_single_try())
    if url.startswith(SENTINEL_SCHEME):
        from redis.sentinel import Sentinel
        target = SentinelTarget.parse(url)
        # The Sentinels are asked again on every new connection, so that a failover is
        # followed once the old primary stops answering.
        sentinel = Sentinel(list(target.sentinels), socket_connect_timeout=CONNECT_TIMEOUT,
                            socket_timeout=CONNECT_TIMEOUT,
                            sentinel_kwargs=dict(socket_connect_timeout=CONNECT_TIMEOUT,
                                                 socket_timeout=CONNECT_TIMEOUT,
                                                 retry=_single_try()))
        return (lambda seconds: sentinel.master_for(
            target.service, db=target.db, username=target.login.username,
            password=target.login.password, socket_timeout=seconds, **timeouts)), 1
    if url.startswith(CLUSTER_SCHEME):
        from redis.cluster import ClusterNode, RedisCluster
        cluster = ClusterTarget.parse(url)
        nodes = [ClusterNode(host, port) for host, port in cluster.nodes]
        # Made when first used (a cluster client asks for the layout at once), inside the
        # retry loop of Store._call.
        return (lambda seconds: RedisCluster(
            startup_nodes=list(nodes), username=cluster.login.username,
            password=cluster.login.password, socket_timeout=seconds, require_full_coverage=False,
            **timeouts)), 0
    redis.Redis.from_url(url)  # raises ValueError now for what cannot be parsed
    return (lambda seconds: redis.Redis.from_url(url, socket_timeout=seconds, **timeouts)), 0


class _Connection:
    """The clients of one Redis, shared by a store and its views: the main one, made when
    first used, and one per shorter socket timeout (lease keepers)."""

    def __init__(self, factory: Factory, client: Any = None) -> None:
        self.factory = factory
        self.main = client
        self.short: Dict[float, Any] = {}
        self.lock = threading.Lock()

    def client(self, timeout: Optional[float] = None) -> Any:
        with self.lock:
            if timeout is None:
                if self.main is None:
                    self.main = self.factory(SOCKET_TIMEOUT)
                return self.main
            if timeout not in self.short:
                self.short[timeout] = self.factory(timeout)
            return self.short[timeout]


def _factory_of(client: Any) -> Factory:
    """A factory of clients like ``client`` (a ``redis.Redis`` given to :class:`Store`)."""
    import redis

    def make(seconds: float) -> Any:
        pool = client.connection_pool  # a plain client's (clusters are made by client_factory)
        kwargs = dict(pool.connection_kwargs, socket_timeout=seconds, retry=_single_try(),
                      socket_connect_timeout=min(seconds, CONNECT_TIMEOUT))
        return redis.Redis(connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class, **kwargs))
    return make


class Store:
    """Occopus' records in one Redis database.

    Every call rides out a Redis outage: a lost connection, a refused one or a server still
    loading its data is tried again (waits growing at random up to :data:`RETRY_MAX_WAIT`)
    for up to ``retry_window`` seconds before :class:`StoreError` says Redis is unreachable.

    :param client: a ``redis.Redis`` client (``decode_responses=True``).
    :param prefix: prefix of every key.
    :param url: where the client points (for messages only; a password is masked).
    :param retry_window: seconds to keep trying while Redis is unreachable.
    """

    def __init__(self, client: Any, prefix: str = DEFAULT_PREFIX, url: str = '',
                 lease: Optional[Lease] = None, lost: Optional[threading.Event] = None,
                 retry_window: float = DEFAULT_RETRY_WINDOW) -> None:
        self._connection = (client if isinstance(client, _Connection)
                            else _Connection(_factory_of(client), client))
        self.prefix = prefix
        self.url = _shown(mask_url(url))
        self.retry_window = retry_window
        self.lease = lease
        #: set once the lease is known to be lost: callers must stop acting for it
        self.lost = lost
        self._hold = _Hold(lease, lost if lost is not None else threading.Event()) if lease else None
        if self._hold is not None:
            self.lost = self._hold.lost
        self._scripts: Dict[str, Any] = {}
        self._requests_seen: Dict[str, List[str]] = {}
        #: set once Redis has answered (shared with the views of this store)
        self.answered = threading.Event()
        #: replicas that must have a write that has to survive a failover (see durable writes)
        self.wait_replicas = 0
        self._timeout: Optional[float] = None

    @property
    def client(self) -> Any:
        """The redis-py client (made when first used; call it inside :meth:`_call`)."""
        return self._connection.client(self._timeout)

    @property
    def lost_reason(self) -> str:
        """Why the lease of this view was lost ('' while it is not): one of
        :data:`LOST_RECORDS_GONE`, :data:`LOST_TAKEN`, :data:`LOST_EXPIRED`, :data:`LOST_RAN_OUT`."""
        return self._hold.reason if self._hold is not None else ''

    @property
    def taken_over(self) -> bool:
        """True once the lease of this view is known to belong to another process (which then
        owns the infrastructure), rather than lost with Redis' records or run out."""
        return self.lost_reason == LOST_TAKEN

    def _script(self, source: str) -> Any:
        """A registered Lua script (EVALSHA; loaded again by redis-py when the server answers
        NOSCRIPT, e.g. after a restart).  Call it with ``client=self.client``."""
        if source not in self._scripts:
            self._scripts[source] = self.client.register_script(source)
        return self._scripts[source]

    def under(self, lease: Lease, lost: Optional[threading.Event] = None) -> 'Store':
        """This store, with every write to ``lease``'s infrastructure fenced by its token;
        ``lost`` (the view's ``lost``, a new event unless given) is set once it is gone, and
        ``lost_reason`` says why."""
        view = Store(self._connection, self.prefix, '', lease, lost, self.retry_window)
        view.url, view._scripts, view.answered = self.url, self._scripts, self.answered
        view.wait_replicas = self.wait_replicas
        return view

    def with_timeout(self, seconds: float) -> 'Store':
        """This view on a client whose every socket wait is at most ``seconds`` (one client
        per timeout, shared by the views of this store)."""
        view = copy.copy(self)
        view._timeout = seconds
        return view

    @classmethod
    def connect(cls, url: str, prefix: str = DEFAULT_PREFIX,
                retry_window: float = DEFAULT_RETRY_WINDOW) -> 'Store':
        """A store on the Redis at ``url``: ``redis://``, ``rediss://`` or ``unix://`` for one
        server, ``redis+sentinel://`` for the primary that Sentinels name, ``redis+cluster://``
        for a cluster.

        :raises StoreError: if the URL is malformed.  The connection is made lazily.
        """
        problem = redis_url_problem(url)
        if problem:
            raise StoreError(f'invalid Redis URL {_shown(mask_url(url))!r}: {problem}')
        try:
            factory, replicas = client_factory(url)
        except ValueError as exc:
            raise StoreError(f'invalid Redis URL {_shown(mask_url(url))!r}: {exc} '
                             '(expected e.g. redis://127.0.0.1:6379/0)') from None
        store = cls(_Connection(factory), prefix, url, retry_window=retry_window)
        store.wait_replicas = replicas
        return store

    def _call(self, fn: Callable[[], T], window: Optional[float] = None,
              interrupt: Optional[threading.Event] = None) -> T:
        """``fn()`` (Redis commands through ``self.client``), tried again while Redis is
        unreachable for up to ``window`` seconds (default: ``retry_window``), or until
        ``interrupt`` is set.  The one place where Redis errors become ours.

        :raises StoreError: Redis is unreachable, refused the credentials or answered an error.
        """
        import tenacity
        window = max(0.0, self.retry_window if window is None else window)
        if not self.answered.is_set():
            window = min(window, FIRST_CONTACT_WINDOW)
        stop = tenacity.stop_before_delay(window)
        if interrupt is not None:
            stop = tenacity.stop_any(stop, lambda state: interrupt.is_set())
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_transient), stop=stop, reraise=True,
            wait=tenacity.wait_random_exponential(multiplier=RETRY_FIRST_WAIT, max=RETRY_MAX_WAIT),
            sleep=interrupt.wait if interrupt is not None else time.sleep)
        errors = _redis_errors()
        try:
            try:
                result = fn()  # the usual case: no tenacity machinery at all
            except errors as first:
                if not _transient(first):
                    raise
                result = retrying(_replay(first, fn))
        except errors as exc:
            if not _transient(exc):
                self.answered.set()
            raise self._error(exc, window) from None
        self.answered.set()
        return result

    def _error(self, exc: Exception, window: float) -> StoreError:
        import redis
        from redis.sentinel import MasterNotFoundError
        if _transient(exc):
            reason = str(exc).split('. ')[-1].rstrip('.') or type(exc).__name__
            if isinstance(exc, MasterNotFoundError):  # its text lists whole client objects
                reason = 'no Sentinel named a primary for the service (none answered, or none monitors it)'
            return StoreError(f'cannot reach Redis at {self.url} for {window:g} s: {reason} (start '
                              'redis-server, or point OCCOPUS_REDIS_URL or the configuration at a '
                              'running one)')
        if isinstance(exc, redis.AuthenticationError):
            return StoreError(f'Redis at {self.url} refused the credentials')
        message = ' '.join(str(exc).split())
        return StoreError(f'Redis at {self.url} answered an error: {message}')

    # -- node definitions --------------------------------------------------------------------

    def ping(self) -> None:
        """:raises StoreError: if Redis does not answer (within the retry window)."""
        self._call(lambda: self.client.ping())

    def put_node_definitions(self, namespace: str, definitions: Mapping[str, Any]) -> None:
        """Store every definition (type name -> JSON-able data) of ``namespace`` at once,
        replacing definitions of the same types.  One command: all or nothing."""
        if not definitions:
            return
        mapping = {name: _dumps(value) for name, value in definitions.items()}
        self._call(lambda: self.client.hset(nodedefs_key(self.prefix, namespace), mapping=mapping))

    def get_node_definitions(self, namespace: str, types: Sequence[str]) -> Dict[str, Any]:
        """The stored definitions of ``types`` (absent types are left out), in one round trip."""
        types = list(dict.fromkeys(types))
        if not types:
            return {}
        values = self._call(lambda: self.client.hmget(nodedefs_key(self.prefix, namespace), types))
        return {name: json.loads(value) for name, value in zip(types, values) if value is not None}

    def node_definition_types(self, namespace: str) -> List[str]:
        """Every node type imported in ``namespace``, sorted."""
        return sorted(self._call(lambda: self.client.hkeys(nodedefs_key(self.prefix, namespace))))

    # -- writing ------------------------------------------------------------------------------

    def _run(self, queue: Callable[[Any], Any], durable: bool = False) -> Any:
        """``queue(client)``: its result.  A ``durable`` write (one that must survive a
        failover) is followed, on the same connection, by a WAIT for :attr:`wait_replicas`
        replicas (at most :data:`WAIT_TIMEOUT`; a replica that is down does not stop the work:
        the write stands on the primary)."""
        if not (durable and self.wait_replicas):
            return queue(self.client)
        pipe = self.client.pipeline(transaction=False)
        queue(pipe)
        pipe.wait(self.wait_replicas, int(WAIT_TIMEOUT * 1000))
        return pipe.execute()[0]

    def _apply(self, infra_id: str, ops: Sequence[Op], durable: bool = False) -> None:
        """Run ``ops`` (keys of ``infra_id`` only) in one round trip; fenced under a lease;
        ``durable``: see :meth:`_run`.

        :raises LeaseLost: under a lease that is no longer ours (``lost`` is set).
        """
        if not ops:
            return
        if self.lease is None or self.lease.infra_id != infra_id:
            def run() -> None:
                pipe = self.client.pipeline(transaction=False)
                for op in ops:
                    pipe.execute_command(*op)
                if durable and self.wait_replicas:
                    pipe.wait(self.wait_replicas, int(WAIT_TIMEOUT * 1000))
                pipe.execute()
            self._call(run)
            return
        keys = [lease_key(self.prefix, infra_id)]
        index: Dict[str, int] = {}
        encoded = []
        for op in ops:
            if op[1] not in index:
                keys.append(op[1])
                index[op[1]] = len(keys)
            encoded.append([op[0], index[op[1]]] + [str(a) for a in op[2:]])
        args = [self.lease.token, _dumps(encoded)]

        def fenced() -> int:
            return self._run(lambda client: self._script(_FENCED)(keys=keys, args=args,
                                                                  client=client), durable)

        if not self.lost.is_set() and (self._call(fenced) or (self.keep_lease() and self._call(fenced))):
            return
        self._lose(LOST_TAKEN)

    def _lose(self, reason: str) -> None:
        """:raises LeaseLost: our lease is gone (``lost`` set; the first reason found stays)."""
        self._hold.give_up(reason)
        raise LeaseLost(f'the lease on infrastructure {self.lease.infra_id} is no longer ours: '
                        f'{self._hold.reason or reason}')

    def _event_ops(self, infra_id: str, events: Iterable[Mapping[str, str]]) -> List[Op]:
        ops = []
        for entry in events:
            ops.append(['XADD', events_key(self.prefix, infra_id), 'MAXLEN', '~', EVENTS_KEPT, '*']
                       + [part for item in entry.items() for part in item])
        return ops

    def write(self, infra_id: str, *, durable: bool = False, **changes: Any) -> None:
        """Apply a batch of changes to one infrastructure in one round trip: instance records
        (whole, by node id), removed instances, targets, first-failure times (set, cleared),
        retry backoff per node (set, cleared), the first ``consumed_requests`` scaling
        requests taken off the list (those :meth:`load` returned, under a lease: a retried
        write does not take more), and events.  ``durable`` for a write that must survive a
        failover (an intent record: a resource may exist because of it): it returns once a
        replica has it, where :attr:`wait_replicas` asks for one.  The changes are the
        keywords of :meth:`_write_ops`."""
        self._apply(infra_id, self._write_ops(infra_id, **changes), durable)

    def _write_ops(self, infra_id: str, *, records: Iterable[Mapping[str, Any]] = (),
                   removed: Sequence[str] = (), targets: Optional[Mapping[str, int]] = None,
                   failtimes: Optional[Mapping[str, float]] = None, cleared: Sequence[str] = (),
                   backoff: Optional[Mapping[str, Any]] = None, backoff_cleared: Sequence[str] = (),
                   consumed_requests: int = 0, events: Iterable[Mapping[str, str]] = ()) -> List[Op]:
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
            seen = self._requests_seen.get(infra_id)
            fenced = self.lease is not None and self.lease.infra_id == infra_id
            if fenced and seen is not None and len(seen) >= consumed_requests:
                ops.append(['POPHEAD', requests_key(self.prefix, infra_id)] + seen[:consumed_requests])
            else:
                ops.append(['LTRIM', requests_key(self.prefix, infra_id), consumed_requests, -1])
        return ops + self._event_ops(infra_id, events)

    # -- infrastructures ---------------------------------------------------------------------

    def create_infra(self, infra_id: str, record: Mapping[str, Any], summary: Mapping[str, Any],
                     targets: Mapping[str, int], maintained: bool = True) -> bool:
        """Store a new infrastructure (its record, registry entry, targets, its maintained mark
        unless ``maintained`` is False, and a created event) unless the id is taken; returns
        False if it was."""
        key, value = infra_key(self.prefix, infra_id), _dumps(record)
        # A retry whose first try was applied finds its own record: that is no clash.
        if not self._call(lambda: self.client.set(key, value, nx=True) or self.client.get(key) == value):
            return False
        self._register(infra_id, summary)
        ops = [['SET', maintained_key(self.prefix, infra_id), '1']] if maintained else []
        self._apply(infra_id, ops + self._write_ops(
            infra_id, targets=targets, events=[event('infra_created', reason=summary.get('name'))]))
        return True

    def replace_infra(self, infra_id: str, record: Mapping[str, Any], summary: Mapping[str, Any],
                      reason: str) -> None:
        """Store a changed description of an existing infrastructure (fenced)."""
        self._apply(infra_id, [['SET', infra_key(self.prefix, infra_id), _dumps(record)]]
                    + self._event_ops(infra_id, [event('infra_updated', reason=reason)]))
        self._register(infra_id, summary)

    def infra(self, infra_id: str) -> Optional[Dict[str, Any]]:
        """The stored record of an infrastructure, or None."""
        value = self._call(lambda: self.client.get(infra_key(self.prefix, infra_id)))
        return json.loads(value) if value is not None else None

    # -- the registry (sharded: see the module's documentation) --------------------------------

    def _register(self, infra_id: str, summary: Mapping[str, Any]) -> None:
        key, value = registry_key(self.prefix, registry_shard(infra_id)), _dumps(summary)
        self._call(lambda: self.client.hset(key, infra_id, value))

    def forget(self, infra_id: str, durable: bool = False) -> None:
        """Remove the registry entry of an infrastructure (whose record is gone)."""
        key = registry_key(self.prefix, registry_shard(infra_id))
        self._call(lambda: self._run(lambda client: client.hdel(key, infra_id), durable=durable))

    def summary(self, infra_id: str) -> Dict[str, Any]:
        """The registry entry of one infrastructure ({} if it has none)."""
        key = registry_key(self.prefix, registry_shard(infra_id))
        value = self._call(lambda: self.client.hget(key, infra_id))
        return json.loads(value) if value else {}

    def infras(self) -> Dict[str, Dict[str, Any]]:
        """The registry: every known infrastructure id with its summary (one HGETALL per
        shard, in one pipeline)."""
        legacy = infras_key(self.prefix)

        def run() -> List[Dict[str, str]]:
            pipe = self.client.pipeline(transaction=False)
            for shard in range(REGISTRY_SHARDS):
                pipe.hgetall(registry_key(self.prefix, shard))
            pipe.hgetall(legacy)
            return pipe.execute()
        *shards, old = self._call(run)
        found = {k: v for shard in shards for k, v in shard.items()}
        if old:
            self._move_legacy_registry(old)
            found = dict(old, **found)
        return {k: json.loads(v) for k, v in found.items()}

    def _move_legacy_registry(self, entries: Mapping[str, str]) -> None:
        """Move the entries of an earlier version's registry into the shards (an entry the
        shards have already is newer: it stays)."""
        legacy = infras_key(self.prefix)

        def run() -> None:
            pipe = self.client.pipeline(transaction=False)
            for infra_id, value in entries.items():
                pipe.hsetnx(registry_key(self.prefix, registry_shard(infra_id)), infra_id, value)
            pipe.hdel(legacy, *entries)
            pipe.execute()
        self._call(run)

    def set_infra_state(self, infra_id: str, state: str, summary: Mapping[str, Any],
                        reason: Optional[str] = None, quiet: bool = False) -> None:
        """Record the state of a whole infrastructure in its registry summary, with an event
        (unless ``quiet``).  Under a lease, the registry (a key of its own, outside the
        infrastructure's hash tag) is written only after a fenced write succeeded, so that a
        process that lost its lease cannot bring back a destroyed infrastructure."""
        self._apply(infra_id, [['EXISTS', infra_key(self.prefix, infra_id)]] + (
            [] if quiet else self._event_ops(infra_id, [event(f'infra_{state}', reason=reason)])))
        self._register(infra_id, dict(summary, state=state))

    def delete_infra(self, infra_id: str) -> None:
        """Forget an infrastructure: every key of it and its registry entry.  Its lease stays
        until it is released (or runs out), so that a retried delete is still ours to make;
        the fencing tokens of a later infrastructure with the same id are larger all the same.
        Durable (behind Sentinel): a destroyed infrastructure must not come back with a
        failover."""
        lease = lease_key(self.prefix, infra_id)
        self._apply(infra_id, [['DEL', key] for key in infra_keys(self.prefix, infra_id)
                               if key != lease], durable=True)
        self.forget(infra_id, durable=True)

    def set_maintained(self, infra_id: str, maintained: bool) -> Optional[bool]:
        """Mark an infrastructure as maintained in the background (the REST service's
        ``attach``) or not (``detach``).  Returns whether it was marked before, or None if the
        infrastructure does not exist (then nothing is written: a mark never outlives it)."""
        script = ("if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end "
                  "local was = redis.call('EXISTS', KEYS[2]) "
                  "if ARGV[1] == '1' then redis.call('SET', KEYS[2], '1') "
                  "else redis.call('DEL', KEYS[2]) end return was")
        was = self._call(lambda: self.client.eval(
            script, 2, infra_key(self.prefix, infra_id), maintained_key(self.prefix, infra_id),
            '1' if maintained else '0'))
        return None if was == -1 else bool(was)

    def put_outcome(self, infra_id: str, outcome: Mapping[str, Any], ttl: float) -> None:
        """Keep, for ``ttl`` seconds, why an infrastructure built in the background is gone
        (its build failed and was rolled back), for those who ask about it later."""
        self._call(lambda: self.client.set(outcome_key(self.prefix, infra_id), _dumps(outcome),
                                           px=max(1, int(ttl * 1000))))

    def outcome(self, infra_id: str) -> Optional[Dict[str, Any]]:
        """What :meth:`put_outcome` kept of an infrastructure, or None."""
        value = self._call(lambda: self.client.get(outcome_key(self.prefix, infra_id)))
        return json.loads(value) if value else None

    def forget_outcome(self, infra_id: str) -> bool:
        """Forget what :meth:`put_outcome` kept, and any request to cancel the build of
        ``infra_id``; returns whether an outcome was kept."""
        def run() -> List[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(outcome_key(self.prefix, infra_id))
            pipe.delete(cancel_key(self.prefix, infra_id))
            return pipe.execute()
        return bool(self._call(run)[0])

    def request_cancel(self, infra_id: str, ttl: float) -> None:
        """Ask whichever process builds ``infra_id`` to stop (it rolls back); the request
        lapses after ``ttl`` seconds."""
        self._call(lambda: self.client.set(cancel_key(self.prefix, infra_id), '1',
                                           px=max(1, int(ttl * 1000))))

    def cancel_requested(self, infra_ids: Sequence[str]) -> List[str]:
        """Those of ``infra_ids`` whose build was asked to stop (one round trip)."""
        return self._having(cancel_key, infra_ids)

    def maintained(self, infra_ids: Sequence[str]) -> List[str]:
        """Those of ``infra_ids`` that are marked maintained (one round trip)."""
        return self._having(maintained_key, infra_ids)

    def _having(self, key: Callable[[str, str], str], infra_ids: Sequence[str]) -> List[str]:
        """Those of ``infra_ids`` whose key made by ``key`` exists (one round trip)."""
        if not infra_ids:
            return []

        def run() -> List[Any]:
            pipe = self.client.pipeline(transaction=False)
            for infra_id in infra_ids:
                pipe.exists(key(self.prefix, infra_id))
            return pipe.execute()
        return [i for i, present in zip(infra_ids, self._call(run)) if present]

    def load(self, infra_id: str) -> Optional[Dict[str, Any]]:
        """Everything a management pass reads, in one round trip: ``infra`` (the record),
        ``instances``, ``targets``, ``requests``, ``failtimes`` and ``backoff``; None if the
        infrastructure does not exist."""
        def run() -> List[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.get(infra_key(self.prefix, infra_id))
            pipe.hgetall(instances_key(self.prefix, infra_id))
            pipe.hgetall(targets_key(self.prefix, infra_id))
            pipe.lrange(requests_key(self.prefix, infra_id), 0, -1)
            pipe.hgetall(failtimes_key(self.prefix, infra_id))
            pipe.hgetall(backoff_key(self.prefix, infra_id))
            return pipe.execute()
        record, instances, targets, requests, failtimes, backoff = self._call(run)
        if record is None:
            return None
        self._requests_seen[infra_id] = list(requests)
        return {'infra': json.loads(record),
                'instances': {k: json.loads(v) for k, v in instances.items()},
                'targets': {k: int(v) for k, v in targets.items()},
                'requests': [json.loads(r) for r in requests],
                'failtimes': {k: float(v) for k, v in failtimes.items()},
                'backoff': {k: json.loads(v) for k, v in backoff.items()}}

    def load_many(self, infra_ids: Sequence[str]) -> Dict[str, Optional[Dict[str, Dict[str, Any]]]]:
        """The instance records of several infrastructures, in one round trip (None for one
        whose record does not exist)."""
        def run() -> List[Any]:
            pipe = self.client.pipeline(transaction=False)
            for infra_id in infra_ids:
                pipe.exists(infra_key(self.prefix, infra_id))
                pipe.hgetall(instances_key(self.prefix, infra_id))
            return pipe.execute()
        results = self._call(run)
        return {infra_id: {k: json.loads(v) for k, v in raw.items()} if exists else None
                for infra_id, exists, raw in zip(infra_ids, results[::2], results[1::2])}

    # -- instances ---------------------------------------------------------------------------

    def instances(self, infra_id: str) -> Dict[str, Dict[str, Any]]:
        """Every instance record of an infrastructure, by node id."""
        raw = self._call(lambda: self.client.hgetall(instances_key(self.prefix, infra_id)))
        return {node_id: json.loads(value) for node_id, value in raw.items()}

    # -- scaling requests (no lease needed: appended atomically) -----------------------------

    def add_request(self, infra_id: str, request: Mapping[str, Any]) -> int:
        """Append a scaling request while the infrastructure exists (atomically, so that no
        request outlives a destroy; a retry never appends it twice: it gets an ``id``);
        returns how many are pending, 0 if it is gone, -1 if :data:`MAX_PENDING_REQUESTS`
        are pending already (nothing is added)."""
        keys = [infra_key(self.prefix, infra_id), requests_key(self.prefix, infra_id)]
        args = [_dumps(dict(request, id=uuid.uuid4().hex)), MAX_PENDING_REQUESTS]
        return int(self._call(lambda: self._script(_REQUEST)(keys=keys, args=args, client=self.client)))

    # -- leases ------------------------------------------------------------------------------

    def acquire_lease(self, infra_id: str, holder: str, ttl: float) -> Lease:
        """Take the lease of an infrastructure for ``ttl`` seconds.

        :raises LeaseHeld: naming the holder, if someone else has it.
        """
        keys = [lease_key(self.prefix, infra_id), fence_key(self.prefix, infra_id)]
        args = [holder, int(ttl * 1000), f'{time.time():.3f}', PLACE, uuid.uuid4().hex]
        started: List[float] = []

        def attempt() -> Any:
            started.append(lease_clock())  # the first try may be the one that took it
            return self._run(lambda client: self._script(_ACQUIRE)(keys=keys, args=args,
                                                                   client=client), durable=True)

        ok, value, left = self._call(attempt)
        data = json.loads(value)
        if not ok:
            raise LeaseHeld(infra_id, data.get('holder', '?'), float(data.get('since') or 0),
                            max(0, int(left)) / 1000, str(data.get('token') or ''),
                            str(data.get('ns') or ''))
        return Lease(infra_id, str(data['token']), holder, ttl, float(data.get('since') or 0),
                     started[0])

    def _lease_keys(self, infra_id: str) -> List[str]:
        return [lease_key(self.prefix, infra_id), fence_key(self.prefix, infra_id),
                infra_key(self.prefix, infra_id)]

    def renew_lease(self, lease: Lease) -> bool:
        """Extend ``lease`` by its ttl; False if it is no longer ours."""
        keys, args = self._lease_keys(lease.infra_id), [lease.token, int(lease.ttl * 1000)]
        return bool(self._call(lambda: self._script(_KEEP)(keys=keys, args=args, client=self.client)))

    def keep_lease(self, interrupt: Optional[threading.Event] = None) -> bool:
        """Renew the lease this view writes under (see :meth:`under`); True while it is ours.

        While Redis is unreachable it keeps trying until the lease runs out by our own clock
        (or ``interrupt`` is set).  A lease key Redis lost while the lease was still ours (a
        restart from older data) is put back with the same token, if the infrastructure's
        record exists and no later lease was handed out.  Otherwise the lease is lost:
        ``lost`` is set, ``lost_reason`` says why, and False is returned.
        """
        hold, lease = self._hold, self.lease
        if hold is None:
            raise TypeError('keep_lease() needs a store under a lease (see Store.under)')
        if self.lost.is_set():
            return False
        keys = self._lease_keys(lease.infra_id)
        value = _dumps({'token': lease.token, 'holder': lease.holder, 'since': lease.since,
                        'ns': PLACE})
        started: List[float] = []

        def renew() -> str:
            started.append(lease_clock())
            ours = started[-1] < hold.valid_until
            return self._script(_RENEW)(keys=keys, client=self.client, args=[
                lease.token, int(lease.ttl * 1000), value if ours else ''])

        try:
            outcome = self._call(renew, window=hold.valid_until - lease_clock(), interrupt=interrupt)
        except StoreError:
            if interrupt is not None and interrupt.is_set():
                return True
            if lease_clock() + RETRY_MAX_WAIT < hold.valid_until:
                return True  # not a lost connection, or time is left: the next tick tries again
            hold.give_up(LOST_EXPIRED)
            return False
        if outcome in ('kept', 'restored'):
            hold.kept(started[-1], lease.ttl)
            return True
        hold.give_up({'gone': LOST_RECORDS_GONE, 'taken': LOST_TAKEN}.get(outcome, LOST_RAN_OUT))
        return False

    def break_lease(self, infra_id: str, token: str) -> bool:
        """Remove a lease whose holder is known to be dead (only if it still has ``token``)."""
        keys, args = self._lease_keys(infra_id), [token, 0]
        return bool(self._call(lambda: self._script(_KEEP)(keys=keys, args=args, client=self.client)))

    def release_lease(self, lease: Lease) -> None:
        """Give ``lease`` back (nothing happens if it is no longer ours).  Through the view
        holding it, Redis is tried only as long as the lease would last anyway."""
        window = None
        if self._hold is not None and self.lease == lease:
            window = min(self.retry_window, max(0.0, self._hold.valid_until - lease_clock()))
        keys, args = self._lease_keys(lease.infra_id), [lease.token, 0]
        self._call(lambda: self._script(_KEEP)(keys=keys, args=args, client=self.client), window)

    # -- events ------------------------------------------------------------------------------

    def add_events(self, infra_id: str, events: Iterable[Mapping[str, str]],
                   if_exists: bool = False) -> None:
        """Append events; with ``if_exists``, only while the infrastructure exists and no
        other process holds its lease (so that a process without a lease, such as a
        maintainer recording a failed pass, never writes into a rebuilt or changing one)."""
        if not if_exists:
            self.write(infra_id, events=events)
            return
        args = [_dumps(list(events))]
        keys = [infra_key(self.prefix, infra_id), lease_key(self.prefix, infra_id),
                events_key(self.prefix, infra_id)]
        self._call(lambda: self._script(_EVENTS_IF_FREE)(keys=keys, args=args + [EVENTS_KEPT],
                                                         client=self.client))

    def events(self, infra_id: str, count: Optional[int] = None) -> List[Dict[str, str]]:
        """The event stream of an infrastructure, oldest first (the last ``count`` if given)."""
        return self._stream(events_key(self.prefix, infra_id), count)

    def _stream(self, key: str, count: Optional[int]) -> List[Dict[str, str]]:
        if count:
            entries = list(reversed(self._call(lambda: self.client.xrevrange(key, count=count))))
        else:
            entries = self._call(lambda: self.client.xrange(key))
        return [dict(fields, id=entry_id) for entry_id, fields in entries]

    # -- management passes and the maintainer fleet ------------------------------------------

    def record_pass(self, infra_id: str, entry: Mapping[str, Any]) -> None:
        """Append the record of a management pass (fenced by the pass's lease)."""
        self._apply(infra_id, [['XADD', passes_key(self.prefix, infra_id), 'MAXLEN', '~',
                                PASSES_KEPT, '*']
                               + [str(part) for item in entry.items() for part in item]])

    def passes(self, infra_id: str, count: Optional[int] = None) -> List[Dict[str, str]]:
        """The records of the management passes of an infrastructure, oldest first."""
        return self._stream(passes_key(self.prefix, infra_id), count)

    def implementation_health(self, keys: Sequence[str]) -> Dict[str, Dict[str, Any]]:
        """The health records of the implementations ``keys`` that have one (one round trip)."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        values = self._call(lambda: self.client.hmget(implementations_key(self.prefix), keys))
        return {key: _json_or_empty(value) for key, value in zip(keys, values) if value}

    def change_implementation_health(
            self, key: str, change: Callable[[Optional[Dict[str, Any]]], Optional[Dict[str, Any]]]
    ) -> Optional[Dict[str, Any]]:
        """Replace the health record ``key`` (None: it has none) by ``change(record)`` (None:
        remove it), atomically with respect to other processes changing it (compare and set,
        tried again with what they wrote); returns the record written."""
        current: Optional[str] = self._call(
            lambda: self.client.hget(implementations_key(self.prefix), key))
        for _ in range(CAS_TRIES):
            new = change(_json_or_empty(current) if current else None)
            args = [key, current or '', _dumps(new) if new is not None else '']
            if args[1] == args[2]:
                return new
            outcome = self._call(lambda: self._script(_HASH_CAS)(
                keys=[implementations_key(self.prefix)], args=args, client=self.client))
            if outcome[0] == 1:
                return new
            current = outcome[1] or None
        raise StoreError(f'the health record of {key} kept changing under {CAS_TRIES} tries')

    def heartbeat(self, member: str, info: Mapping[str, Any], ttl: float) -> Dict[str, Dict[str, Any]]:
        """Say that maintainer ``member`` is alive for ``ttl`` more seconds (by Redis' clock;
        0: it leaves); returns every live member with what it said of itself."""
        args = [member, _dumps(info), max(0, int(ttl * 1000))]
        raw = self._call(lambda: self._script(_MEMBERS)(
            keys=[maintainers_key(self.prefix)], args=args, client=self.client))
        return {raw[i]: _json_or_empty(raw[i + 1]) for i in range(0, len(raw), 2)}

class CloudRegistry:
    """The resources of an emulated cloud (the dummy and local backends), kept in Redis so that
    other processes -- and a test or a person -- can see them.  Handlers get one from the engine
    and never speak Redis themselves; every call rides out a Redis outage as the store's do.

    Each resource is a JSON object under its resource id; those that belong to an
    infrastructure carry ``infra_id``, ``node_id`` and ``node`` so that :meth:`find` can list
    them by their tags.
    """

    def __init__(self, store: 'Store', name: str) -> None:
        self.store = store
        self.name = name
        self.key = cloud_key(store.prefix, name)
        self.addresses_key = cloud_addresses_key(store.prefix, name)

    def put(self, resource_id: str, resource: Mapping[str, Any]) -> None:
        """Store (or replace) one resource."""
        value = _dumps(resource)
        # durable: a resource of an emulated cloud outlives a Redis failover, as a real one would
        self.store._call(lambda: self.store._run(
            lambda client: client.hset(self.key, resource_id, value), durable=True))

    def get(self, resource_id: str) -> Optional[Dict[str, Any]]:
        """One resource, or None if the cloud has no such resource."""
        return self.get_many([resource_id])[0]

    def get_many(self, resource_ids: Sequence[str]) -> List[Optional[Dict[str, Any]]]:
        """Several resources in one round trip (None for each one that does not exist)."""
        if not resource_ids:
            return []
        ids = list(resource_ids)
        values = self.store._call(lambda: self.store.client.hmget(self.key, ids))
        return [json.loads(v) if v is not None else None for v in values]

    def delete(self, resource_id: Optional[str], address: Optional[str] = None) -> None:
        """Forget a resource and give back the address it held (either may be None)."""
        def run() -> None:
            pipe = self.store.client.pipeline(transaction=False)
            if address:
                pipe.srem(self.addresses_key, address)
            if resource_id:
                pipe.hdel(self.key, resource_id)
            if self.store.wait_replicas:  # durable, as put: what was dropped stays dropped
                pipe.wait(self.store.wait_replicas, int(WAIT_TIMEOUT * 1000))
            pipe.execute()
        self.store._call(run)

    def settle(self, changes: Mapping[str, str], only_from: str) -> None:
        """Move resources (id -> new state) whose state is still ``only_from``; one round trip,
        and a resource someone changed meanwhile keeps that change."""
        if not changes:
            return
        args = [only_from] + [part for item in changes.items() for part in item]
        self.store._call(lambda: self.store._script(_SETTLE)(keys=[self.key], args=args,
                                                             client=self.store.client))

    def find(self, infra_id: str) -> List[Dict[str, Any]]:
        """The resources tagged with ``infra_id``, as minimal instance records (``instance_id``,
        ``node_id``, ``node``)."""
        def run() -> List[Dict[str, Any]]:
            found = []
            for resource_id, value in self.store.client.hscan_iter(self.key, count=1000):
                resource = json.loads(value)
                if resource.get('infra_id') == infra_id:
                    found.append({'instance_id': resource_id, 'node_id': resource.get('node_id'),
                                  'node': resource.get('node')})
            return found
        return self.store._call(run)

    def claim(self, address: str) -> bool:
        """Take ``address`` for a resource; False if another resource holds it."""
        return bool(self.store._call(lambda: self.store.client.sadd(self.addresses_key, address)))
