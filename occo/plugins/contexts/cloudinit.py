"""cloud-init user data (ec2, nova, azure_vm, cloudbroker, cloudsigma, dummy, local)."""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Optional

from occo.plugins.base import string_leaves
from occo.plugins.contexts.base import Context, Template
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
        # text, where a quote in a value or in a Jinja expression could corrupt it).
        yield from string_leaves(section['context_template'], ('context_template',))
        yield from string_leaves(section.get('attributes'), ('attributes',))
