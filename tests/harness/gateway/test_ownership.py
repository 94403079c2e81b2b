"""Route ownership learned from the apps' own routing tables."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from flask import Flask
from starlette.middleware.cors import CORSMiddleware
from structlog.testing import capture_logs
from werkzeug.middleware.proxy_fix import ProxyFix

from harness.gateway.ownership import Ownership, asgi_matcher, every_path, wsgi_matcher


def _flask() -> Flask:
    app = Flask(__name__)
    app.add_url_rule("/health", "health", lambda: "ok")
    app.add_url_rule("/api/v1/chat", "chat", lambda: "ok", methods=["POST"])
    app.add_url_rule("/legacy/<int:item>", "legacy", lambda item: "ok")
    return app


def _fastapi() -> FastAPI:
    app = FastAPI()
    app.get("/health")(lambda: "ok")
    app.post("/api/v1/chat")(lambda: "ok")
    app.get("/api/v1/chat/sessions/{session_id}")(lambda session_id: "ok")
    app.mount("/docs/assets", FastAPI())  # in no OpenAPI document: static files, a sub-app
    return app


OWNERSHIP = Ownership(wsgi_matcher(_flask()), asgi_matcher(_fastapi()))


@pytest.mark.parametrize(
    ("path", "owners", "route"),
    [
        ("/health", {"flask", "fastapi"}, "/health"),
        ("/api/v1/chat", {"flask", "fastapi"}, "/api/v1/chat"),
        ("/api/v1/chat/sessions/abc", {"fastapi"}, "/api/v1/chat/sessions/{session_id}"),
        ("/legacy/7", {"flask"}, "/legacy/<int:item>"),
        ("/legacy/seven", set(), "unmatched"),
        ("/docs", {"fastapi"}, "/docs"),
        ("/docs/assets/swagger-ui.css", {"fastapi"}, "/docs/assets/{path:path}"),
        ("/docs/assets", set(), "unmatched"),
        ("/openapi.json", {"fastapi"}, "/openapi.json"),
        ("/health/", set(), "unmatched"),
        ("/nope", set(), "unmatched"),
        # werkzeug's routing would strip the leading slashes and give both to Flask alone.
        ("//health", set(), "unmatched"),
        ("//api/v1/chat", set(), "unmatched"),
    ],
)
def test_owners_and_route_template(path: str, owners: set[str], route: str) -> None:
    assert OWNERSHIP.resolve(path) == (frozenset(owners), route)


async def _bare_asgi(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI callable with no routing to read."""


def _bare_wsgi(environ: Any, start_response: Any) -> list[bytes]:
    return []


@pytest.mark.parametrize(
    ("wsgi", "asgi", "path", "owners", "route"),
    [
        # Middleware around an app hides nothing: its routes are read through it.
        (
            ProxyFix(_flask()),
            CORSMiddleware(_fastapi(), allow_origins=["*"]),
            "/api/v1/chat",
            {"flask", "fastapi"},
            "/api/v1/chat",
        ),
        (
            ProxyFix(_flask()),
            CORSMiddleware(_fastapi(), allow_origins=["*"]),
            "/api/v1/chat/sessions/a",
            {"fastapi"},
            "/api/v1/chat/sessions/{session_id}",
        ),
        (
            ProxyFix(_flask()),
            CORSMiddleware(_fastapi(), allow_origins=["*"]),
            "/legacy/7",
            {"flask"},
            "/legacy/<int:item>",
        ),
        # An app whose routes cannot be read may serve any path: never starved of traffic.
        (_flask(), _bare_asgi, "/legacy/7", {"flask", "fastapi"}, "*"),
        (_flask(), _bare_asgi, "/anything", {"fastapi"}, "*"),
        (
            _bare_wsgi,
            _fastapi(),
            "/api/v1/chat/sessions/a",
            {"flask", "fastapi"},
            "/api/v1/chat/sessions/{session_id}",
        ),
        (_bare_wsgi, _bare_asgi, "/x", {"flask", "fastapi"}, "*"),
    ],
    ids=[
        "wrapped-shared",
        "wrapped-fastapi-only",
        "wrapped-flask-only",
        "bare-asgi-flask-path",
        "bare-asgi-other-path",
        "bare-wsgi",
        "both-bare",
    ],
)
def test_ownership_through_middleware_and_without_routes(
    wsgi: Any, asgi: Any, path: str, owners: set[str], route: str
) -> None:
    assert Ownership(wsgi_matcher(wsgi), asgi_matcher(asgi)).resolve(path) == (
        frozenset(owners),
        route,
    )


def test_unreadable_routes_are_said_at_start_up() -> None:
    with capture_logs() as logs:
        assert asgi_matcher(_bare_asgi) is every_path
        assert wsgi_matcher(_bare_wsgi) is every_path
    assert [(entry["event"], entry["side"]) for entry in logs] == [
        ("routes_unknown", "asgi"),
        ("routes_unknown", "wsgi"),
    ]
