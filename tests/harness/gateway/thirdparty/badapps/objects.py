"""Objects that import strings can name: good ones, and ones that fail late."""

from __future__ import annotations

from typing import Any


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


class Holder:
    """For dotted attributes: `badapps.objects:Holder.Inner.app`."""

    class Inner:
        app = staticmethod(wsgi_app)


def create_app() -> Any:
    return wsgi_app


def failing_factory() -> Any:
    raise KeyError("settings")


def factory_with_argument(name: str) -> Any:
    return wsgi_app


def factory_returning_none() -> None:
    return None


VERSION = "1.0"
