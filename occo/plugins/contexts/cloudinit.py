"""cloud-init user data (ec2, nova, azure_vm, cloudbroker, cloudsigma, dummy, local)."""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Optional

from occo.errors import TemplateError
from occo.plugins.base import string_leaves
from occo.plugins.contexts.base import Context, Render, RenderedContext, Template, render_tree
from occo.schema import KeySchema, Problem, type_name

CLOUD_CONFIG_HEADER = '#cloud-config'


def cloud_config_text(template: Any) -> str:
    """The text of a ``context_template``: a mapping (``!yaml_import``) becomes YAML with
    ``#cloud-config`` on top; text (``!text_import`` or inline) is used as it is.
    ``template`` is plain data (dicts, lists, scalars)."""
    if isinstance(template, Mapping):
        import yaml
        body = yaml.safe_dump(template, default_flow_style=False, sort_keys=False,
                              allow_unicode=True, width=1 << 30)
        return f'{CLOUD_CONFIG_HEADER}\n{body}'
    return template


class CloudInitContext(Context):
    type = 'cloudinit'
    keys = KeySchema(required=('context_template',), optional=('attributes',))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        template = section.get('context_template')
        if not isinstance(template, (str, Mapping)):
            yield Problem("'context_template' must be cloud-init text (inline or !text_import) or a "
                          f'mapping (!yaml_import), got {type_name(template)}', ('context_template',))

    @classmethod
    def templates(cls, section: Mapping[str, Any]) -> Iterator[Template]:
        # A mapping template is rendered value by value before it becomes YAML text, so that
        # rendered values can never break the YAML around them (the original rendered the dumped
        # text, where a quote in a value or in a Jinja expression could corrupt it).  The line
        # breaks of substituted values fold as they did in the original's text (see render).
        yield from string_leaves(section['context_template'], ('context_template',))
        yield from string_leaves(section.get('attributes'), ('attributes',))

    @classmethod
    def render(cls, section: Optional[Mapping[str, Any]], render: Render) -> RenderedContext:
        template = section['context_template']
        if isinstance(template, Mapping):
            # The original rendered the dumped YAML text as a whole, so YAML folded the line
            # breaks that a substituted value brought (a blank line became one line break, a
            # single break a space); tutorials write SSH keys with blank lines between their
            # lines and rely on it.  Each value is rendered on its own, with that folding.
            def render_value(text: str, what: str) -> str:
                return render(text, what, fold=True)
            text = cloud_config_text(render_tree(template, render_value, 'context_template'))
        else:
            text = render(template, 'context_template', whole_text=True)
            check_cloud_config(text)
        attributes = render_tree(section.get('attributes') or {}, render, 'attributes')
        return RenderedContext(cls.type, user_data=text, attributes=attributes)


def check_cloud_config(text: str) -> None:
    """:raises TemplateError: if ``text`` says it is a cloud-config but is not valid YAML."""
    if not text.lstrip().startswith(CLOUD_CONFIG_HEADER):
        return
    import yaml
    try:
        yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f' at line {mark.line + 1}' if mark else ''
        raise TemplateError(f'context_template: the rendered cloud-config is not valid YAML{line}: '
                            f'{exc.problem or exc.context} (fix the template so that it renders '
                            'to YAML)') from None
    except yaml.YAMLError as exc:
        raise TemplateError(f'context_template: the rendered cloud-config is not valid YAML: {exc}') from None
