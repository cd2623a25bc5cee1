"""Health checks of node instances: the ``health_check`` section and (later) the checks."""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Optional, Tuple

from occo.plugins.base import string_leaves
from occo.schema import KeySchema, Problem, first, is_int, join

KEYS = KeySchema(optional=('ping', 'ports', 'urls', 'mysqldbs', 'timeout'))
MYSQLDB_KEYS = ('name', 'user', 'pass')
DEFAULT_TIMEOUT = 600


def _check_list(section: Mapping[str, Any], key: str) -> Optional[Problem]:
    if key in section and not isinstance(section[key], list):
        return Problem(f"Invalid format of '{key}' section! Must be a list.", (key,))
    return None


def _check_ports(section: Mapping[str, Any]) -> Optional[Problem]:
    for index, port in enumerate(section.get('ports') or ()):
        if not is_int(port) or not 0 < port < 65536:
            return Problem(f"Invalid port '{port}' - must be integer (1-65535)", ('ports', index))
    return None


def _check_mysqldbs(section: Mapping[str, Any]) -> Optional[Problem]:
    # The original only checked the last entry; every entry is checked here.
    for index, entry in enumerate(section.get('mysqldbs') or ()):
        if not isinstance(entry, Mapping):
            return Problem(f'Invalid entry {index + 1} of mysqldbs: must be a mapping with '
                           f'{join(MYSQLDB_KEYS)}', ('mysqldbs', index))
        missing = [k for k in MYSQLDB_KEYS if k not in entry]
        if missing:
            return Problem(f'Missing key(s) in mysqldbs: {join(missing)} (entry {index + 1} needs '
                           f'{join(MYSQLDB_KEYS)})', ('mysqldbs', index))
        unknown = [k for k in entry if k not in MYSQLDB_KEYS]
        if unknown:
            return Problem(f'Unknown key(s) in mysqldbs: {join(unknown)} (entry {index + 1} accepts '
                           f'{join(MYSQLDB_KEYS)})', ('mysqldbs', index, unknown[0]))
    return None


def _check_urls(section: Mapping[str, Any]) -> Optional[Problem]:
    if all(isinstance(url, str) for url in section.get('urls') or ()):
        return None
    return Problem("Invalid format of 'urls' section! Must be a list of URLs.", ('urls',))


def _check_scalars(section: Mapping[str, Any]) -> Optional[Problem]:
    if section.get('type', 'basic') != 'basic':
        return Problem(f"Unknown health check type {section['type']!r} (the only type is basic)", ('type',))
    if not isinstance(section.get('ping', True), bool):
        return Problem("Invalid value of 'ping' section! Must be True/False.", ('ping',))
    timeout = section.get('timeout', DEFAULT_TIMEOUT)
    if not (is_int(timeout) and timeout > 0):
        return Problem("Invalid value of 'timeout' section! Must be integer (seconds, > 0).", ('timeout',))
    return None


def check_section(section: Mapping[str, Any]) -> Optional[Problem]:
    """The first problem of a ``health_check`` section, or ``None``."""
    return first(check(section) for check in (
        _check_scalars,
        lambda s: _check_list(s, 'mysqldbs'), _check_mysqldbs,
        lambda s: _check_list(s, 'urls'), _check_urls,
        lambda s: _check_list(s, 'ports'), _check_ports,
        lambda s: KEYS.unknown(s, 'health_check'),
    ))


def templates(section: Mapping[str, Any]) -> Iterator[Tuple[Tuple[Any, ...], str]]:
    """The Jinja templates of a ``health_check`` section (urls and mysqldbs fields)."""
    for key in ('urls', 'mysqldbs'):
        yield from string_leaves(section.get(key), (key,))
