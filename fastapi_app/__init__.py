"""The migrated chatbot: FastAPI, pydantic v2, aioboto3. `uvicorn fastapi_app.main:app`."""

from __future__ import annotations

from fastapi_app.app import create_app

__all__ = ["create_app"]
