"""Keeping secrets and terminal control characters out of what Occopus prints and records.

:func:`mask_url` is the one function that makes a URL fit to be shown or stored: it hides the
password of its user information and the values of query (and fragment) parameters whose names
say they are secret.  :func:`printable` makes any text safe for a terminal: control characters
(ESC, CR, NUL, C1, bidirectional overrides, ...) are written as escapes such as ``\\x1b`` or
``\\u202e`` instead of reaching the terminal raw.

Light on purpose: the command-line layer imports it before parsing its arguments.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Optional
from urllib.parse import unquote, urlsplit

MASK = '***'

#: Query parameter names (or the ends of names: ``api_key``, ``X-Amz-Signature``,
#: ``access_token``) whose values are secret.  Compared case-insensitively.
SECRET_NAMES = ('password', 'passwd', 'pass', 'pwd', 'token', 'secret', 'key', 'signature',
                'sig', 'auth', 'authorization', 'credential', 'credentials', 'session')
_SECRET_NAME = re.compile(r'(?:%s)s?$' % '|'.join(sorted(SECRET_NAMES, key=len, reverse=True)),
                          re.IGNORECASE)

#: Characters that must never reach a terminal raw: C0 controls but the line feed (joined into
#: the line by the callers that need it), DEL, C1 controls, and the Unicode marks that reorder or
#: hide text (bidirectional embeddings, overrides and isolates, line and paragraph separators).
_CONTROLS = re.compile('[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029'
                       '\u202a-\u202e\u2066-\u2069\ufeff]')
_CONTROLS_AND_LF = re.compile('[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029'
                              '\u202a-\u202e\u2066-\u2069\ufeff]')


#: Values the authentication data holds: masked wherever a URL or a message shows them.
_KNOWN: set = set()
SHORTEST_SECRET = 4  # shorter values would mask common words


def remember_secrets(values: Iterable[Any]) -> None:
    """Mask these values (credentials from ``auth_data.yaml``) in every URL and message
    passed through :func:`mask_url` or :func:`mask_urls` from now on."""
    for value in values:
        if isinstance(value, (str, int)) and not isinstance(value, bool) and \
                len(str(value)) >= SHORTEST_SECRET:
            _KNOWN.add(str(value))


def mask_known(text: str) -> str:
    """``text`` with every remembered secret value replaced by ``***``."""
    for secret in sorted(_KNOWN, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def is_secret_name(name: str) -> bool:
    """True if a parameter called ``name`` holds a secret (``token``, ``api_key``, ...)."""
    return bool(_SECRET_NAME.search(unquote(name).strip()))


def _mask_parameters(text: str) -> str:
    """``a=1&token=X`` -> ``a=1&token=***``: values of secret-named parameters hidden, the
    rest of the text kept as written."""
    if not text:
        return text
    parts = []
    for item in re.split('([&;])', text):
        name, equals, value = item.partition('=')
        if equals and value and is_secret_name(name):
            item = f'{name}={MASK}'
        parts.append(item)
    return ''.join(parts)


def mask_url(url: str) -> str:
    """``url`` with its password and the values of its secret query parameters replaced by
    ``***``, fit for messages, logs and events.

    ``redis://:pw@host:1/0?password=X`` -> ``redis://:***@host:1/0?password=***``;
    ``http://10.0.0.1:8099/?token=X&page=2`` -> ``http://10.0.0.1:8099/?token=***&page=2``.
    """
    for scheme in ('redis+sentinel://', 'redis+cluster://'):
        if url.startswith(scheme):  # several host:port, which urlsplit cannot read
            hosts, slash, path = url[len(scheme):].partition('/')
            if '@' in hosts:
                auth, hosts = hosts.rsplit('@', 1)
                user = auth.split(':', 1)[0] if ':' in auth else ''  # no colon: all password
                hosts = f'{user}:{MASK}@{hosts}'
            return mask_known(f'{scheme}{hosts}{slash}{path}')
    try:
        parts = urlsplit(url)
        port = f':{parts.port}' if parts.port else ''
        password = parts.password
    except ValueError:
        return '<a URL that does not parse>'
    netloc = parts.netloc
    if password is not None:
        host = parts.hostname or ''
        if ':' in host:  # an IPv6 address
            host = f'[{host}]'
        netloc = f"{parts.username or ''}:{MASK}@{host}{port}"
    query = _mask_parameters(parts.query)
    fragment = _mask_parameters(parts.fragment)
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return mask_known(url)
    head = f'{parts.scheme}:' if parts.scheme else ''
    if parts.netloc or url[len(head):].startswith('//'):
        head += '//'  # kept as written: urlunsplit would turn unix:///sock into unix:/sock
    return mask_known(head + netloc + parts.path + (f'?{query}' if query else '')
                      + (f'#{fragment}' if fragment else ''))


_URL_IN_TEXT = re.compile(r'\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\'"<>]+')
#: punctuation that ends a sentence rather than the URL written before it
_TRAILING = '.,;:!?)]}'


def mask_urls(text: str) -> str:
    """``text`` with every URL in it passed through :func:`mask_url` (for messages that quote
    a URL among other words, e.g. an exception's)."""
    def masked(match: 're.Match[str]') -> str:
        url = match.group(0)
        kept = url.rstrip(_TRAILING)  # "at tcp://h:2375: refused": the URL ends at 2375
        return mask_url(kept) + url[len(kept):]
    return mask_known(_URL_IN_TEXT.sub(masked, text))


def _escape(match: 're.Match[str]') -> str:
    code = ord(match.group(0))
    return f'\\x{code:02x}' if code < 0x100 else f'\\u{code:04x}'


def printable(text: Any, *, keep_newlines: bool = False) -> str:
    """``str(text)`` with every terminal control character escaped (``\\x1b``, ``\\r``
    as ``\\x0d``, ``\\u202e``, ...); line feeds are escaped too unless ``keep_newlines``."""
    pattern = _CONTROLS if keep_newlines else _CONTROLS_AND_LF
    return pattern.sub(_escape, str(text))


def control_character(text: Any) -> Optional[str]:
    """The first terminal control character of ``text``, escaped (e.g. ``\\x1b``), or None."""
    if not isinstance(text, str):
        return None
    match = _CONTROLS_AND_LF.search(text)
    return _escape(match) if match else None


def excerpt(value: Any, limit: int = 60) -> str:
    """A short, printable quotation of a (wrong) value for a one-line message: its ``repr``,
    cut to about ``limit`` characters with an ellipsis."""
    text = printable(repr(value))
    if len(text) <= limit:
        return text
    return _PARTIAL_ESCAPE.sub('', text[:limit]) + '…'


_PARTIAL_ESCAPE = re.compile(r'\\(?:x[0-9a-f]?|u[0-9a-f]{0,3}|U[0-9a-f]{0,7})?$')
