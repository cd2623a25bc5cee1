"""Small helpers shared by the infrastructure-description and node-definition checkers."""
from __future__ import annotations

import difflib
import re
from typing import Any, Iterable, List, Optional, Sequence

from occo.descriptions.loader import locate
from occo.errors import SchemaError
from occo.redact import control_character, excerpt
from occo.schema import join

_LABEL = re.compile(r'[a-z0-9-]{1,63}', re.IGNORECASE)
#: How many names a message lists at most (whole names, then "and N more").
MAX_LISTED = 10


def schema_error(message: str, container: Any, path: Iterable[Any] = (),
                 source: Optional[str] = None) -> SchemaError:
    """A :class:`SchemaError` located at ``path`` inside loaded data ``container``."""
    where, line = locate(container, path)
    return SchemaError(message, source=where or source, line=line)


def control_problem(value: Any, what: str) -> Optional[str]:
    """Why ``value`` (a name) cannot be used because it holds a terminal control character
    (ESC, CR, NUL, a bidirectional override, ...), or ``None``."""
    found = control_character(value)
    if found is None:
        return None
    return (f'{what} {excerpt(value)} contains the control character {found}; names must be '
            'printable text')


def label_problem(value: Any, what: str) -> Optional[str]:
    """Why ``value`` is not a valid hostname label (infra and node names), or ``None``."""
    if not isinstance(value, str):
        return f'{what} must be text, got {excerpt(value)}'
    problem = control_problem(value, what)
    if problem:
        return problem
    if '.' in value:
        return f'{what} {excerpt(value)} cannot contain \'.\' character'
    if len(value) > 63:
        return f'{what} {excerpt(value)} is too long (at most 63 characters)'
    if not _LABEL.fullmatch(value):
        return f'{what} {excerpt(value)} may contain only [a-z,0-9,-] characters'
    return None


def node_name_problem(value: Any) -> Optional[str]:
    """Why ``value`` cannot name a node, or ``None``: a hostname label that does not start
    with '-' (``occopus-scale -n -rf`` would read it as an option)."""
    problem = label_problem(value, 'node')
    if problem:
        return problem
    if value.startswith('-'):
        return (f'node {excerpt(value)} cannot start with \'-\': occopus-scale -n and -f could '
                'not address it (they would read it as an option)')
    return None


def suggestion(name: Any, known: Iterable[str]) -> str:
    """`` (did you mean 'web'?)`` for a mistyped ``name`` close to some of ``known``, else ''."""
    if not isinstance(name, str):
        return ''
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    if not close:
        return ''
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)"


def listing(names: Sequence[str], first: Sequence[str] = ()) -> str:
    """At most :data:`MAX_LISTED` whole names (``first`` ones first), then ``and N more``:
    never a name cut in the middle."""
    ordered: List[str] = list(dict.fromkeys(list(first) + list(names)))
    more = len(ordered) - MAX_LISTED
    return join(ordered[:MAX_LISTED]) + (f' and {more} more' if more > 0 else '')
