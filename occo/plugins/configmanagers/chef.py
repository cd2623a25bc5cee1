"""Chef server: one environment per infrastructure, one node per instance."""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from occo.errors import NotImplementedYet
from occo.plugins.configmanagers.base import ConfigManager
from occo.schema import KeySchema, Problem, expect_list


class ChefConfigManager(ConfigManager):
    type = 'chef'
    buildable = False
    keys = KeySchema(required=('endpoint', 'run_list'))

    @classmethod
    def validate(cls, section: Mapping[str, Any]) -> Iterable[Optional[Problem]]:
        yield expect_list(section, 'run_list', items=str, what='a list of recipes, e.g. [recipe[apache2]]')

    def prepare(self, infra_id: str, node: str, node_id: str,
                section: Optional[Mapping[str, Any]]) -> None:
        raise NotImplementedYet(f"node '{node}': config manager type 'chef' can be checked and "
                                'rendered, but building with a Chef server is not implemented in '
                                'this release')
