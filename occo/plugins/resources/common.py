"""Small pieces several cloud handlers share: how a node instance's resources are marked, how
what a cloud said becomes one safe line, and tolerant readers of the JSON clouds answer.  Nothing here imports a cloud SDK at module level."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Protocol

from occo.errors import AuthError
from occo.redact import MASK, mask_urls, printable
from occo.schema import Problem, join, type_name

#: metadata / tag names of a node instance's resources (no ``:``: some clouds refuse it)
META_INFRA_ID = 'occopus_infra_id'
META_NODE_ID = 'occopus_node_id'
META_NODE = 'occopus_node'
MESSAGE_LIMIT = 300  # characters of a cloud's message quoted


class Hides(Protocol):
    def hide(self, text: str) -> str: ...


@dataclass
class Tags:
    """How a node instance's resources are marked (metadata, or a description where a
    resource has no metadata)."""

    infra_id: str
    node_id: str
    node: str

    def metadata(self) -> Dict[str, str]:
        return {META_INFRA_ID: self.infra_id[:255], META_NODE_ID: self.node_id[:255],
                META_NODE: self.node[:255]}

    def description(self) -> str:
        return f'occopus:{self.infra_id}:{self.node_id}'

    @staticmethod
    def owner(description: Any, infra_id: str) -> Optional[str]:
        """The node id of a ``description`` made for ``infra_id``, else None."""
        prefix = f'occopus:{infra_id}:'
        if isinstance(description, str) and description.startswith(prefix):
            rest = description[len(prefix):]
            return rest if rest and ':' not in rest else None
        return None


def one_line(value: Any, limit: int = MESSAGE_LIMIT, secret: Optional[Hides] = None) -> str:
    """What a cloud said, on one printable line of at most ``limit`` characters: secrets (the
    session's, the remembered ones, those of URLs) are masked *before* it is cut, so that a
    secret the cloud echoes across the cut never shows its beginning."""
    text = ' '.join(str(value).split())
    if secret is not None:
        text = secret.hide(text)
    text = printable(mask_urls(text))
    return text if len(text) <= limit else text[:limit - 1] + '…'


def truthy(value: Any) -> bool:
    """A yes of a resource key however it is written (``True``, ``'true'``, ``'yes'``, ``1``)."""
    return value is True or str(value).strip().lower() in ('true', 'yes', 'on', '1')


def as_dict(value: Any) -> Dict[str, Any]:
    """``value`` if a cloud answered a mapping there, else an empty one."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> List[Any]:
    """``value`` if a cloud answered a list there, else an empty one."""
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class BasicAuth:
    """The ``email`` and ``password`` of an auth-data entry (HTTP basic authentication; never
    printed: the repr hides them)."""

    email: str = field(repr=False)
    password: str = field(repr=False)

    @classmethod
    def of(cls, found: Mapping[str, Any], cloud: str, endpoint: str) -> 'BasicAuth':
        """:raises AuthError: if the entry lacks either (or gives one that is not text)."""
        email, password = (str(v) if isinstance(v, (str, int)) and not isinstance(v, bool) else ''
                           for v in (found.get('email'), found.get('password')))
        if not (email and password):
            names = ', '.join(sorted(str(k) for k in found)) or 'nothing'
            raise AuthError(f'the auth_data of {cloud} {printable(mask_urls(endpoint))} needs '
                            f'email and password (it has {printable(names)})')
        return cls(email, password)

    def hide(self, text: str) -> str:
        """``text`` without the password or the email."""
        for value in (self.password, self.email):
            if value:
                text = text.replace(value, MASK)
        return text


def check_description(description: Any, required: tuple) -> Optional[Problem]:
    """The ``description`` mapping of CloudBroker and CloudSigma resources: a mapping with the
    ``required`` keys."""
    if not isinstance(description, Mapping):
        return Problem(f"'description' must be a mapping with {join(required)}, "
                       f'got {type_name(description)}', ('description',))
    missing = [k for k in required if k not in description]
    if missing:
        return Problem(f'Missing key(s) in description: {join(missing)} '
                       f'(description requires {join(required)})', ('description',))
    return None
