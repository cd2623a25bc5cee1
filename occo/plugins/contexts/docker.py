"""Environment and command of a container (docker, azure_aci)."""
from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, Mapping, Optional

from occo.errors import TemplateError
from occo.plugins.base import string_leaves
from occo.plugins.contexts.base import Context, Render, RenderedContext, Template, render_tree
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

    @classmethod
    def render(cls, section: Optional[Mapping[str, Any]], render: Render) -> RenderedContext:
        extra: Dict[str, Any] = {}
        variables = section.get('context_variables')
        if variables is not None:
            import yaml
            text = render_tree(variables, render, 'context_variables')
            try:
                loaded = yaml.safe_load(text) if isinstance(text, str) else text
            except yaml.YAMLError as exc:
                mark = getattr(exc, 'problem_mark', None)
                where = f' at line {mark.line + 1}' if mark else ''
                problem = getattr(exc, 'problem', None) or 'invalid YAML'
                raise TemplateError(f'context_variables: the rendered text is not valid YAML'
                                    f'{where}: {problem}') from None
            if not isinstance(loaded, Mapping):
                raise TemplateError('context_variables must render to a mapping of names to values')
            extra = dict(loaded)

        def render_with(text: str, what: str) -> str:
            return render(text, what, extra)
        env = render_tree(section.get('env') or [], render_with, 'env')
        command = render_tree(section.get('command'), render_with, 'command')
        return RenderedContext(cls.type, env=env, command=command)
