"""Jinja2 in a sandbox, configured as the original Occopus used it.

Lenient about undefined names (an unknown name renders as ''), no autoescaping.  A whole-text
template loses its final newline (Jinja's default, as the original); a value of a YAML template,
rendered on its own, keeps its text exactly, except that the line breaks of substituted
values fold as the original's YAML did (see :func:`render`, ``fold``).  The sandbox blocks
access to Python internals (``__class__``, ``__globals__``, ...), and every rendering is
bounded in size and time (:func:`set_limits`).  The helper functions a template sees
(``getip``, ``cmd``...) are given by the caller in the context; this module knows none of them.
"""
from __future__ import annotations

import base64
import contextvars
import re
import time
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Set, Tuple

from occo.errors import TemplateError

# -- limits ------------------------------------------------------------------------------------

#: Default largest rendered text of one template, in bytes (UTF-8).
DEFAULT_MAX_BYTES = 1_000_000
#: Default longest rendering of one template, in seconds.
DEFAULT_MAX_SECONDS = 10.0
#: Where a user raises each limit (configuration keys, read by occo.config).
BYTES_KEY = 'limits.template_bytes'
SECONDS_KEY = 'limits.template_seconds'
#: How many items a bounded loop yields between two looks at the clock.
_CLOCK_EVERY = 1024

_limits = {'bytes': DEFAULT_MAX_BYTES, 'seconds': DEFAULT_MAX_SECONDS}


def set_limits(max_bytes: Optional[int] = None, max_seconds: Optional[float] = None) -> None:
    """Set the limits of every later rendering in this process: the largest rendered text of
    one template (``max_bytes``, default 1 MB) and the longest rendering of one template
    (``max_seconds``, default 10 s).  ``None`` restores the default of that limit.

    :raises ValueError: for a limit that is not a positive number.
    """
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int)
                                  or max_bytes < 1):
        raise ValueError(f'template byte limit must be a whole number of at least 1, got {max_bytes!r}')
    if max_seconds is not None and (isinstance(max_seconds, bool)
                                    or not isinstance(max_seconds, (int, float))
                                    or not 0 < max_seconds < float('inf')):
        raise ValueError(f'template time limit must be a positive finite number of seconds, '
                         f'got {max_seconds!r}')
    _limits['bytes'] = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    _limits['seconds'] = DEFAULT_MAX_SECONDS if max_seconds is None else float(max_seconds)


def get_limits() -> Tuple[int, float]:
    """``(max_bytes, max_seconds)`` in force."""
    return _limits['bytes'], _limits['seconds']


class TemplateLimitError(TemplateError):
    """A template went over one of the limits of :func:`set_limits`."""


class _Budget:
    """What one template may still use: bytes of output and time."""

    def __init__(self) -> None:
        self.max_bytes, self.max_seconds = get_limits()
        self.deadline = time.monotonic() + self.max_seconds
        self.used = 0

    def spend(self, text: str) -> None:
        self.used += len(text) if text.isascii() else len(text.encode('utf-8', 'surrogatepass'))
        if self.used > self.max_bytes:
            raise TemplateLimitError(
                f'the rendered text is larger than the limit of {self.max_bytes} bytes per template '
                f'(raise {BYTES_KEY} in the configuration file to allow more)')
        self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(
                f'rendering took longer than the limit of {self.max_seconds:g} s per template '
                f'(raise {SECONDS_KEY} in the configuration file to allow more)')


_BUDGET: contextvars.ContextVar[Optional[_Budget]] = contextvars.ContextVar('occo_template_budget',
                                                                            default=None)


@contextmanager
def budget() -> Iterator[_Budget]:
    """Make every rendering inside the block share one budget (one template in the user's
    sense, e.g. all the values of a ``!yaml_import`` mapping).  Nested blocks share the
    outermost one; a rendering outside any block has a budget of its own."""
    current = _BUDGET.get()
    if current is not None:
        yield current
        return
    fresh = _Budget()
    token = _BUDGET.set(fresh)
    try:
        yield fresh
    finally:
        _BUDGET.reset(token)


def _check_time() -> None:
    current = _BUDGET.get()
    if current is not None:
        current.check_time()


def _checked(items: Iterator[Any]) -> Iterator[Any]:
    """``items``, looking at the clock of the current budget now and then."""
    current = _BUDGET.get()
    if current is None:
        yield from items
        return
    count = 0
    for item in items:
        count += 1
        if count >= _CLOCK_EVERY:
            count = 0
            current.check_time()
        yield item


