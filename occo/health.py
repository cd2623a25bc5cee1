"""Health checks of node instances: the ``health_check`` section and (later) the checks."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterator, Mapping, Optional, Tuple

from occo.plugins.base import string_leaves
from occo.redact import mask_url, mask_urls, printable
from occo.schema import KeySchema, Problem, first, is_int, join

KEYS = KeySchema(optional=('ping', 'ports', 'urls', 'mysqldbs', 'timeout'))
MYSQLDB_KEYS = ('name', 'user', 'pass')
DEFAULT_TIMEOUT = 600

if TYPE_CHECKING:
    from occo.instances import Health, Instance


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


# -- the checks ------------------------------------------------------------------------------

PING_TIMEOUT = 1
CONNECT_TIMEOUT = 2.0
URL_TIMEOUT = 5.0


class HealthCheckError(Exception):
    """A check that can never pass as configured (e.g. ping is not installed)."""


def template_context(instance: 'Instance', variables: Mapping[str, Any]) -> Dict[str, Any]:
    """The reduced context of health-check templates (urls, mysqldbs): ``ip``, ``node_id``,
    ``variables``, ``instance_data``."""
    return {'ip': instance.address(), 'node_id': instance.node_id, 'variables': variables,
            'instance_data': instance.to_json()}


def check_record(record: 'Instance', variables: Mapping[str, Any]) -> Tuple[Optional[str], bool]:
    """Run an instance's health checks: ``(None, False)`` if they pass, ``(why, False)`` if one
    fails now, ``(why, True)`` if one can never pass here (e.g. ping is not installed).  Never
    raises: a check that breaks counts as failing."""
    from occo import templates
    from occo.errors import describe_error
    context = template_context(record, variables)

    def render(text: str) -> str:
        return templates.render(text, context, what=f"node '{record.node}': health_check")
    try:
        return _shown(check_instance(record.health_check, context['ip'], render)), False
    except HealthCheckError as exc:
        return _shown(str(exc)), True
    except Exception as exc:  # noqa: BLE001 - a broken check is a failing check
        return _shown(describe_error(exc)), False


def _shown(reason: Optional[str]) -> Optional[str]:
    """A reason fit for progress lines, events and ``--events``: every URL in it masked
    (passwords, secret query values) and control characters escaped."""
    return None if reason is None else printable(mask_urls(reason))


def observe(instance: 'Instance', variables: Mapping[str, Any],
            failing_since: Optional[float], now: float) -> 'Health':
    """Run an instance's health checks; their outcome for :func:`occo.instances.judge`
    (``failing_since``: when they started failing, if they did before)."""
    from occo.instances import Health
    reason, never = check_record(instance, variables)
    return Health(reason, never, None if reason is None else failing_since or now,
                  float(instance.health_check.get('timeout', DEFAULT_TIMEOUT)))


def has_checks(record: 'Instance', handler: Any) -> bool:
    """True if an instance has health checks to run: some are configured (ping is on by
    default) and its cloud's addresses are real (an emulated cloud's are never contacted)."""
    if getattr(handler, 'fake_addresses', False):
        return False
    check = record.health_check
    return bool(check.get('ping', True) or check.get('ports') or check.get('urls')
                or check.get('mysqldbs'))


def check_instance(section: Mapping[str, Any], address: str, render: Any) -> Optional[str]:
    """Run the checks of a ``health_check`` section against ``address``, lazily, in the
    original's order (ping, ports, urls, mysqldbs).  Returns ``None`` if all pass, else why
    the first one failed.  ``render(text)`` renders url and mysqldbs templates.

    :raises HealthCheckError: if a check cannot run at all here.
    """
    if not address:
        return 'the instance has no address yet'
    if section.get('ping', True) and not _ping(address):
        return f'no answer to ping from {address}'
    for port in section.get('ports') or ():
        reason = _port(address, port)
        if reason:
            return reason
    for url in section.get('urls') or ():
        reason = _url(render(url))
        if reason:
            return reason
    for database in section.get('mysqldbs') or ():
        reason = _mysql(address, {k: render(str(v)) for k, v in database.items()})
        if reason:
            return reason
    return None


def _ping(address: str) -> bool:
    import subprocess
    try:
        result = subprocess.run(['ping', '-c', '1', '-W', str(PING_TIMEOUT), address],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, timeout=PING_TIMEOUT + 5)
    except FileNotFoundError:
        raise HealthCheckError('the ping health check needs the ping command, which is not '
                               'installed here (Debian: apt-get install iputils-ping), or set '
                               'health_check: {ping: false}') from None
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def _port(address: str, port: int) -> Optional[str]:
    import socket
    try:
        with socket.create_connection((address, port), timeout=CONNECT_TIMEOUT):
            return None
    except OSError as exc:
        return f'port {port} of {address} is not open ({exc.strerror or exc})'


def _url(url: str) -> Optional[str]:
    import requests
    shown = printable(mask_url(url))  # nor a password or token in it a message or an event
    try:
        response = requests.get(url, timeout=URL_TIMEOUT, allow_redirects=True, stream=True)
        response.close()
    except requests.RequestException as exc:
        return f'{shown} does not answer ({type(exc).__name__})'
    if not 200 <= response.status_code < 300:
        return f'{shown} answers HTTP {response.status_code}'
    return None


def _mysql(address: str, database: Mapping[str, str]) -> Optional[str]:
    try:
        import pymysql
    except ImportError:
        raise HealthCheckError('the mysqldbs health check needs PyMySQL '
                               '(pip install "occopus[mysql]")') from None
    try:
        pymysql.connect(host=address, user=database['user'], password=database['pass'],
                        database=database['name'], connect_timeout=int(CONNECT_TIMEOUT)).close()
    except pymysql.MySQLError as exc:
        code = exc.args[0] if exc.args else '?'
        return f"database '{database['name']}' on {address} refuses a connection (MySQL error {code})"
    return None
