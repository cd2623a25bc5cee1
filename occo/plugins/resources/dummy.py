"""A simulated cloud for tests, benchmarks and dry runs."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from occo.plugins.resources.base import ResourceHandler, resource_keys
from occo.schema import Problem, expect_number


class DummyHandler(ResourceHandler):
    type = 'dummy'
    contexts = ('cloudinit', 'docker', 'basic')
    keys = resource_keys(optional=('boot_time', 'create_time', 'fail_rate', 'name'))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield from super().validate(section)
        yield expect_number(section, 'boot_time')
        yield expect_number(section, 'create_time')
        yield expect_number(section, 'fail_rate', maximum=1)
