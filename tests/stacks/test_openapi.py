"""The published OpenAPI document: the contract's limits, as JSON Schema reads them (an
ECMA-262 engine, jsonschema-rs), agree with the Python checks both stacks run; it holds for
answers from either stack."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest

from fastapi_app import create_app
from fastapi_app.openapi import ID_SCHEMA_PATTERN, JSON_MEDIA_TYPES, visible_text_pattern
from shared import contract
from shared.settings import Settings

from .conftest import Stacks

ID_SAMPLES = [
    "a",
    "abc-DEF_1.2:3",
    "x" * 128,
    "x" * 129,
    "",
    ".",
    "..",
    "...",
    ".a",
    "a.",
    "a..b",
    "abc\n",  # Python's `$` matches before a final newline; ECMA's does not
    "\nabc",
    "a b",
    "a/b",
    "é",
    "a\x00",
    "ds-0123",
    "ünïcode",
    "-" * 128,
]

TEXT_SAMPLES = [
    "a",
    " a ",
    "é",
    "漢",
    "😀",
    " ",
    "\t\n",
    "\x00",
    "\u200b",  # zero-width space (Cf)
    "\u200b\u200d\ufeff",
    "\u00a0",  # no-break space (Zs)
    "\u3000",
    "\u2028",  # line separator (Zl)
    "\ue000",  # private use (Co)
    "\U000e0001",  # language tag (Cf, astral)
    "\U000ffd03",  # private use, astral
    "\u00ad",  # soft hyphen (Cf)
    "\u0378",  # unassigned (Cn)
    "\u200ba",
]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(Settings()).openapi()


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Validator:
    return jsonschema_rs.validator_for({**schema, "components": document["components"]})


def _field(document: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(document["components"]["schemas"]["ChatRequest"]["properties"][name])


@pytest.mark.parametrize("value", ID_SAMPLES)
@pytest.mark.parametrize("name", ["session_id", "user_id"])
def test_published_id_schema_agrees_with_the_contract(
    document: dict[str, Any], name: str, value: str
) -> None:
    published = _validator(document, _field(document, name)).is_valid(value)
    assert published == contract.is_identifier(value), value


def test_ids_may_be_absent_or_null(document: dict[str, Any]) -> None:
    body = _validator(document, {"$ref": "#/components/schemas/ChatRequest"})
    assert [body.is_valid(b) for b in ({"message": "hi"}, {"message": "hi", "user_id": None})] == [
        True,
        True,
    ]


@pytest.mark.parametrize("value", TEXT_SAMPLES)
def test_published_message_schema_agrees_with_the_contract(
    document: dict[str, Any], value: str
) -> None:
    published = _validator(document, _field(document, "message")).is_valid(value)
    assert published == contract.has_visible_text(value), ascii(value)


@pytest.mark.parametrize(
    ("length", "valid"), [(1, True), (contract.MAX_MESSAGE_CHARS, True), (4001, False)]
)
def test_published_message_length(document: dict[str, Any], length: int, valid: bool) -> None:
    assert _validator(document, _field(document, "message")).is_valid("m" * length) is valid


def test_the_patterns_are_the_published_ones(document: dict[str, Any]) -> None:
    session = _field(document, "session_id")["anyOf"][0]
    assert (session["pattern"], session["minLength"], session["maxLength"]) == (
        ID_SCHEMA_PATTERN,
        1,
        128,
    )
    assert _field(document, "message")["pattern"] == visible_text_pattern()


def test_every_error_status_has_the_error_shape(document: dict[str, Any]) -> None:
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    chat = document["paths"]["/api/v1/chat"]["post"]
    assert tuple(chat["requestBody"]["content"]) == JSON_MEDIA_TYPES
    statuses = {
        path: {
            method: sorted(
                status
                for status, response in op["responses"].items()
                if response.get("content", {}).get("application/json", {}).get("schema") == error
            )
            for method, op in item.items()
        }
        for path, item in document["paths"].items()
    }
    assert statuses == {
        "/api/v1/chat": {"post": ["400", "404", "413", "415", "429", "500", "502", "503", "504"]},
        "/api/v1/chat/sessions/{session_id}": {
            "get": ["404", "500", "503"],
            "delete": ["404", "500", "503"],
        },
        "/health": {"get": ["500"]},
        "/health/detailed": {"get": ["500"]},
    }
    assert "HTTPValidationError" not in document["components"]["schemas"]  # FastAPI's 422
    retrying = chat["responses"]["503"]["headers"]["Retry-After"]
    assert retrying["required"] is True


def test_fastapi_only_fields_are_optional(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert {name: schemas[name].get("required") for name in schemas} == {
        "ChatRequest": ["message"],
        "ChatResponse": ["response", "session_id", "processing_time_ms"],
        "HealthResponse": ["status", "timestamp", "version"],
        "ErrorResponse": ["error"],
        "Check": ["ok", "latency_ms"],
        "DetailedHealthResponse": ["status", "timestamp", "version", "environment", "checks"],
        "HistoryItem": ["role", "text", "at"],
        "SessionResponse": [
            "session_id",
            "user_id",
            "created_at",
            "updated_at",
            "ttl",
            "turns",
            "history",
        ],
        "DeletedResponse": ["message"],
    }
    assert schemas["ChatResponse"]["properties"]["timestamp"]["type"] == "number"


@pytest.mark.parametrize("stack", ["flask", "fastapi"])
def test_both_stacks_answer_as_published(stacks: Stacks, stack: str) -> None:
    with stacks.client("fastapi") as client:
        document = client.get("/openapi.json").json()
    with stacks.client(stack) as client:
        health = client.get("/health")
        turn = client.post("/api/v1/chat", json={"message": "as published?"})
        error = client.post("/api/v1/chat", json={"message": ""})
    for response, name in (
        (health, "HealthResponse"),
        (turn, "ChatResponse"),
        (error, "ErrorResponse"),
    ):
        schema = {"$ref": f"#/components/schemas/{name}"}
        errors = [e.message for e in _validator(document, schema).iter_errors(response.json())]
        assert errors == [], (stack, name, response.text)
