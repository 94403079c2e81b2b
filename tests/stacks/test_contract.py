"""Every row of the wire contract, against both stacks over real sockets, through the real
boto3/aioboto3 clients and the local emulators.

Each case runs once per stack and checks the contract's status and message; the parity
cases then require both stacks to answer identically (status, body's `error`, headers).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from harness.local.emulators.replies import compose_reply
from shared import contract

from .conftest import STACKS, Stacks

JSON = {"Content-Type": "application/json"}
CHAT = "/api/v1/chat"


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    error: str | None = None
    method: str = "POST"
    path: str = CHAT
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))


def chat(payload: Any, status: int, error: str | None = None, name: str = "") -> Case:
    return Case(name or json.dumps(payload)[:40], status, error, body=json.dumps(payload).encode())


def raw(name: str, body: bytes, status: int, error: str | None, **headers: str) -> Case:
    return Case(
        name, status, error, body=body, headers={**JSON, **headers} if headers else dict(JSON)
    )


CASES = [
    # Bodies that are not JSON objects.
    raw("malformed", b"{not json", 400, contract.MALFORMED_JSON),
    raw("truncated", b'{"message": "hi"', 400, contract.MALFORMED_JSON),
    raw("empty body", b"", 400, contract.MALFORMED_JSON),
    raw("invalid utf-8", b'{"message": "\xff\xfe"}', 400, contract.MALFORMED_JSON),
    raw(
        "deep nesting",
        b'{"message": ' + b"[" * 20000 + b"]" * 20000 + b"}",
        400,
        contract.MALFORMED_JSON,
    ),
    # Python reads these constants; JSON has none of them.
    raw("NaN", b'{"message": "hi", "temperature": NaN}', 400, contract.MALFORMED_JSON),
    raw("Infinity", b'{"message": "hi", "n": Infinity}', 400, contract.MALFORMED_JSON),
    raw("-Infinity", b'{"message": "hi", "n": -Infinity}', 400, contract.MALFORMED_JSON),
    raw("NaN message", b'{"message": NaN}', 400, contract.MALFORMED_JSON),
    raw("array", b'["hi"]', 400, contract.NOT_AN_OBJECT),
    raw("string", b'"hi"', 400, contract.NOT_AN_OBJECT),
    raw("null", b"null", 400, contract.NOT_AN_OBJECT),
    raw("number", b"42", 400, contract.NOT_AN_OBJECT),
    # The message field.
    chat({}, 400, contract.MESSAGE_REQUIRED),
    chat({"message": None}, 400, contract.MESSAGE_REQUIRED),
    chat({"message": ""}, 400, contract.MESSAGE_REQUIRED),
    chat({"message": "   "}, 400, contract.MESSAGE_REQUIRED),
    # Nothing visible: zero-width space, joiner, word joiner, BOM, a control character.
    chat({"message": "\u200b\u200d\u2060\ufeff"}, 400, contract.MESSAGE_REQUIRED),
    chat({"message": " \u200b\x07 "}, 400, contract.MESSAGE_REQUIRED, name="invisible+space"),
    chat({"message": 42}, 400, contract.MESSAGE_NOT_STRING),
    chat({"message": ["hi"]}, 400, contract.MESSAGE_NOT_STRING),
    chat({"message": {"text": "hi"}}, 400, contract.MESSAGE_NOT_STRING),
    chat({"message": "x" * 4001}, 400, contract.MESSAGE_TOO_LONG, name="4001 chars"),
    chat({"message": "😀" * 4001}, 400, contract.MESSAGE_TOO_LONG, name="4001 emoji"),
    raw("lone surrogate", b'{"message": "hi \\ud800"}', 400, contract.MESSAGE_INVALID_TEXT),
    # Ids.
    chat({"message": "hi", "session_id": ""}, 400, contract.INVALID_SESSION_ID),
    chat({"message": "hi", "session_id": "has space"}, 400, contract.INVALID_SESSION_ID),
    chat({"message": "hi", "session_id": "newline\n"}, 400, contract.INVALID_SESSION_ID),
    chat({"message": "hi", "session_id": "s" * 129}, 400, contract.INVALID_SESSION_ID),
    chat({"message": "hi", "session_id": 7}, 400, contract.INVALID_SESSION_ID),
    chat({"message": "hi", "session_id": "ünïcode"}, 400, contract.INVALID_SESSION_ID),
    # Dots alone: path segments clients normalise away, so never readable as a session.
    chat({"message": "hi", "session_id": "."}, 400, contract.INVALID_SESSION_ID),
    chat({"message": "hi", "session_id": ".."}, 400, contract.INVALID_SESSION_ID),
    chat({"message": "hi", "user_id": "..."}, 400, contract.INVALID_USER_ID),
    chat({"message": "hi", "user_id": "a/b"}, 400, contract.INVALID_USER_ID),
    chat({"message": "hi", "user_id": True}, 400, contract.INVALID_USER_ID),
    # Content type and size.
    raw(
        "text/plain",
        b'{"message": "hi"}',
        415,
        contract.UNSUPPORTED_MEDIA_TYPE,
        **{"Content-Type": "text/plain"},
    ),
    raw(
        "form",
        b"message=hi",
        415,
        contract.UNSUPPORTED_MEDIA_TYPE,
        **{"Content-Type": "application/x-www-form-urlencoded"},
    ),
    Case(
        "no content type",
        415,
        contract.UNSUPPORTED_MEDIA_TYPE,
        body=b'{"message": "hi"}',
        headers={},
    ),
    raw("oversized", json.dumps({"message": "x" * 70_000}).encode(), 413, contract.BODY_TOO_LARGE),
    # Paths and methods.
    Case("unknown path", 404, contract.NOT_FOUND, method="GET", path="/nope", body=None),
    Case("trailing slash", 404, contract.NOT_FOUND, method="GET", path="/health/", body=None),
    Case("GET chat", 405, contract.METHOD_NOT_ALLOWED, method="GET", body=None),
    Case("PUT chat", 405, contract.METHOD_NOT_ALLOWED, method="PUT"),
    Case("POST health", 405, contract.METHOD_NOT_ALLOWED, path="/health"),
    Case(
        "DELETE health",
        405,
        contract.METHOD_NOT_ALLOWED,
        method="DELETE",
        path="/health",
        body=None,
    ),
]


def send(client: httpx.Client, case: Case) -> httpx.Response:
    return client.request(case.method, case.path, content=case.body, headers=case.headers)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_error_rows_answer_the_contract(stacks: Stacks, stack: str, case: Case) -> None:
    with stacks.client(stack) as client:
        response = send(client, case)
    assert response.status_code == case.status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == case.error
    if case.status == 405:
        expected = "OPTIONS, POST" if case.path == CHAT else "GET, HEAD, OPTIONS"
        assert response.headers["allow"] == expected


@pytest.mark.parametrize("message", ["NaN and Infinity", "\u200bhi", "\u200d😀"])
def test_the_words_and_visible_text_next_to_invisible_characters_are_fine(
    stacks: Stacks, stack: str, message: str
) -> None:
    # The refusals above stop at JSON's constants and at text with nothing to show.
    with stacks.client(stack) as client:
        response = client.post(CHAT, json={"message": message})
    assert response.status_code == 200, response.text
    assert response.json()["response"] == compose_reply(message, 1)


PARITY_HEADERS = ("content-type", "allow", "retry-after", "access-control-allow-origin", "vary")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_both_stacks_answer_error_rows_identically(stacks: Stacks, case: Case) -> None:
    answers = []
    for name in STACKS:
        with stacks.client(name) as client:
            response = send(client, case)
        answers.append(
            (
                response.status_code,
                response.json()["error"],
                {h: response.headers.get(h) for h in PARITY_HEADERS},
            )
        )
    assert answers[0] == answers[1]


def test_oversized_chunked_body_is_413(stacks: Stacks, stack: str) -> None:
    def chunks() -> Any:
        yield b'{"message": "'
        for _ in range(40):
            yield b"x" * 2048
        yield b'"}'

    with stacks.client(stack) as client:
        response = client.post(CHAT, content=chunks(), headers=JSON)
    assert (response.status_code, response.json()["error"]) == (413, contract.BODY_TOO_LARGE)


def _turn(client: httpx.Client, message: str, **fields: Any) -> httpx.Response:
    return client.post(CHAT, json={"message": message, **fields})


def _assert_now(timestamp: object) -> None:
    """Epoch seconds of about now: not milliseconds, not a monotonic clock's reading."""
    assert isinstance(timestamp, float)
    assert abs(timestamp - time.time()) < 60


