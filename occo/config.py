"""Configuration and authentication data: files, their lookup chain, environment overrides.

Lookup chain of the configuration file: ``--cfg PATH``, then ``$OCCOPUS_CONFIG_PATH``, then
``~/.occopus/occopus_config.yaml``, then built-in defaults (a configuration file is optional).
The authentication file is looked up the same way (``--auth_data_path``,
``$OCCOPUS_AUTH_DATA_PATH``, ``~/.occopus/auth_data.yaml``, none).  Absolute paths are taken
literally.  ``$OCCOPUS_REDIS_URL`` overrides the Redis location of any configuration.

The original's configuration files (with ``!python_import``, ``!UDS``, ... tags) are read as
data: the Redis location comes from ``components.uds`` and the REST address from
``components.rest``; the object-building tags and the ``plugins``/``logging`` sections are
ignored with a warning and nothing in them is executed.
"""
from __future__ import annotations

import getpass
import math
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional, Tuple

from occo.errors import AuthError, ConfigError
from occo.plugins.base import string_leaves
from occo.redact import excerpt, mask_urls, printable, remember_secrets
from occo.schema import Limits, type_name

ENV_CONFIG_PATH = 'OCCOPUS_CONFIG_PATH'
ENV_AUTH_DATA_PATH = 'OCCOPUS_AUTH_DATA_PATH'
ENV_REDIS_URL = 'OCCOPUS_REDIS_URL'
ENV_REDIS_PREFIX = 'OCCOPUS_REDIS_PREFIX'
ENV_HEALTH_CHECKS = 'OCCOPUS_HEALTH_CHECKS'
ENV_REST_TOKEN = 'OCCOPUS_REST_TOKEN'
USER_DIR = os.path.join('~', '.occopus')
CONFIG_NAME = 'occopus_config.yaml'
AUTH_DATA_NAME = 'auth_data.yaml'
REDIS_SCHEMES = ('redis://', 'rediss://', 'unix://', 'redis+sentinel://', 'redis+cluster://')
LEGACY_SECTIONS = ('plugins', 'components', 'logging')
#: Keys whose values are (or may hold) secrets: a wrong value is described, never quoted.
SECRET_KEYS = (('redis', 'url'), ('rest', 'token'))
_SIZE_UNITS = {'': 1, 'b': 1, 'k': 1024, 'kb': 1024, 'kib': 1024, 'm': 1024 ** 2, 'mb': 1024 ** 2,
               'mib': 1024 ** 2, 'g': 1024 ** 3, 'gb': 1024 ** 3, 'gib': 1024 ** 3}


def default_namespace() -> str:
    """The OS user name, as the original keyed node definitions by it."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no USER/LOGNAME (e.g. some containers)
        return 'occopus'


@dataclass(frozen=True)
class Config:
    """Settings of one Occopus run; built-in defaults unless a file or the environment says."""

    redis_url: str = 'redis://127.0.0.1:6379/0'
    redis_prefix: str = 'occo:'
    namespace: str = field(default_factory=default_namespace)
    rest_host: str = '127.0.0.1'
    rest_port: int = 5000
    rest_token: Optional[str] = field(default=None, repr=False)
    #: seconds between the REST service's manage passes over each maintained infrastructure
    rest_interval: float = 10.0
    #: bytes a REST request body may hold
    rest_max_body: int = 1 << 20
    #: origins a browser may call the REST API from (CORS is off when empty)
    rest_cors_origins: Tuple[str, ...] = ()
    parallelize: bool = False
    parallelism: int = 10
    create_timeout: float = 1800.0
    health_checks: bool = True
    allow_cmd: bool = False
    lease_ttl: float = 30.0
    retry_backoff: float = 5.0
    call_timeout: float = 60.0
    endpoint_parallelism: int = 10
    redis_retry_window: float = 30.0
    #: bounds checked before any work: instances per node and per infrastructure, file size
    limits: Limits = field(default_factory=Limits)
    #: per resource type, the settings section its handler gets (e.g. ``local: {root: ...}``)
    resources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: Optional[str] = None
    warnings: Tuple[str, ...] = ()


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value != ''


def _is_whole(low: int, high: Optional[int] = None) -> Any:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low and (
        high is None or v <= high)


def _is_seconds(low: float) -> Any:
    return lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)
                      and math.isfinite(v) and v >= low)


def _is_redis_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(REDIS_SCHEMES)


def redis_url_problem(url: str) -> Optional[str]:
    """What is wrong with a Redis URL (scheme, database number), or ``None``; never quotes
    the URL, which may hold a password."""
    if not url.startswith(REDIS_SCHEMES):
        return f"it must start with {', '.join(REDIS_SCHEMES)} (e.g. redis://127.0.0.1:6379/0)"
    from occo.store import redis_url_problem as db_problem
    return db_problem(url)


def parse_size(value: Any) -> Optional[int]:
    """A size in bytes from a whole number (bytes) or text such as ``20 MB`` / ``512k``
    (units of 1024), or ``None`` if ``value`` is no size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 1 else None
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r'\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*', value)
    unit = _SIZE_UNITS.get(match.group(2).lower()) if match else None
    if unit is None:
        return None
    size = int(float(match.group(1)) * unit)
    return size if size >= 1 else None


