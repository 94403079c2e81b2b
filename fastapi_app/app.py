"""App factory of the migrated stack."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aioboto3
import structlog
from aiobotocore.config import AioConfig
from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware

from fastapi_app import chat, docs, errors, health, openapi, sessions
from fastapi_app.metrics import MetricsBuffer, MetricsMiddleware, MetricsPublisher
from fastapi_app.middleware import (
    HeadAsGetMiddleware,
    HeaderGuardMiddleware,
    LegacyCORSMiddleware,
    RequestIdMiddleware,
)
from fastapi_app.services import Services
from shared.agent import AsyncAgentClient
from shared.aws import agent_config, metrics_config, store_config
from shared.logs import configure_logging
from shared.settings import Settings
from shared.store import AsyncSessionStore

VERSION = "2.0.0"
GZIP_MINIMUM_BYTES = 1000
"""Answers at least this long are gzipped for clients that accept it (the guide's setting)."""

log = structlog.get_logger("fastapi_app")


StoreFactory = Callable[[Any, Settings], AsyncSessionStore]
"""Builds the session store over the app's aioboto3 DynamoDB client."""


def create_app(
    settings: Settings | None = None, *, store: StoreFactory = AsyncSessionStore
) -> FastAPI:
    """Build the migrated app; its aioboto3 clients live as long as the lifespan.

    `store` builds the session store from the DynamoDB client the lifespan opened: tools
    that need to watch or alter what the app writes (the parity suite's self-tests) wrap
    the client there, instead of reaching into the running app."""
    settings = settings or Settings()
    configure_logging(settings.log_level)
    metrics = MetricsBuffer(settings.metrics_buffer_size) if settings.metrics_namespace else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        session = aioboto3.Session()
        async with AsyncExitStack() as stack:
            dynamodb = await stack.enter_async_context(
                session.client("dynamodb", config=store_config(settings, AioConfig))
            )
            runtime = await stack.enter_async_context(
                session.client("bedrock-agent-runtime", config=agent_config(settings, AioConfig))
            )
            app.state.services = Services(
                settings=settings,
                store=store(dynamodb, settings),
                shadow_store=AsyncSessionStore(dynamodb, settings, table=settings.shadow_table),
                agent=AsyncAgentClient(runtime, settings),
                agent_endpoint=str(runtime.meta.endpoint_url),
                version=VERSION,
                metrics=metrics,
            )
            if metrics is not None:
                cloudwatch = await stack.enter_async_context(
                    session.client("cloudwatch", config=metrics_config(settings, AioConfig))
                )
                publisher = MetricsPublisher(
                    cloudwatch,
                    settings.metrics_namespace,
                    metrics,
                    timeout=settings.metrics_timeout_seconds,
                )
                app.state.metrics_publisher = publisher
                # Runs before the client closes: the callbacks unwind in reverse order.
                stack.push_async_callback(
                    publisher.stop, publisher.start(settings.metrics_flush_seconds)
                )
            log.info("app.started", version=VERSION)
            yield
            log.info("app.stopping")

    app = FastAPI(
        title="dualstack chatbot",
        description="The chatbot API, migrated to FastAPI; answers exactly as the legacy app.",
        version=VERSION,
        lifespan=lifespan,
        redirect_slashes=False,  # the legacy app answers 404, not a redirect
        docs_url=None,  # FastAPI's pages load their assets from a CDN; docs.install's do not
        redoc_url=None,
    )
    app.include_router(chat.router, prefix="/api/v1")
    app.include_router(sessions.router, prefix="/api/v1")
    app.include_router(health.router)
    errors.register(app)
    openapi.install(app)  # the published contract, for both stacks
    docs.install(app, docs_url="/docs", redoc_url="/redoc")
    # Innermost first. gzip inside HEAD's conversion, so a HEAD answer's headers are its
    # GET's; metrics outside it, so they see the request's own method, and outside CORS,
    # so a preflight it answers is counted.
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MINIMUM_BYTES)
    app.add_middleware(HeaderGuardMiddleware, limit=settings.max_header_bytes)
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(LegacyCORSMiddleware, origins=settings.cors_origins)
    if metrics is not None:
        app.add_middleware(
            MetricsMiddleware, buffer=metrics, trust_shadow_header=settings.trust_shadow_header
        )
    app.add_middleware(RequestIdMiddleware)
    return app
