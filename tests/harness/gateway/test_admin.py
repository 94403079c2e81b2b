"""The admin API, mounted at /_gateway as the gateway mounts it, over a real RolloutState on
the moto DynamoDB; requests go through httpx's ASGITransport inside `asyncio.run`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from structlog.testing import capture_logs

from harness.gateway.admin import build_admin
from harness.gateway.policy import Rollout
from harness.gateway.rollout import RolloutState, RolloutStore
from shared.session import iso

OpenClient = Callable[[], AbstractAsyncContextManager[Any]]

NOW = 1_800_000_000.25
AT = iso(NOW)
TOKEN = "s3cret-token"
INITIAL = Rollout(fastapi_percent=10)
CLIENT_HOST = "203.0.113.7"
ACTOR = "admin"  # the token's holder; never an address a client can set
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DISABLED = {"error": "Rollout changes are disabled: set GATEWAY_ADMIN_TOKEN to enable them"}
UNAUTHORIZED = {"error": "Invalid or missing admin token"}
METRICS = (
    b"# HELP x A metric.\n# TYPE x gauge\nx 1.0\n",
    "text/plain; version=0.0.4; charset=utf-8",
)


@dataclass
class Admin:
    http: httpx.AsyncClient
    state: RolloutState
    dynamodb: Any  # open_client's client: set `broken` to cut the store off

    async def history(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in await self.state.store.history()]


@asynccontextmanager
async def running_admin(
    open_client: OpenClient,
    table: str,
    *,
    token: str | None = TOKEN,
    metrics: Callable[[], tuple[bytes, str]] = lambda: METRICS,
    mounted: bool = True,
    interval: float = 60,
) -> AsyncIterator[Admin]:
    """The admin app over a started state, mounted at /_gateway as the gateway mounts it."""
    async with open_client() as client:
        dynamodb = client
        store = RolloutStore(dynamodb, table, initial=INITIAL, clock=lambda: NOW)
        state = RolloutState(store, interval=interval)
        await state.start()
        try:
            admin = build_admin(state, token=token, metrics=metrics)
            app = Starlette(routes=[Mount("/_gateway", app=admin)]) if mounted else admin
            transport = httpx.ASGITransport(
                app=app, client=(CLIENT_HOST, 50123), raise_app_exceptions=False
            )
            base = "http://gateway/_gateway" if mounted else "http://gateway"
            async with httpx.AsyncClient(transport=transport, base_url=base) as http:
                yield Admin(http, state, dynamodb)
        finally:
            await state.stop()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        await scenario()

    asyncio.run(main())


# --- reading --------------------------------------------------------------------------------


@pytest.mark.parametrize("mounted", [True, False])
def test_get_rollout_shows_the_current_rollout(
    mounted: bool, rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with running_admin(open_client, rollout_table, token=None, mounted=mounted) as a:
            response = await a.http.get("/rollout")
            assert response.status_code == 200
            assert response.json() == {
                "fastapi_percent": 10.0,
                "routes": {},
                "version": 0,
                "shadow_percent": 0.0,
            }

    run(scenario)


def test_metrics_are_passed_through(rollout_table: str, open_client: OpenClient) -> None:
    async def scenario() -> None:
        async with running_admin(open_client, rollout_table) as a:
            response = await a.http.get("/metrics")
            assert response.status_code == 200
            assert response.content == METRICS[0]
            assert response.headers["content-type"] == METRICS[1]

    run(scenario)


# --- changing -------------------------------------------------------------------------------


def test_an_authorised_change_is_applied_shown_audited_and_logged(
    rollout_table: str, open_client: OpenClient
) -> None:
    expected = {
        "at": AT,
        "actor": ACTOR,
        "old": {"fastapi_percent": 10.0, "routes": {}, "version": 0, "shadow_percent": 0.0},
        "new": {
            "fastapi_percent": 60.0,
            "routes": {"/api/v1/chat": 25.0},
            "version": 1,
            "shadow_percent": 0.0,
        },
    }

    async def scenario() -> None:
        async with running_admin(open_client, rollout_table) as a:
            body = {"fastapi_percent": 60, "routes": {"/api/v1/chat": 25, "/old": None}}
            with capture_logs() as logs:
                response = await a.http.put("/rollout", json=body, headers=AUTH)
            assert (response.status_code, response.json()) == (200, expected)
            # This worker routes by it at once, without waiting for a poll.
            assert a.state.current == Rollout(60, {"/api/v1/chat": 25}, version=1)
            assert (await a.http.get("/rollout")).json() == expected["new"]
            history = await a.http.get("/rollout/history", headers=AUTH)
            assert (history.status_code, history.json()) == (200, {"changes": [expected]})
            assert logs == [
                {
                    "event": "rollout.changed",
                    "log_level": "info",
                    "actor": ACTOR,
                    "at": AT,
                    "old": expected["old"],
                    "new": expected["new"],
                }
            ]

    run(scenario)


def test_a_route_override_is_removed_with_null(rollout_table: str, open_client: OpenClient) -> None:
    async def scenario() -> None:
        async with running_admin(open_client, rollout_table) as a:
            await a.http.put("/rollout", json={"routes": {"/a": 5, "/b": 7}}, headers=AUTH)
            response = await a.http.put("/rollout", json={"routes": {"/a": None}}, headers=AUTH)
            assert response.json()["new"] == {
                "fastapi_percent": 10.0,
                "routes": {"/b": 7.0},
                "version": 2,
                "shadow_percent": 0.0,
            }

    run(scenario)


@pytest.mark.parametrize(
    ("token", "headers", "status", "body"),
    [
        (None, AUTH, 403, DISABLED),
        ("", {"Authorization": "Bearer "}, 403, DISABLED),
        (TOKEN, {}, 401, UNAUTHORIZED),
        (TOKEN, {"Authorization": "Bearer wrong"}, 401, UNAUTHORIZED),
        (TOKEN, {"Authorization": f"Bearer {TOKEN}x"}, 401, UNAUTHORIZED),
        (TOKEN, {"Authorization": f"Basic {TOKEN}"}, 401, UNAUTHORIZED),
        (TOKEN, {"Authorization": TOKEN}, 401, UNAUTHORIZED),
        (TOKEN, {"Authorization": "Bearer"}, 401, UNAUTHORIZED),
        # A non-ASCII token is compared as the UTF-8 bytes the client sent.
        ("tök€n", {"Authorization": "Bearer tök".encode()}, 401, UNAUTHORIZED),
        ("tök€n", {"Authorization": "Bearer tök€n".encode()}, 200, None),
        (TOKEN, {"Authorization": f"bearer  {TOKEN} "}, 200, None),  # scheme is case-blind
        (TOKEN, AUTH, 200, None),
    ],
)
def test_changes_need_the_configured_token(
    token: str | None,
    headers: dict[str, str | bytes],
    status: int,
    body: dict[str, str] | None,
    rollout_table: str,
    open_client: OpenClient,
) -> None:
    async def scenario() -> None:
        async with running_admin(open_client, rollout_table, token=token) as a:
            raw = {k.encode(): v.encode() if isinstance(v, str) else v for k, v in headers.items()}
            response = await a.http.put("/rollout", json={"fastapi_percent": 60}, headers=raw)
            assert response.status_code == status
            if body is not None:
                assert response.json() == body
                # Refused: nothing changed, in memory or in the store.
                assert a.state.current == INITIAL
                assert await a.history() == []
            else:
                assert a.state.current.fastapi_percent == 60
            challenge = response.headers.get("www-authenticate")
            assert challenge == ("Bearer" if status == 401 else None)

    run(scenario)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not json", "Request body must be valid JSON"),
        (b"", "Request body must be valid JSON"),
        (b'{"fastapi_percent": \xff}', "Request body must be valid JSON"),
        (b"[60]", "Request body must be a JSON object"),
        (b"60", "Request body must be a JSON object"),
        (b"{}", "Give fastapi_percent, shadow_percent and/or routes"),
        (
            b'{"percent": 60, "route": {}}',
            "Unknown field(s): percent, route; "
            "expected fastapi_percent, shadow_percent and/or routes",
        ),
        (
            b'{"fastapi_percent": null}',
            "fastapi_percent must be a number from 0 to 100, not null",
        ),
        (
            b'{"fastapi_percent": "60"}',
            "fastapi_percent: percent must be a number from 0 to 100, not '60'",
        ),
        (
            b'{"fastapi_percent": true}',
            "fastapi_percent: percent must be a number from 0 to 100, not True",
        ),
        (
            b'{"fastapi_percent": 100.5}',
            "fastapi_percent: percent must be from 0 to 100, not 100.5",
        ),
        (b'{"fastapi_percent": -1}', "fastapi_percent: percent must be from 0 to 100, not -1"),
        (b'{"fastapi_percent": NaN}', "fastapi_percent: percent must be from 0 to 100, not nan"),
        (
            b'{"routes": [["/a", 5]]}',
            "routes must be a JSON object mapping path prefixes to a percent or null",
        ),
        (
            b'{"routes": {}}',
            "Nothing to change: give fastapi_percent, shadow_percent and/or routes",
        ),
        (b'{"routes": {"api": 5}}', "route prefix must start with '/', not 'api'"),
        (b'{"routes": {"/a b": 5}}', "route prefix must not contain whitespace, not '/a b'"),
        # Hostile text: a lone surrogate (cannot be stored or answered as UTF-8), NUL.
        (
            b'{"routes": {"/a\\ud800": 5}}',
            "route prefix must be printable text, not '/a\\ud800'",
        ),
        (b'{"routes": {"/a\\u0000": 5}}', "route prefix must be printable text, not '/a\\x00'"),
        (b"[" * 30_000 + b"]" * 30_000, "Request body must be valid JSON"),  # too deep
        (
            b'{"routes": {"/a": "5"}}',
            "routes['/a']: percent must be a number from 0 to 100, not '5'",
        ),
        # The whole body is refused: the valid percentage is not applied either.
        (
            b'{"fastapi_percent": 50, "routes": {"/a/": 5}}',
            "route prefix must not end with '/', not '/a/'",
        ),
    ],
)
def test_bad_bodies_are_refused_with_the_reason(
    content: bytes, message: str, rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with running_admin(open_client, rollout_table) as a:
            headers = {**AUTH, "Content-Type": "application/json"}
            response = await a.http.put("/rollout", content=content, headers=headers)
            assert (response.status_code, response.json()) == (400, {"error": message})
            assert a.state.current == INITIAL
            assert await a.history() == []

    run(scenario)


def test_an_oversized_body_is_refused(rollout_table: str, open_client: OpenClient) -> None:
    async def scenario() -> None:
        async with running_admin(open_client, rollout_table) as a:
            routes = {f"/{'a' * 100}{i}": 1 for i in range(1000)}
            content = json.dumps({"routes": routes}).encode()
            response = await a.http.put("/rollout", content=content, headers=AUTH)
            assert (response.status_code, response.json()) == (
                413,
                {"error": "Request body too large"},
            )

    run(scenario)


def test_an_unreachable_store_answers_503(rollout_table: str, open_client: OpenClient) -> None:
    async def scenario() -> None:
        async with running_admin(open_client, rollout_table) as a:
            a.dynamodb.broken = True
            put = await a.http.put("/rollout", json={"fastapi_percent": 60}, headers=AUTH)
            history = await a.http.get("/rollout/history", headers=AUTH)
            for response in (put, history):
                assert response.status_code == 503
                assert response.json() == {"error": "Rollout store unavailable"}
                assert response.headers["retry-after"] == "5"
            # Reading the rollout needs no store: this worker's view is still served.
            current = await a.http.get("/rollout")
            assert current.json() == {
                "fastapi_percent": 10.0,
                "routes": {},
                "version": 0,
                "shadow_percent": 0.0,
            }
            assert a.state.current == INITIAL

    run(scenario)


async def _health_until(admin: Admin, status: str) -> dict[str, Any]:
    """The health body once it says `status` (the poll runs every 20 ms); fails after 30 s."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        response = await admin.http.get("/health")
        assert response.status_code == 200  # degraded still routes: never taken out
        body: dict[str, Any] = response.json()
        if body["status"] == status:
            return body
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.02)


