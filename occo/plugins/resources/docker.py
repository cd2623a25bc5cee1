"""Docker hosts and Swarm endpoints (no TLS), one container per node instance."""
from __future__ import annotations

from typing import Any, Mapping, Optional

from occo.plugins.resources.base import ResourceHandler, resource_keys
from occo.schema import Problem


class DockerHandler(ResourceHandler):
    type = 'docker'
    contexts = ('docker',)
    # The original's docs give `tag` a default (latest) and let `origin` be empty (Docker Hub)
    # while its schema required both; we follow the docs, so existing files still pass.
    keys = resource_keys(required=('endpoint', 'image'), optional=('origin', 'tag', 'name'))

    @classmethod
    def check_context(cls, context: Optional[Mapping[str, Any]]) -> Optional[Problem]:
        problem = super().check_context(context)
        if problem is None:
            for key in ('env', 'command'):
                if not (context or {}).get(key):
                    return Problem(f"resource type 'docker' needs a non-empty '{key}' in its docker "
                                   'contextualisation (both env and command)', (key,) if context else ())
        return problem
