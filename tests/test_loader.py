"""The YAML loader: import tags, safety, locations."""
from __future__ import annotations

import os

import pytest

from conftest import write
from occo.descriptions import loader
from occo.descriptions.infra import parse_infra_description_text
from occo.descriptions.loader import load_yaml_file, load_yaml_text, locate, to_plain
from occo.errors import SchemaError, YAMLFileError


@pytest.fixture(autouse=True, params=['libyaml', 'pure-python'])
def parser(request, monkeypatch):
    """Every test runs on both parsers: what the user gets must not depend on libyaml."""
    if request.param == 'pure-python':
        monkeypatch.setattr(loader, 'FAST_LOADER', None)
    elif loader.FAST_LOADER is None:
        pytest.skip('PyYAML has no (nesting-limited) libyaml here')
    return request.param


def test_imports_resolve_relative_to_the_including_file(tmp_path, monkeypatch):
    write(tmp_path, {
        'defs/nodes.yaml': "a: !yaml_import {url: 'file://sub/ci.yaml'}\n"
                           "b: !text_import\n  url: file://sub/script.sh\n",
        'defs/sub/ci.yaml': "runcmd: [echo hi]\nnested: !text_import {url: 'file://script.sh'}\n",
        'defs/sub/script.sh': '#!/bin/sh\necho {{name}}\n',
    })
    monkeypatch.chdir(tmp_path / 'defs' / 'sub')  # the working directory must not matter
    data = load_yaml_file(str(tmp_path / 'defs' / 'nodes.yaml'))
    assert data == {'a': {'runcmd': ['echo hi'], 'nested': '#!/bin/sh\necho {{name}}\n'},
                    'b': '#!/bin/sh\necho {{name}}\n'}


def test_absolute_file_urls_are_taken_literally(tmp_path):
    target = write(tmp_path, {'abs/x.txt': 'literal'}) / 'abs' / 'x.txt'
    data = load_yaml_text(f"x: !text_import {{url: 'file://{target}'}}", str(tmp_path / 'in.yaml'))
    assert data == {'x': 'literal'}


def test_import_cycle_is_reported(tmp_path):
    write(tmp_path, {'a.yaml': "x: !yaml_import {url: 'file://b.yaml'}\n",
                     'b.yaml': "y: !yaml_import {url: 'file://a.yaml'}\n"})
    with pytest.raises(YAMLFileError, match=r'!yaml_import cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml'):
        load_yaml_file(str(tmp_path / 'a.yaml'))


def test_missing_import_names_the_including_file_and_line(tmp_path):
    write(tmp_path, {'a.yaml': "one: 1\ntwo: !yaml_import {url: 'file://gone.yaml'}\n"})
    with pytest.raises(YAMLFileError) as info:
        load_yaml_file(str(tmp_path / 'a.yaml'))
    assert str(info.value) == (f"{tmp_path}/a.yaml:2: !yaml_import cannot read "
                               f"'{tmp_path}/gone.yaml': No such file or directory")


@pytest.mark.parametrize('document', [
    "x: !!python/object/apply:os.system ['touch {marker}']",
    "x: !!python/object/new:os.system ['touch {marker}']",
    "x: !!python/name:os.system",
    "x: !!python/object:argparse.Namespace {{a: 1}}",
])
def test_python_tags_are_refused_and_never_executed(tmp_path, document):
    marker = tmp_path / 'pwned'
    with pytest.raises(YAMLFileError, match="unsupported YAML tag '!!python/"):
        load_yaml_text(document.format(marker=marker), 'x.yaml')
    assert not marker.exists()


def test_lenient_tags_read_as_data_and_are_reported():
    ignored = set()
    data = load_yaml_text('a: !UDS {host: h}\nb: !python_import [os]\n', 'c.yaml',
                          lenient_tags=True, ignored_tags=ignored)
    assert data == {'a': {'host': 'h'}, 'b': ['os']}
    assert ignored == {'!UDS', '!python_import'}


def test_duplicate_keys_are_errors():
    with pytest.raises(YAMLFileError, match=r"x.yaml:3: duplicate key 'a' \(first given at line 1\)"):
        load_yaml_text('a: 1\nb: 2\na: 3\n', 'x.yaml')


def test_merge_keys_still_work():
    assert load_yaml_text('base: &b {x: 1, y: 2}\nuse: {<<: *b, y: 3}\n', 'x') == \
        {'base': {'x': 1, 'y': 2}, 'use': {'x': 1, 'y': 3}}


def test_dates_stay_text_and_plain_data_is_json_ready():
    data = load_yaml_text('d: 2021-01-01\nt: !!timestamp 2021-01-01\n1: one\n', 'x')
    assert data['d'] == '2021-01-01'
    assert to_plain(data) == {'d': '2021-01-01', 't': '2021-01-01', '1': 'one'}
    assert type(to_plain(data)) is dict


def test_locations_of_keys_and_items():
    data = load_yaml_text('top:\n  list:\n    - a\n    - {k: v}\n', os.path.join('d', 'f.yaml'))
    assert locate(data, ('top', 'list', 1, 'k')) == ('d/f.yaml', 4)
    assert locate(data, ('top', 'list', 0)) == ('d/f.yaml', 3)
    assert locate(data, ('top', 'nothing', 'here')) == ('d/f.yaml', 2)  # the mapping it is missing from


