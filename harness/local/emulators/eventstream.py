"""The ``application/vnd.amazon.eventstream`` framing used by Bedrock's streaming answers.

A message is::

    prelude   total length (uint32) | headers length (uint32) | CRC32 of those 8 bytes
    headers   name length (uint8) | name | value type (uint8, 7 = string) | length (uint16) | value
    payload   raw bytes
    trailer   CRC32 of everything before it

All integers are big-endian. Only string headers are produced or accepted: that is all
``bedrock-agent-runtime`` uses. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "chunk_event",
    "decode_events",
    "encode_event",
    "exception_event",
    "trace_event",
]

_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")
_PRELUDE_LENGTH = _PRELUDE.size + _CRC.size  # 12
_MESSAGE_OVERHEAD = _PRELUDE_LENGTH + _CRC.size  # 16
_STRING_TYPE = 7


def _encode_headers(headers: dict[str, str]) -> bytes:
    parts: list[bytes] = []
    for name, value in headers.items():
        raw_name = name.encode("utf-8")
        raw_value = value.encode("utf-8")
        if not 0 < len(raw_name) < 256:
            raise ValueError(f"header name must be 1..255 bytes: {name!r}")
        if len(raw_value) > 0xFFFF:
            raise ValueError(f"header value too long for {name!r}")
        parts.append(struct.pack(">B", len(raw_name)))
        parts.append(raw_name)
        parts.append(struct.pack(">BH", _STRING_TYPE, len(raw_value)))
        parts.append(raw_value)
    return b"".join(parts)


def encode_event(headers: dict[str, str], payload: bytes) -> bytes:
    """Frame one event-stream message from string headers and a payload."""
    raw_headers = _encode_headers(headers)
    total = _MESSAGE_OVERHEAD + len(raw_headers) + len(payload)
    prelude = _PRELUDE.pack(total, len(raw_headers))
    prelude += _CRC.pack(zlib.crc32(prelude))
    body = prelude + raw_headers + payload
    return body + _CRC.pack(zlib.crc32(body))


def _decode_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    pos = 0
    while pos < len(raw):
        name_length = raw[pos]
        pos += 1
        if pos + name_length > len(raw):
            raise ValueError("truncated header name")
        name = raw[pos : pos + name_length].decode("utf-8")
        pos += name_length
        if pos + 3 > len(raw):
            raise ValueError("truncated header")
        value_type, value_length = struct.unpack_from(">BH", raw, pos)
        pos += 3
        if value_type != _STRING_TYPE:
            raise ValueError(f"unsupported header value type {value_type} for {name!r}")
        if pos + value_length > len(raw):
            raise ValueError("truncated header value")
        headers[name] = raw[pos : pos + value_length].decode("utf-8")
        pos += value_length
    return headers


def decode_events(data: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Split a byte string into (headers, payload) pairs, checking lengths and both CRCs.

    Raises ``ValueError`` on any framing error, including trailing partial messages.
    """
    events: list[tuple[dict[str, str], bytes]] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < _MESSAGE_OVERHEAD:
            raise ValueError("truncated prelude")
        total, headers_length = _PRELUDE.unpack_from(data, pos)
        (prelude_crc,) = _CRC.unpack_from(data, pos + _PRELUDE.size)
        if zlib.crc32(data[pos : pos + _PRELUDE.size]) != prelude_crc:
            raise ValueError("prelude CRC mismatch")
        if total < _MESSAGE_OVERHEAD + headers_length or pos + total > len(data):
            raise ValueError("bad message length")
        end = pos + total
        (message_crc,) = _CRC.unpack_from(data, end - _CRC.size)
        if zlib.crc32(data[pos : end - _CRC.size]) != message_crc:
            raise ValueError("message CRC mismatch")
        headers_start = pos + _PRELUDE_LENGTH
        payload_start = headers_start + headers_length
        headers = _decode_headers(data[headers_start:payload_start])
        events.append((headers, data[payload_start : end - _CRC.size]))
        pos = end
    return events


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _event(event_type: str, body: Any) -> bytes:
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_event(headers, _json_bytes(body))


def chunk_event(text_bytes: bytes) -> bytes:
    """A ``chunk`` event carrying part of the agent's answer (base64, as the service sends)."""
    return _event("chunk", {"bytes": base64.b64encode(text_bytes).decode("ascii")})


def trace_event(
    *,
    session_id: str,
    agent_id: str,
    agent_alias_id: str,
    input_tokens: int,
    output_tokens: int,
    agent_version: str = "DRAFT",
    event_time: datetime | None = None,
) -> bytes:
    """A ``trace`` event (TracePart) reporting the orchestration model's token usage."""
    when = event_time if event_time is not None else datetime.now(UTC)
    usage = {"inputTokens": input_tokens, "outputTokens": output_tokens}
    body = {
        "agentAliasId": agent_alias_id,
        "agentId": agent_id,
        "agentVersion": agent_version,
        "eventTime": when.isoformat().replace("+00:00", "Z"),
        "sessionId": session_id,
        "trace": {"orchestrationTrace": {"modelInvocationOutput": {"metadata": {"usage": usage}}}},
    }
    return _event("trace", body)


def exception_event(exception_type: str, message: str) -> bytes:
    """An in-stream exception such as ``throttlingException``; botocore raises EventStreamError."""
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_event(headers, _json_bytes({"message": message}))
