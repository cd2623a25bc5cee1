"""The YAML loader: import tags, safety, locations."""
from __future__ import annotations

import os

import pytest

from conftest import write
from occo.descriptions.loader import load_yaml_file, load_yaml_text, locate, to_plain
from occo.errors import YAMLFileError


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