def test_syntax_error_has_line_and_column():
    with pytest.raises(YAMLFileError) as info:
        load_yaml_text('a:\n  b: c\n d: e\n', 'bad.yaml')
    assert info.value.source == 'bad.yaml' and info.value.line == 3
    assert 'YAML syntax error at column' in str(info.value)


@pytest.mark.parametrize('text, message', [
    ('a: [1, 2\n', "bad.yaml:1: YAML syntax error: a flow sequence opened at column 4 is not closed: "
                   "expected ',' or ']', but got '<stream end>' at line 2, column 1"),
    ("a: 'open\n", 'bad.yaml:1: YAML syntax error: a quoted scalar opened at column 4 is not closed: '
                   'found unexpected end of stream at line 2, column 1'),
    ('a:\n  b: c\n d: e\n', 'bad.yaml:3: YAML syntax error at column 2: expected <block end>, but found '
                            "'<block mapping start>' (check the indentation of this line against the "
                            'lines above) (while parsing a block mapping that starts at line 1)'),
    ('a: 1\n\tb: 2\n', "bad.yaml:2: YAML syntax error at column 1: found character '\\t' that cannot "
                       'start any token (YAML cannot be indented with tabs; use spaces)'),
    # libyaml would take this tab for a space; the file must not load on one machine only
    ('a:\tb\n', "bad.yaml:1: YAML syntax error at column 3: found character '\\t' that cannot start "
                'any token (YAML cannot be indented with tabs; use spaces)'),
    ('a: *nothing\n', 'bad.yaml:1: YAML syntax error at column 4: found undefined alias \'nothing\''),
    ('a: 1\n---\nb: 2\n', 'bad.yaml:2: YAML syntax error at column 1: but found another document '
                          '(expected a single document in the stream that starts at line 1)'),
    ('x: !!int abc\n', "bad.yaml:1: 'abc' is not a valid !!int value; write a valid one or remove the tag"),
    ('x: !!bool maybe\n', "bad.yaml:1: 'maybe' is not a valid !!bool value; write a valid one or remove the tag"),
    ('x: !!timestamp soon\n', "bad.yaml:1: 'soon' is not a valid !!timestamp value; write a valid one "
                              'or remove the tag'),
])
def test_syntax_errors_read_the_same_with_either_parser(text, message):
    with pytest.raises(YAMLFileError) as info:
        load_yaml_text(text, 'bad.yaml')
    assert str(info.value) == message


def test_scalars_resolve_as_yaml_1_1_says():
    data = load_yaml_text('int: 0x1F\nsep: 1_000\noct: 017\nfloat: .5\ninf: -.inf\nbool: yes\n'
                          'no: Off\nnone: ~\nempty:\nbare: !\nquoted: "12"\nsexa: 1:20\n'
                          'date: 2021-01-01\ntagged: ! 12\n1: one\n', 'x.yaml')
    assert data == {'int': 31, 'sep': 1000, 'oct': 15, 'float': 0.5, 'inf': float('-inf'),
                    'bool': True, False: False, 'none': None, 'empty': None, 'bare': None,
                    'quoted': '12', 'sexa': 80, 'date': '2021-01-01', 'tagged': 12, 1: 'one'}


def test_a_schema_error_deep_in_a_big_description_names_its_line():
    nodes = ''.join(f'  - {{name: n{i}, type: t}}\n' for i in range(3000))
    text = f'infra_name: big\nnodes:\n{nodes}  - {{name: last, type: t, colour: red}}\n'
    with pytest.raises(SchemaError) as info:
        parse_infra_description_text(text, 'big.yaml')
    assert str(info.value).startswith("big.yaml:3003: unknown key 'colour' in node 'last'")


def test_documents_without_aliases_load_whatever_their_size(monkeypatch):
    monkeypatch.setattr(loader, 'MAX_VALUES', 100)
    data = load_yaml_text(''.join(f'k{i}: [a, b, {{c: d}}]\n' for i in range(200)), 'big.yaml')
    assert len(data) == 200 and data['k199'] == ['a', 'b', {'c': 'd'}]
    with pytest.raises(YAMLFileError) as info:  # ... but aliases may not add more than MAX_VALUES
        load_yaml_text('a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n'
                       'c: [*b, *b]\n', 'bomb.yaml')
    assert str(info.value) == ('bomb.yaml: the document holds more than 100 values once its aliases '
                               'are expanded; write the data out or use fewer aliases')


def test_deep_nesting_is_refused():
    depth = loader.MAX_DEPTH
    assert load_yaml_text('x: ' + '[' * (depth - 1) + ']' * (depth - 1), 'deep.yaml') is not None
    for text in ('x: ' + '[' * depth + ']' * depth, '- ' * 2000 + 'x\n', '[' * 5000 + ']' * 5000):
        with pytest.raises(YAMLFileError) as info:
            load_yaml_text(text, 'deep.yaml')
        assert str(info.value) == 'deep.yaml: the document nests too deeply'
