"""Safe YAML loading for descriptions, node definitions, configuration and auth files.

Loaders built on PyYAML's safe loader that

* resolves ``!yaml_import {url: file://...}`` and ``!text_import {url: file://...}`` relative to
  the directory of the including file (absolute ``file:///path`` URLs are taken literally);
* refuses every other tag, in particular ``!!python/object...``, with a one-line error -- except
  that, for the original's configuration files (``lenient_tags=True``), a local tag such as
  ``!UDS`` is read as the plain data under it and reported so that the caller can warn;
* rejects duplicate keys in a mapping, which PyYAML would silently collapse;
* keeps dates and times as the strings the user wrote;
* remembers the file and line of every mapping, key and list item (:class:`LDict`,
  :class:`LList`), so that schema errors can point at the offending line.

Nothing here ever builds a Python object other than dicts, lists and scalars.

Parsing uses libyaml's C parser through PyYAML when it is available (an infrastructure of 10,000
nodes parses in a fraction of a second instead of seconds); our constructors, resolvers and
checks run on its nodes exactly as on the pure-Python parser's.  libyaml words its syntax errors
differently, so whenever the C parser fails the text is parsed again with the pure-Python parser,
whose error (or, should it accept the text, whose result) is what the user gets: errors read the
same with or without libyaml.  Text with a tab goes to the pure-Python parser directly, as libyaml
accepts tabs where it does not.
"""
from __future__ import annotations

import base64
import contextlib
import datetime
import gc
import os
from typing import Any, Iterable, Iterator, List, Optional, Set, Tuple

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from occo.errors import YAMLFileError
from occo.redact import control_character, excerpt
from occo.schema import Limits, size_text

#: Most values that aliases may add to a document once expanded ("billion laughs" guard); the
#: values written out in the text do not count, so big documents without aliases always load.
MAX_VALUES = 200_000
#: Deepest nesting of mappings and lists a document may have (well below both libyaml's limit
#: and what the pure-Python parser and our own recursive helpers can handle).
MAX_DEPTH = 300
#: Largest file (and largest sum of a file and the files it imports) read by default.
MAX_FILE_SIZE = Limits().file_size
FILE_SCHEME = 'file://'
STR_TAG = 'tag:yaml.org,2002:str'
MERGE_TAG = 'tag:yaml.org,2002:merge'


class LDict(dict):
    """A dict that knows the file and line it was read from, and the line of each key."""

    __slots__ = ('yaml_source', 'yaml_line', 'key_lines')

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.yaml_source: Optional[str] = None
        self.yaml_line: Optional[int] = None
        self.key_lines: dict = {}


class LList(list):
    """A list that knows the file and line it was read from, and the line of each item."""

    __slots__ = ('yaml_source', 'yaml_line', 'item_lines')

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.yaml_source: Optional[str] = None
        self.yaml_line: Optional[int] = None
        self.item_lines: List[int] = []


class LStr(str):
    """Text read by ``!text_import``: knows the file it came from (line 1 is its first line)."""

    __slots__ = ('yaml_source', 'yaml_line')

    def __new__(cls, text: str, source: Optional[str] = None) -> 'LStr':
        self = super().__new__(cls, text)
        self.yaml_source = source
        self.yaml_line = 1
        return self


def location(obj: Any, key: Any = None) -> Tuple[Optional[str], Optional[int]]:
    """Return ``(file, line)`` of ``obj[key]`` (or of ``obj`` itself) if known."""
    source = getattr(obj, 'yaml_source', None)
    line = getattr(obj, 'yaml_line', None)
    if key is not None:
        if isinstance(obj, LDict):
            line = obj.key_lines.get(key, line)
        elif isinstance(obj, LList) and isinstance(key, int) and 0 <= key < len(obj.item_lines):
            line = obj.item_lines[key]
    return source, line


