"""Contextualisation types: how a node instance receives its configuration."""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Tuple

from occo.plugins.base import Plugin, string_leaves

#: (path inside the section, template text)
Template = Tuple[Tuple[Any, ...], str]


class Context(Plugin):
    """Base of contextualisation types."""

    @classmethod
    def describe(cls) -> str:
        return f"contextualisation type '{cls.type}'"

    @classmethod
    def templates(cls, section: Mapping[str, Any]) -> Iterator[Template]:
        """Every Jinja template of ``section``, as the renderer will see it."""
        for path, text in string_leaves({k: v for k, v in section.items() if k != 'type'}):
            yield path, text
