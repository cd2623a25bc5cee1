"""The facade: everything the command line, the REST service and Python users can do.

Callers build an :class:`Occopus` from a :class:`~occo.config.Config` and call its methods;
they never reach below this module.  Every method raises :class:`~occo.errors.OccoError`
subclasses with messages meant for the user.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from occo.compiler import InfraGraph, compile_infra
from occo.config import AuthData, Config
from occo.descriptions.infra import InfraDescription, load_infra_description
from occo.descriptions.nodedefs import NodeDefinition, load_node_definitions
from occo.planner import Plan, make_plan
from occo.store import Store


@dataclass
class ImportResult:
    """What ``occopus-import`` stored."""

    names: List[str]
    namespace: str
    source: str


@dataclass
class DryRun:
    """A compiled infrastructure and the plan that would build it."""

    graph: InfraGraph
    plan: Plan


Warn = Callable[[str], None]


class Occopus:
    """One user's view of Occopus: a configuration, credentials and the store they point to.

    :param warn: called with each warning (e.g. an inferred dependency) as soon as it arises;
        by default warnings go to the ``occo`` logger.
    """

    def __init__(self, config: Config, *, auth: Optional[AuthData] = None,
                 store: Optional[Store] = None, warn: Optional[Warn] = None) -> None:
        self.config = config
        self.auth = auth or AuthData()
        self._store = store
        self.warn: Warn = warn or logging.getLogger('occo').warning

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store.connect(self.config.redis_url, self.config.redis_prefix)
        return self._store

    # -- node definitions --------------------------------------------------------------------

    def import_nodes(self, path: str) -> ImportResult:
        """Check every node definition in the file at ``path``, then store them all at once.

        Nothing is stored if any definition is wrong.
        """
        definitions = load_node_definitions(path)
        self.store.put_node_definitions(
            self.config.namespace, {name: d.to_json() for name, d in definitions.items()})
        return ImportResult(names=list(definitions), namespace=self.config.namespace, source=path)

    def node_definitions(self, types: List[str]) -> Dict[str, NodeDefinition]:
        """The imported definitions of ``types`` (absent ones are left out)."""
        stored = self.store.get_node_definitions(self.config.namespace, types)
        return {name: NodeDefinition.from_json(data) for name, data in stored.items()}

    # -- infrastructures ---------------------------------------------------------------------

    def compile(self, desc: InfraDescription, infra_id: Optional[str] = None
                ) -> Tuple[InfraGraph, Dict[str, NodeDefinition]]:
        """Compile ``desc`` against the imported node definitions of its types; returns the
        graph and those definitions."""
        types = sorted({node.type for node in desc.nodes})
        nodedefs = self.node_definitions(types)
        known = None
        if len(nodedefs) < len(types):  # the compiler names the node; list what is imported
            known = self.store.node_definition_types(self.config.namespace)
        graph = compile_infra(desc, nodedefs, infra_id=infra_id,
                              user_id=desc.user_id or self.config.namespace, known_types=known)
        for message in graph.warnings:
            self.warn(message)
        return graph, nodedefs

    def load_description(self, path: str) -> InfraDescription:
        """Load and check the infrastructure description at ``path`` (warnings are reported)."""
        desc = load_infra_description(path)
        for message in desc.warnings:
            self.warn(message)
        return desc

    def dry_run(self, path: str, infra_id: Optional[str] = None) -> DryRun:
        """Check, compile and plan the infrastructure description at ``path``.

        Reads the node definitions; writes nothing and calls no cloud.
        """
        graph, nodedefs = self.compile(self.load_description(path), infra_id)
        resources = {name: [impl.resource for impl in nodedefs[node.type].implementations]
                     for name, node in graph.nodes.items()}
        return DryRun(graph=graph, plan=make_plan(graph, resources))
