"""The gateway forwards its lifespan to the ASGI stack as uvicorn's `--lifespan auto` would:
an app that does not speak the protocol is served without it, one whose startup fails stops
the gateway's start-up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.testclient import TestClient

from harness.gateway.ownership import Ownership, template_matcher
from harness.gateway.policy import Rollout
from harness.gateway.proxy import Gateway, Stacks
from harness.gateway.rollout import RolloutUnavailable
from harness.gateway.settings import GatewaySettings
from harness.local.servers import ASGIServer


class FixedRollout:
    current = Rollout(fastapi_percent=100)
    salt = "test"

    def add_listener(self, listener: Any) -> None:
        pass


async def answer(send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def no_lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    # A bare ASGI app: HTTP only, as many hand-written ones are.
    assert scope["type"] == "http", f"unsupported scope {scope['type']}"
    await answer(send)


async def returns_at_once(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await answer(send)


async def failing_startup(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})
        return
    await answer(send)


async def hanging_startup(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await asyncio.Event().wait()  # a startup that never ends (a database that never answers)
    await answer(send)


async def misbehaving_startup(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.shutdown.complete"})  # not an answer to a startup
        return
    await answer(send)


def gateway_over(app: Any, store_down: bool = False, **settings: Any) -> Gateway:
    @asynccontextmanager
    async def control() -> AsyncIterator[tuple[Any, Any]]:
        if store_down:
            raise RolloutUnavailable("rollout store unavailable: connection refused")
        yield FixedRollout(), app

    both = template_matcher(["/x"])
    options = GatewaySettings(fastapi_app="thirdparty.app:app", **settings)
    return Gateway(Stacks(app, app), Ownership(both, both), options, control)


@pytest.mark.parametrize("app", [no_lifespan, returns_at_once], ids=["raises", "returns"])
def test_an_app_without_the_lifespan_protocol_is_served_without_it(app: Any) -> None:
    with TestClient(gateway_over(app)) as client:
        response = client.get("/x")
    assert (response.status_code, response.text) == (200, "ok")
    assert response.headers["x-dualstack-backend"] == "fastapi"


def test_a_failed_startup_stops_the_gateway_naming_why(capfd: pytest.CaptureFixture[str]) -> None:
    # As `uvicorn gateway:app` runs it: the server does not start, and says why (uvicorn's
    # own log, on stderr).
    server = ASGIServer(gateway_over(failing_startup))
    with pytest.raises(RuntimeError, match="did not start"):
        server.start()
    server.stop()
    assert server.exit_code == 3
    assert "startup failed: no database" in capfd.readouterr().err


@pytest.mark.parametrize(
    ("app", "store_down", "message"),
    [
        (
            hanging_startup,
            False,
            "the ASGI app (thirdparty.app:app) did not start within 0.5 s",
        ),
        (
            misbehaving_startup,
            False,
            "the ASGI app (thirdparty.app:app) failed to start: RuntimeError: startup failed",
        ),
        (
            failing_startup,
            True,
            "the rollout store failed to start: RolloutUnavailable: rollout store unavailable",
        ),
    ],
    ids=["hangs", "misbehaves", "store-down"],
)
def test_a_start_up_that_hangs_or_fails_stops_the_gateway_naming_what(
    app: Any, store_down: bool, message: str, capfd: pytest.CaptureFixture[str]
) -> None:
    server = ASGIServer(gateway_over(app, store_down, startup_timeout_seconds=0.5))
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="did not start"):
        server.start(timeout=30)
    elapsed = time.monotonic() - started
    server.stop()
    assert server.exit_code == 3
    assert message in capfd.readouterr().err
    if app is hanging_startup:
        assert 0.5 <= elapsed < 30  # it waited for the deadline, not forever
