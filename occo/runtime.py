"""The live services of one run: the store, credentials, and plugin instances.

Plugins are looked up by name in the registry and instantiated once per run (handlers keep
clients and connections), shared by the executor's threads.  Each resource handler gets a
typed :class:`~occo.plugins.resources.base.HandlerContext`: its own settings section of the
configuration, its credentials, a logger and -- for emulated clouds -- a registry of their
resources; never the store itself.  Each config manager gets a
:class:`~occo.plugins.configmanagers.base.ManagerContext` (its credentials from the
``config_management`` part of the auth data, a logger, the call time-out).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, Mapping, Optional

from occo import plugins
from occo.config import AuthData, Config
from occo.errors import ConfigError, OccoError
from occo.plugins.configmanagers.base import ConfigManager, ManagerContext
from occo.plugins.resources.base import HandlerContext, ResourceHandler
from occo.store import CloudRegistry, Store


class Runtime:
    """Store, configuration, credentials and the plugin instances built from them."""

    def __init__(self, config: Config, auth: AuthData, store: Store,
                 warn: Callable[[str], None]) -> None:
        self.config = config
        self.auth = auth
        self.store = store
        self.warn = warn
        self._plugins: Dict[Any, Any] = {}
        self._registries: Dict[str, CloudRegistry] = {}
        self._lock = threading.Lock()

    def _registry(self, name: str) -> CloudRegistry:
        if name not in self._registries:
            self._registries[name] = CloudRegistry(self.store, name)
        return self._registries[name]

    def _credentials(self, section: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        return self.auth.find('resource', section)

    def _context(self, name: str) -> HandlerContext:
        return HandlerContext(settings=dict(self.config.resources.get(name) or {}),
                              credentials=self._credentials,
                              log=logging.getLogger(f'occo.resources.{name}'),
                              registry=self._registry)

    def _manager_context(self, name: str) -> ManagerContext:
        def credentials(section: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
            return self.auth.find('config_management', section)
        return ManagerContext(credentials=credentials,
                              log=logging.getLogger(f'occo.configmanagers.{name}'),
                              call_timeout=self.config.call_timeout)

    def _instance(self, group: str, name: str) -> Any:
        with self._lock:
            if (group, name) not in self._plugins:
                cls = plugins.plugin_class(group, name)
                if cls is None:
                    raise OccoError(f"no plugin '{name}' in {group} (installed: "
                                    f"{', '.join(plugins.plugin_names(group))})")
                ctx = (self._context(name) if group == plugins.RESOURCES
                       else self._manager_context(name))
                self._plugins[group, name] = cls(ctx)
            return self._plugins[group, name]

    def handler(self, resource_type: str) -> ResourceHandler:
        """The resource handler for ``resource_type``."""
        return self._instance(plugins.RESOURCES, resource_type)

    def config_manager(self, cm_type: str) -> ConfigManager:
        """The config manager for ``cm_type``."""
        return self._instance(plugins.CONFIG_MANAGERS, cm_type)


def check_settings(config: Config) -> None:
    """:raises ConfigError: if ``resources`` names a resource type that does not exist or
    gives one a setting it does not take (checked before anything is created)."""
    for name, settings in config.resources.items():
        cls = plugins.plugin_class(plugins.RESOURCES, name)
        if cls is None:
            raise ConfigError(f"resources: there is no resource type '{name}' (types: "
                              f"{', '.join(plugins.plugin_names(plugins.RESOURCES))})",
                              source=config.source)
        allowed = cls.settings_keys.optional + cls.settings_keys.required
        unknown = sorted(set(settings) - set(allowed))
        if unknown:
            takes = f"takes {', '.join(allowed)}" if allowed else 'takes no settings'
            raise ConfigError(f"resources.{name}: unknown setting(s) {', '.join(unknown)} "
                              f'(resource type {name} {takes})', source=config.source)
