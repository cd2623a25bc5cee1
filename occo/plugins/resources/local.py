"""Node instances as process groups on this machine, each with its own loopback address."""
from __future__ import annotations

import ipaddress
from typing import Any, Iterable, Mapping, Optional

from occo.plugins.resources.base import ResourceHandler, resource_keys
from occo.schema import Problem, is_template

LOOPBACK = ipaddress.ip_network('127.0.0.0/8')
RESERVED = ipaddress.ip_address('127.0.0.1')


class LocalHandler(ResourceHandler):
    type = 'local'
    keys = resource_keys(optional=('address', 'name'))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield from super().validate(section)
        address = section.get('address')
        if address is not None and not is_template(address):
            try:
                ip = ipaddress.ip_address(str(address))
            except ValueError:
                ip = None
            if ip is None or ip not in LOOPBACK or ip == RESERVED:
                yield Problem(f"'address' must be a loopback address in 127.0.0.0/8 other than "
                              f"127.0.0.1, got {address!r}", ('address',))
