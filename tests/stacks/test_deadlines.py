"""One deadline per call, on both stacks over real sockets: `AGENT_TIMEOUT_SECONDS` bounds
the whole agent call (every attempt, the backoffs, the answer's stream) and
`STORE_TIMEOUT_SECONDS` a whole store operation, with the default retry settings.

The agent is an emulator of this module's own, so its faults, latency and chunking can be
set per test; the upper bounds are the point here, so the timeouts are large enough (3 s)
for scheduling noise to be small beside the 1 s of slack.
"""

from __future__ import annotations

import itertools
import random
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import httpx
import pytest

from harness.local.emulators import BedrockAgentEmulator, BedrockEmulatorThread
from shared import contract
from shared.settings import Settings

from .conftest import Stacks

CHAT = "/api/v1/chat"
AGENT_TIMEOUT = 3.0
STORE_TIMEOUT = 2.0
SLACK = 1.0

StartStacks = Callable[..., AbstractContextManager[Stacks]]


@pytest.fixture(scope="module")
def agent() -> Iterator[BedrockAgentEmulator]:
    with BedrockEmulatorThread(BedrockAgentEmulator()) as thread:
        yield thread.emulator


@pytest.fixture
def fresh_agent(agent: BedrockAgentEmulator) -> BedrockAgentEmulator:
    """The module's agent with its default options and no counts."""
    agent.configure(
        latency_ms=0.0, chunk_count=3, chunk_delay_ms=0.0, fault=None, fault_rate=1.0, seed=0
    )
    agent.reset()
    return agent


@pytest.fixture(scope="module")
def deadline_stacks(
    start_stacks: StartStacks,
    make_settings: Callable[..., Settings],
    agent: BedrockAgentEmulator,
) -> Iterator[Stacks]:
    """Both stacks with the default retries (3 attempts) and a 3 s agent deadline."""
    settings = make_settings(agent_timeout_seconds=AGENT_TIMEOUT, agent_max_attempts=3)
    with start_stacks(settings, {"AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME": agent.url}) as stacks:
        yield stacks


def _chat(stacks: Stacks, stack: str, body: dict[str, str]) -> tuple[httpx.Response, float]:
    """The answer to one chat turn and the seconds it took."""
    with stacks.client(stack) as client:
        started = time.monotonic()
        response = client.post(CHAT, json=body)
        return response, time.monotonic() - started


def _seed_faulting_first_only(rate: float) -> int:
    """A seed whose first fault draw falls below `rate` and second does not: the agent's
    first invocation gets the configured fault and the retry does not."""
    for seed in itertools.count():
        draws = random.Random(seed)
        if draws.random() < rate <= draws.random():
            return seed
    raise AssertionError("unreachable")  # pragma: no cover


def test_a_hung_agent_is_a_504_at_the_deadline_after_one_attempt(
    deadline_stacks: Stacks, stack: str, fresh_agent: BedrockAgentEmulator
) -> None:
    session_id = f"hung-{stack}-{time.time_ns()}"
    response, elapsed = _chat(
        deadline_stacks, stack, {"message": "wait [[emulator:hang]]", "session_id": session_id}
    )
    assert (response.status_code, response.json()["error"]) == (504, contract.AGENT_TIMEOUT)
    # The first attempt had the whole deadline to read in: none was left for another.
    assert fresh_agent.stats()["outcomes"] == {"hang": 1}
    assert AGENT_TIMEOUT <= elapsed < AGENT_TIMEOUT + SLACK, f"{stack}: 504 after {elapsed:.2f}s"
    with deadline_stacks.client("fastapi") as reader:
        assert reader.get(f"{CHAT}/sessions/{session_id}").status_code == 404  # no turn


def test_a_slow_agent_that_fits_in_one_attempt_answers(
    deadline_stacks: Stacks, stack: str, fresh_agent: BedrockAgentEmulator
) -> None:
    response, _ = _chat(deadline_stacks, stack, {"message": "slow [[emulator:latency=2000]]"})
    assert response.status_code == 200, response.text
    assert response.json()["processing_time_ms"] >= 2000
    assert fresh_agent.stats()["outcomes"] == {"ok": 1}