# Our own file format: key -> (Config field, check, what is expected).
_FIELDS: Dict[Tuple[str, ...], Tuple[str, Any, str]] = {
    ('redis', 'url'): ('redis_url', lambda v: _is_redis_url(v) and redis_url_problem(v) is None,
                       'a Redis URL such as redis://127.0.0.1:6379/0 (schemes: redis://, rediss://, '
                       'unix://, redis+sentinel://, redis+cluster://; the database, if given, a '
                       'number)'),
    ('redis', 'prefix'): ('redis_prefix', _is_text, 'non-empty text'),
    ('namespace',): ('namespace', _is_text, 'non-empty text'),
    ('rest', 'host'): ('rest_host', _is_text, 'a host name or address'),
    ('rest', 'port'): ('rest_port', _is_whole(1, 65535), 'a port number (1-65535)'),
    ('rest', 'token'): ('rest_token', _is_text, 'non-empty text'),
    ('rest', 'interval'): ('rest_interval', _is_seconds(0.1), 'a number of seconds >= 0.1'),
    ('rest', 'max_body'): ('rest_max_body', _is_whole(1024), 'a number of bytes >= 1024'),
    ('rest', 'cors_origins'): ('rest_cors_origins', lambda v: isinstance(v, list) and all(
        isinstance(o, str) and o for o in v), 'a list of origins, e.g. [https://portal.example.org]'),
    ('parallelize',): ('parallelize', lambda v: isinstance(v, bool), 'true or false'),
    ('parallelism',): ('parallelism', _is_whole(1), 'a whole number >= 1'),
    ('create_timeout',): ('create_timeout', lambda v: isinstance(v, (int, float))
                          and not isinstance(v, bool) and v > 0, 'a number of seconds > 0'),
    ('health_checks',): ('health_checks', lambda v: isinstance(v, bool), 'true or false'),
    ('allow_cmd',): ('allow_cmd', lambda v: isinstance(v, bool), 'true or false'),
    ('local_root',): ('local_root', _is_text, 'a directory for the local backend\'s instances'),
    ('call_timeout',): ('call_timeout', _is_seconds(0.1), 'a number of seconds >= 0.1'),
    ('endpoint_parallelism',): ('endpoint_parallelism', _is_whole(1), 'a whole number >= 1'),
    ('redis_retry_window',): ('redis_retry_window', _is_seconds(0), 'a number of seconds >= 0'),
    ('resources',): ('resources', lambda v: isinstance(v, Mapping) and all(
        isinstance(k, str) and isinstance(s, Mapping) for k, s in v.items()),
        'a mapping of resource types to their settings, e.g. {local: {root: /srv/occopus}}'),
    ('lease_ttl',): ('lease_ttl', lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                     and v >= 1, 'a number of seconds >= 1'),
    ('retry_backoff',): ('retry_backoff', lambda v: isinstance(v, (int, float))
                         and not isinstance(v, bool) and v > 0, 'a number of seconds > 0'),
    ('limits', 'instances_per_node'): ('limits.instances_per_node', _is_whole(1),
                                       'a whole number of instances >= 1'),
    ('limits', 'instances_per_infra'): ('limits.instances_per_infra', _is_whole(1),
                                        'a whole number of instances >= 1'),
    ('limits', 'file_size'): ('limits.file_size', lambda v: parse_size(v) is not None,
                              'a size: a whole number of bytes, or text such as "20 MB"'),
    ('limits', 'template_bytes'): ('limits.template_bytes', lambda v: parse_size(v) is not None,
                                   'a size: a whole number of bytes, or text such as "2 MB"'),
    ('limits', 'template_seconds'): ('limits.template_seconds', _is_seconds(0.1),
                                     'a number of seconds >= 0.1'),
}
_SECTIONS = {path[0] for path in _FIELDS if len(path) == 2}


