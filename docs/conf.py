"""Sphinx configuration of the Occopus user guide.

Build it with ``make docs`` or ``sphinx-build -b html docs <output folder>``.
"""
import os
import re

_HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_HERE, '..', 'occo', '__init__.py'), encoding='utf-8') as _stream:
    release = re.search(r"__version__ = '([^']+)'", _stream.read()).group(1)
version = release

project = 'Occopus'
author = 'the Occopus developers'
copyright = 'the Occopus developers; Apache License 2.0'

extensions = []
templates_path = []
exclude_patterns = ['_build', '_*.rst']  # _name.rst: parts included by other pages
master_doc = 'index'
root_doc = 'index'
highlight_language = 'none'

html_theme = 'alabaster'
html_static_path = []
