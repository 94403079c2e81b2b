"""Serve a WSGI or ASGI app on a free loopback port in a background thread.

For tests and tools that need real servers (real sockets, real concurrency, the ASGI
lifespan) without subprocesses (those are `harness.local.processes`). Each server is stopped
by whoever started it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import uvicorn
from werkzeug.serving import BaseWSGIServer, make_server

from shared.serving import SnapshotHttpToolsProtocol


class ASGIServer:
    """uvicorn in a thread, with the lifespan run; `url` is set once it accepts.

    The HTTP protocol is production's, `SnapshotHttpToolsProtocol` (a chunked request's
    trailers never join its headers), unless `http=` in `options` says otherwise."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        bound_port = self._sock.getsockname()[1]
        self.url = f"http://{host}:{bound_port}"
        options.setdefault("http", SnapshotHttpToolsProtocol)
        config = uvicorn.Config(
            app, lifespan="on", log_level="warning", access_log=False, **options
        )
        self._server = uvicorn.Server(config)
        self.exit_code: int | str | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        # uvicorn exits the process (sys.exit(3)) when the app's lifespan startup fails;
        # in a thread that is a SystemExit to keep, so start() can say what happened.
        try:
            self._server.run(sockets=[self._sock])
        except SystemExit as exit_:
            self.exit_code = exit_.code

    def start(self, timeout: float = 15.0) -> ASGIServer:
        """Start serving; returns once the lifespan has started and the socket accepts."""
        self._thread.start()
        try:
            _wait_until(
                lambda: self._server.started, timeout, "uvicorn did not start", self._thread
            )
        except RuntimeError as error:
            raise RuntimeError(f"{error} (exit code {self.exit_code})") from None
        return self

    def stop(self) -> None:
        """Shut down (the lifespan's shutdown runs) and join the thread."""
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._sock.close()

    def __enter__(self) -> ASGIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WSGIServer:
    """werkzeug's threaded server in a thread: one thread per request, as gunicorn's
    threaded workers would give the legacy app."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server: BaseWSGIServer = make_server(host, port, app, threaded=True)
        self.url = f"http://{host}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> WSGIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=15)

    def __enter__(self) -> WSGIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them.

    boto3 reads `AWS_ENDPOINT_URL_*` when a client is created, so servers started inside
    the block talk to the endpoints it names."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _wait_until(
    ready: Callable[[], bool], timeout: float, message: str, thread: threading.Thread
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(message)
        time.sleep(0.01)
