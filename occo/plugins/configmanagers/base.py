"""Config managers: what configures a node once its resource runs."""
from __future__ import annotations

from occo.plugins.base import Plugin


class ConfigManager(Plugin):
    """Base of config managers."""

    @classmethod
    def describe(cls) -> str:
        return f"config manager type '{cls.type}'"
