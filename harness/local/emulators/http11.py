"""Just enough HTTP/1.1 for the emulator: read a request, write heads and chunks.

Handles keep-alive, Content-Length and chunked request bodies, and ``Expect: 100-continue``
(answered before the body is read, as clients that send it wait for it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

__all__ = [
    "LAST_CHUNK",
    "HttpError",
    "Request",
    "encode_chunk",
    "encode_head",
    "encode_json",
    "read_request",
]

LAST_CHUNK = b"0\r\n\r\n"
MAX_BODY = 1 << 20


class HttpError(Exception):
    """A request that cannot be read; the connection is answered with ``status`` and closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Request:
    """One parsed request. Header names are lower-cased; repeated headers are comma-joined."""

    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        """The target without its query string (still percent-encoded)."""
        return self.target.partition("?")[0]

    @property
    def keep_alive(self) -> bool:
        """Whether the client wants the connection kept open after this exchange."""
        tokens = {token.strip().lower() for token in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.1":
            return "close" not in tokens
        return "keep-alive" in tokens


def _parse_head(raw: bytes) -> tuple[str, str, str, dict[str, str]]:
    # Latin-1 maps every byte, so a garbage head yields a 400 below, never a decode error.
    lines = raw.decode("latin-1").lstrip("\r\n").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1") or not parts[1]:
        raise HttpError(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "malformed header line")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return parts[0], parts[1], parts[2], headers


async def _read_chunked(reader: asyncio.StreamReader, max_body: int) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError:
            raise HttpError(400, "malformed chunk size") from None
        if size == 0:
            # Trailer fields, if any, end with an empty line; they are read and dropped.
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return bytes(body)
        if len(body) + size > max_body:
            raise HttpError(413, "request body too large")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise HttpError(400, "malformed chunk")


async def read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, max_body: int = MAX_BODY
) -> Request | None:
    """Read one request; None when the client closed the connection between requests.

    Raises ``HttpError`` for a request that cannot be read, and ``asyncio.IncompleteReadError``
    or ``ConnectionError`` when the client goes away in the middle of one.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if not error.partial.strip():
            return None
        raise
    except asyncio.LimitOverrunError:
        raise HttpError(431, "request head too large") from None
    method, target, version, headers = _parse_head(head)

    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit():
        raise HttpError(400, "malformed Content-Length")
    length = int(length_text)
    if length > max_body:
        raise HttpError(413, "request body too large")

    wants_body = chunked or length > 0
    if wants_body and version == "HTTP/1.1" and headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()

    if chunked:
        body = await _read_chunked(reader, max_body)
    else:
        body = await reader.readexactly(length) if length else b""
    return Request(method=method, target=target, version=version, headers=headers, body=body)


def encode_head(
    status: int, headers: Iterable[tuple[str, str]], version: str = "HTTP/1.1"
) -> bytes:
    """A status line and header block, with a ``Date`` header added."""
    lines = [f"{version} {status} {HTTPStatus(status).phrase}"]
    lines.append(f"Date: {formatdate(usegmt=True)}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a ``Transfer-Encoding: chunked`` body (never the empty last chunk)."""
    return f"{len(data):X}\r\n".encode("ascii") + data + b"\r\n"
