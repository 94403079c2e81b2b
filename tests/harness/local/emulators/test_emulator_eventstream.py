"""The event-stream codec, checked against AWS's published vectors and botocore's decoder."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer

from harness.local.emulators.eventstream import (
    chunk_event,
    decode_events,
    encode_event,
    exception_event,
    trace_event,
)

# Vectors from the AWS event-stream test suite (also used by botocore's own tests).
KNOWN_VECTORS = [
    pytest.param(
        {}, b"", b"\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2H\xeb}\x98\xc8\xff", id="empty"
    ),
    pytest.param(
        {},
        b"{'foo':'bar'}",
        b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'}\xc3e96",
        id="payload-no-headers",
    ),
    pytest.param(
        {"content-type": "application/json"},
        b"{'foo':'bar'}",
        b"\x00\x00\x00=\x00\x00\x00 \x07\xfd\x83\x96\x0ccontent-type\x07\x00\x10"
        b"application/json{'foo':'bar'}\x8d\x9c\x08\xb1",
        id="one-string-header",
    ),
    pytest.param(
        {":message-type": "error", ":error-code": "code", ":error-message": "message"},
        b"",
        b"\x00\x00\x00\x52\x00\x00\x00\x42\xbf\x23\x63\x7e"
        b"\x0d:message-type\x07\x00\x05error"
        b"\x0b:error-code\x07\x00\x04code"
        b"\x0e:error-message\x07\x00\x07message"
        b"\x6b\x6c\xea\x3d",
        id="error-headers",
    ),
]


@pytest.mark.parametrize(("headers", "payload", "encoded"), KNOWN_VECTORS)
def test_encode_matches_known_vectors(
    headers: dict[str, str], payload: bytes, encoded: bytes
) -> None:
    assert encode_event(headers, payload) == encoded


@pytest.mark.parametrize(("headers", "payload", "encoded"), KNOWN_VECTORS)
def test_decode_known_vectors(headers: dict[str, str], payload: bytes, encoded: bytes) -> None:
    assert decode_events(encoded) == [(headers, payload)]


def test_round_trip_of_several_messages_with_unicode() -> None:
    messages = [
        ({":event-type": "chunk", "note": "héllo wörld 🌍"}, "ünïcode 🌍".encode()),
        ({}, b""),
        ({"a": ""}, bytes(range(256))),
    ]
    stream = b"".join(encode_event(h, p) for h, p in messages)
    assert decode_events(stream) == messages


def test_botocore_decodes_our_framing_byte_by_byte() -> None:
    events = [
        chunk_event("héllo 🌍".encode()),
        exception_event("throttlingException", "slow down"),
    ]
    buffer = EventStreamBuffer()
    decoded: list[Any] = []  # botocore-stubs mistype EventStreamMessage.headers
    # One byte at a time: the framing must survive arbitrary TCP/HTTP chunk boundaries.
    for byte in b"".join(events):
        buffer.add_data(bytes([byte]))
        decoded.extend(buffer)
    assert [(m.headers, m.payload) for m in decoded] == [
        (
            {
                ":event-type": "chunk",
                ":content-type": "application/json",
                ":message-type": "event",
            },
            json.dumps(
                {"bytes": base64.b64encode("héllo 🌍".encode()).decode()}, separators=(",", ":")
            ).encode(),
        ),
        (
            {
                ":exception-type": "throttlingException",
                ":content-type": "application/json",
                ":message-type": "exception",
            },
            b'{"message":"slow down"}',
        ),
    ]
    assert [m.to_response_dict()["status_code"] for m in decoded] == [200, 400]


def test_trace_event_is_a_trace_part_with_usage() -> None:
    event = trace_event(
        session_id="s1",
        agent_id="A",
        agent_alias_id="B",
        input_tokens=7,
        output_tokens=11,
        event_time=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    [(headers, payload)] = decode_events(event)
    assert headers == {
        ":event-type": "trace",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(payload) == {
        "agentAliasId": "B",
        "agentId": "A",
        "agentVersion": "DRAFT",
        "eventTime": "2025-01-02T03:04:05Z",
        "sessionId": "s1",
        "trace": {
            "orchestrationTrace": {
                "modelInvocationOutput": {
                    "metadata": {"usage": {"inputTokens": 7, "outputTokens": 11}}
                }
            }
        },
    }


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x00\x00\x00\x10\x00\x00", "truncated prelude"),
        (b"\x01\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'}\xc3e96", "prelude CRC"),
        (b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'\x8d\xc3e96", "message CRC"),
        (encode_event({}, b"x")[:-1], "truncated prelude|bad message length"),
    ],
    ids=["short", "corrupt-length", "corrupt-payload", "cut-off"],
)
def test_decode_rejects_corrupt_data(data: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        decode_events(data)


def test_encode_rejects_oversized_header_name() -> None:
    with pytest.raises(ValueError, match="header name"):
        encode_event({"x" * 256: "v"}, b"")
