"""What the routes use, built once per lifespan, and their `Annotated` dependency aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from fastapi_app.metrics import MetricsBuffer
from shared.agent import AsyncAgentClient
from shared.settings import Settings
from shared.store import AsyncSessionStore


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: AsyncSessionStore
    shadow_store: AsyncSessionStore
    """The shadow table's: what shadow turns read and write (never the primary's)."""
    agent: AsyncAgentClient
    agent_endpoint: str
    version: str
    metrics: MetricsBuffer | None = None
    """Where chat turns record their CloudWatch metrics; None when metrics are off."""


def get_services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(get_services)]
