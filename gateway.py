"""Composition root: a WSGI app and an ASGI app behind one gateway. `uvicorn gateway:app`.

Which apps: `GATEWAY_FLASK_APP` (default `legacy_flask:create_app()`) and
`GATEWAY_FASTAPI_APP` (default `fastapi_app.main:app`), import strings in gunicorn's form (a
trailing `()` calls a factory); or, for a stack that runs elsewhere, `GATEWAY_FLASK_URL` /
`GATEWAY_FASTAPI_URL` (upstream mode: that side over HTTP, nothing imported for it). The
gateway's other settings are `GATEWAY_*`
(`harness.gateway.GatewaySettings`); the chatbot stacks read their own
(`shared.settings.Settings`).
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import SecretStr, ValidationError

from harness.gateway import AppLoadError, Gateway, GatewaySettings, build_gateway, load_app
from shared.schema_errors import one_line
from shared.serving import snapshot_httptools_headers
from shared.settings import Settings

# A plain `uvicorn gateway:app` (no `--http`) must not read trailers as headers either.
snapshot_httptools_headers()


def create_gateway(
    settings: Settings | None = None, gateway_settings: GatewaySettings | None = None
) -> Gateway:
    """The apps `gateway_settings` name behind one gateway. With `settings`, the reference
    pair (the legacy Flask app and the FastAPI app) is built with those settings instead,
    as tests do. AppLoadError (one line, naming the setting) when an app cannot be loaded."""
    gateway_settings = gateway_settings or GatewaySettings()
    wsgi: Any = None  # None: the side is an upstream (its URL is set)
    asgi: Any = None
    if settings is not None:
        from fastapi_app import create_app as create_fastapi_app
        from legacy_flask import create_app as create_flask_app

        if gateway_settings.flask_url is None:
            wsgi = create_flask_app(settings)
        if gateway_settings.fastapi_url is None:
            asgi = create_fastapi_app(settings)
    else:
        if gateway_settings.flask_url is None:
            wsgi = _load("GATEWAY_FLASK_APP", gateway_settings.flask_app)
        if gateway_settings.fastapi_url is None:
            asgi = _load("GATEWAY_FASTAPI_APP", gateway_settings.fastapi_app)
    return build_gateway(wsgi, asgi, gateway_settings)


def _load(setting: str, spec: str) -> Any:
    try:
        return load_app(spec)
    except AppLoadError as error:
        raise AppLoadError(f"{setting}: {error}") from None


_SECRETS = frozenset(
    name
    for name, field in GatewaySettings.model_fields.items()
    if "token" in name or SecretStr in get_args(field.annotation)
)
"""Settings whose value an error never shows: tokens and secrets."""


def _variable(field: str) -> str:
    # The environment variable a person set for a settings field.
    return f"GATEWAY_{field.upper()}" if field in GatewaySettings.model_fields else field.upper()


def __getattr__(name: str) -> Any:
    # `uvicorn gateway:app` builds the gateway when it asks for `app`, not at import.
    if name == "app":
        # One line for the person starting the server, not a traceback through uvicorn.
        try:
            gateway_settings = GatewaySettings()
        except ValidationError as error:
            raise SystemExit(f"gateway: {one_line(error, _variable, _SECRETS)}") from None
        try:
            return create_gateway(gateway_settings=gateway_settings)
        except AppLoadError as error:
            raise SystemExit(f"gateway: {error}") from None
    raise AttributeError(name)
