"""Which stack serves a path, learned once at start-up from each app's own routing.

A path only one stack serves always goes to that stack, whatever the percentage. The
matchers take the app objects (the harness never imports a stack) and answer with the
route template that matched, which also labels the metrics without unbounded cardinality.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

import structlog
from starlette.routing import Mount, compile_path
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from harness.gateway.policy import Backend

log = structlog.get_logger("dualstack.gateway")

Matcher = Callable[[str], str | None]
"""A path -> the route template that serves it (any method), or None."""


def flask_matcher(app: Any) -> Matcher:
    """Routes of a Flask (werkzeug) app, from its `url_map`."""
    adapter = app.url_map.bind("localhost")

    def match(path: str) -> str | None:
        if path.startswith("//"):
            # werkzeug's routing strips leading slashes (`//health` would match `/health`);
            # the chatbot's Flask app answers such paths 404, as Starlette does.
            return None
        try:
            rule, _ = adapter.match(path, method="GET", return_rule=True)
        except MethodNotAllowed:
            return _rule_for(app, path)
        except (NotFound, RequestRedirect):
            return None
        return str(rule.rule)

    return match


def _rule_for(app: Any, path: str) -> str | None:
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        try:
            rule, _ = app.url_map.bind("localhost").match(path, method=method, return_rule=True)
        except (MethodNotAllowed, NotFound, RequestRedirect):
            continue
        return str(rule.rule)
    return None


def asgi_templates(app: Any) -> list[str] | None:
    """Route templates of a FastAPI app (its OpenAPI paths and docs pages) or, for another
    Starlette app, of its routes, found through middleware that wraps it (`.app`); None when
    no routing can be read (a bare ASGI callable, another framework)."""
    for found in _unwrapped(app):
        if hasattr(found, "openapi") and hasattr(found, "openapi_url"):
            templates = list(found.openapi().get("paths", {}))
            templates += [u for u in (found.openapi_url, found.docs_url, found.redoc_url) if u]
            if found.docs_url and found.swagger_ui_oauth2_redirect_url:
                templates.append(found.swagger_ui_oauth2_redirect_url)
            return templates + _mounted(found.routes)
        routes = getattr(found, "routes", None)
        if isinstance(routes, list):
            return [route.path for route in routes if hasattr(route, "path")]
    return None


def _mounted(routes: list[Any]) -> list[str]:
    # What a FastAPI app mounts (static files such as the docs' assets, sub-apps) is in no
    # OpenAPI document: everything under the mount is the app's.
    return [f"{route.path}/{{path:path}}" for route in routes if isinstance(route, Mount)]


def wsgi_matcher(app: Any) -> Matcher:
    """The routes of a WSGI app: a Flask (werkzeug) app's `url_map`, found through
    middleware that wraps it (`.app`); an app whose routes cannot be read is taken to serve
    every path, so the percentage alone decides for it."""
    for found in _unwrapped(app):
        if hasattr(found, "url_map"):
            return flask_matcher(found)
    _unknown_routes("wsgi", app)
    return every_path


def asgi_matcher(app: Any) -> Matcher:
    """The routes of an ASGI app (`asgi_templates`); an app whose routes cannot be read is
    taken to serve every path, so the percentage alone decides for it."""
    templates = asgi_templates(app)
    if templates is None:
        _unknown_routes("asgi", app)
        return every_path
    return template_matcher(templates)


def every_path(path: str) -> str:
    """The matcher of an app whose routes are unknown: it may serve any path."""
    return "*"


def _unwrapped(app: Any) -> list[Any]:
    # The app, then what each middleware layer wraps (Starlette's and werkzeug's keep it in
    # `.app`), outermost first; a cycle ends the walk.
    layers: list[Any] = []
    while app is not None and all(app is not seen for seen in layers):
        layers.append(app)
        app = getattr(app, "app", None)
    return layers


def _unknown_routes(kind: str, app: Any) -> None:
    log.warning(
        "routes_unknown",
        side=kind,
        app=type(app).__name__,
        effect="taken to serve every path: the percentage alone routes it",
    )


def template_matcher(templates: Iterable[str]) -> Matcher:
    """Matches paths against Starlette-style templates (`/items/{item_id}`)."""
    compiled = [(compile_path(t)[0], t) for t in templates]

    def match(path: str) -> str | None:
        for regex, template in compiled:
            if regex.match(path):
                return template
        return None

    return match


Resolution = tuple[frozenset[Backend], str]


class Ownership:
    """The two stacks' routes. `resolve(path)` gives the stacks that serve the path and the
    route template for metrics ("unmatched" when neither does); answers are cached."""

    def __init__(self, flask: Matcher, fastapi: Matcher) -> None:
        self._matchers: dict[Backend, Matcher] = {"flask": flask, "fastapi": fastapi}
        self.resolve: Callable[[str], Resolution] = lru_cache(maxsize=8192)(self._resolve)
        self._listeners: list[Callable[[], None]] = []

    def changed(self) -> None:
        """A side's routes changed (an upstream's OpenAPI document, re-read): answers are
        made again, and every listener is told (the gateway's routing plans)."""
        self.resolve.cache_clear()  # type: ignore[attr-defined]
        for listener in self._listeners:
            listener()

    def add_listener(self, listener: Callable[[], None]) -> None:
        """`listener()` after every change of the routes."""
        self._listeners.append(listener)

    def _resolve(self, path: str) -> Resolution:
        served = {name: match(path) for name, match in self._matchers.items()}
        owners = frozenset(name for name, template in served.items() if template is not None)
        return owners, served["fastapi"] or served["flask"] or "unmatched"