def _user_file(name: str) -> str:
    return os.path.expanduser(os.path.join(USER_DIR, name))


def find_file(cli_path: Optional[str], env_var: str, name: str, what: str,
              environ: Mapping[str, str]) -> Optional[str]:
    """The file the lookup chain chooses, or ``None`` if there is none.

    :raises ConfigError: if an explicitly given path (option or environment) does not exist.
    """
    if cli_path:
        if not os.path.isfile(cli_path):
            raise ConfigError(f"Specified {what} file does not exist: '{cli_path}'")
        return cli_path
    env_path = environ.get(env_var)
    if env_path:
        if not os.path.isfile(env_path):
            raise ConfigError(f"{env_var} names a {what} file that does not exist: '{env_path}'")
        return env_path
    default = _user_file(name)
    return default if os.path.isfile(default) else None


def load_config(cli_path: Optional[str] = None, *, redis_config: Optional[str] = None,
                environ: Optional[Mapping[str, str]] = None) -> Config:
    """The configuration chosen by the lookup chain, with environment overrides applied.

    :param redis_config: a legacy ``redis_config.yaml`` (``occopus-import --redisconf``) whose
        Redis location replaces the configuration's.
    :raises ConfigError: if a file is missing, unreadable or wrong.
    """
    environ = os.environ if environ is None else environ
    path = find_file(cli_path, ENV_CONFIG_PATH, CONFIG_NAME, 'configuration', environ)
    config = Config()
    if path:
        config = _apply_file(config, path)
    if redis_config:
        url, warnings = redis_url_from_file(redis_config)
        config = replace(config, redis_url=url, warnings=config.warnings + warnings)
    return _apply_environment(config, environ)


def _read(path: str, lenient_tags: bool) -> Tuple[Any, List[str]]:
    from occo.descriptions.loader import load_yaml_file
    from occo.errors import DescriptionError
    ignored: set = set()
    try:
        data = load_yaml_file(path, lenient_tags=lenient_tags, ignored_tags=ignored)
    except DescriptionError as exc:
        raise ConfigError(exc.message, source=exc.source, line=exc.line) from None
    return data, sorted(ignored)


def _fail(message: str, data: Any, *path: Any) -> ConfigError:
    from occo.descriptions.loader import locate
    source, line = locate(data, path)
    return ConfigError(message, source=source, line=line)


