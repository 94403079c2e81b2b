"""The fleet's traffic over the last minutes, as time series for the dashboard:
`GET /_gateway/stats` (to be built)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from harness.gateway.fleet import FleetCounters
from harness.gateway.metrics import GatewayMetrics

__all__ = ["stats_routes"]


def stats_routes(fleet: FleetCounters, metrics: GatewayMetrics) -> list[BaseRoute]:
    """The admin routes that serve the fleet's time series."""
    return []
