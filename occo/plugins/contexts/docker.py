"""Environment and command of a container (docker, azure_aci)."""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Optional

from occo.plugins.base import string_leaves
from occo.plugins.contexts.base import Context, Template
from occo.schema import KeySchema, Problem, expect_list, type_name


class DockerContext(Context):
    type = 'docker'
    keys = KeySchema(required=('env',), optional=('command', 'context_variables'))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield expect_list(section, 'env', items=str, what='a list of "NAME=value" texts')
        command = section.get('command')
        if 'command' in section and not isinstance(command, (str, list)):
            yield Problem(f"'command' must be text or a list, got {type_name(command)}", ('command',))
        variables = section.get('context_variables')
        if 'context_variables' in section and not isinstance(variables, (str, Mapping)):
            yield Problem("'context_variables' must be YAML text or a mapping, "
                          f'got {type_name(variables)}', ('context_variables',))

    @classmethod
    def templates(cls, section: Mapping[str, Any]) -> Iterator[Template]:
        for key in ('env', 'command', 'context_variables'):
            yield from string_leaves(section.get(key), (key,))
