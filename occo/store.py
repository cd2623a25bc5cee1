"""The only module that talks to Redis.

Every key is built by the functions at the top of this module; nothing else spells a key.
Values are JSON.  Keys of one infrastructure share the hash tag ``{<infra_id>}`` so that
multi-key transactions work on Redis Cluster too.

Layout (``P`` = the configured prefix, ``occo:`` by default)::

    P nodedefs:<namespace>        hash   node type -> JSON node definition
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

from occo.errors import StoreError

DEFAULT_PREFIX = 'occo:'
CONNECT_TIMEOUT = 5.0


# -- keys ------------------------------------------------------------------------------------

def nodedefs_key(prefix: str, namespace: str) -> str:
    return f'{prefix}nodedefs:{namespace}'


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