def to_plain(obj: Any) -> Any:
    """Deep-copy loaded YAML into plain JSON-compatible data (dict, list, str, int, float, bool,
    None).  Explicitly tagged dates become the text YAML would print, binary becomes base64
    text, sets become sorted lists, and non-string mapping keys become strings."""
    if isinstance(obj, dict):
        return {(k if isinstance(k, str) else _scalar_text(k)): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(to_plain(v) for v in obj)
    if isinstance(obj, (datetime.date, datetime.datetime)):
        return str(obj)
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode('ascii')
    return obj


def _scalar_text(value: Any) -> str:
    if value is True:
        return 'true'
    if value is False:
        return 'false'
    if value is None:
        return 'null'
    return str(value)


def _display_tag(tag: str) -> str:
    return '!!' + tag[len('tag:yaml.org,2002:'):] if tag.startswith('tag:yaml.org,2002:') else tag


class _Occo:
    """What our loaders add to PyYAML's safe loaders (pure-Python or libyaml-based)."""

    # Dates stay the text the user wrote: cloud-init and templates want text, and JSON has no dates.
    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != 'tag:yaml.org,2002:timestamp']
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def setup(self, source: str, stack: Tuple[str, ...], lenient_tags: bool,
              ignored_tags: Optional[Set[str]], budget: Optional['_Budget'] = None) -> None:
        self.source = source
        self.budget = budget if budget is not None else _Budget(MAX_FILE_SIZE)
        self.stack = stack
        self.lenient_tags = lenient_tags
        self.ignored_tags = ignored_tags if ignored_tags is not None else set()
        self.plain_tags: dict = {}

    def error(self, node: Any, message: str) -> YAMLFileError:
        return YAMLFileError(message, source=self.source, line=node.start_mark.line + 1)

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        """The tag of an untagged node; remembers each plain scalar's (most repeat: keys,
        types), which PyYAML otherwise works out with regular expressions every time."""
        if kind is ScalarNode:
            if implicit[1] and not implicit[0]:
                return STR_TAG  # quoted text; we use no path resolvers
            # Plain text, or text tagged with a bare '!': the pure-Python parser resolves the
            # latter like plain text, libyaml says (False, False) when it is empty.
            tag = self.plain_tags.get(value)
            if tag is None:
                tag = self.plain_tags[value] = super().resolve(kind, value, (True, False))
            return tag
        return super().resolve(kind, value, implicit)

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass  # only path resolvers (which we do not use) need the path

    def ascend_resolver(self) -> None:
        pass


class _OccoLoader(_Occo, yaml.SafeLoader):
    """SafeLoader with Occopus' import tags, located containers and strict duplicate keys."""

    def __init__(self, stream: str, source: str, stack: Tuple[str, ...], lenient_tags: bool,
                 ignored_tags: Optional[Set[str]], budget: Optional['_Budget'] = None) -> None:
        yaml.SafeLoader.__init__(self, stream)
        self.setup(source, stack, lenient_tags, ignored_tags, budget)


def _libyaml_limits_nesting() -> bool:
    """True if libyaml refuses documents nested 1000 levels deep (it does from 0.2.6 on).
    Without that limit, PyYAML's recursive C composer could overflow the C stack on a hostile
    document (the pure-Python one stops at Python's recursion limit)."""
    deep = '[' * 1001 + ']' * 1001
    try:
        yaml.compose(deep, Loader=yaml.CSafeLoader)
    except yaml.YAMLError:
        return True
    return False


FAST_LOADER: Optional[type] = None
"""The loader class tried first: libyaml-based where PyYAML has libyaml (and libyaml limits
nesting), else ``None``.  The pure-Python :class:`_OccoLoader` is the reference for errors."""
if getattr(yaml, '__with_libyaml__', False) and _libyaml_limits_nesting():
    class _OccoCLoader(_Occo, yaml.CSafeLoader):  # type: ignore[misc,valid-type]
        """The same on libyaml's C parser (same nodes and marks, much faster)."""

        def __init__(self, stream: str, source: str, stack: Tuple[str, ...], lenient_tags: bool,
                     ignored_tags: Optional[Set[str]], budget: Optional['_Budget'] = None) -> None:
            yaml.CSafeLoader.__init__(self, stream)
            self.setup(source, stack, lenient_tags, ignored_tags, budget)

    FAST_LOADER = _OccoCLoader


