"""The contract's pure parts, as tables."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared import contract
from shared.contract import ChatRequest


def _message_for(body: Any) -> str | None:
    try:
        ChatRequest.model_validate(body)
    except ValidationError as exc:
        return contract.error_for(exc.errors())
    return None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"message": "hello"}, None),
        ({"message": "x" * 4000}, None),
        ({"message": "hi", "session_id": "a", "user_id": "u" * 128}, None),
        ({"message": "hi", "session_id": None, "extra": [1, 2]}, None),
        ({"message": "héllo 👋 مرحبا e\u0301 \x00"}, None),
        ({}, contract.MESSAGE_REQUIRED),
        ({"message": None}, contract.MESSAGE_REQUIRED),
        ({"message": ""}, contract.MESSAGE_REQUIRED),
        ({"message": " \t\n"}, contract.MESSAGE_REQUIRED),
        ({"message": 5}, contract.MESSAGE_NOT_STRING),
        ({"message": True}, contract.MESSAGE_NOT_STRING),
        ({"message": ["hi"]}, contract.MESSAGE_NOT_STRING),
        ({"message": "x" * 4001}, contract.MESSAGE_TOO_LONG),
        ({"message": "bad \ud800 surrogate"}, contract.MESSAGE_INVALID_TEXT),
        ({"message": "hi", "session_id": ""}, contract.INVALID_SESSION_ID),
        ({"message": "hi", "session_id": "has space"}, contract.INVALID_SESSION_ID),
        ({"message": "hi", "session_id": "trailing\n"}, contract.INVALID_SESSION_ID),
        ({"message": "hi", "session_id": "s" * 129}, contract.INVALID_SESSION_ID),
        ({"message": "hi", "session_id": 12}, contract.INVALID_SESSION_ID),
        ({"message": "hi", "session_id": "ünï"}, contract.INVALID_SESSION_ID),
        ({"message": "hi", "user_id": "a/b"}, contract.INVALID_USER_ID),
        ({"message": "hi", "user_id": {"id": 1}}, contract.INVALID_USER_ID),
        # Field order decides which error is reported.
        ({"message": "", "session_id": "bad id"}, contract.MESSAGE_REQUIRED),
        (
            {"session_id": "bad id", "user_id": "bad id", "message": "ok"},
            contract.INVALID_SESSION_ID,
        ),
        ([1, 2], contract.NOT_AN_OBJECT),
        ("message", contract.NOT_AN_OBJECT),
        (None, contract.NOT_AN_OBJECT),
    ],
)
def test_chat_request_validation(body: Any, expected: str | None) -> None:
    assert _message_for(body) == expected


@pytest.mark.parametrize(
    ("errors", "expected"),
    [
        # FastAPI's own errors for a body it could not even parse.
        (
            [{"type": "json_invalid", "loc": ("body", 1), "msg": "JSON decode error"}],
            contract.MALFORMED_JSON,
        ),
        ([{"type": "missing", "loc": ("body",), "msg": "Field required"}], contract.MALFORMED_JSON),
        ([{"type": "model_attributes_type", "loc": ("body",), "msg": "x"}], contract.NOT_AN_OBJECT),
        ([{"type": "missing", "loc": ("body", "message"), "msg": "x"}], contract.MESSAGE_REQUIRED),
        (
            [{"type": "string_type", "loc": ("body", "message"), "msg": "x"}],
            contract.MESSAGE_NOT_STRING,
        ),
        (
            [{"type": "string_type", "loc": ("body", "user_id"), "msg": "x"}],
            contract.INVALID_USER_ID,
        ),
        (
            [{"type": "contract", "loc": ("body", "session_id"), "msg": "Invalid session_id"}],
            contract.INVALID_SESSION_ID,
        ),
        ([], contract.MALFORMED_JSON),
    ],
)
def test_error_for_fastapi_errors(errors: list[dict[str, Any]], expected: str) -> None:
    assert contract.error_for(errors) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("APPLICATION/JSON", True),
        ("application/vnd.api+json", True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        ("application/jsonx", False),
        ("", False),
        (None, False),
    ],
)
def test_is_json_content_type(header: str | None, expected: bool) -> None:
    assert contract.is_json_content_type(header) is expected


@pytest.mark.parametrize(
    ("methods", "expected"),
    [
        (["POST"], "OPTIONS, POST"),
        (["POST", "OPTIONS"], "OPTIONS, POST"),
        (["GET"], "GET, HEAD, OPTIONS"),
        ([" head", "get ", "OPTIONS"], "GET, HEAD, OPTIONS"),
        (["DELETE", "GET"], "DELETE, GET, HEAD, OPTIONS"),
    ],
)
def test_allow_header(methods: list[str], expected: str) -> None:
    assert contract.allow_header(methods) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, contract.MALFORMED_JSON),
        (404, contract.NOT_FOUND),
        (405, contract.METHOD_NOT_ALLOWED),
        (413, contract.BODY_TOO_LARGE),
        (415, contract.UNSUPPORTED_MEDIA_TYPE),
        (418, "I'm a Teapot"),
        (500, contract.INTERNAL_ERROR),
        (503, contract.INTERNAL_ERROR),
    ],
)
def test_message_for_status(status: int, expected: str) -> None:
    assert contract.message_for_status(status) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a", True),
        ("A-z_0.9:x", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("a\n", False),
        ("", False),
    ],
)
def test_is_identifier(value: str, expected: bool) -> None:
    assert contract.is_identifier(value) is expected


@pytest.mark.parametrize(
    ("marker", "header", "trust", "expected"),
    [
        ("rid-1", None, False, "rid-1"),  # the gateway's in-process marker
        (None, "rid-2", False, None),  # a header alone marks nothing by default
        (None, "rid-2", True, "rid-2"),  # unless the deployment trusts it
        ("rid-1", "rid-2", True, "rid-1"),  # the in-process marker first
        (None, None, True, None),
    ],
)
def test_a_shadow_request_is_known_by_the_marker_or_a_trusted_header(
    marker: str | None, header: str | None, trust: bool, expected: str | None
) -> None:
    assert contract.shadow_of(marker, header, trust) == expected


def test_a_session_may_exist_unless_absent_or_minted_for_the_turn() -> None:
    assert [
        contract.may_exist(None, None),
        contract.may_exist("s1", "s1"),
        contract.may_exist("s1", None),
        contract.may_exist("s1", "s2"),
    ] == [False, False, True, True]
