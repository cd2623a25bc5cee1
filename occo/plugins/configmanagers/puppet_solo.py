"""Server-less Puppet: manifests, modules and hiera attributes handed to cloud-init."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

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
