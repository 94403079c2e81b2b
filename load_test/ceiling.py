"""A trivial HTTP/1.1 server: the yardstick for the load client's own ceiling, and the
misbehaving servers of the tool's tests.

It answers every request at once with a small JSON body shaped like a chat answer (so the
client does the same work as against a stack), or, as configured, with another status,
after a delay, one request at a time, or never. Run it in a thread (`TrivialServer`), or in
a process of its own for the ceiling: `python -m load_test.ceiling --port N`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import cast

_END = b"\r\n\r\n"


@dataclass(frozen=True)
class Behaviour:
    """How the server answers: `status` after `delay_s`; `serial` answers one request at a
    time across all connections (a server that cannot keep up); `hang` never answers;
    `record` keeps every request's body; `drop` closes the connection after each answer
    without saying so, as a server dropping idle keep-alive connections does."""

    status: int = 200
    delay_s: float = 0.0
    serial: bool = False
    hang: bool = False
    record: bool = False
    drop: bool = False


def _answer(status: int, number: int) -> bytes:
    body = b'{"status":"healthy","response":"ok","session_id":"trivial-%d"}' % number
    reason = HTTPStatus(status).phrase
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class _Handler(asyncio.Protocol):
    def __init__(self, server: TrivialServer) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.server.transports.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.server.transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(_END)) >= 0:
            length = 0
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if len(self.buffer) < end + 4 + length:
                return
            if self.server.behaviour.record:
                self.server.bodies.append(self.buffer[end + 4 : end + 4 + length])
            self.buffer = self.buffer[end + 4 + length :]
            self.server.requests += 1
            self.respond(self.server.requests)

    def respond(self, number: int) -> None:
        behaviour = self.server.behaviour
        if behaviour.hang:
            return
        if not behaviour.delay_s and not behaviour.serial:
            assert self.transport is not None
            self.transport.write(_answer(behaviour.status, number))
            if behaviour.drop:
                self.transport.close()
            return
        task = asyncio.get_running_loop().create_task(self.respond_later(number))
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    async def respond_later(self, number: int) -> None:
        behaviour = self.server.behaviour
        lock = self.server.lock if behaviour.serial else contextlib.nullcontext()
        async with lock:
            await asyncio.sleep(behaviour.delay_s)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_answer(behaviour.status, number))


class TrivialServer:
    """The server on `host` (a free port unless `port` is given), in a thread of its own;
    `requests` counts the requests it received."""

    def __init__(
        self, behaviour: Behaviour | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.behaviour = behaviour or Behaviour()
        self.requests = 0
        self.bodies: list[bytes] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.transports: set[asyncio.Transport] = set()
        self.lock = asyncio.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(1024)
        self.url = f"http://{host}:{self._sock.getsockname()[1]}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stopped: asyncio.Future[None] | None = None

    def _run(self) -> None:
        assert self._loop is not None
        try:
            self._loop.run_until_complete(self.serve())
        finally:
            self._loop.close()

    async def serve(self) -> None:
        """Serve until `stop()` (or forever, when run as a process)."""
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        server = await loop.create_server(lambda: _Handler(self), sock=self._sock)
        self._ready.set()
        async with server:
            try:
                await self._stopped
            finally:
                for task in list(self.tasks):
                    task.cancel()
                for transport in list(self.transports):
                    transport.close()
                await asyncio.sleep(0)

    def start(self) -> TrivialServer:
        """Start the thread; returns once the server accepts."""
        self._loop = asyncio.new_event_loop()
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        stopped, loop = self._stopped, self._loop
        if stopped is not None and loop is not None:
            loop.call_soon_threadsafe(_settle, stopped)
            self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> TrivialServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m load_test.ceiling --port N`: serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m load_test.ceiling", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    server = TrivialServer(host=args.host, port=args.port)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await server.serve()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(serve())
    else:
        uvloop.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
