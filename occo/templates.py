"""Jinja2 in a sandbox, configured as the original Occopus used it.

Lenient about undefined names (an unknown name renders as ''), no autoescaping.  A whole-text
template loses its final newline (Jinja's default, as the original); a value of a YAML template,
rendered on its own, keeps its text exactly.  The sandbox blocks access to
Python internals (``__class__``, ``__globals__``, ...).  The helper functions a template sees
(``getip``, ``cmd``...) are given by the caller in the context; this module knows none of them.
"""
from __future__ import annotations

import base64
from functools import lru_cache
from typing import Any, Dict, Iterable, Mapping, Optional, Set, Tuple

from occo.errors import TemplateError


def _b64encode(value: Any) -> str:
    data = value if isinstance(value, bytes) else str(value).encode('utf-8')
    return base64.b64encode(data).decode('ascii')


@lru_cache(maxsize=None)
def environment(keep_trailing_newline: bool = False) -> Any:
    """The shared sandboxed Jinja2 environment."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment
    env = SandboxedEnvironment(undefined=jinja2.Undefined, autoescape=False,
                               keep_trailing_newline=keep_trailing_newline)
    env.filters['b64encode'] = _b64encode
    return env


def syntax_error(text: str) -> Optional[Tuple[int, str]]:
    """``(line, message)`` of the first Jinja syntax error in ``text``, or ``None``."""
    import jinja2
    try:
        environment().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        return exc.lineno, exc.message or 'syntax error'
    return None


@lru_cache(maxsize=4096)
def _compiled(text: str, keep_trailing_newline: bool) -> Any:
    return environment(keep_trailing_newline).from_string(text)


def render(text: str, context: Mapping[str, Any], *, what: str = 'template',
           keep_trailing_newline: bool = False) -> str:
    """Render ``text`` with ``context`` in the sandbox.

    :raises TemplateError: naming ``what`` and the template line, for a syntax error, a
        sandbox violation or any error raised while rendering.
    """
    if '{' not in text and '\r' not in text:  # no delimiter: Jinja would give it back as is
        return text if keep_trailing_newline or not text.endswith('\n') else text[:-1]
    import jinja2
    from jinja2.sandbox import SecurityError
    try:
        return _compiled(text, keep_trailing_newline).render(**context)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f'{what}: template syntax error at line {exc.lineno}: {exc.message}') from None
    except SecurityError as exc:
        raise TemplateError(f'{what}: refused by the template sandbox: {exc}') from None
    except TemplateError as exc:
        raise TemplateError(f'{what}: {exc.message}') from None
    except Exception as exc:  # any error raised inside the template is the template's error
        raise TemplateError(f'{what}: {type(exc).__name__}: {exc}') from None


def constant_calls(text: str, functions: Iterable[str]) -> Dict[str, Set[str]]:
    """For each name in ``functions``, the literal string first arguments it is called with
    anywhere in ``text`` (e.g. ``getip('db')`` gives ``{'getip': {'db'}}``).  ``{}`` if the
    template does not parse."""
    import jinja2
    from jinja2 import nodes
    wanted = set(functions)
    found: Dict[str, Set[str]] = {}
    try:
        tree = environment().parse(text)
    except jinja2.TemplateSyntaxError:
        return found
    for call in tree.find_all(nodes.Call):
        if isinstance(call.node, nodes.Name) and call.node.name in wanted and call.args \
                and isinstance(call.args[0], nodes.Const) and isinstance(call.args[0].value, str):
            found.setdefault(call.node.name, set()).add(call.args[0].value)
    return found
