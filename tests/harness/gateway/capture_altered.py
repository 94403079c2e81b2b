"""An altered candidate for the capture-replay and shadow tests: the FastAPI app, its
"Message is required" answers reworded (same length, so the framing stands). By import
string: `capture_altered:create_app` (the parity suite) or `capture_altered:create_app()`
(the gateway, settings from the environment)."""

from __future__ import annotations

from typing import Any

from fastapi_app import create_app as create_fastapi_app
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> Any:
    app = create_fastapi_app(settings or Settings())

    async def altered(scope: Any, receive: Any, send: Any) -> None:
        async def reworded(message: Any) -> None:
            if message["type"] == "http.response.body":
                body = message.get("body", b"").replace(b"is required", b"is REQUIRED")
                message = {**message, "body": body}
            await send(message)

        await app(scope, receive, reworded if scope["type"] == "http" else send)

    altered.state = app.state  # type: ignore[attr-defined]
    altered.app = app  # type: ignore[attr-defined]  # middleware's way: routes stay readable
    return altered
