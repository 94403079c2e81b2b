"""App factory of the legacy stack."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import structlog
from flask import Flask, Request, Response, g, request
from flask_cors import CORS
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import MapAdapter
from werkzeug.wsgi import get_input_stream

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
DRAIN_LIMIT_BYTES = 4 * 1024 * 1024
"""The most of a refused request's body read and dropped before the answer (`_drain`)."""

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
    if response.status_code >= 400:
        _drain()
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


def _drain() -> None:
    """Reads and drops what is left of a refused request's body (up to `DRAIN_LIMIT_BYTES`),
    as uvicorn does for FastAPI: gunicorn closes a connection with unread data on it, the
    kernel then resets it, and the client (a gateway's pool among them) can lose the answer,
    a 413 refused by its declared length most of all. Never past the body's end: werkzeug's
    stream knows how much of it the app read; unread, one bounded by `Content-Length` (or,
    chunked, by the server's end of the body) is made. A chunked body past
    `MAX_CONTENT_LENGTH` makes werkzeug's stream refuse to read on: the server's own input,
    which ends where the body does (`wsgi.input_terminated`), is read then."""
    environ = request.environ
    stream = request.__dict__.get("stream")  # werkzeug's cached stream, if the app read it
    if stream is None:
        stream = get_input_stream(environ, safe_fallback=True, max_content_length=None)
    left = _read_away(stream, DRAIN_LIMIT_BYTES)
    if left is None and environ.get("wsgi.input_terminated") and environ.get("wsgi.input"):
        _read_away(environ["wsgi.input"], DRAIN_LIMIT_BYTES)


def _read_away(stream: Any, limit: int) -> int | None:
    """Reads `stream` to its end or `limit` bytes, whichever comes first: the bytes left of
    the limit, or None when the stream refused to be read (over werkzeug's maximum)."""
    left = limit
    try:
        while left > 0:
            data = stream.read(min(64 * 1024, left))
            if not data:
                break
            left -= len(data)
    except HTTPException:  # werkzeug's stream past MAX_CONTENT_LENGTH
        return None
    except (OSError, ValueError):  # the client went away, or sent a broken chunked body
        pass
    return left
