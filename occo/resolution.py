"""Resolution of a node instance: the template context every Jinja template of a node sees.

The context is the original's (reference §6.2): ``infra_id``, ``infra_name``, ``user_id``,
``name``, ``node_id``, ``type``, ``scaling``, ``filter``, ``variables`` (infra variables deep-merged
with the node's), ``mappings``, the sections of the chosen implementation, and the helper
functions, which the caller supplies (real ones at build time, recording ones when the
compiler looks for ``getip('x')`` references).
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable, Dict, Mapping

#: Helpers that look up other nodes' addresses; a call makes a dependency.
ADDRESS_HELPERS = ('getip', 'getprivip', 'getipall')


def cut(text: Any, start: Any = None, end: Any = None) -> str:
    """``text[start:end]``, e.g. ``cut(infra_id, 0, 4)``."""
    return str(text)[start:end]


def template_context(*, infra_id: str, infra_name: str, user_id: str, node: Any, node_id: str,
                     implementation: Any, mappings: Mapping[str, Any],
                     helpers: Mapping[str, Callable[..., Any]]) -> Dict[str, Any]:
    """The names a template of ``node`` (a compiled graph node) can use.

    Node-description keys come first, then the implementation's sections, then the fixed names
    and ``helpers``, so that a section can never shadow ``infra_id`` or ``getip``.
    """
    context: Dict[str, Any] = {
        'type': node.type, 'scaling': asdict(node.scaling), 'filter': node.filter,
        'variables': node.variables, 'mappings': mappings,
    }
    context.update({section: value for section, value in asdict(implementation).items()
                    if value is not None})
    context.update(infra_id=infra_id, infra_name=infra_name, user_id=user_id, name=node.name,
                   node_id=node_id, cut=cut)
    context.update(helpers)
    return context
