"""App factory of the legacy stack."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import structlog
from flask import Flask, Request, Response, g, request
from flask_cors import CORS
from werkzeug.exceptions import NotFound
from werkzeug.routing import MapAdapter

from legacy_flask import chat, errors, health
from legacy_flask.services import Services, services
from shared import contract
from shared.agent import AgentClient
from shared.aws import agent_config, follow_deadlines, store_config
from shared.contract import allow_header
from shared.errors import BadRequest
from shared.logs import REQUEST_ID_HEADER, configure_logging, request_id
from shared.settings import Settings
from shared.store import SessionStore

VERSION = "1.0.0"

log = structlog.get_logger("legacy_flask")


class PathRoutedFlask(Flask):
    """Flask routing by path alone, as the contract (and Starlette) does.

    werkzeug binds its URL map to the request's `Host` and answers 400 when it cannot
    IDNA-encode it (a label over 63 characters, `a..b`), even for `GET /health`; the app
    serves one host, so routing binds to a fixed name and the `Host` header plays no part."""

    def create_url_adapter(self, request: Request | None) -> MapAdapter | None:
        if request is None:
            return super().create_url_adapter(None)
        environ = {**request.environ, "HTTP_HOST": "localhost", "SERVER_NAME": "localhost"}
        return self.url_map.bind_to_environ(environ, subdomain="")


def create_app(settings: Settings | None = None) -> Flask:
    """Build the legacy app; its boto3 clients are created once, here."""
    settings = settings or Settings()
    configure_logging(settings.log_level)
    app = PathRoutedFlask(__name__)
    # `//` in a path is a 404, as in Starlette: werkzeug would answer a 308 redirect built
    # from the `Host` header (an open redirect) with an HTML body.
    app.url_map.merge_slashes = False
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes + 1, DEBUG=settings.debug)
    CORS(app, origins=[o.strip() for o in settings.cors_origins.split(",")])

    # A blocking read cannot be cancelled: the clients' timeouts follow each call's deadline.
    session = boto3.session.Session()
    dynamodb = follow_deadlines(session.client("dynamodb", config=store_config(settings)))
    runtime = follow_deadlines(
        session.client("bedrock-agent-runtime", config=agent_config(settings))
    )
    app.extensions[Services.KEY] = Services(
        settings=settings,
        store=SessionStore(dynamodb, settings),
        shadow_store=SessionStore(dynamodb, settings, table=settings.shadow_table),
        agent=AgentClient(runtime, settings),
        version=VERSION,
    )

    app.register_blueprint(chat.bp, url_prefix="/api/v1")
    app.register_blueprint(health.bp)
    errors.register(app)
    app.before_request(_bind_request)
    app.before_request(_guard_request)
    app.after_request(_finish_request)
    return app


def _bind_request() -> None:
    structlog.contextvars.clear_contextvars()
    g.request_id = request_id(request.headers.get(REQUEST_ID_HEADER))
    g.started = time.perf_counter()
    structlog.contextvars.bind_contextvars(request_id=g.request_id, stack="flask")


def _guard_request() -> None:
    """Before routing, as FastAPI and the gateway answer: headers over `MAX_HEADER_BYTES` in
    total are 431 (gunicorn refuses repeated singleton headers itself, answering as its
    config in `legacy_flask.gunicorn_conf` says); a path that starts with `//` is 404.

    werkzeug's routing strips a path's leading slashes (`//health` would be served as
    `/health`), where Starlette matches the path as sent; no route starts with `//`."""
    limit = services().settings.max_header_bytes
    if contract.header_bytes(_wsgi_headers(request.environ)) > limit:
        raise BadRequest(contract.HEADERS_TOO_LARGE, status=431)
    if str(request.environ.get("PATH_INFO", "")).startswith("//"):
        raise NotFound()


def _wsgi_headers(environ: dict[str, Any]) -> Iterator[tuple[str, str]]:
    # The WSGI server's view of the headers: names from the environ's keys (HTTP_X_USER_ID
    # is X-User-ID, the same length), repeated ones joined with commas.
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            yield key[5:], value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            yield key, value


def _finish_request(response: Response) -> Response:
    rid = g.get("request_id") or request_id(None)
    response.headers[REQUEST_ID_HEADER] = rid
    if "Allow" in response.headers:
        # werkzeug lists methods in set order; the contract fixes one order for both stacks.
        response.headers["Allow"] = allow_header(response.headers["Allow"].split(","))
    log.info(
        "request.completed",
        method=request.method,
        path=request.path,
        status=response.status_code,
        duration_ms=round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 3),
    )
    return response
