"""Microsoft Azure Container Instances."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from occo.plugins.resources.base import ResourceHandler, resource_keys
from occo.schema import Problem, expect_list, is_template


class AzureACIHandler(ResourceHandler):
    type = 'azure_aci'
    contexts = ('docker', 'basic')
    keys = resource_keys(
        required=('endpoint', 'resource_group', 'location', 'image', 'network_type', 'memory',
                  'cpu_cores', 'os_type'),
        optional=('ports', 'gpu_type', 'gpu_count', 'vnet_name', 'subnet_name'))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield from super().validate(section)
        network = section.get('network_type')
        if not is_template(network) and str(network).lower() not in ('public', 'private'):
            yield Problem(f'Network type "{network}" is not supported (expected Public or Private)',
                          ('network_type',))
        yield expect_list(section, 'ports')

    @classmethod
    def check_context(cls, context: Optional[Mapping[str, Any]]) -> Optional[Problem]:
        problem = super().check_context(context)
        if problem is None and context is not None and context.get('type') == 'docker' \
                and 'command' in context and not isinstance(context['command'], list):
            return Problem("'command' must be a list for resource type 'azure_aci' "
                           "(e.g. [sh, -c, 'echo hello'])", ('command',))
        return problem