@pytest.mark.parametrize(
    "message",
    [
        "hello",
        "x" * 4000,
        "😀" * 4000,
        "مرحبا بالعالم — עברית — e\u0301 — \u200b\u200d — \x00 nul",
        'line\nbreaks\tand "quotes" and \\ backslashes',
    ],
    ids=["ascii", "4000 chars", "4000 emoji", "mixed scripts", "escapes"],
)
def test_chat_answers_with_the_agent_reply(stacks: Stacks, stack: str, message: str) -> None:
    with stacks.client(stack) as client:
        response = _turn(client, message)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["response"] == compose_reply(message, 1)
    assert uuid.UUID(body["session_id"])  # minted when absent
    assert isinstance(body["processing_time_ms"], float) and body["processing_time_ms"] >= 0
    legacy = {"response", "session_id", "processing_time_ms"}
    added = {"timestamp", "tokens_used"} if stack == "fastapi" else set()
    assert set(body) == legacy | added
    if "timestamp" in body:
        _assert_now(body["timestamp"])


def test_fastapi_adds_timestamp_and_tokens(stacks: Stacks) -> None:
    with stacks.client("fastapi") as client:
        body = _turn(client, "count my tokens please").json()
    words_in, words_out = len(["count", "my", "tokens", "please"]), len(body["response"].split())
    assert body["tokens_used"] == words_in + 20 + words_out
    _assert_now(body["timestamp"])


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "application/vnd.api+json", "APPLICATION/JSON"],
)
def test_json_content_type_variants_are_accepted(
    stacks: Stacks, stack: str, content_type: str
) -> None:
    with stacks.client(stack) as client:
        response = client.post(
            CHAT, content=b'{"message": "hi"}', headers={"Content-Type": content_type}
        )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "session_id", ["a", "s" * 128, "A.b:c-d_e"], ids=["1 char", "128 chars", "punctuation"]
)
def test_any_contract_session_id_is_served(stacks: Stacks, stack: str, session_id: str) -> None:
    # Bedrock allows 2-100 characters; the contract 1-128. Both must still work.
    sid = f"{session_id}"[:128]
    with stacks.client(stack) as client:
        first = _turn(client, f"hi {uuid.uuid4()}", session_id=sid)
    assert first.status_code == 200, first.text
    assert first.json()["session_id"] == sid


