"""CloudSigma."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from occo.plugins.resources.base import ResourceHandler, resource_keys
from occo.plugins.resources.cloudbroker import check_description
from occo.schema import Problem

DESCRIPTION_REQUIRED = ('cpu', 'mem', 'vnc_password')


class CloudSigmaHandler(ResourceHandler):
    type = 'cloudsigma'
    keys = resource_keys(required=('endpoint', 'libdrive_id', 'description'), optional=('name',))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield from super().validate(section)
        yield check_description(section.get('description'), DESCRIPTION_REQUIRED)
