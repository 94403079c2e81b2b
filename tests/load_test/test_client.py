"""The HTTP client: its wire format (pure), and exchanges with real loopback servers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from harness.local.servers import ASGIServer, WSGIServer
from load_test.ceiling import Behaviour, TrivialServer
from load_test.client import (
    Connection,
    Outcome,
    ProtocolError,
    Request,
    Response,
    encode_request,
    exchange,
    parse_head,
    parse_origin,
)


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("http://localhost/anything", ("localhost", 80)),
    ],
)
def test_parse_origin(url: str, origin: tuple[str, int]) -> None:
    assert parse_origin(url) == origin


@pytest.mark.parametrize("url", ["https://example.com", "127.0.0.1:80", "http://"])
def test_parse_origin_refuses_what_it_cannot_speak(url: str) -> None:
    with pytest.raises(ValueError, match="only http"):
        parse_origin(url)


@pytest.mark.parametrize(
    ("request_", "wire"),
    [
        (
            Request("GET", "/health", b"", (("Accept", "application/json"),)),
            b"GET /health HTTP/1.1\r\nHost: h:1\r\nAccept: application/json\r\n\r\n",
        ),
        (
            Request("POST", "/api/v1/chat", b'{"message": "hi"}'),
            b"POST /api/v1/chat HTTP/1.1\r\nHost: h:1\r\nContent-Length: 17\r\n\r\n"
            b'{"message": "hi"}',
        ),
        (
            Request("POST", "/empty"),
            b"POST /empty HTTP/1.1\r\nHost: h:1\r\nContent-Length: 0\r\n\r\n",
        ),
    ],
)
def test_encode_request(request_: Request, wire: bytes) -> None:
    assert encode_request(request_, "h:1") == wire


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Dualstack-Backend: flask",
            ("HTTP/1.1", 200, {"content-length": "2", "x-dualstack-backend": "flask"}),
        ),
        (b"HTTP/1.0 503 Service Unavailable", ("HTTP/1.0", 503, {})),
        (b"HTTP/1.1 204", ("HTTP/1.1", 204, {})),
    ],
)
def test_parse_head(raw: bytes, parsed: tuple[str, int, dict[str, str]]) -> None:
    assert parse_head(raw) == parsed


@pytest.mark.parametrize(
    "raw", [b"SSH-2.0-OpenSSH", b"HTTP/1.1 OK", b"HTTP/1.1 200 OK\r\nno colon here"]
)
def test_parse_head_refuses_garbage(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_head(raw)


async def _streaming_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    # No Content-Length: uvicorn sends the body chunked.
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for part in (b"one,", b"two,", b"three"):
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _run(make: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(make())


def test_chunked_answers_are_read_whole_and_the_connection_kept() -> None:
    with ASGIServer(_streaming_app) as server:
        connection = Connection(*parse_origin(server.url))

        async def twice() -> list[Outcome]:
            request = Request("GET", "/")
            outcomes = [await exchange(connection, request, 5.0) for _ in range(2)]
            connection.close()
            return outcomes

        outcomes = _run(twice)
    assert [(o.kind, o.response and o.response.body) for o in outcomes] == [
        ("ok", b"one,two,three"),
        ("ok", b"one,two,three"),
    ]
    assert outcomes[0].response is not None
    assert outcomes[0].response.headers["transfer-encoding"] == "chunked"


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def test_a_server_closing_after_each_answer_costs_a_reconnect_not_an_error() -> None:
    # werkzeug's dev server speaks HTTP/1.0 and closes every connection, as gunicorn's sync
    # workers do: each request needs a fresh socket.
    with WSGIServer(_wsgi_app) as server:
        connection = Connection(*parse_origin(server.url))

        async def several() -> list[Response | None]:
            outcomes = [await exchange(connection, Request("GET", f"/{n}"), 5.0) for n in range(4)]
            connection.close()
            return [o.response for o in outcomes]

        responses = _run(several)
    assert [(r.status, r.body) if r else None for r in responses] == [
        (200, b"/0"),
        (200, b"/1"),
        (200, b"/2"),
        (200, b"/3"),
    ]


def test_a_dropped_keep_alive_connection_is_retried_once_on_a_fresh_one() -> None:
    # The server closes after each answer without `Connection: close`: the client learns
    # it only when it reuses the socket, and must not count that as a failed request.
    with TrivialServer(Behaviour(drop=True)) as server:
        connection = Connection(*parse_origin(server.url))

        async def several() -> list[str]:
            outcomes = [await exchange(connection, Request("GET", "/"), 5.0) for _ in range(5)]
            connection.close()
            return [outcome.kind for outcome in outcomes]

        kinds = _run(several)
    assert kinds == ["ok"] * 5
    assert server.requests == 5


def test_a_post_on_a_dropped_connection_is_a_connection_error_not_sent_twice() -> None:
    # A POST may have been acted on before the connection dropped: retrying it could
    # record a chat turn twice. Each POST after a dropped one opens a fresh connection.
    with TrivialServer(Behaviour(drop=True)) as server:
        connection = Connection(*parse_origin(server.url))

        async def several() -> list[str]:
            request = Request("POST", "/api/v1/chat", b'{"message": "hi"}')
            outcomes = [await exchange(connection, request, 5.0) for _ in range(5)]
            connection.close()
            return [outcome.kind for outcome in outcomes]

        kinds = _run(several)
    # Whether the client saw the close before its next POST is a race (back to back, it
    # usually does not): either way that POST is sent at most once.
    assert kinds[0] == "ok"
    assert set(kinds) <= {"ok", "connection"}
    assert server.requests == kinds.count("ok")  # what the server received: nothing twice


def test_an_idle_connection_the_server_closed_is_not_reused_for_a_post() -> None:
    # uvicorn closes keep-alive connections idle for 5 s: a POST must not be lost on one
    # whose close the client has already received.
    with TrivialServer(Behaviour(drop=True)) as server:
        connection = Connection(*parse_origin(server.url))
        request = Request("POST", "/api/v1/chat", b'{"message": "hi"}')

        async def after_the_close() -> list[str]:
            first = await exchange(connection, request, 5.0)
            reader = connection._reader
            assert reader is not None  # kept: the server did not say it would close
            async with asyncio.timeout(10):
                assert await reader.read(1) == b""  # until the server's FIN has arrived
            second = await exchange(connection, request, 5.0)
            connection.close()
            return [first.kind, second.kind]

        kinds = _run(after_the_close)
    assert kinds == ["ok", "ok"]
    assert server.requests == 2
