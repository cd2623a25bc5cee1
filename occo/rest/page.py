"""The status page at ``/``: the infrastructures, their nodes and instances, and the latest
events, for people (filled in by the status-page work)."""
from __future__ import annotations

from typing import Any, List


def add_status_page(app: Any, session: Any, guarded: List[Any]) -> None:
    """Register the status page routes on ``app`` (guarded like the API)."""
