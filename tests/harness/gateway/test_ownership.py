"""Route ownership learned from the apps' own routing tables."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from flask import Flask

from harness.gateway.ownership import Ownership, asgi_templates, flask_matcher, template_matcher


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
    return app


OWNERSHIP = Ownership(flask_matcher(_flask()), template_matcher(asgi_templates(_fastapi())))


@pytest.mark.parametrize(
    ("path", "owners", "route"),
    [
        ("/health", {"flask", "fastapi"}, "/health"),
        ("/api/v1/chat", {"flask", "fastapi"}, "/api/v1/chat"),
        ("/api/v1/chat/sessions/abc", {"fastapi"}, "/api/v1/chat/sessions/{session_id}"),
        ("/legacy/7", {"flask"}, "/legacy/<int:item>"),
        ("/legacy/seven", set(), "unmatched"),
        ("/docs", {"fastapi"}, "/docs"),
        ("/openapi.json", {"fastapi"}, "/openapi.json"),
        ("/health/", set(), "unmatched"),
        ("/nope", set(), "unmatched"),
    ],
)
def test_owners_and_route_template(path: str, owners: set[str], route: str) -> None:
    assert OWNERSHIP.resolve(path) == (frozenset(owners), route)
