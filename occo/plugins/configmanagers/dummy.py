"""The default config manager: does nothing, always ready."""
from __future__ import annotations

from occo.plugins.configmanagers.base import ConfigManager


class DummyConfigManager(ConfigManager):
    type = 'dummy'
