"""Plugin registry: resource handlers, config managers and contextualisation types.

Plugins are classes registered under entry-point groups; the built-in ones are registered the
same way third-party ones are (see ``occo/plugins/builtin.py`` and ``setup.py``).  The built-in
table is also read directly so that a source checkout works before it is installed.
Nothing here imports a cloud SDK: plugin modules import theirs lazily.
"""
from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Dict, List, Optional, Type

from occo.errors import OccoError
from occo.plugins.builtin import BUILTIN_PLUGINS, CONFIG_MANAGERS, CONTEXTS, RESOURCES

__all__ = ['RESOURCES', 'CONFIG_MANAGERS', 'CONTEXTS', 'plugin_class', 'plugin_names']


def _entry_points(group: str) -> Dict[str, str]:
    from importlib.metadata import entry_points
    try:
        found = entry_points(group=group)
    except TypeError:  # Python < 3.10
        found = entry_points().get(group, [])
    return {ep.name: ep.value for ep in found}


@lru_cache(maxsize=None)
def _targets(group: str) -> Dict[str, str]:
    targets = dict(_entry_points(group))
    targets.update(BUILTIN_PLUGINS[group])  # built-in names cannot be hijacked
    return targets


def plugin_names(group: str) -> List[str]:
    """Names registered in ``group``, sorted."""
    return sorted(_targets(group))


@lru_cache(maxsize=None)
def plugin_class(group: str, name: str) -> Optional[Type]:
    """The plugin class registered as ``name`` in ``group``, or ``None`` if there is none.

    :raises OccoError: if the registered plugin cannot be imported.
    """
    target = _targets(group).get(name)
    if target is None:
        return None
    module_name, _, attr = target.partition(':')
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise OccoError(f"plugin '{name}' of {group} ({target}) cannot be loaded: {exc}") from None
