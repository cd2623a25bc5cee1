"""Small pieces several cloud handlers share: how a node instance's resources are marked, how
what a cloud said becomes one safe line, and tolerant readers of the JSON clouds answer.  Nothing here imports a cloud SDK at module level."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Protocol
from urllib.parse import quote

from occo.redact import mask_urls, printable

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


def as_dict(value: Any) -> Dict[str, Any]:
    """``value`` if a cloud answered a mapping there, else an empty one."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> List[Any]:
    """``value`` if a cloud answered a list there, else an empty one."""
    return value if isinstance(value, list) else []


def url_part(value: Any) -> str:
    """An id as one path segment (or query value) of a URL."""
    return quote(str(value), safe='')
