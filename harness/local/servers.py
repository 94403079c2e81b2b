"""Serve a WSGI or ASGI app on a free loopback port in a background thread.

For tests and tools that need real servers (real sockets, real concurrency, the ASGI
lifespan) without subprocesses. Each server is stopped by whoever started it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol

import httpx
import uvicorn
from werkzeug.serving import BaseWSGIServer, make_server


class RunningServer(Protocol):
    url: str

    def stop(self) -> None: ...


class ASGIServer:
    """uvicorn in a thread, with the lifespan run; `url` is set once it accepts."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        bound_port = self._sock.getsockname()[1]
        self.url = f"http://{host}:{bound_port}"
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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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


@contextlib.contextmanager
def server_process(
    argv: Sequence[str], *, env: Mapping[str, str], ready_path: str, cwd: str | None = None
) -> Iterator[str]:
    """Run a server command (`{port}` in `argv` becomes a free port) until the block ends;
    yields its base URL once `ready_path` answers 2xx. Stops only the process it started,
    by its PID: SIGTERM, then SIGKILL after 15 s."""
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - the caller's own argv
        [arg.format(port=port) for arg in argv],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}{ready_path}", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    _, err = process.communicate()
                    raise RuntimeError(f"{argv[0]} did not start: {err.decode()[-2000:]}") from None
                time.sleep(0.1)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr:
            process.stderr.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now on `host` (for subprocess servers that must bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until(
    ready: Callable[[], bool], timeout: float, message: str, thread: threading.Thread
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(message)
        time.sleep(0.01)
