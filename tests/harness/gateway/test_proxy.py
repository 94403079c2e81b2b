"""The proxy's per-rollout plans: what depends only on the rollout and the path is made once
per rollout change, follows every change at once, and stays bounded whatever paths arrive."""

from __future__ import annotations

import json
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
from shared.contract import is_identifier


class MutableRollout:
    """The rollout state without a store; a test sets `current` as the admin API would."""

    def __init__(self, percent: float) -> None:
        self.current = Rollout(fastapi_percent=percent)
        self.salt = "test"

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


JSON = {"Content-Type": "application/json"}


def recording_gateway(state: MutableRollout, **settings: Any) -> tuple[Gateway, list[Any]]:
    """A gateway whose stacks record what they were given: (backend, scope headers, the
    messages they received)."""
    seen: list[Any] = []

    def stack(name: str) -> Any:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                await echo(scope, receive, send)
                return
            messages = []
            if scope["method"] != "GET":
                while True:
                    message = await receive()
                    messages.append(message)
                    if not message.get("more_body"):
                        break
            seen.append((name, dict(scope["headers"]), messages))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        return app

    @asynccontextmanager
    async def control() -> AsyncIterator[tuple[Any, Any]]:
        yield state, echo

    both = template_matcher(["/api/v1/chat", "/x/{n}"])
    options = GatewaySettings(salt="test", **settings)
    stacks = Stacks(stack("flask"), stack("fastapi"))
    return Gateway(stacks, Ownership(both, both), options, control), seen


@pytest.mark.parametrize("percent", [0, 100])
@pytest.mark.parametrize("wanted", ["flask", "fastapi"])
def test_the_override_picks_a_stack_at_a_share_no_draw_can_change(
    percent: float, wanted: str
) -> None:
    gateway, _ = recording_gateway(MutableRollout(percent), override_header="open")
    with TestClient(gateway) as client:
        answer = client.get("/x/1", headers={"X-Dualstack-Backend": wanted})
        plain = client.get("/x/1")
    assert answer.headers["x-dualstack-backend"] == wanted
    assert plain.headers["x-dualstack-backend"] == ("fastapi" if percent else "flask")
    assert decisions(gateway)[(wanted, "override")] == 1


def test_the_override_is_ignored_when_disabled() -> None:
    gateway, _ = recording_gateway(MutableRollout(0), override_header="off")
    with TestClient(gateway) as client:
        answer = client.get("/x/1", headers={"X-Dualstack-Backend": "fastapi"})
    assert answer.headers["x-dualstack-backend"] == "flask"


def test_a_bodyless_request_is_not_read_by_the_gateway() -> None:
    # GET with `Content-Length: 0`: the stack reads the request itself, nothing replayed.
    gateway, seen = recording_gateway(MutableRollout(100))
    with TestClient(gateway) as client:
        client.get("/x/1", headers={"Content-Length": "0"})
        client.post("/api/v1/chat", content=b'{"message": "m"}')
    (_, _, get_messages), (_, _, post_messages) = seen
    assert get_messages == []
    assert post_messages == [
        {"type": "http.request", "body": b'{"message": "m"}', "more_body": False}
    ]


@pytest.mark.parametrize(
    ("given", "body", "kept_id", "minted"),
    [
        # An id the client gave is kept; a body without a session id grows by the minted one.
        ({"X-Request-ID": "client-1"}, {"message": "m"}, True, True),
        ({}, {"message": "m"}, False, True),
        ({}, {"message": "m", "session_id": "s-1"}, False, False),
        # A client's own minted-key header never reaches a stack beside the gateway's.
        ({"X-Dualstack-Minted-Key": "forged"}, {"message": "m"}, False, True),
    ],
    ids=["given-id-minted-key", "minted-id-minted-key", "minted-id-own-key", "forged-hint"],
)
def test_the_stack_gets_one_request_id_and_the_length_of_what_it_is_sent(
    given: dict[str, str], body: dict[str, str], kept_id: bool, minted: bool
) -> None:
    gateway, seen = recording_gateway(MutableRollout(50))
    with TestClient(gateway) as client:
        raw = json.dumps(body).encode()
        client.post("/api/v1/chat", content=raw, headers={**given, **JSON})
    [(_, headers, messages)] = seen
    sent = b"".join(message["body"] for message in messages)
    assert headers[b"content-length"] == str(len(sent)).encode()
    if minted:
        assert json.loads(sent) == {**body, "session_id": json.loads(sent)["session_id"]}
        assert len(sent) > len(raw)
        # The stack is told the conversation is new: the id is the one it was minted.
        assert headers[b"x-dualstack-minted-key"].decode() == json.loads(sent)["session_id"]
    else:
        assert sent == raw
        assert b"x-dualstack-minted-key" not in headers
    if kept_id:
        assert headers[b"x-request-id"] == b"client-1"
    else:
        assert is_identifier(headers[b"x-request-id"].decode())


def test_plans_are_dropped_only_when_the_bound_is_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proxy._Routes, "MAX_PATHS", 3)
    gateway = gateway_with(MutableRollout(50))
    with TestClient(gateway) as client:
        sizes = []
        for n in range(5):
            client.get(f"/x/{n}")
            routes = gateway._routes
            assert routes is not None
            sizes.append(len(routes.plans))
    assert sizes == [1, 2, 3, 1, 2]
