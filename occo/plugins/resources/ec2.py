"""Amazon EC2 (and EC2-compatible clouds such as OpenNebula)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from occo.plugins.resources.base import ResourceHandler, resource_keys
from occo.schema import Problem, expect_list, type_name


class EC2Handler(ResourceHandler):
    type = 'ec2'
    keys = resource_keys(
        required=('endpoint', 'regionname', 'image_id', 'instance_type'),
        optional=('key_name', 'security_group_ids', 'subnet_id', 'tags', 'name'))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield from super().validate(section)
        yield expect_list(section, 'security_group_ids')
        tags = section.get('tags')
        # The original needs a mapping; its docs say "list of key-value pairs": accept both.
        if 'tags' in section and not isinstance(tags, Mapping) and not (
                isinstance(tags, list) and all(isinstance(t, Mapping) for t in tags)):
            yield Problem(f"'tags' must be a mapping of tag names to values, got {type_name(tags)}",
                          ('tags',))
