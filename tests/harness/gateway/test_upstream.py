"""Upstream mode's own behaviour, the gateway in front of a small upstream served by uvicorn
on loopback: hop-by-hop headers dropped both ways and `X-Forwarded-*` set, bodies streamed
both ways, answers never decoded, 502 for an upstream that is down and 504 for one that is
slow (the contract's error shape), each upstream admitted up to its bound, and routes read
from the FastAPI upstream's `/openapi.json`, then refreshed. And, with the real stacks as
processes: stopping the FastAPI upstream fails only FastAPI-bound requests, at once."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.gateway.policy import BUCKETS, bucket
from harness.gateway.upstream import (
    TIMED_OUT,
    UNAVAILABLE,
    RemoteRoutes,
    UpstreamConfig,
    _request_headers,
    parse_routes,
)
from harness.gateway.upstream import Upstream as UpstreamApp
from harness.local.emulators import LocalEmulators
from harness.local.processes import free_port
from harness.local.servers import ASGIServer

from .conftest import (
    RunningGateway,
    StartGateway,
    UpstreamStacks,
    gateway_settings,
    stack_process,
)

WAIT = 10.0
"""Seconds a test waits for an event that should come at once (a hang fails it instead)."""


class Upstream:
    """A small ASGI app standing in for a stack: it echoes what it got, answers slowly, in
    parts, compressed, or holds a request until released, and serves an OpenAPI document."""

    def __init__(self) -> None:
        self.paths: list[str] = ["/only-fastapi"]
        self.first_part = threading.Event()
        self.release = threading.Event()
        self.holding = threading.Event()
        self.compressed = gzip.compress(b'{"answer": "' + b"x" * 5000 + b'"}')

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"].removeprefix("/svc")  # served under a prefix too
        parts = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if len(parts) == 1 and path == "/upload":
                self.first_part.set()
            if not message.get("more_body"):
                break
        body = b"".join(parts)
        if path == "/openapi.json":
            paths = {p: {"get": {}} for p in self.paths}
            await _answer(send, 200, json.dumps({"openapi": "3.1.0", "paths": paths}).encode())
        elif path == "/slow":
            await asyncio.sleep(float(scope["query_string"] or b"2"))
            await _answer(send, 200, b'{"late": true}')
        elif path == "/parts":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first;", "more_body": True})
            await asyncio.to_thread(self.release.wait, WAIT)
            await send({"type": "http.response.body", "body": b"second"})
        elif path == "/gzip":
            headers = [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
            await _answer(send, 200, self.compressed, headers)
        elif path == "/hold":
            self.holding.set()
            await asyncio.to_thread(self.release.wait, WAIT)
            await _answer(send, 200, b'{"held": true}')
        else:
            echoed = {
                "method": scope["method"],
                "path": path,
                "raw_path": scope["raw_path"].decode(),
                "query": scope["query_string"].decode(),
                "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
                "body": body.decode("latin-1"),
            }
            hop = [
                (b"keep-alive", b"timeout=5"),
                (b"x-named-hop", b"1"),
                (b"connection", b"x-named-hop"),
                (b"proxy-authenticate", b"Basic"),
                (b"x-kept", b"yes"),
            ]
            await _answer(send, 200, json.dumps(echoed).encode(), hop)


async def _answer(
    send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    fields = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send(
        {"type": "http.response.start", "status": status, "headers": fields + (headers or [])}
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[Upstream, str]]:
    app = Upstream()
    server = ASGIServer(app).start()
    try:
        yield app, server.url
    finally:
        app.release.set()
        server.stop()


@pytest.fixture(scope="module")
def front(upstream: tuple[Upstream, str], start_gateway: StartGateway) -> Iterator[RunningGateway]:
    """The gateway at 100 %, its FastAPI side the small upstream, Flask mounted."""
    _, url = upstream
    with start_gateway(fastapi_url=url, fastapi_percent=100) as running:
        yield running


def _headers(echoed: dict[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in echoed["headers"]:
        found.setdefault(name, []).append(value)
    return found


def test_hop_by_hop_headers_are_dropped_both_ways_and_forwarded_ones_set(
    front: RunningGateway, upstream: tuple[Upstream, str]
) -> None:
    _, url = upstream
    sent = {
        "Connection": "x-drop-me",
        "X-Drop-Me": "1",
        "Keep-Alive": "timeout=9",
        "TE": "trailers",
        "Proxy-Authorization": "Basic eA==",
        "Upgrade": "h2c",
        "X-Forwarded-For": "203.0.113.7",
        "Host": "public.example",
        "X-Kept": "also",
        "X-Forwarded-Host": "spoofed.example",  # the gateway sets its own
        "Expect": "100-continue",  # answered by the gateway's server, never forwarded
    }
    with front.client() as client:
        answer = client.get("/echo/a%2Fb?x=1&y=%20", headers=sent)
    assert answer.status_code == 200, answer.text
    echoed = answer.json()
    got = _headers(echoed)
    for name in ("x-drop-me", "keep-alive", "te", "proxy-authorization", "upgrade", "expect"):
        assert name not in got, name
    assert got["x-kept"] == ["also"]
    # uvicorn trusts 127.0.0.1's X-Forwarded-For (--forwarded-allow-ips): the client is
    # 203.0.113.7 already, not appended twice. Without one, the peer's address is the list.
    assert got["x-forwarded-for"] == ["203.0.113.7"]
    with front.client() as client:
        plain = _headers(client.get("/echo").json())
    assert plain["x-forwarded-for"] == ["127.0.0.1"]
    assert plain["x-forwarded-host"] == [front.url.removeprefix("http://")]
    assert got["x-forwarded-proto"] == ["http"]
    assert got["x-forwarded-host"] == ["public.example"]
    assert got["host"] == [url.removeprefix("http://")]
    assert got["x-request-id"] == [answer.headers["x-request-id"]]
    # The path and query as the client wrote them, encoded slash included.
    assert (echoed["raw_path"], echoed["query"]) == ("/echo/a%2Fb", "x=1&y=%20")
    # The answer: hop-by-hop ones gone (and the one its Connection named), the rest kept,
    # one Server and one Date (the gateway's), the gateway's marks added.
    for name in ("keep-alive", "x-named-hop", "proxy-authenticate"):
        assert name not in answer.headers, name
    assert answer.headers["x-kept"] == "yes"
    assert len(answer.headers.get_list("server")) == len(answer.headers.get_list("date")) == 1
    assert answer.headers["x-dualstack-backend"] == "fastapi"


def test_the_answer_streams_in_parts_as_the_upstream_sends_them(
    front: RunningGateway, upstream: tuple[Upstream, str]
) -> None:
    app, _ = upstream
    app.release.clear()
    with front.client() as client, client.stream("GET", "/parts") as answer:
        chunks = answer.iter_raw()
        # The upstream holds its second part until released: a buffering gateway would
        # hold the first too, and this read would time out.
        assert next(chunks) == b"first;"
        app.release.set()
        assert b"".join(chunks) == b"second"


def test_the_request_body_streams_to_the_upstream_as_it_arrives(
    front: RunningGateway, upstream: tuple[Upstream, str]
) -> None:
    app, _ = upstream
    app.first_part.clear()
    arrived: list[bool] = []

    def parts() -> Iterator[bytes]:
        yield b"part one;"
        # The upstream has the first part before the client sends the second.
        arrived.append(app.first_part.wait(WAIT))
        yield b"part two"

    with front.client() as client:
        answer = client.post("/upload", content=parts(), headers={"Content-Type": "text/plain"})
    assert answer.status_code == 200, answer.text
    assert arrived == [True]
    assert answer.json()["body"] == "part one;part two"


def test_a_compressed_answer_goes_through_as_it_came(
    front: RunningGateway, upstream: tuple[Upstream, str]
) -> None:
    app, _ = upstream
    with (
        front.client() as client,
        client.stream("GET", "/gzip", headers={"Accept-Encoding": "gzip"}) as answer,
    ):
        raw = b"".join(answer.iter_raw())
    assert answer.headers["content-encoding"] == "gzip"
    assert answer.headers["content-length"] == str(len(app.compressed))
    assert raw == app.compressed


def test_an_upstream_that_is_down_is_a_502_at_once(start_gateway: StartGateway) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    with (
        start_gateway(
            fastapi_url=down, fastapi_percent=100, upstream_connect_timeout_seconds=1
        ) as gateway,
        gateway.client() as client,
    ):
        began = time.monotonic()
        answer = client.get("/health/detailed")
        took = time.monotonic() - began
    assert answer.status_code == 502
    assert answer.json() == {"error": UNAVAILABLE}
    assert answer.headers["x-dualstack-backend"] == "fastapi"
    assert answer.headers["content-type"] == "application/json"
    assert took < 1.0  # refused: no need to wait for the connect timeout


def test_a_slow_upstream_is_a_504_after_the_read_timeout(
    start_gateway: StartGateway, upstream: tuple[Upstream, str]
) -> None:
    _, url = upstream
    with (
        start_gateway(
            fastapi_url=url, fastapi_percent=100, upstream_read_timeout_seconds=0.3
        ) as gateway,
        gateway.client() as client,
    ):
        began = time.monotonic()
        slow = client.get("/slow?3")
        took = time.monotonic() - began
        quick = client.get("/slow?0")
    assert slow.status_code == 504
    assert slow.json() == {"error": TIMED_OUT}
    assert 0.3 <= took < 2.5
    assert quick.status_code == 200


def test_each_upstream_is_admitted_up_to_its_bound(
    start_gateway: StartGateway, upstream: tuple[Upstream, str]
) -> None:
    app, url = upstream
    app.release.clear()
    app.holding.clear()
    options = {"upstream_max_in_flight": 1, "upstream_max_wait_seconds": 0.2}
    with (
        start_gateway(fastapi_url=url, fastapi_percent=100, **options) as gateway,
        ThreadPoolExecutor(1) as pool,
    ):
        held = pool.submit(lambda: httpx.get(f"{gateway.url}/hold", timeout=WAIT))
        assert app.holding.wait(WAIT)
        with gateway.client() as client:
            began = time.monotonic()
            shed = client.get("/echo")
            took = time.monotonic() - began
            app.release.set()
            assert held.result().status_code == 200
            after = client.get("/echo")
    assert shed.status_code == 503
    assert shed.headers["retry-after"] == "1"
    assert set(shed.json()) == {"error"}
    assert took < 2.0  # shed within its wait, not after the held one
    assert after.status_code == 200


def test_routes_come_from_the_upstream_s_openapi_and_are_refreshed(
    start_gateway: StartGateway, upstream: tuple[Upstream, str]
) -> None:
    app, url = upstream
    app.paths = ["/only-fastapi"]
    # Both sides are the small upstream: Flask's routes listed, FastAPI's read.
    options = {
        "flask_url": url,
        "fastapi_url": url,
        "flask_routes": "/legacy-only,/echo",
        "upstream_routes_refresh_seconds": 0.2,
    }
    with start_gateway(fastapi_percent=100, **options) as gateway, gateway.client() as client:
        # At 100 %: a path only Flask lists stays Flask's; one only FastAPI's document has,
        # FastAPI's; one both have, FastAPI's (the share decides).
        assert client.get("/legacy-only").headers["x-dualstack-backend"] == "flask"
        assert client.get("/only-fastapi").headers["x-dualstack-backend"] == "fastapi"
        gateway.set_percent(0)
        assert client.get("/only-fastapi").headers["x-dualstack-backend"] == "fastapi"
        assert client.get("/echo").headers["x-dualstack-backend"] == "flask"
        # The document gains /legacy-only: once re-read, both serve it and 0 % says Flask;
        # at 100 % FastAPI.
        app.paths = ["/only-fastapi", "/legacy-only"]
        gateway.set_percent(100)
        deadline = time.monotonic() + WAIT
        while client.get("/legacy-only").headers["x-dualstack-backend"] != "fastapi":
            assert time.monotonic() < deadline, "the routes were not refreshed"
            time.sleep(0.05)  # the refresh is periodic: no event to wait on


def test_routes_are_unknown_until_the_document_can_be_read(start_gateway: StartGateway) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    with (
        start_gateway(fastapi_url=down, fastapi_percent=0, flask_routes="/health") as gateway,
        gateway.client() as client,
    ):
        # FastAPI's routes unknown: it may serve any path, so at 0 % Flask gets /health...
        assert client.get("/health").headers["x-dualstack-backend"] == "flask"
        # ... and a path Flask's app does not have goes to FastAPI (down: 502).
        assert client.get("/health/detailed").status_code == 502


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/health, /api/v1/chat", ["/health", "/api/v1/chat"]),
        ("/a/<sid> /b/<int:n>", ["/a/{sid}", "/b/{n}"]),
        ("/static/<path:filename>", ["/static/{filename:path}"]),
        ('["/x/{id}", "/y"]', ["/x/{id}", "/y"]),
        ("", None),
        (None, None),
    ],
)
def test_route_lists_read_flask_or_starlette_templates(
    text: str | None, expected: list[str] | None
) -> None:
    assert parse_routes(text) == expected


@pytest.mark.parametrize("text", ["health", '["/x", 3]', "[not json"])
def test_a_bad_route_list_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_routes(text)


def test_remote_routes_match_any_path_until_known_and_tell_listeners_of_changes() -> None:
    routes = RemoteRoutes()
    told: list[int] = []
    routes.add_listener(lambda: told.append(1))
    assert routes("/anything") == "*"
    assert routes.set(["/a/{id}"]) is True
    assert (routes("/a/1"), routes("/b")) == ("/a/{id}", None)
    assert routes.set(["/a/{id}"]) is False  # the same: nothing to tell
    assert told == [1]


def _expected(salt: str, key: str, percent: float) -> str:
    return "fastapi" if bucket(salt, key) < round(percent * BUCKETS / 100, 6) else "flask"


def test_stopping_the_fastapi_upstream_fails_fastapi_bound_requests_only(
    emulators: LocalEmulators,
    upstream_stacks: UpstreamStacks,
    start_gateway: StartGateway,
    tmp_path: Path,
) -> None:
    with stack_process("fastapi", emulators, tmp_path) as fastapi:
        options = {
            **upstream_stacks.settings(),
            "fastapi_url": fastapi.url,
            "upstream_connect_timeout_seconds": 1.0,
        }
        with start_gateway(fastapi_percent=50, **options) as gateway:
            salt = gateway.app.state.salt
            keys = [f"stop-{n}-{uuid.uuid4().hex[:6]}" for n in range(12)]
            sides = {key: _expected(salt, key, 50) for key in keys}
            assert set(sides.values()) == {"flask", "fastapi"}
            with gateway.client() as client:
                before = {key: _chat(client, key) for key in keys}
                fastapi.stop()
                after = {key: _timed_chat(client, key) for key in keys}
    assert {key: answer.status_code for key, answer in before.items()} == dict.fromkeys(keys, 200)
    for key, (answer, took) in after.items():
        assert answer.headers["x-dualstack-backend"] == sides[key]
        if sides[key] == "fastapi":
            assert answer.status_code == 502, answer.text
            assert answer.json() == {"error": UNAVAILABLE}
            assert took < 1.0  # within the connect timeout
        else:
            assert answer.status_code == 200, answer.text


def _chat(client: httpx.Client, key: str) -> httpx.Response:
    return client.post("/api/v1/chat", json={"message": "hello", "session_id": key})


def _timed_chat(client: httpx.Client, key: str) -> tuple[httpx.Response, float]:
    began = time.monotonic()
    answer = _chat(client, key)
    return answer, time.monotonic() - began


def test_connection_cannot_name_away_the_gateway_s_own_headers(
    front: RunningGateway,
) -> None:
    body = b'{"message": "kept whole"}'
    with front.client() as client:
        answer = client.post(
            "/echo",
            content=body,
            headers={
                "Connection": "keep-alive, X-Request-ID, Content-Length, X-Dualstack-Shadow",
                "Content-Type": "application/json",
                "X-Request-ID": "named-away-1",
            },
        )
    got = _headers(answer.json())
    assert got["x-request-id"] == ["named-away-1"]
    assert got["content-length"] == [str(len(body))]
    assert answer.json()["body"] == body.decode()
    # A shadow copy's marker survives a client's Connection naming it (the copy would
    # otherwise be served as a real turn): the header list the upstream gets keeps it.
    scope = {
        "type": "http",
        "headers": [
            (b"connection", b"x-dualstack-shadow, x-minted, \xff"),
            (b"x-dualstack-shadow", b"rid-1"),
            (b"x-minted", b"gone"),
        ],
        "client": ("127.0.0.1", 5),
    }
    headers, has_body = _request_headers(scope)
    assert not has_body
    assert headers.getall("X-Dualstack-Shadow") == ["rid-1"]
    assert "x-minted" not in headers  # a client's own header it names is dropped


@pytest.mark.parametrize("raw_path", [b"@127.0.0.1:9/x", b"*", b".evil.invalid/x"])
def test_a_path_that_is_not_a_path_never_leaves_for_another_host(raw_path: bytes) -> None:
    # h11 accepts `GET @host/x`: glued to the origin it would name another host.
    upstream = UpstreamApp(UpstreamConfig("fastapi", "http://127.0.0.1:9"))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        await upstream.start()
        try:
            scope = {"type": "http", "method": "GET", "path": raw_path.decode(),
                     "raw_path": raw_path, "query_string": b"", "headers": []}  # fmt: skip
            await upstream(scope, receive, send)
        finally:
            await upstream.close()

    asyncio.run(run())
    assert sent[0]["status"] == 404
    assert json.loads(sent[1]["body"]) == {"error": "Not found"}


def test_a_client_leaving_mid_body_is_not_the_upstream_s_failure(
    upstream: tuple[Upstream, str],
) -> None:
    _, url = upstream
    app = UpstreamApp(UpstreamConfig("fastapi", url))
    messages = [
        {"type": "http.request", "body": b"part one", "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        await app.start()
        try:
            scope = {
                "type": "http",
                "method": "POST",
                "path": "/upload",
                "raw_path": b"/upload",
                "query_string": b"",
                "headers": [(b"transfer-encoding", b"chunked")],
            }
            await app(scope, receive, send)
        finally:
            await app.close()

    asyncio.run(run())
    assert sent == []  # nobody to answer: no 502 counted against the upstream


def test_an_upstream_under_a_path_prefix_is_routed_by_its_app_s_paths(
    start_gateway: StartGateway, upstream: tuple[Upstream, str]
) -> None:
    app, url = upstream
    app.paths = ["/only-fastapi"]
    options = {"fastapi_url": f"{url}/svc", "flask_routes": "/echo"}
    with start_gateway(fastapi_percent=0, **options) as gateway, gateway.client() as client:
        answer = client.get("/only-fastapi")
    assert answer.headers["x-dualstack-backend"] == "fastapi"  # read from /svc/openapi.json
    assert answer.json()["raw_path"] == "/svc/only-fastapi"


def test_a_streamed_body_past_the_limit_is_a_413_as_a_read_one_is(
    start_gateway: StartGateway, upstream: tuple[Upstream, str]
) -> None:
    _, url = upstream

    def parts(size: int) -> Iterator[bytes]:
        for _ in range(size // 1000):
            yield b"x" * 1000

    limit = {"max_body_bytes": 4096}
    headers = {"Content-Type": "text/plain"}
    with (
        start_gateway(fastapi_url=url, fastapi_percent=100, **limit) as gateway,
        gateway.client() as client,
    ):
        chunked = client.post("/upload", content=parts(6000), headers=headers)
        declared = client.post("/upload", content=b"x" * 6000, headers=headers)
        within = client.post("/upload", content=parts(3000), headers=headers)
    assert [chunked.status_code, declared.status_code] == [413, 413], within.status_code
    for refused in (chunked, declared):
        assert refused.json() == {"error": "Request body too large"}
    assert within.status_code == 200 and len(within.json()["body"]) == 3000


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("flask_url", "ftp://legacy", "must be an http:// or https:// URL with a host"),
        ("fastapi_url", "http://new:8002/?x=1", "must not have a query or a fragment"),
        ("fastapi_url", "http://new:99999", "has a port that is not a number"),
        ("flask_routes", "health", "must start with '/'"),
        ("fastapi_routes", '["/docs", 3]', "a JSON list of route templates"),
    ],
)
def test_bad_upstream_settings_stop_the_start_in_one_line(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        gateway_settings(**{name: value})
