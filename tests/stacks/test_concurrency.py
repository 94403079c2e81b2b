"""A worker's AWS clients must not cap how many conversations it serves at once.

botocore keeps 10 connections per client unless told otherwise; for the async stack that
would mean at most ten agent calls in flight per worker, whatever the load. The agent
endpoint here is a listener that only counts the connections open at the same time."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager

import httpx

from shared.settings import Settings

from .conftest import Stacks

TURNS = 30


class ConnectionCounter:
    """Accepts connections and holds them open, until `want` are open together or
    `patience` seconds pass; then closes them all. The clients wait longer than
    `patience` for an answer, so no connection closes before then: every accepted one
    is open at the same time, and `peak` is the most open at once."""

    def __init__(self, want: int, patience: float) -> None:
        self.want, self.patience = want, patience
        self.peak = 0
        self._open: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        give_up = threading.Timer(self.patience, self._done.set)
        give_up.start()
        while not self._done.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._open.append(conn)
            self.peak = max(self.peak, len(self._open))
            if self.peak >= self.want:
                self._done.set()
        give_up.cancel()
        for conn in self._open:
            conn.close()

    @contextmanager
    def running(self) -> Iterator[ConnectionCounter]:
        self._thread.start()
        try:
            yield self
        finally:
            self._done.set()
            self._thread.join()
            self._listener.close()


def test_one_async_worker_holds_many_agent_calls_at_once(
    start_stacks: Callable[..., AbstractContextManager[Stacks]],
    make_settings: Callable[..., Settings],
) -> None:
    # Generous patience for a loaded machine: it only runs out when the test fails.
    counter = ConnectionCounter(want=TURNS, patience=30.0)
    settings = make_settings(agent_timeout_seconds=60.0, agent_connect_timeout_seconds=60.0)
    env = {"AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME": counter.url}
    with counter.running(), start_stacks(settings, env) as stacks:
        url = stacks.urls["fastapi"] + "/api/v1/chat"

        def turn(n: int) -> int:
            reply = httpx.post(url, json={"message": f"turn {n}"}, timeout=120)
            return reply.status_code

        with ThreadPoolExecutor(TURNS) as pool:
            statuses = list(pool.map(turn, range(TURNS)))
    # Every call reached the agent at the same time; the agent then hung up on all of them,
    # which the stack reports as the agent failing, in the contract's shape.
    assert counter.peak == TURNS
    assert set(statuses) <= {502, 504}
