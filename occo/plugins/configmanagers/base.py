"""Config managers: what configures a node once its resource runs."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from occo.plugins.base import Plugin


class ConfigManager(Plugin):
    """Base of config managers: by default nothing to do and always done."""

    #: Whether instances using it can be built in this release.
    buildable = True

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    @classmethod
    def describe(cls) -> str:
        return f"config manager type '{cls.type}'"

    @classmethod
    def template_variables(cls, section: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        """Extra names this config manager gives the node's templates (rendered ``section``)."""
        return {}

    def prepare(self, infra_id: str, node: str, node_id: str,
                section: Optional[Mapping[str, Any]]) -> None:
        """Register a new instance before its resource is created."""

    def ready(self, record: Mapping[str, Any]) -> bool:
        """True once the instance is configured."""
        return True

    def drop(self, record: Mapping[str, Any]) -> None:
        """Forget an instance whose resource was dropped."""
