"""A trivial HTTP/1.1 server: the yardstick for the load client's own ceiling, and the
misbehaving servers of the tool's tests.

It answers every request at once with a small JSON body shaped like a chat answer (so the
client does the same work as against a stack), or, as configured, with another status,
after a delay, one request at a time, or never. Run it in a thread (`TrivialServer`, a
`harness.local.loop.LoopThread`), or in a process of its own for the ceiling:
`python -m load_test.ceiling --port N`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast

from harness.local.loop import LoopThread, fast_loop_factory
from harness.local.processes import StopSignals

_END = b"\r\n\r\n"


@dataclass(frozen=True)
class Behaviour:
    """How the server answers: `status` after `delay_s`; `serial` answers one request at a
    time across all connections (a server that cannot keep up); `hang` never answers;
    `record` keeps every request's body; `drop` closes the connection after each answer
    without saying so, as a server dropping idle keep-alive connections does; `backends`
    are named in turn in `X-Dualstack-Backend`, as a gateway splitting traffic does."""

    status: int = 200
    delay_s: float = 0.0
    serial: bool = False
    hang: bool = False
    record: bool = False
    drop: bool = False
    backends: tuple[str, ...] = ()


def _answer(behaviour: Behaviour, number: int) -> bytes:
    body = b'{"status":"healthy","response":"ok","session_id":"trivial-%d"}' % number
    status = behaviour.status
    backends = behaviour.backends
    backend = f"X-Dualstack-Backend: {backends[number % len(backends)]}\r\n" if backends else ""
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
        f"{backend}Content-Length: {len(body)}\r\n\r\n"
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
            self.transport.write(_answer(behaviour, number))
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
            self.transport.write(_answer(behaviour, number))


class TrivialServer(LoopThread):
    """The server on `host` (a free port unless `port` is given), on uvloop (when installed)
    in a thread of its own; `requests` counts the requests it received. `url` is known
    before `start()`."""

    thread_name = "trivial-server"

    def __init__(
        self, behaviour: Behaviour | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__(loop_factory=fast_loop_factory())
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
        self._url = f"http://{host}:{self._sock.getsockname()[1]}"

    @property
    def url(self) -> str:
        """`http://host:port`."""
        return self._url

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Handler(self), sock=self._sock)
        async with server:
            try:
                yield
            finally:
                for task in list(self.tasks):
                    task.cancel()
                for transport in list(self.transports):
                    transport.close()
                await asyncio.sleep(0)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, join the thread, and close the socket (also when never started)."""
        super().stop(timeout)
        self._sock.close()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m load_test.ceiling --port N`: serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m load_test.ceiling", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    with StopSignals() as stop, TrivialServer(host=args.host, port=args.port):
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
