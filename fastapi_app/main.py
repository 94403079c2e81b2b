"""ASGI entry object: `uvicorn fastapi_app.main:app`."""

from __future__ import annotations

from fastapi_app.app import create_app

app = create_app()