def _construct_map(loader: Any, node: MappingNode) -> Iterable[LDict]:
    data = LDict()
    data.yaml_source = loader.source
    data.yaml_line = node.start_mark.line + 1
    yield data
    # Every key is checked before any value is built, so that a duplicate key is reported even
    # where a value (an import, a refused tag) would fail too.
    own_lines: dict = {}
    keys = []
    merges = False
    for key_node, _ in node.value:
        if key_node.tag == MERGE_TAG:
            merges = True
            continue
        if key_node.tag == STR_TAG and key_node.__class__ is ScalarNode:
            key = key_node.value  # what construct_object would build, without its bookkeeping
        else:
            key = loader.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise loader.error(key_node, 'a mapping key must be a plain value, not a list or mapping')
        line = key_node.start_mark.line + 1
        if key in own_lines:
            raise loader.error(key_node, f'duplicate key {excerpt(key)} (first given at line {own_lines[key]}); '
                                         'remove one of them')
        own_lines[key] = line
        keys.append(key)
    if merges:
        loader.flatten_mapping(node)
        keys = [loader.construct_object(key_node, deep=True) for key_node, _ in node.value]
    key_lines = data.key_lines
    for key, (key_node, value_node) in zip(keys, node.value):
        if value_node.tag == STR_TAG and value_node.__class__ is ScalarNode:
            data[key] = value_node.value
        else:
            data[key] = loader.construct_object(value_node, deep=False)
        if merges:
            key_lines.setdefault(key, key_node.start_mark.line + 1)
    key_lines.update(own_lines)


def _construct_seq(loader: Any, node: SequenceNode) -> Iterable[LList]:
    data = LList()
    data.yaml_source = loader.source
    data.yaml_line = node.start_mark.line + 1
    yield data
    lines = data.item_lines
    for item in node.value:
        if item.tag == STR_TAG and item.__class__ is ScalarNode:
            data.append(item.value)
        else:
            data.append(loader.construct_object(item, deep=False))
        lines.append(item.start_mark.line + 1)


def _import_path(loader: Any, node: Any, tag: str) -> str:
    if loader.source.startswith('<'):  # text that is no file (a request body): no folder, no files
        raise loader.error(node, f'{tag} cannot be used in {loader.source}: it names no folder to '
                                 'import from (write the imported text in place)')
    if isinstance(node, ScalarNode):
        url = loader.construct_scalar(node)
    elif isinstance(node, MappingNode):
        spec = loader.construct_mapping(node, deep=True)
        unknown = sorted(str(k) for k in spec if k != 'url')
        if unknown or 'url' not in spec:
            raise loader.error(node, f"{tag} takes exactly one key 'url' "
                                     f"(e.g. {tag} {{url: file://cloud_init.yaml}})")
        url = spec['url']
    else:
        raise loader.error(node, f'{tag} needs a mapping with a url, e.g. {tag} {{url: file://x.yaml}}')
    if not isinstance(url, str) or not url.startswith(FILE_SCHEME):
        raise loader.error(node, f"{tag} supports only file:// URLs, got {excerpt(url)} "
                                 "(write file://relative/path or file:///absolute/path)")
    found = control_character(url)
    if found:
        raise loader.error(node, f'{tag} URL {excerpt(url)} contains the control character '
                                 f'{found}; a file name must be printable text')
    path = os.path.expanduser(url[len(FILE_SCHEME):])
    if not path:
        raise loader.error(node, f'{tag} URL {excerpt(url)} names no file')
    if not os.path.isabs(path):
        path = os.path.normpath(os.path.join(os.path.dirname(loader.source), path))
    return path


