"""Keeping secrets out of what Occopus prints and records."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit for messages, logs and events."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        port = f':{parts.port}' if parts.port else ''
    except ValueError:
        return '<a URL that does not parse>'
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
