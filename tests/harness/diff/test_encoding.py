"""Content codings in the diff engine: bodies decoded as a client reads them, and expected
rules that accept a header only when the candidate adds the named tokens to it."""

from __future__ import annotations

import gzip
import zlib

import pytest

from harness.diff import Difference, Rules, decode_body, describe, parse_rules

BODY = b'{"response": "' + b"x" * 2000 + b'"}'


@pytest.mark.parametrize(
    ("body", "encoding", "expected"),
    [
        (gzip.compress(BODY), "gzip", BODY),
        (gzip.compress(BODY), "GZIP", BODY),
        (gzip.compress(BODY), "x-gzip", BODY),
        (zlib.compress(BODY), "deflate", BODY),
        (gzip.compress(zlib.compress(BODY)), "deflate, gzip", BODY),  # last applied last
        (BODY, None, BODY),
        (BODY, "identity", BODY),
        (BODY, "gzip", BODY),  # not gzip after all: kept as sent
        (gzip.compress(BODY)[:-4], "gzip", gzip.compress(BODY)[:-4]),  # truncated
        (gzip.compress(BODY) + b"junk", "gzip", gzip.compress(BODY) + b"junk"),
        (b"\x28\xb5\x2f\xfd", "zstd", b"\x28\xb5\x2f\xfd"),  # unknown coding
    ],
)
def test_decode_body(body: bytes, encoding: str | None, expected: bytes) -> None:
    assert decode_body(body, encoding) == expected


def test_a_body_decoding_past_the_limit_is_kept_as_sent() -> None:
    packed = gzip.compress(BODY)
    assert decode_body(packed, "gzip", limit=len(BODY)) == BODY
    assert decode_body(packed, "gzip", limit=len(BODY) - 1) == packed


VARY = parse_rules(
    {"expected": [{"path": "header:vary", "tokens": ["Accept-Encoding"], "reason": "gz"}]}
)


@pytest.mark.parametrize(
    ("kind", "legacy", "candidate", "accepted"),
    [
        ("header_added", None, "Accept-Encoding", True),
        ("header_value", "Origin", "Origin, Accept-Encoding", True),
        ("header_value", "Origin", "accept-encoding ,origin", True),
        ("header_value", "Origin", "Accept-Encoding", False),  # Origin dropped
        ("header_value", "Origin", "Origin, Cookie", False),  # another token
        ("header_value", "Origin", "Origin, Accept-Encoding, Cookie", False),
        ("header_missing", "Accept-Encoding", None, False),
        ("header_value", "Accept-Encoding", "Accept-Encoding, Origin", False),
    ],
)
def test_a_tokens_rule_accepts_only_its_tokens_added(
    kind: str, legacy: str | None, candidate: str | None, accepted: bool
) -> None:
    difference = Difference("header:vary", kind, legacy, candidate, "breaking")  # type: ignore[arg-type]
    assert (VARY.match(difference) == ("expected", "gz")) is accepted


def test_a_tokens_rule_is_described_and_limited_to_headers() -> None:
    (rule,) = VARY.expected
    assert describe(rule) == "expected header:vary adding accept-encoding: gz"
    with pytest.raises(ValueError, match="header paths only"):
        Rules(expected=[{"path": "$.a", "tokens": ["x"], "reason": "r"}])  # type: ignore[list-item]
