"""The vocabulary of schema checks shared by descriptions and plugins.

A check returns a :class:`Problem` (or ``None``): a message in the original Occopus' words plus
what is expected, and the path of the offending key inside the checked section so that the caller
can point at its line.  Plugins declare their keys with :class:`KeySchema`; nothing here knows
about files or about any particular plugin.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence, Tuple

from occo.redact import excerpt

Path = Tuple[Any, ...]


@dataclass(frozen=True)
class Problem:
    """One schema violation: ``message`` and the ``path`` of the key it is about."""

    message: str
    path: Path = ()


def join(names: Iterable[Any]) -> str:
    return ', '.join(str(n) for n in names)


@dataclass(frozen=True)
class KeySchema:
    """Required and optional keys of one mapping (``type`` is implied)."""

    required: Tuple[str, ...] = ()
    optional: Tuple[str, ...] = ()

    @property
    def allowed(self) -> Tuple[str, ...]:
        return ('type',) + self.required + self.optional

    def missing(self, section: Mapping[str, Any], what: str) -> Optional[Problem]:
        missing = [k for k in self.required if k not in section]
        if missing:
            return Problem(f'Missing key(s): {join(missing)} ({what} requires {join(self.required)})')
        return None

    def unknown(self, section: Mapping[str, Any], what: str) -> Optional[Problem]:
        unknown = [k for k in section if k not in self.allowed]
        if unknown:
            return Problem(f'Unknown key(s): {join(unknown)} ({what} accepts {join(self.allowed)})',
                           (unknown[0],))
        return None


def first(problems: Iterable[Optional[Problem]]) -> Optional[Problem]:
    """The first real problem of ``problems`` (checks stop at the first failure)."""
    for problem in problems:
        if problem is not None:
            return problem
    return None


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_template(value: Any) -> bool:
    """True if ``value`` is text that Jinja will render (so its final value is unknown yet)."""
    return isinstance(value, str) and ('{{' in value or '{%' in value)


def expect_list(section: Mapping[str, Any], key: str, *, items: Optional[type] = None,
                what: str = 'a list') -> Optional[Problem]:
    """Problem if ``section[key]`` (when present) is not a list (of ``items``)."""
    if key not in section:
        return None
    value = section[key]
    if not isinstance(value, list):
        return Problem(f"'{key}' must be {what}, got {type_name(value)}", (key,))
    if items is not None:
        for index, item in enumerate(value):
            if not isinstance(item, items) or isinstance(item, bool):
                return Problem(f"'{key}' must be {what}, item {index + 1} is {type_name(item)}",
                               (key, index))
    return None


def expect_number(section: Mapping[str, Any], key: str, *, minimum: float = 0,
                  maximum: Optional[float] = None) -> Optional[Problem]:
    """Problem if ``section[key]`` (when present) is not a number in [minimum, maximum]."""
    if key not in section:
        return None
    value = section[key]
    bounds = f'>= {minimum}' if maximum is None else f'between {minimum} and {maximum}'
    if not is_number(value) or value < minimum or (maximum is not None and value > maximum):
        return Problem(f"'{key}' must be a number {bounds}, got {excerpt(value)}", (key,))
    return None


def type_name(value: Any) -> str:
    if value is None:
        return 'nothing'
    if isinstance(value, bool):
        return 'true/false'
    if isinstance(value, Mapping):
        return 'a mapping'
    if isinstance(value, Sequence) and not isinstance(value, str):
        return 'a list'
    if isinstance(value, str):
        return f'text {excerpt(value)}'
    return f'{type(value).__name__} {excerpt(value)}'


MEGABYTE = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Bounds checked before any work is done (configuration section ``limits``)."""

    #: most instances one node may have (its scaling min and max)
    instances_per_node: int = 10_000
    #: most instances a build of one infrastructure may create (the sum of its nodes' min)
    instances_per_infra: int = 100_000
    #: largest description or node-definition file, in bytes (each file it imports too)
    file_size: int = 10 * MEGABYTE
    #: most text one template may render to, in bytes
    template_bytes: int = 1_000_000
    #: longest one template may take to render, in seconds
    template_seconds: float = 10.0


def size_text(size: int) -> str:
    """``10485760`` -> ``10 MB``, ``11534350`` -> ``11.0 MB``, ``500`` -> ``500 bytes``."""
    for unit, name in ((MEGABYTE, 'MB'), (1024, 'KB')):
        if size >= unit:
            return f'{size // unit} {name}' if size % unit == 0 else f'{size / unit:.1f} {name}'
    return f'{size} bytes'
