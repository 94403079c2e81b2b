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


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_a_body_not_in_utf8_is_forwarded_as_it_came_and_routed_by_the_next_rule(
    encoding: str,
) -> None:
    # Valid JSON either way (RFC 8259 readers detect the encoding); the splice is UTF-8.
    body = '{"message": "m"}'.encode(encoding)
    assert RULES.find(CHAT, "POST", {b"x-user-id": b"u1"}, body, True) == Sticky(
        "u1", body, unminted=True
    )
    assert RULES.find(CHAT, "POST", {}, body, True) == Sticky(None, body, unminted=True)


def test_a_minted_key_never_pushes_a_body_past_the_apps_limit() -> None:
    limit = 64 * 1024

    def padded(size: int) -> bytes:
        tail = b'"message": "m"}'
        return b"{" + b" " * (size - len(tail) - 1) + tail

    grown = RULES.find(CHAT, "POST", {}, padded(1000), True)
    assert grown.minted
    room = limit - len(grown.body) + 1000  # the largest body the splice still fits
    fits = RULES.find(CHAT, "POST", {}, padded(room), True)
    assert (fits.minted, len(fits.body)) == (True, limit)
    too_big = padded(room + 1)
    assert RULES.find(CHAT, "POST", {}, too_big, True) == Sticky(None, too_big, unminted=True)
    utf8_bom = b"\xef\xbb\xbf" + padded(100)
    assert RULES.find(CHAT, "POST", {}, utf8_bom, True).minted  # still UTF-8: spliced
