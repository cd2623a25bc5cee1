"""Server-less Puppet: manifests, modules and hiera attributes handed to cloud-init."""
from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional

from occo.plugins.configmanagers.base import ConfigManager
from occo.schema import KeySchema, Problem, expect_list


class PuppetSoloConfigManager(ConfigManager):
    type = 'puppet_solo'
    keys = KeySchema(required=('manifests',), optional=('modules', 'attributes'))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield expect_list(section, 'manifests', items=str, what='a list of manifest URLs')
        yield expect_list(section, 'modules', items=str, what='a list of Puppet Forge module names')
        yield expect_list(section, 'attributes', items=Mapping,
                          what='a list of one-key mappings, e.g. [{dbuser: wp}]')

    @classmethod
    def template_variables(cls, section: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        """``puppet.modules``, ``puppet.manifests`` (space separated) and ``puppet.attributes``
        (each item as the original printed a Python dict, space separated), which the
        tutorials' cloud-init turns into hiera data."""
        section = section or {}
        return {'puppet': {
            'modules': ' '.join(section.get('modules') or []),
            'manifests': ' '.join(section.get('manifests') or []),
            'attributes': ' '.join(str(dict(item)) for item in section.get('attributes') or []),
        }}
