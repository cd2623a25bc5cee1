"""What every plugin class declares: its type name, the keys of its section, extra checks."""
from __future__ import annotations

import copy
import itertools
from typing import Any, ClassVar, Iterable, Iterator, Mapping, Optional, Tuple

from occo.schema import KeySchema, Problem, first


class Plugin:
    """Base of resource handlers, config managers and contextualisation types.

    A subclass sets :attr:`type` and :attr:`keys`, and may add checks in :meth:`validate`
    (run after the missing-key check and before the unknown-key check, as the original did).
    """

    type: ClassVar[str] = ''
    keys: ClassVar[KeySchema] = KeySchema()

    @classmethod
    def describe(cls) -> str:
        return f"type '{cls.type}'"

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        """Extra checks of ``section`` beyond its keys; yield problems (or ``None``)."""
        return ()

    @classmethod
    def without_blanks(cls, section: Mapping[str, Any]) -> Mapping[str, Any]:
        """``section`` without the optional keys left empty (``key_name:``), which the original
        took as not given, as the tutorials rely on; the same object if there are none (a copy
        of the same class otherwise, so that a loaded section keeps its lines)."""
        blank = [key for key in cls.keys.optional if key in section and section[key] is None]
        if not blank:
            return section
        result = copy.copy(section)
        for key in blank:
            del result[key]
        return result

    @classmethod
    def check(cls, section: Mapping[str, Any]) -> Optional[Problem]:
        """The first problem of ``section`` (missing keys, extra checks, unknown keys) or None."""
        what = cls.describe()
        return first(itertools.chain([cls.keys.missing(section, what)], cls.validate(section),
                                     [cls.keys.unknown(section, what)]))


def string_leaves(value: Any, path: Tuple[Any, ...] = ()) -> Iterator[Tuple[Tuple[Any, ...], str]]:
    """Every string inside ``value`` (nested dicts and lists) with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from string_leaves(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from string_leaves(item, path + (index,))