class BoundedRange:
    """``range()`` of the sandbox: at most the sandbox's ``MAX_RANGE`` items, and a loop over
    it stops when the template's time is up, even if the loop writes nothing."""

    __slots__ = ('_range',)

    def __init__(self, *args: Any) -> None:
        from jinja2.sandbox import MAX_RANGE
        rng = range(*args)
        if len(rng) > MAX_RANGE:
            raise OverflowError(f'range() of {len(rng)} items: templates may use at most '
                                f'{MAX_RANGE} items in one range')
        self._range = rng

    def __iter__(self) -> Iterator[int]:
        return _checked(iter(self._range))

    def __reversed__(self) -> Iterator[int]:
        return _checked(reversed(self._range))

    def __len__(self) -> int:
        return len(self._range)

    def __getitem__(self, index: Any) -> Any:
        return self._range[index]

    def __contains__(self, value: Any) -> bool:
        return value in self._range

    def __eq__(self, other: Any) -> bool:
        return self._range == (other._range if isinstance(other, BoundedRange) else other)

    def __hash__(self) -> int:
        return hash(self._range)

    def __repr__(self) -> str:
        return repr(self._range)


def _size(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        return 1


def _bounded_binop(op: str, left: Any, right: Any) -> None:
    """Refuse ``'x' * 10**9`` and ``10 ** 10 ** 10`` before Python tries them."""
    limit = get_limits()[0]
    current = _BUDGET.get()
    if current is not None:
        limit = current.max_bytes
        current.check_time()
    if op == '*':
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(times, int) \
                    and _size(seq) * times > limit:
                raise TemplateLimitError(
                    f'a repeated text or list would be larger than the limit of {limit} bytes per '
                    f'template (raise {BYTES_KEY} in the configuration file to allow more)')
    elif op == '**' and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 \
            and right * max(abs(left).bit_length() - 1, 1) > limit * 8:
        raise TemplateLimitError(
            f'a power would be larger than the limit of {limit} bytes per template '
            f'(raise {BYTES_KEY} in the configuration file to allow more)')
    elif op == '+' and isinstance(left, (str, list, tuple)) and isinstance(right, type(left)) \
            and len(left) + len(right) > limit:
        raise TemplateLimitError(
            f'a joined text or list would be larger than the limit of {limit} bytes per template '
            f'(raise {BYTES_KEY} in the configuration file to allow more)')


def _b64encode(value: Any) -> str:
    data = value if isinstance(value, bytes) else str(value).encode('utf-8')
    return base64.b64encode(data).decode('ascii')


# -- folding of substituted line breaks ----------------------------------------------------------

#: A Unicode noncharacter (reserved for internal use) standing for a line break of the
#: template's own text while a folding template renders: the original's dump wrote those as
#: ``\n`` escapes, which YAML does not fold, so only the real line breaks left in the output
#: (those that substituted values brought) fold.
_TEMPLATE_BREAK = '\ufdd0'
#: White space and line breaks around at least one line break.
_FOLD_RUN = re.compile(r'[ \t]*(?:\r\n?|\n)(?:[ \t]*(?:\r\n?|\n))*[ \t]*')
_LINE_BREAK = re.compile(r'\r\n?|\n')


@lru_cache(maxsize=4096)
def _dumped_plain(text: str) -> bool:
    """Whether the original's YAML dump wrote template ``text`` as a plain (unquoted) scalar:
    a text with a line break was double-quoted, one that YAML would misread unquoted (it
    starts with ``{{``, says ``true``, ...) single-quoted, any other plain."""
    if '\n' in text or '\r' in text:
        return False
    import yaml
    dumped = yaml.safe_dump(text, default_flow_style=False, allow_unicode=True, width=1 << 30)
    return dumped[:1] not in ('"', "'")


def _fold(text: str, plain: bool) -> str:
    """Fold the real line breaks of ``text`` (a folding template's output, whose own line
    breaks are still :data:`_TEMPLATE_BREAK`) as YAML folds line breaks inside a flow scalar:
    the white space around them goes; one break becomes a space; a break followed by n blank
    (or blank-looking) lines becomes n line breaks.  At the ends of a plain scalar the breaks
    go altogether.  The space a single break would leave at the end or the start of a line
    (next to a line break of the template, or an end of the value) is left out: it carries
    no meaning, and without it a key file comes out exactly as it was written."""
    def replace(match: 're.Match[str]') -> str:
        start, end = match.start(), match.end()
        if plain and (start == 0 or end == len(text)):
            return ''
        breaks = len(_LINE_BREAK.findall(match.group()))
        if breaks > 1:
            return '\n' * (breaks - 1)
        at_line_edge = start == 0 or end == len(text) or text[start - 1] == _TEMPLATE_BREAK \
            or text[end] == _TEMPLATE_BREAK
        return '' if at_line_edge else ' '
    return _FOLD_RUN.sub(replace, text).replace(_TEMPLATE_BREAK, '\n')


# -- the environment ---------------------------------------------------------------------------

@lru_cache(maxsize=None)
def environment(keep_trailing_newline: bool = False) -> Any:
    """The shared sandboxed Jinja2 environment."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    class Sandbox(SandboxedEnvironment):
        intercepted_binops = frozenset(('*', '**', '+'))

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
            _check_time()
            return SandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs)

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _bounded_binop(operator, left, right)
            return super().call_binop(context, operator, left, right)

    env = Sandbox(undefined=jinja2.Undefined, autoescape=False,
                  keep_trailing_newline=keep_trailing_newline)
    env.globals['range'] = BoundedRange
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
def _compiled(text: str, keep_trailing_newline: bool, fold: bool = False) -> Any:
    env = environment(keep_trailing_newline)
    if not fold:
        return env.from_string(text)
    from jinja2 import nodes
    tree = env.parse(text)
    for data in tree.find_all(nodes.TemplateData):  # the template's own text, not the values
        data.data = _LINE_BREAK.sub(_TEMPLATE_BREAK, data.data)
    return env.from_string(tree)


def _generate(template: Any, context: Mapping[str, Any], spend: Any) -> str:
    parts = []
    stream = template.generate(**context)
    try:
        for chunk in stream:
            spend(chunk)
            parts.append(chunk)
    finally:
        stream.close()
    return ''.join(parts)


def render(text: str, context: Mapping[str, Any], *, what: str = 'template',
           keep_trailing_newline: bool = False, fold: bool = False) -> str:
    """Render ``text`` with ``context`` in the sandbox.

    ``fold``: ``text`` is a value of a YAML template (``!yaml_import``).  The original dumped
    the whole template to YAML text and rendered that, so the line breaks of a substituted
    value were read back by YAML's folding rules (a single break became a space, a blank line
    one line break).  With ``fold`` the value is still rendered on its own, so nothing in it
    can break the YAML around it, but the line breaks that substituted values (``{{ ... }}``)
    bring are folded the same way; the template's own line breaks (its text, in macros and
    ``{% set %}`` blocks too) are kept.

    The rendering counts against the current :func:`budget` (a fresh one if there is none).

    :raises TemplateError: naming ``what`` and the template line, for a syntax error, a
        sandbox violation, a limit of :func:`set_limits` or any error raised while rendering.
    """
    with budget() as limits:
        if '{' not in text and '\r' not in text:  # no delimiter: Jinja would give it back as is
            result = text if keep_trailing_newline or not text.endswith('\n') else text[:-1]
            try:
                limits.spend(result)
            except TemplateError as exc:
                raise type(exc)(f'{what}: {exc.message}') from None
            return result
        import jinja2
        from jinja2.sandbox import SecurityError
        try:
            result = _generate(_compiled(text, keep_trailing_newline, fold), context, limits.spend)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f'{what}: template syntax error at line {exc.lineno}: {exc.message}') from None
        except SecurityError as exc:
            raise TemplateError(f'{what}: refused by the template sandbox: {exc}') from None
        except TemplateError as exc:
            raise type(exc)(f'{what}: {exc.message}') from None
        except RecursionError:
            raise TemplateError(f'{what}: the template calls itself too deeply (a macro that never '
                                'stops?)') from None
        except MemoryError:
            raise TemplateLimitError(f'{what}: rendering ran out of memory') from None
        except Exception as exc:  # any error raised inside the template is the template's error
            raise TemplateError(f'{what}: {type(exc).__name__}: {exc}') from None
    if fold:
        result = _fold(result, _dumped_plain(text))
    return result


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
