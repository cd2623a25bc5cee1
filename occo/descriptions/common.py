"""Small helpers shared by the infrastructure-description and node-definition checkers."""
from __future__ import annotations

import re
from typing import Any, Iterable, Optional

from occo.descriptions.loader import locate
from occo.errors import SchemaError

_LABEL = re.compile(r'^[a-z0-9-]{1,63}$', re.IGNORECASE)


def schema_error(message: str, container: Any, path: Iterable[Any] = (),
                 source: Optional[str] = None) -> SchemaError:
    """A :class:`SchemaError` located at ``path`` inside loaded data ``container``."""
    where, line = locate(container, path)
    return SchemaError(message, source=where or source, line=line)


def label_problem(value: Any, what: str) -> Optional[str]:
    """Why ``value`` is not a valid hostname label (infra and node names), or ``None``."""
    if not isinstance(value, str):
        return f'{what} must be text, got {value!r}'
    if '.' in value:
        return f'{what} "{value}" cannot contain \'.\' character'
    if len(value) > 63:
        return f'{what} "{value}" is too long (at most 63 characters)'
    if not _LABEL.match(value):
        return f'{what} "{value}" may contain only [a-z,0-9,-] characters'
    return None
