"""The API's documentation pages, `/docs` (Swagger UI) and `/redoc` (ReDoc), that work offline.

FastAPI's own pages load Swagger UI's and ReDoc's JavaScript and CSS from a CDN
(cdn.jsdelivr.net), ReDoc's fonts from Google and the favicon from fastapi.tiangolo.com: without
network `/docs` is a blank page. These are the same pages (FastAPI's `get_swagger_ui_html`,
`get_redoc_html`), their assets served by the app itself from the `fastapi-offline` package's
data (Swagger UI and ReDoc's standalone bundles): nothing is fetched or built at run time.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs/assets"
"""Where the pages' scripts, stylesheet and icon are served (no schema entry: a Mount)."""

ASSETS_PACKAGE = ("fastapi_offline", "static")
"""The package, and its directory, that holds the assets (Swagger UI, ReDoc, the favicon)."""


def install(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve Swagger UI at `docs_url` (and its OAuth2 redirect page at the app's
    `swagger_ui_oauth2_redirect_url`), ReDoc at `redoc_url`, and their assets.

    `app` is built with `docs_url=None, redoc_url=None` (FastAPI's CDN pages off); the URLs
    are then set on it, so what reads them (the gateway's route ownership) finds the pages."""
    if app.docs_url or app.redoc_url:
        raise ValueError("build the app with docs_url=None, redoc_url=None")
    openapi_url = app.openapi_url
    if openapi_url is None:
        raise ValueError("the documentation pages need the app's openapi_url")
    app.mount(ASSETS_URL, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")
    app.docs_url, app.redoc_url = docs_url, redoc_url
    redirect_url = app.swagger_ui_oauth2_redirect_url

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=root + redirect_url if redirect_url else None,
            init_oauth=app.swagger_ui_init_oauth,
            # Swagger UI's own default sends the document's URL to validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},
        )

    async def swagger_ui_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

    app.add_route(docs_url, swagger_ui, include_in_schema=False)
    if redirect_url:
        app.add_route(redirect_url, swagger_ui_redirect, include_in_schema=False)
    app.add_route(redoc_url, redoc, include_in_schema=False)


def _root_path(request: Request) -> str:
    # As FastAPI's own pages: behind a proxy that mounts the app under a prefix.
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")
