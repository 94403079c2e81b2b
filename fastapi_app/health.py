"""`GET /health` and `GET /health/detailed`."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from fastapi_app.models import Check, DetailedHealthResponse, HealthResponse
from fastapi_app.services import Services, ServicesDep

router = APIRouter(tags=["health"])


def _environment(services: Services) -> str:
    settings = services.settings
    if settings.environment:
        return settings.environment
    return "development" if settings.debug else "production"


@router.get("/health", response_model=HealthResponse)
async def health(services: ServicesDep) -> HealthResponse:
    return HealthResponse(
        status="healthy",
        timestamp=time.time(),
        version=services.version,
        environment=_environment(services),
    )


@router.get(
    "/health/detailed",
    response_model=DetailedHealthResponse,
    responses={503: {"model": DetailedHealthResponse}},
)
async def health_detailed(services: ServicesDep) -> JSONResponse:
    """Real checks: the session table answers DescribeTable; the agent endpoint accepts
    a connection (invoking the agent would cost a model call)."""
    dynamodb, agent = await asyncio.gather(_store_check(services), _agent_check(services))
    healthy = dynamodb.ok and agent.ok
    body = DetailedHealthResponse(
        status="healthy" if healthy else "unhealthy",
        timestamp=time.time(),
        version=services.version,
        environment=_environment(services),
        checks={"dynamodb": dynamodb, "agent": agent},
    )
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)


async def _store_check(services: Services) -> Check:
    started = time.perf_counter()
    try:
        await services.store.check()
    except Exception:
        return Check(ok=False, latency_ms=_since(started))
    return Check(ok=True, latency_ms=_since(started))


async def _agent_check(services: Services) -> Check:
    started = time.perf_counter()
    url = urlsplit(services.agent_endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    timeout = services.settings.agent_connect_timeout_seconds
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(url.hostname, port), timeout)
    except (OSError, TimeoutError):
        return Check(ok=False, latency_ms=_since(started))
    writer.close()
    await writer.wait_closed()
    return Check(ok=True, latency_ms=_since(started))


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