def test_health_says_degraded_and_why_while_the_store_is_down_and_recovers(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with running_admin(open_client, rollout_table, interval=0.02) as a:
            ok = (await a.http.get("/health")).json()
            assert (ok["status"], ok["reason"], ok["consecutive_failures"]) == ("ok", None, 0)
            assert ok["rollout_version"] == 0 and ok["last_read_at"].endswith("Z")
            a.dynamodb.broken = True
            degraded = await _health_until(a, "degraded")
            assert degraded["reason"].startswith("rollout store unreachable: ")
            assert degraded["consecutive_failures"] >= 1
            assert degraded["rollout_version"] == 0  # still routing by what it read
            assert (await a.http.get("/rollout")).json()["fastapi_percent"] == 10.0
            a.dynamodb.broken = False
            recovered = await _health_until(a, "ok")
            assert (recovered["reason"], recovered["consecutive_failures"]) == (None, 0)

    run(scenario)


# --- history --------------------------------------------------------------------------------


def test_history_is_newest_first_and_limited(rollout_table: str, open_client: OpenClient) -> None:
    async def scenario() -> None:
        async with running_admin(open_client, rollout_table) as a:
            for percent in (20, 30, 40):
                await a.http.put("/rollout", json={"fastapi_percent": percent}, headers=AUTH)
            every = (await a.http.get("/rollout/history", headers=AUTH)).json()["changes"]
            assert [c["new"]["fastapi_percent"] for c in every] == [40, 30, 20]
            assert [c["old"]["fastapi_percent"] for c in every] == [30, 20, 10]
            latest = (
                await a.http.get("/rollout/history", headers=AUTH, params={"limit": 1})
            ).json()
            assert latest == {"changes": every[:1]}
            for bad in ("0", "201", "-1", "abc", "1.5", "99999999999999999999"):
                response = await a.http.get("/rollout/history", headers=AUTH, params={"limit": bad})
                assert (response.status_code, response.json()) == (
                    400,
                    {"error": "limit must be an integer from 1 to 200"},
                ), bad

    run(scenario)


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "body", "allow"),
    [
        ("GET", "/nope", 404, {"error": "Not found"}, None),
        ("GET", "/rollout/", 404, {"error": "Not found"}, None),
        ("GET", "/", 404, {"error": "Not found"}, None),
        ("DELETE", "/rollout", 405, {"error": "Method not allowed"}, "GET, HEAD, PUT"),
        ("POST", "/metrics", 405, {"error": "Method not allowed"}, "GET, HEAD"),
        ("PUT", "/rollout/history", 405, {"error": "Method not allowed"}, "GET, HEAD"),
    ],
)
def test_unknown_paths_and_wrong_methods_answer_json(
    method: str,
    path: str,
    status: int,
    body: dict[str, str],
    allow: str | None,
    rollout_table: str,
    open_client: OpenClient,
) -> None:
    async def scenario() -> None:
        async with running_admin(open_client, rollout_table) as a:
            response = await a.http.request(method, path)
            assert (response.status_code, response.json()) == (status, body)
            assert response.headers.get("allow") == allow

    run(scenario)


