"""ASGI request bodies: read once (bounded), replay to whichever app serves the request,
and the few JSON edits the gateway makes before routing."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from typing import Any

from starlette.types import Message, Receive


class BodyTooLarge(Exception):
    """The body is over the gateway's limit."""


class ClientGone(Exception):
    """The client disconnected before sending the whole body."""


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; raises BodyTooLarge past `limit` bytes."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields `body` once, then defers to the real one (disconnects)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class Watched:
    """The client's side of a request that waits before it is served: `gone()` reads
    what the client sends until it disconnects, and `receive` hands what was read, then
    the rest, to whichever app serves the request after all. Nothing is lost: a read
    still under way when the wait ends is finished by the app's first `receive`."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._read: deque[Message] = deque()
        self._pending: asyncio.Future[Message] | None = None

    async def gone(self) -> None:
        """Returns when the client has disconnected; cancel it to stop watching."""
        while True:
            if self._pending is None:
                self._pending = asyncio.ensure_future(self._receive())
            # Shielded: cancelling the watch leaves the read under way for `receive`.
            message = await asyncio.shield(self._pending)
            self._pending = None
            if message["type"] == "http.disconnect":
                return
            self._read.append(message)

    async def receive(self) -> Message:
        if self._read:
            return self._read.popleft()
        if self._pending is not None:
            pending, self._pending = self._pending, None
            return await pending
        return await self._receive()

    def close(self) -> None:
        """Stops a read the app never took over (its request is over)."""
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                self._pending.exception()


def json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not one (the stack will say why)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def add_json_field(body: bytes, name: str, value: str) -> bytes:
    """`body` (a JSON object) with `"name": value` appended as its last member.

    Appending text keeps every other byte as the client sent it, and as the last
    member it wins over an earlier `"name": null` for any JSON parser that keeps the
    last duplicate (Python's, JavaScript's)."""
    text = body.rstrip()
    if not text.endswith(b"}"):
        raise ValueError("not a JSON object")
    inner = text[:-1].rstrip()
    member = json.dumps(name).encode() + b":" + json.dumps(value).encode()
    separator = b"" if inner.endswith(b"{") else b","
    return inner + separator + member + b"}"