def _apply_file(config: Config, path: str) -> Config:
    data, ignored_tags = _read(path, lenient_tags=True)
    if data is None:
        return replace(config, source=path)
    if not isinstance(data, Mapping):
        raise _fail('a configuration file must be a mapping (e.g. redis: {url: ...})', data)
    allowed = {p[0] for p in _FIELDS} | set(LEGACY_SECTIONS)
    changes: Dict[str, Any] = {'source': path}
    for key, value in data.items():
        if key not in allowed:
            raise _fail(f"unknown configuration key {excerpt(str(key))} "
                        f"(allowed: {', '.join(sorted(allowed))})", data, key)
        if key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise _fail(f"'{key}' must be a mapping", data, key)
            for sub, subvalue in value.items():
                if (key, sub) not in _FIELDS:
                    subs = sorted(p[1] for p in _FIELDS if p[0] == key)
                    raise _fail(f"unknown key {excerpt(str(sub))} in '{key}' (allowed: {', '.join(subs)})",
                                value, sub)
                changes[_field(value, (key, sub), subvalue)] = subvalue
        elif key not in LEGACY_SECTIONS:
            changes[_field(data, (key,), value)] = value
    _settings_sections(changes)
    _limits(config, changes)
    warnings = list(config.warnings)
    if any(section in data for section in LEGACY_SECTIONS):
        legacy, used = _legacy(data)
        changes = dict(legacy, **changes)  # our own keys win over the legacy sections
        # One short line: it is printed by every command that reads the file.
        warnings.append(f"{path}: read as an Occopus 1.x configuration file (used: "
                        f"{', '.join(used) or 'nothing'}; nothing in it is executed)")
    elif ignored_tags:
        raise _fail(f"unsupported YAML tag(s) {', '.join(ignored_tags)} in a configuration file", data)
    return replace(config, warnings=tuple(warnings), **changes)


def _settings_sections(changes: Dict[str, Any]) -> None:
    """Plain per-type settings; ``local_root`` (the older spelling) becomes
    ``resources: {local: {root: ...}}`` unless that is given too."""
    from occo.descriptions.loader import to_plain
    resources = {name: dict(to_plain(section)) for name, section in changes.get('resources', {}).items()}
    root = changes.pop('local_root', None)
    if root is not None:
        resources.setdefault('local', {}).setdefault('root', root)
    if resources:
        changes['resources'] = resources


def _limits(config: Config, changes: Dict[str, Any]) -> None:
    """``limits.<name>`` changes become one :class:`Limits` (sizes in bytes)."""
    limits = {key.split('.', 1)[1]: changes.pop(key) for key in list(changes)
              if key.startswith('limits.')}
    for size in ('file_size', 'template_bytes'):
        if size in limits:
            limits[size] = parse_size(limits[size])
    if limits:
        changes['limits'] = replace(config.limits, **limits)


def _field(container: Mapping[str, Any], path: Tuple[str, ...], value: Any) -> str:
    name, check, expected = _FIELDS[path]
    if not check(value):
        key = '.'.join(path)
        if path in SECRET_KEYS:  # say what is wrong without quoting what may be a secret
            what = f'got {_kind(value)}'
            if isinstance(value, str) and value and path == ('redis', 'url'):
                what = redis_url_problem(value) or what
            raise _fail(f"'{key}' must be {expected}; {what} (the value is not shown, as it "
                        'may hold a secret)', container, path[-1])
        raise _fail(f"'{key}' must be {expected}, got {excerpt(value)}", container, path[-1])
    return name


def _kind(value: Any) -> str:
    """What kind of value ``value`` is, without quoting it (it may hold a secret)."""
    if isinstance(value, str):
        return 'empty text' if not value else 'text'
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return 'a number'
    return type_name(value)


