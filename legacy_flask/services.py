"""What the legacy views use, built once per app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from flask import current_app

from shared.agent import AgentClient
from shared.settings import Settings
from shared.store import SessionStore


@dataclass(frozen=True)
class Services:
    KEY: ClassVar[str] = "dualstack"

    settings: Settings
    store: SessionStore
    shadow_store: SessionStore
    """The shadow table's: what shadow turns read and write (never the primary's)."""
    agent: AgentClient
    version: str


def services() -> Services:
    """The current app's services."""
    found: Services = current_app.extensions[Services.KEY]
    return found
