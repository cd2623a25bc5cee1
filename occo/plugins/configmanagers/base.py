"""Config managers: what configures a node once its resource runs.

Like resource handlers, a config manager only speaks its service's API: the engine calls
:meth:`ConfigManager.prepare`, :meth:`~ConfigManager.drop` and
:meth:`~ConfigManager.forget_infra` bounded in time and retries them on
:class:`~occo.errors.TransientCloudError` (see :mod:`occo.calls`).  :meth:`~ConfigManager.ready`
is asked while the engine polls and must answer quickly and never raise.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Sequence

from occo.errors import AuthError
from occo.plugins.base import ServicePlugin
from occo.redact import printable


def _no_credentials(section: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    return None


@dataclass
class ManagerContext:
    """What a config manager is given: a way to find the credentials of a (rendered)
    ``config_management`` section in ``auth_data.yaml``, a logger, and the limit of one call
    to its service (``call_timeout``)."""

    credentials: Callable[[Mapping[str, Any]], Optional[Dict[str, Any]]] = _no_credentials
    log: logging.Logger = field(default_factory=lambda: logging.getLogger('occo.configmanagers'))
    call_timeout: float = 60.0


@dataclass
class Registration:
    """A new instance to register before its resource is created: its rendered
    ``config_management`` section (``section``), the rendered ``contextualisation.attributes``
    and the ``connections`` its inbound mappings make (reference §1.3)."""

    infra_id: str
    infra_name: str
    node: str
    node_id: str
    section: Dict[str, Any]
    attributes: Dict[str, Any] = field(default_factory=dict)
    connections: List[Dict[str, Any]] = field(default_factory=list)


class ConfigManager(ServicePlugin):
    """Base of config managers: by default nothing to do and always done."""

    #: Whether instances using it can be built in this release.
    buildable: ClassVar[bool] = True
    #: whether every call needs an auth-data entry (checked before a build creates anything)
    needs_credentials: ClassVar[bool] = False
    #: whether it keeps something per infrastructure (see :meth:`forget_infra`)
    keeps_infra: ClassVar[bool] = False

    ctx: ManagerContext

    def __init__(self, ctx: Optional[ManagerContext] = None) -> None:
        super().__init__(ctx or ManagerContext())

    @classmethod
    def describe(cls) -> str:
        return f"config manager type '{cls.type}'"

    @classmethod
    def template_variables(cls, section: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        """Extra names this config manager gives the node's templates (rendered ``section``)."""
        return {}

    @classmethod
    def no_credentials(cls, section: Mapping[str, Any]) -> AuthError:
        """The error for a section no auth-data entry matches."""
        where = printable(str(section.get('endpoint') or ''))
        return AuthError(f'Authorisation information is not set for the target {cls.type} server '
                         f'{where}'.rstrip() + f': add an entry with type: {cls.type} (and '
                         'endpoint) to the config_management section of auth_data.yaml')

    def prepare(self, registration: Registration) -> None:
        """Register a new instance before its resource is created.  Idempotent (the engine
        may call it again after a transient error); if it fails for good, it leaves nothing of
        the instance behind."""

    def ready(self, record: Any) -> bool:
        """True once the instance (an :class:`~occo.instances.Instance`) is configured;
        False while it is not, or cannot be told now.  Never raises."""
        return True

    def drop(self, record: Any) -> None:
        """Forget an instance whose resource was dropped; forgetting what is gone is not an
        error."""

    def forget_infra(self, infra_id: str, sections: Sequence[Mapping[str, Any]]) -> None:
        """Forget everything kept for infrastructure ``infra_id`` on the services of
        ``sections`` (distinct rendered sections of this type): called once when it is
        destroyed or its build is rolled back, after its instances were dropped.  Idempotent."""
