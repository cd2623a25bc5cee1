"""Chef server: one environment per infrastructure, one role per node, one Chef node per instance.

For each new instance (reference §5.1), before its resource is created: the environment
``<infra_id>`` and the role ``<infra_id>_<node>`` are ensured, then the Chef node ``<node_id>``
is made in that environment with the run list ``role[<infra_id>_<node>]``, ``recipe[connect]``
and the section's ``run_list``, and as normal attributes the rendered
``contextualisation.attributes`` (a dotted key makes nested attributes) plus ``connections``
from the description's mappings.  The instance is configured once chef-client has checked in
(the node has ``automatic.ohai_time``).  Dropping an instance deletes its node; forgetting the
infrastructure deletes the nodes left in its environment, its roles and the environment.

Credentials: the ``config_management`` section of ``auth_data.yaml``, entries with
``type: chef`` (and optionally ``endpoint``) and ``auth_data: {client_name, client_key}`` where
``client_key`` is the PEM text; optional ``sign_version: '1.0'`` for servers that only know
the old signing protocol.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from occo.errors import AuthError, CloudError, OccoError, TransientCloudError
from occo.instances import State
from occo.plugins.configmanagers.base import ConfigManager, Registration
from occo.plugins.http import url_part
from occo.redact import mask_url, printable
from occo.schema import KeySchema, Problem, expect_list

READY_TIMEOUT = 5.0  # seconds at most for the question whether a node checked in
#: seconds a server that did not answer that question is not asked again (the question is
#: asked on the engine's monitor thread: a hung server must not hold it once per instance)
READY_QUIET = 10.0
AUTH_KEYS = ('client_name', 'client_key', 'sign_version')


class ChefConfigManager(ConfigManager):
    type = 'chef'
    buildable = True
    needs_credentials = True
    keeps_infra = True
    keys = KeySchema(required=('endpoint', 'run_list'))

    def __init__(self, ctx: Any = None) -> None:
        super().__init__(ctx)
        self._quiet_until: Dict[str, float] = {}  # endpoint -> when to ask it again

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield expect_list(section, 'run_list', items=str,
                          what='a list of recipes, e.g. [recipe[apache2]]')

    # -- the client ------------------------------------------------------------------------

    def _client_of(self, section: Mapping[str, Any]) -> Any:
        """The API client of ``section``'s server and credentials, made once per run.

        :raises AuthError: if the credentials are missing or unusable (never showing them).
        """
        return self.client(self.endpoint(section), self.credentials(section))

    def make_client(self, endpoint: str, credentials: Optional[Mapping[str, Any]]) -> Any:
        from occo.plugins.configmanagers import chefapi
        credentials = credentials or {}
        where = f'the chef entry of auth_data.yaml for {printable(mask_url(endpoint))}'
        unknown = sorted(set(credentials) - set(AUTH_KEYS))
        if unknown:
            raise AuthError(f"{where}: unknown key(s) {', '.join(map(str, unknown))} "
                            f"(a chef entry takes {', '.join(AUTH_KEYS)})")
        name = credentials.get('client_name')
        if not isinstance(name, str) or not name.strip():
            raise AuthError(f'{where}: client_name must be the name of the Chef client or user')
        version = str(credentials.get('sign_version', chefapi.DEFAULT_SIGN_VERSION))
        if version not in chefapi.SIGN_VERSIONS:
            raise AuthError(f"{where}: sign_version must be {' or '.join(chefapi.SIGN_VERSIONS)}")
        try:
            signer = chefapi.Signer(name, chefapi.load_key(credentials.get('client_key')), version)
        except chefapi.ChefKeyError as exc:
            raise AuthError(f'{where}: {exc}') from None
        try:
            return chefapi.ChefClient(endpoint, signer, self.ctx.call_timeout)
        except ValueError as exc:
            raise CloudError(self.cloud_said({'endpoint': endpoint}, exc)) from None

    def _call(self, section: Mapping[str, Any], method: str, path: str, body: Any = None, *,
              missing_ok: bool = False, conflict_ok: bool = False,
              timeout: Optional[float] = None) -> Any:
        """One request; errors mapped to :class:`CloudError` (for good) or
        :class:`TransientCloudError` (the engine retries).  Returns None for a 404 with
        ``missing_ok`` and a 409 with ``conflict_ok``."""
        from occo.plugins.configmanagers import chefapi
        client = self._client_of(section)
        what = f'{method} {path}'
        try:
            return client.request(method, path, body, timeout=timeout)
        except chefapi.ChefUnreachable as exc:
            raise TransientCloudError(self.cloud_said(section, f'{what}: {exc}'),
                                      unsent=exc.unsent) from None
        except chefapi.ChefAnswerError as exc:
            raise CloudError(self.cloud_said(section, f'{what}: {exc}')) from None
        except chefapi.ChefHTTPError as exc:
            if exc.status == 404 and missing_ok or exc.status == 409 and conflict_ok:
                return None
            raise self._refused(section, what, exc) from None

    def _refused(self, section: Mapping[str, Any], what: str, exc: Any) -> CloudError:
        status = exc.status
        text = f'{what} refused (HTTP {status}): {exc.said}'
        if status == 429 or status >= 500:
            return TransientCloudError(self.cloud_said(section, text))
        if status == 401:
            text += (' -- the server refused the credentials: check client_name and client_key '
                     'of the matching chef entry of auth_data.yaml')
        elif status == 403:
            text += ' -- the client is not allowed this call: give it admin rights on the server'
        elif status == 404:
            text += (' -- no such object: is the endpoint the server URL (with '
                     '/organizations/<org> for an organisation)?')
        return CloudError(self.cloud_said(section, text))

    # -- operations ------------------------------------------------------------------------

    @staticmethod
    def role_name(infra_id: str, node: str) -> str:
        return f'{infra_id}_{node}'

    def prepare(self, registration: Registration) -> None:
        section, infra_id = registration.section, registration.infra_id
        role = self.role_name(infra_id, registration.node)
        self._call(section, 'POST', 'environments', {
            'name': infra_id, 'json_class': 'Chef::Environment', 'chef_type': 'environment',
            'description': f'Occopus infrastructure {registration.infra_name} ({infra_id})',
            'cookbook_versions': {}, 'default_attributes': {}, 'override_attributes': {}},
            conflict_ok=True)
        self._call(section, 'POST', 'roles', {
            'name': role, 'json_class': 'Chef::Role', 'chef_type': 'role',
            'description': f"node '{registration.node}' of Occopus infrastructure {infra_id}",
            'run_list': [], 'env_run_lists': {}, 'default_attributes': {},
            'override_attributes': {}}, conflict_ok=True)
        normal = dotted(registration.attributes)
        normal['connections'] = list(registration.connections)
        node = {'name': registration.node_id, 'chef_environment': infra_id,
                'json_class': 'Chef::Node', 'chef_type': 'node',
                'run_list': [f'role[{role}]', 'recipe[connect]',
                             *(registration.section.get('run_list') or [])],
                'normal': normal, 'automatic': {}, 'default': {}, 'override': {}}
        made = self._call(section, 'POST', 'nodes', node, conflict_ok=True)
        if made is None:  # an earlier attempt made it (its answer was lost): bring it up to date
            try:
                self._call(section, 'PUT', f'nodes/{url_part(registration.node_id)}', node)
            except CloudError as exc:
                if not isinstance(exc, TransientCloudError):  # refused for good: leave nothing
                    self._forget_node(section, registration.node_id)
                raise

    def _forget_node(self, section: Mapping[str, Any], name: str) -> None:
        try:
            self.drop_node(section, name)
        except CloudError:
            pass  # in the infrastructure's environment: forget_infra deletes it

    def drop_node(self, section: Mapping[str, Any], name: str) -> None:
        self._call(section, 'DELETE', f'nodes/{url_part(name)}', missing_ok=True)

    def ready(self, record: Any) -> bool:
        if record.state == State.READY:
            return True  # checked in once: a manage pass need not ask for every node again
        section = record.config_management or {}
        endpoint = self.endpoint(section)
        if time.monotonic() < self._quiet_until.get(endpoint, 0.0):
            return False  # it failed to answer a moment ago: not ready as far as we know
        try:
            node = self._call(section, 'GET', f'nodes/{url_part(record.node_id)}', missing_ok=True,
                              timeout=min(READY_TIMEOUT, self.ctx.call_timeout))
        except Exception as exc:  # noqa: BLE001 - not ready as far as we can tell; asked again
            if isinstance(exc, TransientCloudError) or not isinstance(exc, CloudError):
                self._quiet_until[endpoint] = time.monotonic() + READY_QUIET
            self.ctx.log.warning("node '%s' (instance %s): %s", record.node, record.node_id[:8],
                                 exc if isinstance(exc, OccoError) else type(exc).__name__)
            return False
        automatic = node.get('automatic') if isinstance(node, dict) else None
        return isinstance(automatic, dict) and automatic.get('ohai_time') not in (None, '', 0)

    def _names(self, section: Mapping[str, Any], path: str) -> List[str]:
        """The names of a Chef listing (``{name: url}``; none if it is missing)."""
        listing = self._call(section, 'GET', path, missing_ok=True)
        if listing is None:
            return []
        if not isinstance(listing, dict) or not all(isinstance(k, str) for k in listing):
            raise CloudError(self.cloud_said(section, f'GET {path}: the answer is not a mapping of '
                                                f'names to URLs but {type(listing).__name__}'))
        return sorted(listing)

    def drop(self, record: Any) -> None:
        self.drop_node(record.config_management or {}, record.node_id)

    def forget_infra(self, infra_id: str, sections: Sequence[Mapping[str, Any]]) -> None:
        for section in sections:
            env = url_part(infra_id)
            for name in self._names(section, f'environments/{env}/nodes'):
                self.drop_node(section, name)
            prefix = f'{infra_id}_'
            for name in self._names(section, 'roles'):
                if name.startswith(prefix):
                    self._call(section, 'DELETE', f'roles/{url_part(name)}', missing_ok=True)
            self._call(section, 'DELETE', f'environments/{env}', missing_ok=True)


def dotted(attributes: Mapping[str, Any]) -> Dict[str, Any]:
    """Normal attributes from ``attributes``: a top-level key ``a.b`` sets ``{a: {b: ...}}``
    (as the original's ``set_dotted``); nested mappings merge."""
    result: Dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        parts = str(key).split('.')
        target = result
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        last = parts[-1]
        if isinstance(value, Mapping) and isinstance(target.get(last), dict):
            target[last] = _merged(target[last], value)
        else:
            target[last] = value
    return result


def _merged(base: Dict[str, Any], extra: Mapping[str, Any]) -> Dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged
