"""Which stack serves a path, learned once at start-up from each app's own routing.

A path only one stack serves always goes to that stack, whatever the percentage. The
matchers take the app objects (the harness never imports a stack) and answer with the
route template that matched, which also labels the metrics without unbounded cardinality.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from starlette.routing import compile_path
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from harness.gateway.policy import Backend

Matcher = Callable[[str], str | None]
"""A path -> the route template that serves it (any method), or None."""


def flask_matcher(app: Any) -> Matcher:
    """Routes of a Flask (werkzeug) app, from its `url_map`."""
    adapter = app.url_map.bind("localhost")

    def match(path: str) -> str | None:
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


def asgi_templates(app: Any) -> list[str]:
    """Route templates of a FastAPI app (its OpenAPI paths and docs pages) or, for another
    Starlette app, of its routes."""
    if hasattr(app, "openapi"):
        found = list(app.openapi().get("paths", {}))
        found += [u for u in (app.openapi_url, app.docs_url, app.redoc_url) if u]
        if app.docs_url and app.swagger_ui_oauth2_redirect_url:
            found.append(app.swagger_ui_oauth2_redirect_url)
        return found
    return [route.path for route in getattr(app, "routes", []) if hasattr(route, "path")]


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

    def _resolve(self, path: str) -> Resolution:
        served = {name: match(path) for name, match in self._matchers.items()}
        owners = frozenset(name for name, template in served.items() if template is not None)
        return owners, served["fastapi"] or served["flask"] or "unmatched"
