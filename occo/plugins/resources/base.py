"""The resource-handler interface shared by every cloud."""
from __future__ import annotations

from typing import Any, ClassVar, Iterable, Mapping, Optional, Tuple

from occo.plugins.base import Plugin
from occo.schema import KeySchema, Problem, expect_number

#: Keys every resource section may carry, whatever its type (our extension).
COMMON_OPTIONAL = ('create_timeout',)

VM_CONTEXTS = ('cloudinit', 'basic')


def resource_keys(required: Tuple[str, ...] = (), optional: Tuple[str, ...] = ()) -> KeySchema:
    return KeySchema(required=required, optional=optional + COMMON_OPTIONAL)


class ResourceHandler(Plugin):
    """Base of resource handlers.

    :attr:`contexts` lists the contextualisation types this cloud can take; an implementation
    without a ``contextualisation`` section counts as ``basic``.
    """

    contexts: ClassVar[Tuple[str, ...]] = VM_CONTEXTS

    @classmethod
    def describe(cls) -> str:
        return f"resource type '{cls.type}'"

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield expect_number(section, 'create_timeout', minimum=1)

    @classmethod
    def check_context(cls, context: Optional[Mapping[str, Any]]) -> Optional[Problem]:
        """Problem if this cloud cannot take ``context`` (the contextualisation section)."""
        context_type = (context or {}).get('type', 'basic')
        if context_type not in cls.contexts:
            if context is None:
                return Problem(f"{cls.describe()} needs a contextualisation section of type "
                               f"{' or '.join(cls.contexts)}")
            return Problem(f"contextualisation type '{context_type}' cannot be used with "
                           f"{cls.describe()} (use {' or '.join(cls.contexts)})", ('type',))
        return None
