"""A WSGI app on loopback over persistent HTTP/1.1 connections, one request at a time.

For apps that serialise their requests anyway (moto's DynamoDB behind its lock): the app
runs on the server's event loop thread, so requests are neither handed between threads
nor queued on a lock, and the connections botocore keeps alive stay open (werkzeug's dev
server answers every request with ``Connection: close``: a new connection and a new
thread per request). No request log.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote, urlsplit

from harness.local.emulators.http11 import HttpError, Request, encode_head, read_request
from harness.local.loop import LoopThread

__all__ = ["WSGIServerThread", "build_environ"]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# DynamoDB's largest request (BatchWriteItem) is 16 MB.
MAX_BODY = 16 << 20
SERVER_SOFTWARE = "dualstack-wsgi"
_ERROR = b"Internal Server Error"
_STOP_GRACE_S = 1.0
_log = logging.getLogger(__name__)


def build_environ(
    request: Request, server: tuple[str, int], client: tuple[str, int]
) -> dict[str, Any]:
    """The WSGI environ of one request, as werkzeug's server builds it.

    Headers with an underscore in their name are dropped (WSGI cannot tell ``X_Foo`` from
    ``X-Foo``, so one could spoof the other). A chunked body has been read in full, so it
    is described by its length.
    """
    url = urlsplit(request.target)
    # A path that starts with two slashes parses as a netloc: put it back.
    path = f"/{url.netloc}{url.path}" if not url.scheme and url.netloc else url.path
    environ: dict[str, Any] = {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(request.body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "SERVER_SOFTWARE": SERVER_SOFTWARE,
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": _latin1(unquote(path)),
        "QUERY_STRING": _latin1(url.query),
        "REQUEST_URI": _latin1(request.target),
        "RAW_URI": _latin1(request.target),
        "REMOTE_ADDR": client[0],
        "REMOTE_PORT": client[1],
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": request.version,
    }
    for name, value in request.headers.items():
        if "_" in name or name == "transfer-encoding":
            continue
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = f"HTTP_{key}"
        environ[key] = value
    environ["CONTENT_LENGTH"] = str(len(request.body))
    if url.scheme and url.netloc:  # an absolute target names the host
        environ["HTTP_HOST"] = url.netloc
    return environ


def _latin1(text: str) -> str:
    # WSGI strings are bytes decoded as latin-1 ("the WSGI encoding dance").
    return text.encode("utf-8").decode("latin-1")


class _Reply:
    """Collects what the app passes to ``start_response``."""

    def __init__(self) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        self.status = status
        self.headers = list(headers)
        return self._write

    def _write(self, data: bytes) -> None:  # the legacy write() callable; unused by moto
        raise NotImplementedError("write() is not supported")


def _respond(app: WSGIApp, environ: dict[str, Any], keep_alive: bool) -> bytes:
    """Call ``app`` and return the whole HTTP/1.1 response (head and body)."""
    reply = _Reply()
    chunks = app(environ, reply.start_response)
    try:
        body = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    headers = [(n, v) for n, v in reply.headers if n.lower() not in ("connection", "date")]
    names = {n.lower() for n, _ in headers}
    if "content-length" not in names:
        headers.append(("Content-Length", str(len(body))))
    if not keep_alive:
        headers.append(("Connection", "close"))
    if "server" not in names:
        headers.insert(0, ("Server", SERVER_SOFTWARE))
    if environ["REQUEST_METHOD"] == "HEAD":
        body = b""
    # The app's own status line, whatever its code: `encode_head` knows standard codes only.
    lines = [f"HTTP/1.1 {reply.status}", f"Date: {formatdate(usegmt=True)}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class WSGIServerThread(LoopThread):
    """Serves ``app`` on ``host:port`` (0: a free port) from an event loop in a daemon thread.

    ``start()`` returns the url once the server listens; ``stop()`` closes the listening
    socket and every open connection, then joins the thread. Usable as a context manager.
    """

    thread_name = "wsgi-server"

    def __init__(self, app: WSGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__()
        self._app = app
        self._host = host
        self._port = port
        self._address: tuple[str, int] | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` once started."""
        if self._address is None:
            raise RuntimeError("server not started")
        return self._address

    @property
    def url(self) -> str:
        """``http://host:port`` once started."""
        host, port = self.address
        return f"http://{host}:{port}"

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        server = await asyncio.start_server(self._serve, self._host, self._port)
        host, port = server.sockets[0].getsockname()[:2]
        self._address = (str(host), int(port))
        try:
            yield
        finally:
            server.close()
            await self._close_connections()
            await server.wait_closed()

    async def _close_connections(self) -> None:
        # The app runs on this loop, so no request is being answered now: a connection is
        # idle (a keep-alive client's), reading a request, or sending an answer. Closing
        # ends each with an end of file; one that does not end in time (a client that
        # does not read its answer) is cancelled, and ends quietly (see _serve).
        tasks = list(self._connections)
        for writer in self._connections.values():
            writer.close()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_STOP_GRACE_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        peer = writer.get_extra_info("peername") or ("", 0)
        client = (str(peer[0]), int(peer[1]))
        try:
            while True:
                try:
                    request = await read_request(reader, writer, max_body=MAX_BODY)
                except HttpError as error:
                    message = error.message.encode("utf-8")
                    writer.write(
                        encode_head(
                            error.status,
                            [("Content-Length", str(len(message))), ("Connection", "close")],
                        )
                        + message
                    )
                    await writer.drain()
                    return
                if request is None:
                    return
                keep_alive = request.keep_alive
                environ = build_environ(request, self.address, client)
                try:
                    response = _respond(self._app, environ, keep_alive)
                except Exception:
                    # As werkzeug's server does: log it, answer 500, drop the connection.
                    _log.exception("error serving %s %s", request.method, request.target)
                    keep_alive = False
                    response = (
                        encode_head(
                            500, [("Content-Length", str(len(_ERROR))), ("Connection", "close")]
                        )
                        + _ERROR
                    )
                writer.write(response)
                await writer.drain()
                if not keep_alive:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        except asyncio.CancelledError:
            # Only stopping cancels these tasks. Drop unsent data and end normally: on
            # Python 3.11 asyncio's done-callback calls task.exception() on a cancelled
            # connection task and logs the CancelledError with its traceback.
            writer.transport.abort()
        finally:
            del self._connections[task]
            writer.close()