def _legacy(data: Mapping[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    """Settings taken from an original ``occopus_config.yaml``: Redis and REST locations."""
    components = data.get('components') or {}
    changes: Dict[str, Any] = {}
    used = []
    if isinstance(components, Mapping) and components.get('dry_run'):
        raise _fail('components.dry_run is not supported: every command here would use real '
                    'clouds; use occopus-build --dry-run, or the dummy resource type, and remove '
                    'dry_run from the file', components, 'dry_run')
    uds = components.get('uds') if isinstance(components, Mapping) else None
    if isinstance(uds, Mapping):
        changes['redis_url'] = _legacy_redis_url(uds)
        used.append('components.uds')
    rest = components.get('rest') if isinstance(components, Mapping) else None
    if isinstance(rest, Mapping):
        if 'host' in rest:
            changes['rest_host'] = str(rest['host'])
        if 'port' in rest:
            if not _is_whole(1, 65535)(rest['port']):
                raise _fail(f"components.rest.port must be a port number, got {excerpt(rest['port'])}",
                            rest, 'port')
            changes['rest_port'] = rest['port']
        used.append('components.rest')
    return changes, used


def _legacy_redis_url(section: Mapping[str, Any]) -> str:
    host = section.get('host', '127.0.0.1')
    port = section.get('port', 6379)
    db = section.get('db', 0)
    if not (_is_whole(0)(db) or (isinstance(db, str) and db.isascii() and db.isdigit())):
        raise _fail(f'the Redis database (db) must be a number such as 0, got {excerpt(db)}',
                    section, 'db')
    password = section.get('password')
    auth = f':{password}@' if password else ''
    return f'redis://{auth}{host}:{port}/{db}'


def redis_url_from_file(path: str) -> Tuple[str, Tuple[str, ...]]:
    """The Redis URL of a legacy ``redis_config.yaml`` (``kvs: !KeyValueStore {host, port,
    db}``) or of one of our configuration files.

    :raises ConfigError: if the file names no Redis location.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"Specified Redis configuration file does not exist: '{path}'")
    data, ignored_tags = _read(path, lenient_tags=True)
    if isinstance(data, Mapping) and isinstance(data.get('kvs'), Mapping):
        return _legacy_redis_url(data['kvs']), ()
    if isinstance(data, Mapping) and ('redis' in data or 'components' in data):
        config = _apply_file(Config(), path)
        return config.redis_url, config.warnings
    raise ConfigError("expected a Redis configuration: 'kvs: {host: ..., port: ..., db: ...}' "
                      "(Occopus 1.x redis_config.yaml) or 'redis: {url: ...}'", source=path)


def _apply_environment(config: Config, environ: Mapping[str, str]) -> Config:
    changes: Dict[str, Any] = {}
    url = environ.get(ENV_REDIS_URL)
    if url:
        if not url.startswith(REDIS_SCHEMES):
            raise ConfigError(f"{ENV_REDIS_URL} must be a Redis URL such as redis://127.0.0.1:6379/0 "
                              f"(schemes: {', '.join(REDIS_SCHEMES)})")
        problem = redis_url_problem(url)
        if problem:
            raise ConfigError(f'{ENV_REDIS_URL} must be a Redis URL such as '
                              f'redis://127.0.0.1:6379/0: {problem}')
        changes['redis_url'] = url
    if environ.get(ENV_REDIS_PREFIX):
        changes['redis_prefix'] = environ[ENV_REDIS_PREFIX]
    health = environ.get(ENV_HEALTH_CHECKS)
    if health is not None and health != '':
        if health.lower() not in ('0', '1', 'false', 'true', 'no', 'yes', 'off', 'on'):
            raise ConfigError(f'{ENV_HEALTH_CHECKS} must be 0 or 1 (or false/true), got {excerpt(health)}')
        changes['health_checks'] = health.lower() in ('1', 'true', 'yes', 'on')
    if environ.get(ENV_REST_TOKEN):
        changes['rest_token'] = environ[ENV_REST_TOKEN]
    return replace(config, **changes)


# -- authentication data ---------------------------------------------------------------------

AUTH_SECTIONS = ('resource', 'config_management')
_ENV_REFERENCE = re.compile(r'\$\{([A-Za-z_][A-Za-z0-9_]*)\}')


@dataclass(frozen=True)
class AuthData:
    """Credentials from ``auth_data.yaml``; never printed (its repr hides them)."""

    source: Optional[str] = None
    sections: Mapping[str, List[Mapping[str, Any]]] = field(default_factory=dict, repr=False)

    def find(self, section: str, resolved: Mapping[str, Any],
             environ: Optional[Mapping[str, str]] = None) -> Optional[Dict[str, Any]]:
        """The credentials of the one entry of ``section`` whose selector keys all equal the
        keys of ``resolved`` (a rendered resource or config_management section); ``None`` if no
        entry matches.  ``${NAME}`` in a value is replaced by the environment variable NAME.

        :raises AuthError: if more than one entry matches, or a referenced variable is unset.
        """
        entries = self.sections.get(section) or []
        matches = [i for i, entry in enumerate(entries)
                   if all(k in resolved and resolved[k] == v for k, v in entry.items() if k != 'auth_data')]
        if len(matches) > 1:
            numbers = ', '.join(f'{i + 1} ({_selectors(entries[i])})' for i in matches)
            raise AuthError(f"Cannot determine authorization information: entries {numbers} of "
                            f"'{section}' all match {describe_target(resolved)}; add selector keys "
                            '(e.g. endpoint) so that exactly one matches', source=self.source)
        if not matches:
            return None
        environ = os.environ if environ is None else environ
        found = _expand(entries[matches[0]]['auth_data'], environ, self.source, section, matches[0])
        remember_secrets(value for _, value in string_leaves(found))
        return found


def describe_target(section: Mapping[str, Any]) -> str:
    """A secret-free description of a resource or config_management section."""
    parts = [f"{k} '{section[k]}'" for k in ('type', 'endpoint', 'name') if k in section]
    return ', '.join(parts) or 'the section'


def _selectors(entry: Mapping[str, Any]) -> str:
    """The selector keys of an auth-data entry, for messages (never its auth_data)."""
    keys = [f'{k}: {printable(mask_urls(excerpt(str(v), 60)))}' for k, v in entry.items() if k != 'auth_data']
    return ', '.join(keys) or 'no selector keys: it matches everything'


def _expand(value: Any, environ: Mapping[str, str], source: Optional[str], section: str,
            index: int) -> Any:
    if isinstance(value, str):
        def substitute(match: 're.Match[str]') -> str:
            name = match.group(1)
            if name not in environ:
                raise AuthError(f"credentials of entry {index + 1} of '{section}' use ${{{name}}}, "
                                'which is not set in the environment', source=source)
            return environ[name]
        return _ENV_REFERENCE.sub(substitute, value)
    if isinstance(value, Mapping):
        return {k: _expand(v, environ, source, section, index) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, environ, source, section, index) for v in value]
    return value


def load_auth_data(cli_path: Optional[str] = None,
                   environ: Optional[Mapping[str, str]] = None) -> AuthData:
    """The authentication data chosen by the lookup chain (empty if there is no file).

    :raises ConfigError: if a given file does not exist or is malformed.
    """
    from occo.descriptions.loader import to_plain
    environ = os.environ if environ is None else environ
    path = find_file(cli_path, ENV_AUTH_DATA_PATH, AUTH_DATA_NAME, 'authentication', environ)
    if path is None:
        return AuthData()
    data, _ = _read(path, lenient_tags=False)
    if data is None:
        return AuthData(source=path)
    if not isinstance(data, Mapping):
        raise _fail('an authentication file must be a mapping with resource and/or '
                    'config_management lists', data)
    for key, entries in data.items():
        if key not in AUTH_SECTIONS:
            raise _fail(f"unknown section '{key}' in authentication file "
                        f"(allowed: {', '.join(AUTH_SECTIONS)})", data, key)
        if not isinstance(entries, list):
            raise _fail(f"'{key}' must be a list of entries, each with auth_data and selector keys",
                        data, key)
        for index, entry in enumerate(entries):
            if not isinstance(entry, Mapping) or not isinstance(entry.get('auth_data'), Mapping):
                raise _fail(f"entry {index + 1} of '{key}' needs an auth_data mapping "
                            '(plus selector keys such as type and endpoint)', entries, index)
    sections = to_plain(data)
    remember_secrets(value for key in AUTH_SECTIONS for entry in sections.get(key) or ()
                     for _, value in string_leaves(entry.get('auth_data'))
                     if '${' not in value)
    return AuthData(source=path, sections=sections)
