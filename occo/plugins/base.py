"""What every plugin class declares: its type name, the keys of its section, extra checks."""
from __future__ import annotations

import copy
import itertools
import json
import threading
from typing import Any, ClassVar, Dict, Iterable, Iterator, Mapping, Optional, Tuple

from occo.errors import AuthError
from occo.redact import mask_urls, printable
from occo.schema import KeySchema, Problem, first, is_template


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


class ServicePlugin(Plugin):
    """Base of the plugins that talk to a service -- resource handlers and config managers:
    which endpoint a (rendered) section names, its credentials from ``auth_data.yaml``
    (through ``ctx.credentials``), one client per endpoint and credentials for the whole run,
    and the one line that says what the service said."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self._clients: Dict[Tuple[str, str], Any] = {}
        self._clients_lock = threading.Lock()

    @classmethod
    def endpoint(cls, section: Mapping[str, Any]) -> str:
        """Which endpoint a (rendered) section talks to: calls are limited per endpoint."""
        return str((section or {}).get('endpoint') or '')

    def client(self, endpoint: str, credentials: Optional[Mapping[str, Any]]) -> Any:
        """The client for ``endpoint`` with ``credentials``, made once per run by
        :meth:`make_client` and shared by every call (threads included)."""
        key = (endpoint, json.dumps(credentials, sort_keys=True, default=str))
        with self._clients_lock:
            if key not in self._clients:
                self._clients[key] = self.make_client(endpoint, credentials)
            return self._clients[key]

    def make_client(self, endpoint: str, credentials: Optional[Mapping[str, Any]]) -> Any:
        """A new client of the service (plugins that have one override this)."""
        raise NotImplementedError

    def credentials(self, section: Mapping[str, Any]) -> Dict[str, Any]:
        """The credentials of ``section`` from ``auth_data.yaml`` (exactly one entry whose
        selector keys all equal the section's).

        :raises AuthError: if no entry matches (or more than one does).
        """
        found = self.ctx.credentials(section)
        if found is None:
            raise self.no_credentials(section)
        return found

    @classmethod
    def no_credentials(cls, section: Mapping[str, Any]) -> AuthError:
        """The error for a section no auth-data entry matches."""
        raise NotImplementedError

    def cloud_said(self, section: Mapping[str, Any], said: Any) -> str:
        """``<type> at <endpoint>: <what the service said>`` on one line, without secrets: the
        text of a plugin's errors (the engine adds the node)."""
        text = ' '.join(str(said).split())
        return mask_urls(printable(f'{self.type} at {self.endpoint(section)}: {text}'))[:1000]


def has_templates(value: Any) -> bool:
    """Whether a string anywhere inside ``value`` is a Jinja template (then what it says is
    known only once it is rendered)."""
    return any(is_template(text) for _, text in string_leaves(value))


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
