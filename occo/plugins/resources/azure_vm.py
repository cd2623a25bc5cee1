"""Microsoft Azure virtual machines."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from occo.plugins.resources.base import ResourceHandler, resource_keys
from occo.schema import Problem


class AzureVMHandler(ResourceHandler):
    type = 'azure_vm'
    keys = resource_keys(
        required=('endpoint', 'resource_group', 'location', 'vm_size', 'publisher', 'offer', 'sku',
                  'version', 'username'),
        optional=('password', 'ssh_key_data', 'server_name', 'vnet_name', 'subnet_name',
                  'public_ip_needed', 'customdata'))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield from super().validate(section)
        if 'password' not in section and 'ssh_key_data' not in section:
            yield Problem('Missing key(s): either "password" or "ssh_key_data" must be defined')
