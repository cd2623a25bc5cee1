"""What the plugins that speak HTTP through ``requests`` share: a session that retries
nothing and trusts nothing of the environment, answers read up to a bound, and whether a
failed request was ever sent (the engine may retry a create that surely was not).

``requests`` is imported inside the functions, so that importing a plugin stays cheap.
"""
from __future__ import annotations

import os
import time
from typing import Any, Iterator, Optional, Tuple
from urllib.parse import quote

POOL = 50  # connections kept per host: more than the engine's calls at once per endpoint
#: redirects, never followed: they would carry the credentials (or a token) elsewhere
REDIRECTS = frozenset((301, 302, 303, 305, 307, 308))


def session(accept: str, auth: Optional[Tuple[str, str]] = None, pool: int = POOL) -> Any:
    """A ``requests.Session`` for one endpoint and account: no retries of its own (the engine
    retries), no proxy or netrc credentials from the environment (``trust_env`` off:
    credentials must not go where the user did not say; ``REQUESTS_CA_BUNDLE`` is still
    honoured), HTTP basic ``auth`` if given, and ``Accept: accept``."""
    import requests
    made = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=pool, pool_maxsize=pool,
                                            max_retries=0)
    made.mount('http://', adapter)
    made.mount('https://', adapter)
    made.trust_env = False
    # ... but a CA bundle the user names is still trusted (a private cloud's or Chef server's CA)
    made.verify = os.environ.get('REQUESTS_CA_BUNDLE') or os.environ.get('CURL_CA_BUNDLE') or True
    if auth is not None:
        made.auth = auth
    made.headers.update({'Accept': accept, 'User-Agent': 'occopus'})
    return made


class AnswerTooLong(Exception):
    """An answer over the bound it is read up to (or slower than its time bound)."""


def read_bounded(response: Any, limit: int, seconds: Optional[float] = None) -> bytes:
    """The body of a streamed ``response``, read up to ``limit`` bytes (and ``seconds``).

    :raises AnswerTooLong: saying which bound it crossed (the rest is not read).
    """
    declared = response.headers.get('Content-Length')
    if declared and declared.isdigit() and int(declared) > limit:
        raise AnswerTooLong(f'the answer is {declared} bytes long, over the {limit} bytes '
                            'Occopus reads')
    deadline = None if seconds is None else time.monotonic() + seconds
    chunks, size = [], 0
    for chunk in response.iter_content(65536):
        size += len(chunk)
        if size > limit:
            raise AnswerTooLong(f'the answer is over the {limit} bytes Occopus reads; not read '
                                'further')
        if deadline is not None and time.monotonic() > deadline:
            raise AnswerTooLong(f'the answer took over {seconds:.0f} s to arrive; not read '
                                'further')
        chunks.append(chunk)
    return b''.join(chunks)


def exception_chain(exc: BaseException, limit: int = 50) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or wraps (causes, contexts, a
    ``reason``, an ``inner_exception``, exceptions among its arguments), each once, at most
    ``limit``: HTTP libraries wrap what really went wrong several layers deep."""
    seen, todo = set(), [exc]
    while todo and len(seen) < limit:
        current = todo.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__, getattr(current, 'reason', None),
                 getattr(current, 'inner_exception', None)]
        todo += [a for a in getattr(current, 'args', ()) if isinstance(a, BaseException)]


def never_sent(exc: BaseException) -> bool:
    """Whether a connection failure happened before the request was sent (refused, no such
    host, no route, connect time-out): HTTP libraries word them all alike, so the chain of
    exceptions it was raised from is looked at."""
    import socket

    import requests
    from urllib3 import exceptions as u3
    early = (u3.NewConnectionError, u3.ConnectTimeoutError, socket.gaierror,
             ConnectionRefusedError, requests.exceptions.ConnectTimeout)
    return any(isinstance(e, early) for e in exception_chain(exc))


def url_part(value: Any) -> str:
    """An id or name as one path segment (or query value) of a URL."""
    return quote(str(value), safe='')
