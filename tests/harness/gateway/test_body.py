"""Body capture, replay and the gateway's one JSON edit, as pure functions."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from harness.gateway.body import (
    BodyTooLarge,
    ClientGone,
    Watched,
    add_json_field,
    json_object,
    read_body,
    replay,
)


def _receiver(messages: list[dict[str, Any]]) -> Any:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    return receive


def test_read_body_joins_chunks_and_replay_gives_it_back_once() -> None:
    parts = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
    ]

    async def scenario() -> tuple[bytes, list[dict[str, Any]]]:
        receive = _receiver(parts)
        body = await read_body(receive, limit=4)
        again = replay(body, receive)
        return body, [await again(), await again()]

    body, replayed = asyncio.run(scenario())
    assert body == b"abcd"
    assert replayed == [
        {"type": "http.request", "body": b"abcd", "more_body": False},
        {"type": "http.disconnect"},
    ]


def test_read_body_stops_at_the_limit() -> None:
    parts = [{"type": "http.request", "body": b"abc", "more_body": True}] * 3
    with pytest.raises(BodyTooLarge):
        asyncio.run(read_body(_receiver(parts), limit=8))


def test_read_body_notices_a_client_that_left() -> None:
    parts = [{"type": "http.request", "body": b"abc", "more_body": True}]
    with pytest.raises(ClientGone):
        asyncio.run(read_body(_receiver(parts), limit=100))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{}", b'{"session_id":"S"}'),
        (b'{"message": "hi"}', b'{"message": "hi","session_id":"S"}'),
        (b'{"message": "hi"}\n  ', b'{"message": "hi","session_id":"S"}'),
        (b'{ "a": {"b": {}} }', b'{ "a": {"b": {}},"session_id":"S"}'),
        (b'{"session_id": null}', b'{"session_id": null,"session_id":"S"}'),
    ],
)
def test_add_json_field_appends_the_member(body: bytes, expected: bytes) -> None:
    edited = add_json_field(body, "session_id", "S")
    assert edited == expected
    assert json.loads(edited)["session_id"] == "S"  # the last duplicate wins


def test_add_json_field_keeps_other_bytes_exactly() -> None:
    body = b'{"message": "caf\\u00e9 \\ud83d\\ude00 1e400", "n": 1.10}'
    edited = add_json_field(body, "session_id", "S")
    assert edited.startswith(body[:-1])


@pytest.mark.parametrize(
    ("body", "expected"),
    [(b'{"a": 1}', {"a": 1}), (b"[1]", None), (b"{bad", None), (b"", None), (b"[" * 100000, None)],
)
def test_json_object(body: bytes, expected: dict[str, Any] | None) -> None:
    assert json_object(body) == expected


def test_a_watched_request_sees_the_disconnect_and_keeps_what_it_read() -> None:
    first = {"type": "http.request", "body": b"", "more_body": False}

    async def scenario() -> tuple[bool, list[dict[str, Any]]]:
        watched = Watched(_receiver([first]))
        await asyncio.wait_for(watched.gone(), timeout=5)  # returns: the client left
        return True, [await watched.receive(), await watched.receive()]

    assert asyncio.run(scenario()) == (True, [first, {"type": "http.disconnect"}])


def test_a_read_under_way_when_the_watch_stops_reaches_the_app() -> None:
    async def scenario() -> tuple[Any, Any]:
        arrived: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        calls = 0

        async def receive() -> dict[str, Any]:
            nonlocal calls
            calls += 1
            return await arrived

        watched = Watched(receive)
        watch = asyncio.create_task(watched.gone())
        await asyncio.sleep(0)  # the watch is reading
        watch.cancel()  # the request got its thread: stop watching
        await asyncio.gather(watch, return_exceptions=True)
        message = {"type": "http.request", "body": b"late", "more_body": False}
        arrived.set_result(message)
        # The app's first receive finishes the read the watch began, not a second one.
        return await watched.receive(), calls

    received, calls = asyncio.run(scenario())
    assert received == {"type": "http.request", "body": b"late", "more_body": False}
    assert calls == 1
