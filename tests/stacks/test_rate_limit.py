"""Rate limiting: one budget per client in DynamoDB, shared by both stacks.

The fixed window's edges are tested through the stores both stacks use, on an injected
clock, against the real emulator; the wire test takes a window whose edge cannot fall
inside it, so it never depends on when it runs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager

from harness.local.emulators import LocalEmulators
from shared import contract
from shared.session import RateDecision
from shared.settings import Settings
from shared.store import AsyncSessionStore, SessionStore

from .conftest import Stacks

CHAT = "/api/v1/chat"
WINDOW = 60
EDGE = 1_800_000_000  # a multiple of WINDOW: a window starts exactly here


class Clock:
    """The stores' clock, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_window_is_shared_by_both_stores_and_the_next_starts_at_its_edge(
    emulators: LocalEmulators, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        rate_limit_requests=2, rate_limit_window_seconds=WINDOW, dynamodb_table=emulators.table
    )
    client_address = f"edge-{uuid.uuid4().hex}"  # a budget of this test's own
    clock = Clock(EDGE - WINDOW)
    sync_client = emulators.dynamodb.client()

    async def scenario() -> list[RateDecision]:
        async with emulators.dynamodb.async_client() as async_client:
            # Flask's store and FastAPI's, on one clock the test moves.
            flask = SessionStore(sync_client, settings, clock=clock)
            fastapi = AsyncSessionStore(async_client, settings, clock=clock)

            async def hit(store: SessionStore | AsyncSessionStore) -> RateDecision:
                if isinstance(store, SessionStore):
                    return await asyncio.to_thread(store.hit, client_address)
                return await store.hit(client_address)

            decisions = [await hit(flask)]  # the window's first instant
            clock.now = EDGE - 0.5  # its last half second
            decisions += [await hit(fastapi), await hit(flask)]
            clock.now = EDGE  # exactly at the edge: a new window, a new budget
            decisions += [await hit(fastapi), await hit(flask), await hit(fastapi)]
            clock.now = EDGE + WINDOW - 1
            decisions.append(await hit(flask))
            return decisions

    try:
        decisions = asyncio.run(scenario())
    finally:
        sync_client.close()
    assert decisions == [
        RateDecision(allowed=True, count=1, retry_after=60),
        RateDecision(allowed=True, count=2, retry_after=1),
        RateDecision(allowed=False, count=3, retry_after=1),
        RateDecision(allowed=True, count=1, retry_after=60),
        RateDecision(allowed=True, count=2, retry_after=60),
        RateDecision(allowed=False, count=3, retry_after=60),
        RateDecision(allowed=False, count=4, retry_after=1),
    ]


# Windows are aligned on multiples of their length since the epoch: this one began at 0 and
# ends in the year 2286, so no edge can fall inside the test, whenever it runs.
LONG_WINDOW = 10**10


def test_budget_is_shared_by_both_stacks(
    emulators: LocalEmulators,
    start_stacks: Callable[..., AbstractContextManager[Stacks]],
    make_settings: Callable[..., Settings],
) -> None:
    table = f"rate_{uuid.uuid4().hex[:8]}"  # no other test's counters
    emulators.dynamodb.create_table(table)
    settings = make_settings(
        rate_limit_requests=4, rate_limit_window_seconds=LONG_WINDOW, dynamodb_table=table
    )
    with start_stacks(settings) as stacks:
        statuses = []
        retry_after = []
        started = time.time()
        for stack in ("flask", "fastapi", "flask", "fastapi", "flask", "fastapi"):
            with stacks.client(stack) as client:
                response = client.post(CHAT, json={"message": "counted"})
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert response.json()["error"] == contract.RATE_LIMITED
                retry_after.append(int(response.headers["retry-after"]))
        ended = time.time()
        with stacks.client("flask") as client:
            health = client.get("/health")
    assert statuses == [200, 200, 200, 200, 429, 429]
    # The seconds left in the window, from the moment each refusal was decided.
    assert all(LONG_WINDOW - ended <= s <= LONG_WINDOW - started + 1 for s in retry_after)
    assert health.status_code == 200  # only chat turns are limited


def test_rate_limiting_is_off_by_default(stacks: Stacks, stack: str) -> None:
    with stacks.client(stack) as client:
        statuses = {client.post(CHAT, json={"message": f"n{i}"}).status_code for i in range(12)}
    assert statuses == {200}
