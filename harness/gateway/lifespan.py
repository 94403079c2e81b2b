"""Running an ASGI app's lifespan from outside, so the gateway forwards its own lifespan to
the stack that has one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.types import ASGIApp, Message, Scope


@contextlib.asynccontextmanager
async def run_lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Runs an ASGI app's lifespan (startup on enter, shutdown on exit), so the gateway
    forwards its own lifespan to the stack that has one."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()

    async def send(message: Message) -> None:
        await outbox.put(message)

    scope: Scope = {
        "type": "lifespan",
        "asgi": {"version": "3.0", "spec_version": "2.0"},
        "state": {},
    }

    async def run() -> None:
        await app(scope, inbox.get, send)

    task = asyncio.create_task(run())

    async def reply() -> Message:
        getter = asyncio.ensure_future(outbox.get())
        done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        task.result()  # the app's own error, if it raised
        raise RuntimeError("the app ended its lifespan without answering")

    await inbox.put({"type": "lifespan.startup"})
    answer = await reply()
    if answer["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"startup failed: {answer.get('message', '')}")
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await reply()
        await task
