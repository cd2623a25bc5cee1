"""Contextualisation types: how a node instance receives its configuration."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from occo.plugins.base import Plugin, string_leaves

#: (path inside the section, template text)
Template = Tuple[Tuple[Any, ...], str]
#: render(text, what, extra names, whole_text=False, fold=False) -> rendered text; raises
#: TemplateError naming ``what``.  A value is rendered exactly; a whole text loses its final
#: newline; with ``fold`` the line breaks of substituted values fold as YAML folds them in a
#: flow scalar (a value of a ``!yaml_import`` template, see :func:`occo.templates.render`).
Render = Callable[..., str]


@dataclass
class RenderedContext:
    """What a cloud receives to configure an instance."""

    type: str
    user_data: Optional[str] = None           # cloudinit: the text handed to the instance
    env: List[str] = field(default_factory=list)      # docker: NAME=value items
    command: Any = None                        # docker: text or list
    attributes: Dict[str, Any] = field(default_factory=dict)  # for config managers

    def text(self) -> str:
        """A readable rendering (``occopus-build --dry-run --render``)."""
        if self.user_data is not None:
            return self.user_data
        if self.type == 'docker':
            import yaml
            return yaml.safe_dump({'env': self.env, 'command': self.command},
                                  default_flow_style=False, sort_keys=False, width=1 << 30)
        return ''


def render_tree(value: Any, render: Render, path: str) -> Any:
    """``value`` with every string (keys included) rendered as a template."""
    if isinstance(value, str):
        return render(value, path)
    if isinstance(value, Mapping):
        return {render_tree(k, render, path): render_tree(v, render, _join(path, k))
                for k, v in value.items()}
    if isinstance(value, list):
        return [render_tree(v, render, _join(path, i)) for i, v in enumerate(value)]
    return value


def _join(path: str, key: Any) -> str:
    return f'{path}.{key}' if path else str(key)


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

    @classmethod
    def render(cls, section: Optional[Mapping[str, Any]], render: Render) -> RenderedContext:
        """Render ``section`` (None: no contextualisation section) for one instance."""
        attributes = (section or {}).get('attributes') or {}
        return RenderedContext(cls.type, attributes=render_tree(attributes, render, 'attributes'))