def test_an_internal_error_answers_json_without_details(
    rollout_table: str, open_client: OpenClient
) -> None:
    def broken_metrics() -> tuple[bytes, str]:
        raise RuntimeError("secret internals")

    async def scenario() -> None:
        async with running_admin(open_client, rollout_table, metrics=broken_metrics) as a:
            response = await a.http.get("/metrics")
            assert (response.status_code, response.json()) == (
                500,
                {"error": "Internal server error"},
            )
            assert "secret" not in response.text

    run(scenario)


@pytest.mark.parametrize(
    ("token", "headers", "status", "body"),
    [
        (TOKEN, {}, 401, UNAUTHORIZED),
        (TOKEN, {"Authorization": "Bearer wrong"}, 401, UNAUTHORIZED),
        (None, AUTH, 403, {"error": "The rollout history needs GATEWAY_ADMIN_TOKEN: none is set"}),
    ],
)
def test_the_history_needs_the_token(
    token: str | None,
    headers: dict[str, str],
    status: int,
    body: dict[str, str],
    rollout_table: str,
    open_client: OpenClient,
) -> None:
    # It says who changed what and when: not for every client of the service.
    async def scenario() -> None:
        async with running_admin(open_client, rollout_table, token=token) as a:
            response = await a.http.get("/rollout/history", headers=headers)
            assert (response.status_code, response.json()) == (status, body)

    run(scenario)


def test_the_recorded_actor_is_not_taken_from_client_headers(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with running_admin(open_client, rollout_table) as a:
            forged = {**AUTH, "X-Forwarded-For": "198.51.100.9", "Forwarded": "for=evil"}
            response = await a.http.put("/rollout", json={"fastapi_percent": 20}, headers=forged)
            assert response.status_code == 200
            assert [change["actor"] for change in await a.history()] == ["admin"]

    run(scenario)
