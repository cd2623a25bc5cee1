"""No user data: only attributes for the config manager."""
from __future__ import annotations

from occo.plugins.contexts.base import Context
from occo.schema import KeySchema


class BasicContext(Context):
    type = 'basic'
    keys = KeySchema(required=('attributes',))
