"""The gateway's own headers on every proxied answer: exactly one `X-Request-ID` (the id the
stack was given) and one `X-Dualstack-Backend`, whatever the stack itself answered with."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.testclient import TestClient

from harness.gateway.ownership import Ownership, template_matcher
from harness.gateway.policy import Rollout
from harness.gateway.proxy import Gateway, Stacks
from harness.gateway.settings import GatewaySettings


class FixedRollout:
    """The rollout state, without a store: 100 % to FastAPI."""

    current = Rollout(fastapi_percent=100)
    salt = "test"

    def add_listener(self, listener: Any) -> None:
        pass


def stack_answering(*headers: tuple[bytes, bytes], echo: bool) -> Any:
    """An ASGI app answering with `headers`, plus the request id it was given if `echo`."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # start-up and shut-down, nothing to do
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        given = [h for h in scope["headers"] if h[0] == b"x-request-id"]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), *headers, *(given if echo else [])],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def gateway_over(app: Any, *, show_backend: bool = True) -> Gateway:
    @asynccontextmanager
    async def control() -> AsyncIterator[tuple[Any, Any]]:
        yield FixedRollout(), app

    both = template_matcher(["/x"])
    settings = GatewaySettings(show_backend_header=show_backend)
    return Gateway(Stacks(app, app), Ownership(both, both), settings, control)


@pytest.mark.parametrize(
    ("stack_headers", "echo"),
    [
        ((), True),  # the usual answer: the stack echoes the id it was given
        ((), False),  # a stack that drops the id
        (((b"x-request-id", b"stack-made"),), False),  # one that makes its own
        (((b"x-request-id", b"stack-made"),), True),  # one that sends both
        (((b"x-dualstack-backend", b"flask"),), True),  # one that claims to be another
        (((b"x-dualstack-backend", b"flask"), (b"x-request-id", b"stack-made")), True),
    ],
)
def test_one_request_id_and_one_backend_mark_on_every_answer(
    stack_headers: tuple[tuple[bytes, bytes], ...], echo: bool
) -> None:
    app = stack_answering(*stack_headers, echo=echo)
    with TestClient(gateway_over(app)) as client:
        answer = client.get("/x", headers={"X-Request-ID": "client-7"})
    assert answer.headers.get_list("x-request-id") == ["client-7"]
    assert answer.headers.get_list("x-dualstack-backend") == ["fastapi"]
    assert answer.headers["content-type"] == "text/plain"


def test_a_hidden_backend_adds_no_mark_and_keeps_the_echoed_id() -> None:
    app = stack_answering(echo=True)
    with TestClient(gateway_over(app, show_backend=False)) as client:
        answer = client.get("/x")
    assert answer.headers.get_list("x-dualstack-backend") == []
    assert len(answer.headers.get_list("x-request-id")) == 1
