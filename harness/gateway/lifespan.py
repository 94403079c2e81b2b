"""Running an ASGI app's lifespan from outside, so the gateway forwards its own lifespan to
the stack that has one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from starlette.types import ASGIApp, Message, Scope

log = structlog.get_logger("dualstack.gateway")


@contextlib.asynccontextmanager
async def run_lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Runs an ASGI app's lifespan (startup on enter, shutdown on exit), so the gateway
    forwards its own lifespan to the stack that has one.

    As uvicorn's `--lifespan auto`: an app that raises or returns on the lifespan scope before
    saying anything does not speak the protocol, and is served without it; an app that says
    its startup failed (or raises after speaking) stops the gateway's start-up."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    spoke = False

    async def send(message: Message) -> None:
        nonlocal spoke
        spoke = True
        await outbox.put(message)

    scope: Scope = {
        "type": "lifespan",
        "asgi": {"version": "3.0", "spec_version": "2.0"},
        "state": {},
    }

    async def run() -> None:
        await app(scope, inbox.get, send)

    task = asyncio.create_task(run())

    async def next_message() -> Message | None:
        """The app's next message; None when it ended its lifespan without one."""
        getter = asyncio.ensure_future(outbox.get())
        done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        if spoke:
            task.result()  # the app's own error, if it raised after speaking
            raise RuntimeError("the app ended its lifespan without answering")
        return None

    await inbox.put({"type": "lifespan.startup"})
    try:
        answer = await next_message()
    except BaseException:  # a failed or abandoned startup (a deadline): end the app's task
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise
    if answer is None:
        error = task.exception()
        log.warning(
            "lifespan_unsupported",
            app=type(app).__name__,
            error=None if error is None else f"{type(error).__name__}: {error}",
        )
        yield
        return
    if answer["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"startup failed: {answer.get('message', '')}")
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await next_message()
        await task
