"""ASGI entry object: `uvicorn fastapi_app.main:app`."""

from __future__ import annotations

from fastapi_app.app import create_app
from shared.serving import snapshot_httptools_headers

# A plain `uvicorn fastapi_app.main:app` (no `--http`) must not read trailers as headers.
snapshot_httptools_headers()
app = create_app()
