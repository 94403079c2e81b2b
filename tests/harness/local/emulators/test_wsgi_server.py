"""The emulators' WSGI server: environ building (pure) and persistent connections (real sockets)."""

from __future__ import annotations

import contextlib
import http.client
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from harness.local.emulators.http11 import Request
from harness.local.emulators.wsgi_server import WSGIServerThread, build_environ


def test_build_environ_matches_werkzeugs_layout() -> None:
    request = Request(
        method="POST",
        target="/a%20b/c?x=1&y=%C3%A9",
        version="HTTP/1.1",
        headers={
            "host": "127.0.0.1:8000",
            "content-type": "application/x-amz-json-1.0",
            "content-length": "99",  # a chunked body's length is what was read
            "transfer-encoding": "chunked",
            "x-amz-target": "DynamoDB_20120810.GetItem",
            "x_amz_target": "spoofed",  # underscores: dropped, as werkzeug drops them
        },
        body=b'{"k": "v"}',
    )
    environ = build_environ(request, ("127.0.0.1", 8000), ("127.0.0.1", 54321))
    body = environ.pop("wsgi.input")
    errors = environ.pop("wsgi.errors")
    assert body.read() == b'{"k": "v"}'
    assert hasattr(errors, "write")
    assert environ == {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "SERVER_SOFTWARE": "dualstack-wsgi",
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/a b/c",
        "QUERY_STRING": "x=1&y=%C3%A9",
        "REQUEST_URI": "/a%20b/c?x=1&y=%C3%A9",
        "RAW_URI": "/a%20b/c?x=1&y=%C3%A9",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": 54321,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "CONTENT_TYPE": "application/x-amz-json-1.0",
        "CONTENT_LENGTH": "10",
        "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.GetItem",
    }


@pytest.mark.parametrize(
    ("target", "path_info"),
    [
        ("//double/slash", "/double/slash"),  # werkzeug reads the first segment as a host
        ("/caf%C3%A9", "/caf\xc3\xa9"),  # UTF-8 bytes as latin-1: the WSGI encoding dance
        ("http://example.com/abs?q=1", "/abs"),
    ],
)
def test_build_environ_path_info(target: str, path_info: str) -> None:
    request = Request("GET", target, "HTTP/1.1", {}, b"")
    assert build_environ(request, ("h", 1), ("c", 2))["PATH_INFO"] == path_info


StartResponse = Callable[..., Any]


class _Recorder:
    """A WSGI app that answers with the client port it saw, and records every request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("boom")
        if environ["PATH_INFO"] == "/odd":
            start_response("599 Odd Status", [("Server", "app")])
            return [b"odd"]
        if environ["PATH_INFO"] == "/big":  # more than the sockets' buffers hold
            start_response("200 OK", [])
            return [b"x" * (32 << 20)]
        self.seen.append((environ["PATH_INFO"], environ["REMOTE_PORT"]))
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"port=", str(environ["REMOTE_PORT"]).encode(), b" body=", body]


@pytest.fixture
def recorder() -> _Recorder:
    return _Recorder()


@pytest.fixture
def server(recorder: _Recorder) -> Iterator[WSGIServerThread]:
    with WSGIServerThread(recorder) as thread:
        yield thread


def _connection(server: WSGIServerThread) -> http.client.HTTPConnection:
    host, port = server.address
    return http.client.HTTPConnection(host, port, timeout=5)


def test_one_connection_serves_many_requests(server: WSGIServerThread, recorder: _Recorder) -> None:
    connection = _connection(server)
    replies, sockets = [], []
    try:
        for i in range(5):
            connection.request("POST", f"/r{i}", body=f"n={i}".encode())
            response = connection.getresponse()
            replies.append((response.status, response.getheader("Connection"), response.read()))
            sockets.append(connection.sock)
    finally:
        connection.close()
    assert sockets[0] is not None
    assert all(sock is sockets[0] for sock in sockets)  # never reconnected
    port = recorder.seen[0][1]
    assert recorder.seen == [(f"/r{i}", port) for i in range(5)]
    assert replies == [(200, None, f"port={port} body=n={i}".encode()) for i in range(5)]


def test_connection_close_is_honoured(server: WSGIServerThread) -> None:
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):  # ends only when the server closes
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close" in head
    assert body.startswith(b"port=")


def test_app_error_is_a_500_and_the_server_keeps_serving(
    server: WSGIServerThread, recorder: _Recorder
) -> None:
    connection = _connection(server)
    try:
        connection.request("GET", "/boom")
        response = connection.getresponse()
        assert (response.status, response.getheader("Connection"), response.read()) == (
            500,
            "close",
            b"Internal Server Error",
        )
    finally:
        connection.close()
    connection = _connection(server)
    try:
        connection.request("GET", "/after")
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    assert [path for path, _ in recorder.seen] == ["/after"]


def _asyncio_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "asyncio"]


@pytest.mark.parametrize(
    "path",
    [
        "/x",  # then idle: a keep-alive connection, closed
        "/big",  # a client that does not read its answer, which cannot be flushed: dropped
    ],
)
def test_stop_ends_open_connections_quietly(
    path: str, recorder: _Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    thread = WSGIServerThread(recorder)
    thread.start()
    with socket.create_connection(thread.address, timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
        head = sock.recv(65536)
        thread.stop()  # returns although the connection is still open
        rest = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(1 << 20):  # ends once the server closed it
                rest += len(chunk)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert rest < 32 << 20  # a big answer's rest was dropped, not sent
    # A connection task left to asyncio.run's final cancellation is logged with a traceback.
    assert _asyncio_errors(caplog) == []


def test_the_apps_status_line_and_server_header_pass_through(server: WSGIServerThread) -> None:
    connection = _connection(server)
    try:
        connection.request("GET", "/odd")
        response = connection.getresponse()
        reply = (response.status, response.reason, response.getheader("Server"), response.read())
    finally:
        connection.close()
    assert reply == (599, "Odd Status", "app", b"odd")