def test_a_throttled_agent_is_retried_within_the_deadline(
    deadline_stacks: Stacks, stack: str, fresh_agent: BedrockAgentEmulator
) -> None:
    fresh_agent.configure(fault="throttle", fault_rate=0.5, seed=_seed_faulting_first_only(0.5))
    response, elapsed = _chat(deadline_stacks, stack, {"message": "hello"})
    assert response.status_code == 200, response.text
    assert fresh_agent.stats()["outcomes"] == {"throttle": 1, "ok": 1}
    assert elapsed < AGENT_TIMEOUT


def test_a_retry_gets_only_the_time_left(
    deadline_stacks: Stacks, stack: str, fresh_agent: BedrockAgentEmulator
) -> None:
    # The first attempt fails after 1.8 s; the retry (after at most 1 s of backoff) would
    # answer 1.8 s later, past the deadline: its read timeout is what was left, so 504.
    fresh_agent.configure(fault="fail", fault_rate=0.5, seed=_seed_faulting_first_only(0.5))
    response, elapsed = _chat(deadline_stacks, stack, {"message": "x [[emulator:latency=1800]]"})
    assert (response.status_code, response.json()["error"]) == (504, contract.AGENT_TIMEOUT)
    stats = fresh_agent.stats()
    assert (stats["invocations"], stats["outcomes"].get("fail")) == (2, 1)
    assert AGENT_TIMEOUT <= elapsed < AGENT_TIMEOUT + SLACK, f"{stack}: 504 after {elapsed:.2f}s"


def test_an_answer_still_streaming_at_the_deadline_is_a_504(
    deadline_stacks: Stacks, stack: str, fresh_agent: BedrockAgentEmulator
) -> None:
    # Events 2.5 s apart: each read is shorter than the deadline, the stream is not.
    fresh_agent.configure(chunk_count=3, chunk_delay_ms=2500)
    response, elapsed = _chat(deadline_stacks, stack, {"message": "a long answer"})
    assert (response.status_code, response.json()["error"]) == (504, contract.AGENT_TIMEOUT)
    assert fresh_agent.stats()["invocations"] == 1
    assert AGENT_TIMEOUT <= elapsed < AGENT_TIMEOUT + SLACK, f"{stack}: 504 after {elapsed:.2f}s"


class SilentEndpoint:
    """A loopback port whose connections the kernel accepts and nobody answers: a store
    that hangs. `connections()` counts those made so far (each attempt makes one)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._accepted: list[socket.socket] = []

    def connections(self) -> int:
        while True:
            try:
                connection, _ = self._listener.accept()
            except BlockingIOError:
                return len(self._accepted)
            self._accepted.append(connection)  # held open, never answered

    def __enter__(self) -> SilentEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        for connection in self._accepted:
            connection.close()
        self._listener.close()


def test_a_hung_store_is_a_503_at_the_deadline_after_one_attempt(
    start_stacks: StartStacks, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(store_timeout_seconds=STORE_TIMEOUT, store_max_attempts=3)
    with (
        SilentEndpoint() as store,
        start_stacks(settings, {"AWS_ENDPOINT_URL_DYNAMODB": store.url}) as stacks,
    ):
        for stack in ("flask", "fastapi"):
            before = store.connections()
            response, elapsed = _chat(stacks, stack, {"message": "hello"})
            assert response.status_code == 503, (stack, response.text)
            assert response.json()["error"] == contract.STORE_UNAVAILABLE
            assert response.headers["retry-after"] == "5"
            # One connection: the first attempt had the whole deadline to answer in.
            assert store.connections() == before + 1, stack
            assert STORE_TIMEOUT <= elapsed < STORE_TIMEOUT + SLACK, (
                f"{stack}: 503 after {elapsed:.2f}s"
            )
