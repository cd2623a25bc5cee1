"""The live services of one run: the store, credentials, and plugin instances.

Plugins are looked up by name in the registry and instantiated once per run (handlers keep
clients and connections), shared by the executor's threads.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict

from occo import plugins
from occo.config import AuthData, Config
from occo.errors import OccoError
from occo.plugins.configmanagers.base import ConfigManager
from occo.plugins.resources.base import HandlerContext, ResourceHandler
from occo.store import Store


class Runtime:
    """Store, configuration, credentials and the plugin instances built from them."""

    def __init__(self, config: Config, auth: AuthData, store: Store,
                 warn: Callable[[str], None]) -> None:
        self.config = config
        self.auth = auth
        self.store = store
        self.warn = warn
        self._plugins: Dict[Any, Any] = {}
        self._lock = threading.Lock()
        self.context = HandlerContext(redis=store.client, prefix=store.prefix, config=config,
                                      auth=auth, log=logging.getLogger('occo.plugins'))

    def _instance(self, group: str, name: str) -> Any:
        with self._lock:
            if (group, name) not in self._plugins:
                cls = plugins.plugin_class(group, name)
                if cls is None:
                    raise OccoError(f"no plugin '{name}' in {group} (installed: "
                                    f"{', '.join(plugins.plugin_names(group))})")
                self._plugins[group, name] = cls(self.context)
            return self._plugins[group, name]

    def handler(self, resource_type: str) -> ResourceHandler:
        """The resource handler for ``resource_type``."""
        return self._instance(plugins.RESOURCES, resource_type)

    def config_manager(self, cm_type: str) -> ConfigManager:
        """The config manager for ``cm_type``."""
        return self._instance(plugins.CONFIG_MANAGERS, cm_type)
