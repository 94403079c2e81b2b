"""An altered candidate for the capture-replay test: the FastAPI app, its "Message is
required" answers reworded (same length, so the framing stands)."""

from __future__ import annotations

from typing import Any

from fastapi_app import create_app as create_fastapi_app
from shared.settings import Settings


def create_app(settings: Settings) -> Any:
    app = create_fastapi_app(settings)

    async def altered(scope: Any, receive: Any, send: Any) -> None:
        async def reworded(message: Any) -> None:
            if message["type"] == "http.response.body":
                body = message.get("body", b"").replace(b"is required", b"is REQUIRED")
                message = {**message, "body": body}
            await send(message)

        await app(scope, receive, reworded if scope["type"] == "http" else send)

    altered.state = app.state  # type: ignore[attr-defined]
    return altered
