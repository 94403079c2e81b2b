"""FastAPI candidates for the rollout controller's tests, by import string
(`GATEWAY_FASTAPI_APP=rollout_variants:failing()`, with this folder on `PYTHONPATH`): the real
FastAPI app, altered on chat turns only, as a release with one bug would be.

- `failing()`: every fifth chat turn answers 500 (20 %), in the contract's error shape;
- `slow()`: every chat turn answers 600 ms later than the real app would (far enough past
  1.5 x Flask's p99 that a loaded 2-core machine slowing Flask too cannot hide it).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from fastapi_app import create_app
from shared import contract
from shared.settings import Settings

CHAT = "/api/v1/chat"
SLOWER_SECONDS = 0.6


def _wrapped(app: Any, altered: Any) -> Any:
    async def variant(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == CHAT and scope["method"] == "POST":
            await altered(scope, receive, send)
        else:
            await app(scope, receive, send)

    variant.state = app.state  # type: ignore[attr-defined]
    variant.app = app  # type: ignore[attr-defined]  # middleware's way: routes stay readable
    return variant


def failing() -> Any:
    app = create_app(Settings())
    turns = itertools.count(1)

    async def sometimes_500(scope: Any, receive: Any, send: Any) -> None:
        if next(turns) % 5:
            await app(scope, receive, send)
            return
        body = json.dumps(contract.error_body("Internal server error")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                headers.append((name, value))
        await send({"type": "http.response.start", "status": 500, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return _wrapped(app, sometimes_500)


def slow() -> Any:
    app = create_app(Settings())

    async def later(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(SLOWER_SECONDS)
        await app(scope, receive, send)

    return _wrapped(app, later)
