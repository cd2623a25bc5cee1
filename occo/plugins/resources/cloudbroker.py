"""The CloudBroker platform."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from occo.plugins.resources.base import ResourceHandler, resource_keys
from occo.schema import Problem, join, type_name

DESCRIPTION_REQUIRED = ('deployment_id', 'instance_type_id')


class CloudBrokerHandler(ResourceHandler):
    type = 'cloudbroker'
    keys = resource_keys(required=('endpoint', 'description'), optional=('name', 'start_in_vpc'))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield from super().validate(section)
        yield check_description(section.get('description'), DESCRIPTION_REQUIRED)


def check_description(description: Any, required: tuple) -> Optional[Problem]:
    """The ``description`` mapping shared by CloudBroker and CloudSigma resources."""
    if not isinstance(description, Mapping):
        return Problem(f"'description' must be a mapping with {join(required)}, "
                       f'got {type_name(description)}', ('description',))
    missing = [k for k in required if k not in description]
    if missing:
        return Problem(f'Missing key(s) in description: {join(missing)} '
                       f'(description requires {join(required)})', ('description',))
    return None
