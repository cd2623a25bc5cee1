"""OpenStack Nova (Keystone v3 authentication)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from occo.plugins.resources.base import ResourceHandler, resource_keys
from occo.schema import Problem, expect_list, is_int


class NovaHandler(ResourceHandler):
    type = 'nova'
    keys = resource_keys(
        required=('endpoint', 'project_id', 'image_id', 'flavor_name'),
        optional=('user_domain_name', 'region_name', 'network_id', 'server_name', 'key_name',
                  'security_groups', 'floating_ip', 'floating_ip_pool', 'volume_size',
                  'volume_persist', 'tenant_name', 'name'))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield from super().validate(section)
        yield expect_list(section, 'security_groups')
        if 'volume_size' in section:
            value = section['volume_size']
            try:
                size = int(value) if not isinstance(value, bool) and (
                    is_int(value) or isinstance(value, str)) else None
            except ValueError:
                size = None
            if size is None:
                yield Problem(f'Could not convert volume_size value "{value}" to integer! '
                              '(expected a whole number of GB, 0 = size of the image)', ('volume_size',))
            elif size < 0:
                yield Problem('Negative numbers for volume_size are prohibited! '
                              '(expected 0 or more GB)', ('volume_size',))
