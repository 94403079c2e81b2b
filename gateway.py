"""Composition root: both chatbot stacks behind one gateway. `uvicorn gateway:app`.

Settings come from the environment: the stacks' (`shared.settings.Settings`) and the
gateway's (`GATEWAY_*`, `harness.settings.GatewaySettings`).
"""

from __future__ import annotations

from typing import Any

from fastapi_app import create_app as create_fastapi_app
from harness.gateway import Gateway, build_gateway
from harness.settings import GatewaySettings
from legacy_flask import create_app as create_flask_app
from shared.settings import Settings


def create_gateway(
    settings: Settings | None = None, gateway_settings: GatewaySettings | None = None
) -> Gateway:
    """The legacy Flask app and the FastAPI app behind one gateway."""
    settings = settings or Settings()
    return build_gateway(
        create_flask_app(settings),
        create_fastapi_app(settings),
        gateway_settings or GatewaySettings(),
        region=settings.aws_region,
    )


def __getattr__(name: str) -> Any:
    # `uvicorn gateway:app` builds the gateway when it asks for `app`, not at import.
    if name == "app":
        return create_gateway()
    raise AttributeError(name)
