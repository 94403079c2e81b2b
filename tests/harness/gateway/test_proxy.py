"""The proxy's per-rollout plans: what depends only on the rollout and the path is made once
per rollout change, follows every change at once, and stays bounded whatever paths arrive."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.testclient import TestClient

from harness.gateway import proxy
from harness.gateway.ownership import Ownership, template_matcher
from harness.gateway.policy import Rollout
from harness.gateway.proxy import Gateway, Stacks
from harness.gateway.settings import GatewaySettings


class MutableRollout:
    """The rollout state without a store; a test sets `current` as the admin API would."""

    def __init__(self, percent: float) -> None:
        self.current = Rollout(fastapi_percent=percent)

    def add_listener(self, listener: Any) -> None:
        pass


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def gateway_with(state: MutableRollout) -> Gateway:
    @asynccontextmanager
    async def control() -> AsyncIterator[tuple[Any, Any]]:
        yield state, echo

    both = template_matcher(["/api/v1/chat", "/x/{n}"])
    only_fastapi = template_matcher(["/api/v1/chat", "/x/{n}", "/docs"])
    settings = GatewaySettings(salt="test")
    return Gateway(Stacks(echo, echo), Ownership(both, only_fastapi), settings, control)


def decisions(gateway: Gateway) -> dict[tuple[str, str], int]:
    return {key: count for key, count in gateway.metrics.decisions.items() if count}


def test_a_rollout_change_applies_to_the_next_request() -> None:
    state = MutableRollout(0)
    gateway = gateway_with(state)
    body = {"message": "m", "session_id": "conversation-1"}
    with TestClient(gateway) as client:
        client.post("/api/v1/chat", json=body)
        # At 0 % the key cannot change the answer: not looked for, a draw at 0 % decides.
        assert decisions(gateway) == {("flask", "random"): 1}
        state.current = Rollout(fastapi_percent=0, routes={"/api/v1/chat": 50})
        answer = client.post("/api/v1/chat", json=body)
        backend = answer.headers["x-dualstack-backend"]
        assert decisions(gateway) == {("flask", "random"): 1, (backend, "sticky"): 1}
        state.current = Rollout(fastapi_percent=100)
        client.post("/api/v1/chat", json=body)
        assert decisions(gateway)[("fastapi", "random")] == 1


def test_a_path_one_stack_owns_goes_there_under_any_rollout() -> None:
    state = MutableRollout(0)
    gateway = gateway_with(state)
    with TestClient(gateway) as client:
        assert client.get("/docs").headers["x-dualstack-backend"] == "fastapi"
        state.current = Rollout(fastapi_percent=30)
        override = {"X-Dualstack-Backend": "flask"}
        assert client.get("/docs", headers=override).headers["x-dualstack-backend"] == "fastapi"
    assert decisions(gateway) == {("fastapi", "owner"): 2}


def test_plans_stay_bounded_whatever_paths_arrive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy._Routes, "MAX_PATHS", 4)
    gateway = gateway_with(MutableRollout(50))
    with TestClient(gateway) as client:
        for n in range(10):
            assert client.get(f"/x/{n}").status_code == 200
        routes = gateway._routes
        assert routes is not None and 1 <= len(routes.plans) <= 4
        # Still right after the plans were dropped: the owner of a path is found again.
        assert client.get("/docs").headers["x-dualstack-backend"] == "fastapi"