def _read_imported(loader: Any, node: Any, tag: str) -> Tuple[str, str]:
    path = _import_path(loader, node, tag)
    if os.path.abspath(path) in loader.stack:
        chain = ' -> '.join(list(loader.stack) + [os.path.abspath(path)])
        raise loader.error(node, f'{tag} cycle: {chain}')
    try:
        return path, _read_text(path, loader.budget)
    except _TooBig as exc:
        raise loader.error(node, f"{tag} cannot read '{path}': {exc}") from None
    except OSError as exc:
        raise loader.error(node, f"{tag} cannot read '{path}': {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise loader.error(node, f"{tag} cannot read '{path}': not UTF-8 text") from None
    except ValueError:  # a NUL in the path
        raise loader.error(node, f'{tag} cannot read {excerpt(path)}: its name holds a NUL '
                                 'character') from None


class _TooBig(Exception):
    """A file (or a file with its imports) is larger than the file-size limit."""


class _Budget:
    """What one document may still read: :attr:`limit` bytes for the file and the files it
    imports together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def too_big(self, size: Optional[int] = None) -> _TooBig:
        if size and size > self.limit:
            what = f'it is {size_text(size)}, more than'
        elif self.left < self.limit:
            what = 'with the files read before it, it is more than'
        else:
            what = 'it is larger than'
        return _TooBig(f'{what} the limit of {size_text(self.limit)} for a description or '
                       'node-definition file; raise limits.file_size in the configuration file '
                       'to allow it')


def _read_text(path: str, budget: _Budget) -> str:
    """The UTF-8 text of ``path`` (line ends made ``\\n`` as in text mode), read only as far
    as ``budget`` allows: a bigger file is refused before it is parsed, or even read whole."""
    with open(path, 'rb') as stream:
        try:
            size = os.fstat(stream.fileno()).st_size
        except OSError:
            size = 0
        if size > budget.left:
            raise budget.too_big(size)
        data = stream.read(budget.left + 1)  # pipes and devices tell no size: read to the limit
        if len(data) > budget.left:
            raise budget.too_big()
    budget.left -= len(data)
    return data.decode('utf-8').replace('\r\n', '\n').replace('\r', '\n')


def _construct_yaml_import(loader: Any, node: Any) -> Any:
    path, text = _read_imported(loader, node, '!yaml_import')
    return _load(text, path, loader.stack, loader.lenient_tags, loader.ignored_tags, loader.budget)


def _construct_text_import(loader: Any, node: Any) -> LStr:
    path, text = _read_imported(loader, node, '!text_import')
    return LStr(text, path)


def _construct_other(loader: Any, tag_suffix: Any, node: Any = None) -> Any:
    # Called as (loader, node) for the catch-all None constructor.
    node = tag_suffix if node is None else node
    tag = _display_tag(node.tag)
    if not (loader.lenient_tags and node.tag.startswith('!')):  # !!python/... is never lenient
        raise loader.error(node, f"unsupported YAML tag '{tag}': only !yaml_import and !text_import "
                                 "are allowed (Occopus never builds objects from YAML)")
    loader.ignored_tags.add(tag)
    if isinstance(node, MappingNode):
        return (yield from _construct_map(loader, node))
    if isinstance(node, SequenceNode):
        return (yield from _construct_seq(loader, node))
    yield loader.construct_scalar(node)


def _checked_scalar(what: str) -> Any:
    """Wrap PyYAML's constructor of an explicitly tagged scalar (``!!int abc``), which fails
    with a bare Python exception, so that the user gets a located one-line error instead."""
    tag = f'tag:yaml.org,2002:{what}'
    construct = yaml.SafeLoader.yaml_constructors[tag]

    def checked(loader: Any, node: Any) -> Any:
        try:
            return construct(loader, node)
        except (ValueError, TypeError, KeyError, AttributeError):
            raise loader.error(node, f'{excerpt(loader.construct_scalar(node))} is not a valid !!{what} '
                                     f'value; write a valid one or remove the tag') from None
    return checked


for _cls in (_OccoLoader, FAST_LOADER):
    if _cls is not None:
        for _what in ('int', 'float', 'bool', 'timestamp'):
            _cls.add_constructor(f'tag:yaml.org,2002:{_what}', _checked_scalar(_what))
        _cls.add_constructor('tag:yaml.org,2002:map', _construct_map)
        _cls.add_constructor('tag:yaml.org,2002:seq', _construct_seq)
        _cls.add_constructor('!yaml_import', _construct_yaml_import)
        _cls.add_constructor('!text_import', _construct_text_import)
        _cls.add_constructor(None, _construct_other)


def _check_size(data: Any, source: str) -> None:
    """Refuse documents whose aliases expand to huge (or endless) data, and documents nested
    deeper than :data:`MAX_DEPTH`.  Linear in the size of the text: each mapping or list is
    walked once, however many aliases refer to it."""
    sizes: dict = {}   # id of a container -> its size once expanded (None while walking it)
    written = 0        # values written out: each container once, with its direct items

    def size(obj: Any, depth: int) -> int:
        nonlocal written
        if depth > MAX_DEPTH:
            raise YAMLFileError('the document nests too deeply', source=source)
        sizes[id(obj)] = None
        values = obj.values() if isinstance(obj, dict) else obj
        written += 1 + len(values)
        total = 1 + len(values)
        for value in values:
            if isinstance(value, (dict, list)):
                known = sizes.get(id(value), 0)
                if known is None:
                    raise YAMLFileError('a YAML alias refers to a mapping or list that contains it',
                                        source=source, line=getattr(value, 'yaml_line', None))
                total += (known or size(value, depth + 1)) - 1
        if total - written > MAX_VALUES:
            raise YAMLFileError(f'the document holds more than {MAX_VALUES} values once its aliases '
                                'are expanded; write the data out or use fewer aliases', source=source)
        sizes[id(obj)] = total
        return total

    if isinstance(data, (dict, list)):
        size(data, 1)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a burst of small objects is built.

    Loading or compiling a big description allocates hundreds of thousands of objects, which
    would set off full collections over the ever-growing heap again and again (a third of the
    time of a 10,000-node load).  Reference counting still frees everything as usual; the
    collector runs again when the block ends.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _load(text: str, source: str, stack: Tuple[str, ...], lenient_tags: bool,
          ignored_tags: Optional[Set[str]], budget: Optional[_Budget] = None) -> Any:
    with gc_paused():
        return _load_document(text, source, stack, lenient_tags, ignored_tags, budget)


def _load_document(text: str, source: str, stack: Tuple[str, ...], lenient_tags: bool,
                   ignored_tags: Optional[Set[str]], budget: Optional[_Budget] = None) -> Any:
    stack = stack + (os.path.abspath(source),)
    # libyaml takes a tab for a space where the pure-Python parser refuses it ("a:<tab>b"): text
    # with a tab anywhere is parsed the pure-Python way, so that it loads (or not) the same
    # everywhere, with or without libyaml.
    if FAST_LOADER is not None and '\t' not in text:
        try:
            return _construct(FAST_LOADER, text, source, stack, lenient_tags, ignored_tags,
                              _copy_budget(budget))
        except YAMLFileError:
            raise  # ours: the same whichever parser found it
        except (yaml.YAMLError, ValueError, RecursionError):
            pass  # libyaml's words: let the pure-Python parser say what is wrong, as always
    try:
        return _construct(_OccoLoader, text, source, stack, lenient_tags, ignored_tags, budget)
    except RecursionError:
        raise YAMLFileError('the document nests too deeply', source=source) from None
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, source) from None
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, source) from None
    except yaml.YAMLError as exc:
        raise YAMLFileError(f'YAML error: {str(exc).splitlines()[0]}', source=source) from None


def _copy_budget(budget: Optional[_Budget]) -> Optional[_Budget]:
    """A copy for a first attempt (with libyaml) that may be thrown away: what its imports
    read counts only if it succeeds."""
    if budget is None:
        return None
    copy = _Budget(budget.limit)
    copy.left = budget.left
    return copy


def _construct(cls: type, text: str, source: str, stack: Tuple[str, ...], lenient_tags: bool,
               ignored_tags: Optional[Set[str]], budget: Optional[_Budget] = None) -> Any:
    loader = cls(text, source, stack, lenient_tags, ignored_tags, budget)
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    _check_size(data, source)
    return data


def _reader_error(exc: 'yaml.reader.ReaderError', text: str, source: str) -> YAMLFileError:
    """A character YAML does not allow (NUL, ESC, other control characters), at its line."""
    position = exc.position if isinstance(exc.position, int) and 0 <= exc.position <= len(text) else None
    if position is None:
        return YAMLFileError(f'YAML error: {str(exc).splitlines()[0]}', source=source)
    line = text.count('\n', 0, position) + 1
    column = position - (text.rfind('\n', 0, position) + 1) + 1
    character = exc.character if isinstance(exc.character, str) else text[position:position + 1]
    shown = f'\\x{ord(character):02x}' if ord(character) < 0x100 else f'\\u{ord(character):04x}'
    return YAMLFileError(f'the control character {shown} at column {column} is not allowed in a '
                         'YAML file (write it as an escape inside double quotes, e.g. "\\e", or '
                         'remove it)', source=source, line=line)


def _syntax_error(exc: yaml.MarkedYAMLError, source: str) -> YAMLFileError:
    """One line that says what is wrong and where, with PyYAML's context (e.g. the line where an
    unclosed quote or bracket was opened, which is where the user has to look)."""
    problem, mark = exc.problem or 'invalid YAML', exc.problem_mark
    context, opened = exc.context, exc.context_mark
    if mark is None:
        problem, mark, context, opened = context or problem, opened, None, None
    hint = (' (YAML cannot be indented with tabs; use spaces)' if '\\t' in problem else
            ' (check the indentation of this line against the lines above)' if '<block end>' in problem
            else '')
    if context and opened and any(w in context for w in ('quoted scalar', 'flow ')):
        message = (f'YAML syntax error: {context.replace("while scanning", "").replace("while parsing", "").strip()} '
                   f'opened at column {opened.column + 1} is not closed: {problem} at line '
                   f'{mark.line + 1}, column {mark.column + 1}')
        line = opened.line + 1
    else:
        where = f' at column {mark.column + 1}' if mark else ''
        message = f'YAML syntax error{where}: {problem}{hint}'
        if context and opened:
            message += f' ({context} that starts at line {opened.line + 1})'
        line = mark.line + 1 if mark else None
    return YAMLFileError(message, source=source, line=line)


def load_yaml_text(text: str, source: str = '<input>', *, lenient_tags: bool = False,
                   ignored_tags: Optional[Set[str]] = None, max_size: int = MAX_FILE_SIZE) -> Any:
    """Parse YAML ``text``; imports resolve relative to the directory of ``source``.

    :param max_size: most bytes the text and the files it imports may hold together.
    :raises YAMLFileError: on a syntax error, a refused tag, an unreadable import, or text over
        ``max_size``.
    """
    budget = _Budget(max_size)
    size = len(text.encode('utf-8', 'surrogatepass')) if len(text) * 4 > max_size else len(text)
    if size > max_size:
        raise YAMLFileError(str(budget.too_big(size)), source=source)
    budget.left -= size
    return _load(text, source, (), lenient_tags, ignored_tags, budget)


def load_yaml_file(path: str, *, lenient_tags: bool = False,
                   ignored_tags: Optional[Set[str]] = None, max_size: int = MAX_FILE_SIZE) -> Any:
    """Read and parse the YAML file at ``path`` (see :func:`load_yaml_text`); a file over
    ``max_size`` bytes is refused before it is parsed.

    :raises YAMLFileError: if the file cannot be read or parsed, or is too big.
    """
    budget = _Budget(max_size)
    try:
        text = _read_text(path, budget)
    except _TooBig as exc:
        raise YAMLFileError(str(exc), source=path) from None
    except IsADirectoryError:
        raise YAMLFileError('is a directory, expected a YAML file', source=path) from None
    except OSError as exc:
        raise YAMLFileError(f'cannot read file: {exc.strerror or exc}', source=path) from None
    except UnicodeDecodeError:
        raise YAMLFileError('cannot read file: not UTF-8 text', source=path) from None
    except ValueError:  # a NUL in the path
        raise YAMLFileError('cannot read file: its name holds a NUL character', source=path) from None
    return _load(text, path, (), lenient_tags, ignored_tags, budget)


def locate(obj: Any, path: Iterable[Any] = ()) -> Tuple[Optional[str], Optional[int]]:
    """``(file, line)`` of the deepest known point along ``path`` inside loaded data ``obj``."""
    source, line = location(obj)
    node = obj
    for key in path:
        key_source, key_line = location(node, key)
        source, line = key_source or source, key_line or line
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            break
    return source, line
