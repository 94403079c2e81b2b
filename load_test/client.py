"""A small HTTP/1.1 client on asyncio streams, cheap enough to leave the CPU to the servers.

httpx spends several times more CPU per request than this, and on a two-core machine the
client's CPU is taken from the servers it measures. One `Connection` is one keep-alive
socket used by one user at a time; `exchange()` sends one request on it and classes the
outcome as ok, status error, timeout or connection error (protocol errors included).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from load_test.stats import Kind, classify

IDEMPOTENT = frozenset({"GET", "HEAD"})  # safe to send again on a fresh connection


class ProtocolError(Exception):
    """An answer that is not HTTP/1.x as this client reads it."""


@dataclass(frozen=True, slots=True)
class Request:
    """What to send; `path` includes any query string."""

    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Response:
    """A full answer; header names are lower-cased."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one exchange ended: a `Response` unless it failed before one was read."""

    kind: Kind
    response: Response | None = None

    @property
    def status(self) -> int:
        """The HTTP status, 0 without an answer."""
        return self.response.status if self.response else 0


def parse_origin(url: str) -> tuple[str, int]:
    """`http://host:port` (any path ignored) as (host, port)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only http:// URLs are supported: {url!r}")
    return parts.hostname, parts.port or 80


def encode_request(request: Request, host_header: str) -> bytes:
    """The request's bytes on the wire (always with Content-Length when it has a body)."""
    lines = [f"{request.method} {request.path} HTTP/1.1", f"Host: {host_header}"]
    lines += [f"{name}: {value}" for name, value in request.headers]
    if request.body or request.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(request.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body


def parse_head(raw: bytes) -> tuple[str, int, dict[str, str]]:
    """(version, status, headers) of a response head ending in an empty line."""
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if version not in ("HTTP/1.1", "HTTP/1.0") or not code.isdigit():
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"bad header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
    return version, int(code), headers


class Connection:
    """One keep-alive connection to `host:port`, opened on first use and reopened when the
    server closes it (gunicorn's sync workers close after every answer)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._host_header = f"{host}:{port}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._used = False
        self._answered = False  # whether the current exchange got any of its answer

    async def request(self, request: Request) -> Response:
        """Send `request`, read the whole answer. A GET or HEAD on a keep-alive connection
        the server closed while idle is retried once on a fresh one, as browsers and httpx
        do. Nothing else is: the server may have acted on a POST before the connection
        dropped (a chat turn recorded twice), so that is a connection error. A connection
        the client already knows was closed (the server's FIN has arrived) is not reused,
        as urllib3 checks before reusing one; only a close still on its way is a race."""
        if self._reader is not None and self._reader.at_eof():
            self.close()  # the server closed it while idle (its keep-alive timeout): not reused
        reused = self._writer is not None and self._used
        try:
            return await self._exchange(request)
        except (ConnectionError, asyncio.IncompleteReadError) as error:
            self.close()
            partial = isinstance(error, asyncio.IncompleteReadError) and error.partial
            if not reused or self._answered or partial or request.method not in IDEMPOTENT:
                raise
        return await self._exchange(request)

    async def _exchange(self, request: Request) -> Response:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            self._used = False
        reader, writer = self._reader, self._writer
        assert reader is not None
        self._answered = False
        writer.write(encode_request(request, self._host_header))
        await writer.drain()
        self._used = True
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise ProtocolError("response head too large") from None
        self._answered = True
        version, status, headers = parse_head(head[:-4])
        body, keep = await _read_body(reader, headers, request.method == "HEAD", status)
        connection = headers.get("connection", "").lower()
        if (
            not keep
            or "close" in connection
            or (version == "HTTP/1.0" and connection != "keep-alive")
        ):
            self.close()
        return Response(status, headers, body)

    def close(self) -> None:
        """Drop the socket (a later request opens a new one)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        self._reader = self._writer = None


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], head_only: bool, status: int
) -> tuple[bytes, bool]:
    """The body, and whether the connection can carry another request afterwards."""
    if head_only or status in (204, 304) or 100 <= status < 200:
        return b"", True
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise ProtocolError("bad chunk size") from None
            if size == 0:
                # Trailers, if any, end with an empty line.
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return b"".join(parts), True
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ProtocolError("bad content-length")
        return await reader.readexactly(int(length)), True
    return await reader.read(), False  # delimited by the server closing the connection


async def exchange(connection: Connection, request: Request, timeout_s: float) -> Outcome:
    """One request with a deadline for the whole exchange (connecting included); never
    raises for a network failure, it becomes the outcome's kind."""
    try:
        async with asyncio.timeout(timeout_s):
            response = await connection.request(request)
    except TimeoutError:
        connection.close()  # the answer may still come: the socket cannot be reused
        return Outcome("timeout")
    except (OSError, asyncio.IncompleteReadError, ProtocolError, ValueError):
        connection.close()
        return Outcome("connection")
    return Outcome(classify(response.status), response)
