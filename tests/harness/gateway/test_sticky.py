"""The conversation key a request is routed by, as a table."""

from __future__ import annotations

import json

import pytest

from harness.gateway.settings import default_sticky_rules
from harness.gateway.sticky import Sticky, StickyRules

RULES = StickyRules(default_sticky_rules(), mint=lambda: "MINTED")
CHAT = "/api/v1/chat"


@pytest.mark.parametrize(
    ("path", "method", "headers", "body", "is_json", "expected"),
    [
        (
            CHAT,
            "POST",
            {},
            b'{"message": "m", "session_id": "s1"}',
            True,
            Sticky("s1", b'{"message": "m", "session_id": "s1"}'),
        ),
        (
            CHAT,
            "POST",
            {"x-user-id": "u1"},
            b'{"message": "m", "session_id": "s1"}',
            True,
            Sticky("s1", b'{"message": "m", "session_id": "s1"}'),
        ),
        (
            CHAT,
            "POST",
            {"x-user-id": "u1"},
            b'{"message": "m"}',
            True,
            Sticky("MINTED", b'{"message": "m","session_id":"MINTED"}', True),
        ),
        (
            CHAT,
            "POST",
            {},
            b'{"message": "m", "session_id": null}',
            True,
            Sticky("MINTED", b'{"message": "m", "session_id": null,"session_id":"MINTED"}', True),
        ),
        # Not JSON, not an object, or a bad id: the stack will answer 400; route by user.
        (CHAT, "POST", {"x-user-id": "u1"}, b"{broken", True, Sticky("u1", b"{broken")),
        (CHAT, "POST", {"x-user-id": "u1"}, b"[1]", True, Sticky("u1", b"[1]")),
        (
            CHAT,
            "POST",
            {"x-user-id": "u1"},
            b'{"session_id": 5}',
            True,
            Sticky("u1", b'{"session_id": 5}'),
        ),
        (CHAT, "POST", {}, b'{"message": "m"}', False, Sticky(None, b'{"message": "m"}')),
        (f"{CHAT}/sessions/abc", "GET", {"x-user-id": "u1"}, b"", False, Sticky("abc", b"")),
        (f"{CHAT}/sessions/abc/extra", "GET", {"x-user-id": "u1"}, b"", False, Sticky("u1", b"")),
        ("/health", "GET", {"x-user-id": "u9"}, b"", False, Sticky("u9", b"")),
        ("/health", "GET", {}, b"", False, Sticky(None, b"")),
        (
            "/api/v1/chatty",
            "POST",
            {},
            b'{"message": "m"}',
            True,
            Sticky(None, b'{"message": "m"}'),
        ),
    ],
)
def test_sticky_key(
    path: str, method: str, headers: dict[str, str], body: bytes, is_json: bool, expected: Sticky
) -> None:
    raw = {name.encode(): value.encode() for name, value in headers.items()}
    found = RULES.find(path, method, raw, body, is_json)
    assert found == expected
    if found.minted:
        assert json.loads(found.body)["session_id"] == found.key
