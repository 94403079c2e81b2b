"""The dashboard: one page and its assets, served by the gateway at `/_gateway/ui` (to be
built)."""

from __future__ import annotations

from starlette.routing import BaseRoute

__all__ = ["ui_routes"]


def ui_routes() -> list[BaseRoute]:
    """The admin routes that serve the dashboard."""
    return []
