"""The dashboard: one page and its assets, served by the gateway at `/_gateway/ui`.

The page (`static/index.html`), its script and its style are files in this package, read
once when the routes are built: no build step, no CDN, nothing fetched from elsewhere. The
script reads the admin API the gateway already serves (the rollout, its plan and history,
the fleet's stats, the shadow's summary and differing exchanges) and changes the rollout
through it, with the admin token a person enters (kept in the tab's `sessionStorage`), so
the audit history names every change the page makes as it names one made with curl.

Every answer carries a Content-Security-Policy that allows the gateway's own script, style
and API only: no inline script or style, no other host. Text from users' requests and
answers is only ever set as text by the script, never parsed as HTML.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

__all__ = ["ASSETS", "CSP", "SECURITY_HEADERS", "ui_routes"]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
"""Sent with every answer under `/ui`, errors included."""

ASSETS: dict[str, str] = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
"""The files `/ui/assets/<name>` serves, and their content types: these and nothing else."""

PAGE = "index.html"


@dataclass(frozen=True)
class _File:
    body: bytes
    media_type: str
    etag: str


def _load(name: str, media_type: str) -> _File:
    body = resources.files(__package__).joinpath("static", name).read_bytes()
    return _File(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:16] + '"')


def ui_routes() -> list[BaseRoute]:
    """The admin routes that serve the dashboard: `/ui` (the page, never cached) and
    `/ui/assets/<name>` (its script, style and icon, revalidated by ETag)."""
    page = _load(PAGE, "text/html; charset=utf-8")
    assets = {name: _load(name, media_type) for name, media_type in ASSETS.items()}

    async def get_page(request: Request) -> Response:
        return Response(
            page.body,
            media_type=page.media_type,
            headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
        )

    async def get_asset(request: Request) -> Response:
        found = assets.get(request.path_params["name"])
        if found is None:
            return JSONResponse({"error": "Not found"}, status_code=404, headers=SECURITY_HEADERS)
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache", "ETag": found.etag}
        if found.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(found.body, media_type=found.media_type, headers=headers)

    return [
        Route("/ui", get_page, methods=["GET"]),
        Route("/ui/assets/{name}", get_asset, methods=["GET"]),
    ]