def test_health(stacks: Stacks, stack: str) -> None:
    with stacks.client(stack) as client:
        response = client.get("/health")
        head = client.head("/health")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "healthy"
    _assert_now(body["timestamp"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", body["version"])
    assert set(body) == (
        {"status", "timestamp", "version"} | ({"environment"} if stack == "fastapi" else set())
    )
    assert (head.status_code, head.content) == (200, b"")


def test_request_id_is_echoed_or_minted(stacks: Stacks, stack: str) -> None:
    with stacks.client(stack) as client:
        kept = client.get("/health", headers={"X-Request-ID": "trace-123"})
        minted = client.get("/health", headers={"X-Request-ID": "not valid!"})
        error = client.get("/nope", headers={"X-Request-ID": "trace-456"})
    assert kept.headers["x-request-id"] == "trace-123"
    assert minted.headers["x-request-id"] != "not valid!"
    assert contract.is_identifier(minted.headers["x-request-id"])
    assert error.headers["x-request-id"] == "trace-456"


CORS_REQUESTS = [
    ("GET", "/health", {}),
    ("GET", "/health", {"Origin": "https://app.example"}),
    ("POST", CHAT, {"Origin": "https://app.example", **JSON}),
    ("GET", "/nope", {"Origin": "https://app.example"}),
    ("OPTIONS", CHAT, {}),
    ("OPTIONS", "/health", {"Origin": "https://app.example"}),
    (
        "OPTIONS",
        CHAT,
        {
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-user-id",
        },
    ),
    ("OPTIONS", "/nope", {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}),
]
CORS_HEADERS = (
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "vary",
    "allow",
    "content-type",
)


@pytest.mark.parametrize(("method", "path", "headers"), CORS_REQUESTS)
def test_cors_is_the_legacy_apps(
    stacks: Stacks, method: str, path: str, headers: dict[str, str]
) -> None:
    answers = []
    for name in STACKS:
        with stacks.client(name) as client:
            body = b'{"message": "cors"}' if method == "POST" else None
            response = client.request(method, path, headers=headers, content=body)
        answers.append((response.status_code, {h: response.headers.get(h) for h in CORS_HEADERS}))
    assert answers[0] == answers[1]
    status, seen = answers[0]
    origin = headers.get("Origin")
    assert seen["access-control-allow-origin"] == (origin or "*")
    if "Access-Control-Request-Method" in headers and status == 200:
        assert seen["access-control-allow-methods"] == contract.LEGACY_CORS_METHODS
        assert seen["access-control-allow-headers"] == headers["Access-Control-Request-Headers"]


@pytest.mark.parametrize("session_id", ["a.b", "..a", "v1.2.3:x"])
def test_ids_with_dots_and_other_characters_are_fine(
    stacks: Stacks, stack: str, session_id: str
) -> None:
    with stacks.client(stack) as client:
        response = client.post(CHAT, json={"message": "hi", "session_id": session_id})
    assert (response.status_code, response.json()["session_id"]) == (200, session_id)


def test_the_published_example_names_no_session() -> None:
    # `/docs` sends it on "Try it out": a fixed id would be one conversation for everyone.
    example = contract.ChatRequest.model_json_schema()["example"]
    assert example == {"message": "Hello, what can you do?"}


@pytest.mark.parametrize("host", ["a" * 64 + ".example", "a..b", "evil.example"])
def test_the_host_header_plays_no_part(stacks: Stacks, stack: str, host: str) -> None:
    with stacks.client(stack) as client:
        health = client.get("/health", headers={"Host": host})
        assert health.status_code == 200, health.text
        # `//` is a 404 in the contract's shape, never a redirect built from the Host.
        for path in ("/api/v1//chat", "//api/v1/chat"):
            response = client.post(path, json={"message": "hi"}, headers={"Host": host})
            assert (response.status_code, response.json()["error"]) == (404, contract.NOT_FOUND)
            assert "location" not in response.headers


def test_the_allow_header_names_every_method_of_the_session_path(stacks: Stacks) -> None:
    with stacks.client("fastapi") as client:
        for method in ("POST", "PUT", "PATCH"):
            response = client.request(method, "/api/v1/chat/sessions/any-id")
            assert response.status_code == 405
            assert response.headers["allow"] == "DELETE, GET, HEAD, OPTIONS"
        preflight = client.options("/api/v1/chat/sessions/any-id")
        assert preflight.headers["allow"] == "DELETE, GET, HEAD, OPTIONS"
