"""`GET /_gateway/stats`: the fleet's series, written by `FleetCounters` as workers, read
back through the real moto DynamoDB and real aioboto3 clients; `FleetCounters.seconds()`'s
cache; the query and the summary as pure tables; one run through the real gateway.

pytest-asyncio is not installed: each scenario runs with `asyncio.run`; the stats app is
called in the same loop through httpx's `ASGITransport` (its client is bound to the loop).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from harness.gateway.admission import Admission
from harness.gateway.fleet import KEPT_SECONDS, FleetCounters, SecondCounts
from harness.gateway.metrics import LATENCY_BUCKETS, GatewayMetrics
from harness.gateway.stats import Query, stats_routes, summarize
from shared.session import iso

from .conftest import StartGateway

OpenClient = Callable[[], AbstractAsyncContextManager[Any]]

T = 1_800_000_000
"""A multiple of every step the tests use: the first point starts on it."""

CHAT = "/api/v1/chat"
SESSION = "/api/v1/chat/sessions/{session_id}"
BACKEND = "x-dualstack-backend"

FAST = 0.00390625  # bucket 2: (0.0025, 0.005]
MID = 0.25  # bucket 7: (0.1, 0.25]
SLOW = 64.0  # +Inf


def run(scenario: Awaitable[None]) -> None:
    asyncio.run(scenario)  # type: ignore[arg-type]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Counting:
    """The client `open_client` gives, keeping the seconds each BatchGetItem asked for."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.reads: list[list[int]] = []

    async def batch_get_item(self, RequestItems: dict[str, Any]) -> Any:
        ((request),) = RequestItems.values()
        self.reads.append([int(k["session_id"]["S"].rsplit("#", 1)[1]) for k in request["Keys"]])
        return await self.client.batch_get_item(RequestItems=RequestItems)

    def __getattr__(self, operation: str) -> Any:
        return getattr(self.client, operation)


class Worker:
    """One gateway worker: its metrics, its WSGI pool, and its `FleetCounters`."""

    def __init__(self, client: Any, table: str, clock: Clock, name: str, threads: int) -> None:
        self.metrics = GatewayMetrics()
        self.pool = Admission(threads, max_wait=1.0)
        self.metrics.admission = self.pool
        self.clock = clock
        self.fleet = FleetCounters(client, table, self.metrics, clock=clock, worker=name)

    async def flush_at(self, now: float, busy: int) -> int:
        self.clock.now = now
        self.pool.busy = busy
        return await self.fleet.flush()


@asynccontextmanager
async def serve(fleet: FleetCounters) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=stats_routes(fleet, GatewayMetrics()))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        yield http


def empty_point() -> dict[str, Any]:
    return {
        "requests": 0,
        "errors": 0,
        "shed": 0,
        "rps": 0.0,
        "error_rate": None,
        "p50_ms": None,
        "p99_ms": None,
    }


def series(*points: dict[str, Any]) -> dict[str, list[Any]]:
    return {name: [point[name] for point in points] for name in empty_point()}


# --- the series, end to end through the table -----------------------------------------------


def test_two_workers_sum_into_the_series(rollout_table: str, open_client: OpenClient) -> None:
    async def scenario() -> None:
        async with open_client() as client:
            clock = Clock(T)
            one = Worker(client, rollout_table, clock, "w1", threads=8)
            two = Worker(client, rollout_table, clock, "w2", threads=4)
            # First point, [T, T + 10): one in seconds T and T + 7, two in T + 3.
            for status, seconds in ((200, FAST), (200, FAST), (500, MID)):
                one.metrics.observe("flask", CHAT, "POST", status, seconds)
            one.metrics.observe("fastapi", CHAT, "POST", 200, FAST)
            await one.flush_at(T + 0.5, busy=3)
            await one.flush_at(T + 7.2, busy=5)  # nothing counted: written as a thread is busy
            two.metrics.observe("flask", SESSION, "GET", 200, FAST)
            two.metrics.shadowed[(CHAT, "match")] += 3
            two.metrics.shadowed[(SESSION, "breaking")] += 1
            await two.flush_at(T + 3.9, busy=1)
            # Second point: both in T + 12; one sheds two.
            one.metrics.observe("fastapi", CHAT, "POST", 200, SLOW)
            one.metrics.shed_routes[("flask", CHAT)] += 2
            await one.flush_at(T + 12.0, busy=8)
            two.metrics.observe("fastapi", SESSION, "GET", 503, MID)
            two.metrics.shadowed[(CHAT, "dropped")] += 2
            await two.flush_at(T + 12.99, busy=4)
            # Third point: only two's pool, busy with nothing finished.
            await two.flush_at(T + 25, busy=2)
            # Idle: nothing is written, so the last three points have no pool reading.
            assert await one.flush_at(T + 40, busy=0) == 0

            reader = FleetCounters(client, rollout_table, GatewayMetrics(), clock=clock)
            clock.now = T + 63.5  # final before T + 60: six points of 10 s end there
            async with serve(reader) as http:
                response = await http.get("/stats", params={"minutes": 1, "step": 10})
            assert response.status_code == 200
            assert response.headers["cache-control"] == "no-store"
            assert response.json() == {
                "source": "fleet",
                "now": iso(T + 63.5),
                "step_seconds": 10,
                "times": [T, T + 10, T + 20, T + 30, T + 40, T + 50],
                "stacks": {
                    "flask": series(
                        {
                            "requests": 4,
                            "errors": 1,
                            "shed": 0,
                            "rps": 0.4,
                            "error_rate": 0.25,
                            # b2 holds 3 of 4: p50's rank 2 is 2/3 into (2.5, 5] ms; p99's
                            # rank 3.96 is 0.96 into b7, (100, 250] ms.
                            "p50_ms": 4.167,
                            "p99_ms": 244.0,
                        },
                        {
                            "requests": 2,
                            "errors": 2,
                            "shed": 2,
                            "rps": 0.2,
                            "error_rate": 1.0,
                            "p50_ms": None,  # shed requests have no latency
                            "p99_ms": None,
                        },
                        empty_point(),
                        empty_point(),
                        empty_point(),
                        empty_point(),
                    ),
                    "fastapi": series(
                        {
                            "requests": 1,
                            "errors": 0,
                            "shed": 0,
                            "rps": 0.1,
                            "error_rate": 0.0,
                            "p50_ms": 3.75,
                            "p99_ms": 4.975,
                        },
                        {
                            "requests": 2,
                            "errors": 1,
                            "shed": 0,
                            "rps": 0.2,
                            "error_rate": 0.5,
                            "p50_ms": 250.0,  # rank 1: the top of b7
                            "p99_ms": 30000.0,  # in +Inf: the last finite bound
                        },
                        empty_point(),
                        empty_point(),
                        empty_point(),
                        empty_point(),
                    ),
                },
                "shadow": {
                    "match": [3, 0, 0, 0, 0, 0],
                    "additive": [0, 0, 0, 0, 0, 0],
                    "breaking": [1, 0, 0, 0, 0, 0],
                    "error": [0, 0, 0, 0, 0, 0],
                    "dropped": [0, 2, 0, 0, 0, 0],
                },
                # One's mean of 3 and 5, plus two's 1; then 8 + 4; then two's alone.
                "wsgi": {
                    "busy": [5.0, 12.0, 2.0, None, None, None],
                    "threads": [12.0, 12.0, 4.0, None, None, None],
                },
                "totals": {
                    "flask": {
                        "requests": 6,
                        "errors": 3,
                        "shed": 2,
                        "rps": 0.1,
                        "error_rate": 0.5,
                        "p50_ms": 4.167,
                        "p99_ms": 244.0,
                    },
                    "fastapi": {
                        "requests": 3,
                        "errors": 1,
                        "shed": 0,
                        "rps": 0.05,
                        "error_rate": 0.333333,
                        "p50_ms": 175.0,  # rank 1.5: half-way into b7
                        "p99_ms": 30000.0,
                    },
                },
            }

    run(scenario())


def test_one_second_steps_and_the_default_step(rollout_table: str, open_client: OpenClient) -> None:
    async def scenario() -> None:
        async with open_client() as client:
            clock = Clock(T)
            one = Worker(client, rollout_table, clock, "w1", threads=2)
            for second, count in ((T + 57, 1), (T + 58, 3), (T + 59, 2), (T + 60, 5)):
                for _ in range(count):
                    one.metrics.observe("fastapi", CHAT, "GET", 200, FAST)
                await one.flush_at(second + 0.5, busy=count % 2)

            clock.now = T + 63.0  # exactly: T + 59 is the last final second, T + 60 is not
            async with serve(one.fleet) as http:
                body = (await http.get("/stats?minutes=1")).json()
            assert body["step_seconds"] == 1
            assert body["times"] == list(range(T, T + 60))
            fastapi = body["stacks"]["fastapi"]
            assert fastapi["requests"][-4:] == [0, 1, 3, 2]
            assert fastapi["rps"][-4:] == [0.0, 1.0, 3.0, 2.0]
            assert body["wsgi"]["busy"][-4:] == [None, 1.0, 1.0, 0.0]
            assert body["totals"]["fastapi"]["requests"] == 6

    run(scenario())


# --- errors ---------------------------------------------------------------------------------


class Unread:
    """A client that must not be called."""

    def __getattr__(self, operation: str) -> Any:
        raise AssertionError(f"{operation} called")


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("minutes=0", "minutes must be an integer from 1 to 60"),
        ("minutes=61", "minutes must be an integer from 1 to 60"),
        ("minutes=-1", "minutes must be an integer from 1 to 60"),
        ("minutes=1.5", "minutes must be an integer from 1 to 60"),
        ("minutes=", "minutes must be an integer from 1 to 60"),
        ("minutes=%D9%A3", "minutes must be an integer from 1 to 60"),  # an Arabic-Indic 3
        ("minutes=" + "9" * 5000, "minutes must be an integer from 1 to 60"),
        ("step=0", "step must be an integer from 1 to 600"),
        ("step=601", "step must be an integer from 1 to 600"),
        ("minutes=5&step=x", "step must be an integer from 1 to 600"),
    ],
)
def test_bad_values_are_refused(query: str, error: str) -> None:
    async def scenario() -> None:
        fleet = FleetCounters(Unread(), "unused", GatewayMetrics(), clock=Clock(T))
        async with serve(fleet) as http:
            response = await http.get(f"/stats?{query}")
        assert (response.status_code, response.json()) == (400, {"error": error})

    run(scenario())


def test_a_store_that_is_down_answers_503_and_is_not_cached(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with open_client() as client:
            clock = Clock(T + 100)
            fleet = FleetCounters(client, rollout_table, GatewayMetrics(), clock=clock)
            async with serve(fleet) as http:
                client.broken = True
                down = await http.get("/stats")
                client.broken = False
                back = await http.get("/stats")  # at the same instant: nothing was cached
            assert (down.status_code, down.json()) == (503, {"error": "Fleet counters unavailable"})
            assert down.headers["retry-after"] == "5"
            assert back.status_code == 200
            assert back.json()["totals"]["flask"]["requests"] == 0

    run(scenario())


# --- the caches -----------------------------------------------------------------------------


def test_final_seconds_are_read_once_and_recent_ones_again(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with open_client() as real:
            clock = Clock(T)
            writer = Worker(real, rollout_table, Clock(T), "w1", threads=4)

            async def traffic(now: float, requests: int) -> None:
                for _ in range(requests):
                    writer.metrics.observe("flask", CHAT, "GET", 200, FAST)
                await writer.flush_at(now, busy=0)

            await traffic(T + 90.5, 1)
            await traffic(T + 96.5, 2)
            await traffic(T + 97.5, 4)
            client = Counting(real)
            fleet = FleetCounters(client, rollout_table, GatewayMetrics(), clock=clock)

            clock.now = T + 100.999  # flush_seconds 1: T + 97 ends less than 3 s ago
            assert fleet.final_before() == T + 97
            clock.now = T + 100.0  # T + 96 ended 3 s ago, exactly
            assert fleet.final_before() == T + 97
            first = await fleet.seconds(T + 90, T + 100)
            assert client.reads == [list(range(T + 90, T + 100))]
            assert {s: c.requests for s, c in first.items() if c.items} == {
                T + 90: {"flask": 1},
                T + 96: {"flask": 2},
                T + 97: {"flask": 4},
            }

            # Counts that land later in a final second are not seen; in a recent one, they are.
            await traffic(T + 96.9, 8)
            await traffic(T + 97.9, 16)
            again = await fleet.seconds(T + 90, T + 100)
            assert client.reads[1:] == [[T + 97, T + 98, T + 99]]
            assert again[T + 96].requests == {"flask": 2}
            assert again[T + 97].requests == {"flask": 20}
            assert {s: again[s] for s in range(T + 90, T + 97)} == {
                s: first[s] for s in range(T + 90, T + 97)
            }

            clock.now = T + 101.0  # now T + 97 is final, read once more and kept
            await fleet.seconds(T + 90, T + 100)
            await fleet.seconds(T + 90, T + 100)
            assert client.reads[2:] == [[T + 97, T + 98, T + 99], [T + 98, T + 99]]

    run(scenario())


def test_final_seconds_are_kept_for_an_hour_and_ten_minutes(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with open_client() as real:
            client = Counting(real)
            clock = Clock(T + 100.0)  # final before T + 97
            fleet = FleetCounters(client, rollout_table, GatewayMetrics(), clock=clock)
            await fleet.seconds(T + 80, T + 90)
            await fleet.seconds(T + 80, T + 90)
            assert client.reads == [list(range(T + 80, T + 90))]
            # Now T + 85 is the oldest second kept: those before it are dropped, so read again,
            # and not kept, so read each time.
            clock.now = T + 100.0 + KEPT_SECONDS - 12
            assert fleet.final_before() - KEPT_SECONDS == T + 85
            await fleet.seconds(T + 80, T + 90)
            await fleet.seconds(T + 80, T + 90)
            assert client.reads[1:] == [list(range(T + 80, T + 85))] * 2

    run(scenario())


def test_the_answer_is_computed_once_a_second_for_every_viewer(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with open_client() as real:
            client = Counting(real)
            clock = Clock(T + 300.0)
            writer = Worker(real, rollout_table, Clock(T), "w1", threads=4)
            fleet = FleetCounters(client, rollout_table, GatewayMetrics(), clock=clock)
            async with serve(fleet) as http:
                answers = await asyncio.gather(*(http.get("/stats") for _ in range(5)))
                assert len(client.reads) == 3  # 300 final seconds, by 100, for all five
                assert len({a.json()["now"] for a in answers}) == 1

                # New counts in a final second (as only a late write could) show once the
                # answer is a second old, and no sooner.
                writer.metrics.observe("flask", CHAT, "GET", 200, FAST)
                await writer.flush_at(T + 150, busy=0)
                clock.now = T + 300.999
                cached = (await http.get("/stats")).json()
                assert cached["now"] == iso(T + 300.0)
                assert len(client.reads) == 3
                clock.now = T + 301.0
                fresh = (await http.get("/stats")).json()
                assert fresh["now"] == iso(T + 301.0)
                # Final seconds come from memory, so the late count is not there either.
                assert fresh["totals"]["flask"]["requests"] == 0
                assert fresh["times"] == cached["times"]
                assert len(client.reads) == 3

    run(scenario())


# --- pure: the query and the summary --------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, Query(5, 5)),
        ({"minutes": "1"}, Query(1, 1)),
        ({"minutes": "60"}, Query(60, 60)),
        ({"minutes": "07"}, Query(7, 7)),
        ({"step": "600"}, Query(5, 600)),
        ({"minutes": "2", "step": "1"}, Query(2, 1)),
        ({"minutes": "2", "other": "x"}, Query(2, 2)),
    ],
)
def test_query_values_and_defaults(params: dict[str, str], expected: Query) -> None:
    assert Query.parse(params) == expected


@pytest.mark.parametrize(
    ("query", "final_before", "expected"),
    [
        (Query(5, 5), T + 300, (T, 60)),  # on a step: ends there
        (Query(5, 5), T + 304, (T, 60)),  # between steps: the last whole one
        (Query(5, 5), T + 305, (T + 5, 60)),
        (Query(1, 7), 7003, (7000 - 8 * 7, 8)),  # 60 // 7 points, ending on a 7
        (Query(1, 600), T + 600, (T, 1)),  # a step longer than the minutes: one point
        (Query(60, 600), T + 3600, (T, 6)),
    ],
)
def test_points_end_on_a_step_before_the_final_second(
    query: Query, final_before: int, expected: tuple[int, int]
) -> None:
    assert query.points(final_before) == expected


def test_a_second_counts_in_the_point_it_starts() -> None:
    def second(at: int, requests: int, pool: dict[str, tuple[int, int]]) -> SecondCounts:
        buckets = tuple(requests if i == 0 else 0 for i in range(len(LATENCY_BUCKETS) + 1))
        return SecondCounts(
            at, 1, {"flask": requests}, {}, {}, {"flask": buckets}, {"error": requests}, pool
        )

    seconds = {
        T + 4: second(T + 4, 1, {"a": (1, 2)}),
        T + 5: second(T + 5, 10, {"a": (3, 2), "b": (0, 1)}),
        T + 9: second(T + 9, 100, {"a": (5, 2)}),
        T + 10: second(T + 10, 1000, {}),  # past the last point: not counted
    }
    body = summarize(seconds, T, 5, 2, T + 20)
    assert body["stacks"]["flask"]["requests"] == [1, 110]
    assert body["shadow"]["error"] == [1, 110]
    assert body["wsgi"] == {"busy": [1.0, 4.0], "threads": [2.0, 3.0]}
    assert body["totals"]["flask"]["requests"] == 111
    assert body["totals"]["flask"]["rps"] == 11.1
    assert body["totals"]["flask"]["p99_ms"] == 0.99  # all in b0, [0, 1] ms


# --- through the real gateway ---------------------------------------------------------------


def test_the_gateway_serves_its_traffic_as_the_fleet_s(start_gateway: StartGateway) -> None:
    with (
        start_gateway(
            fastapi_percent=50, fleet_flush_seconds=0.2, override_header="open", wsgi_threads=3
        ) as gw,
        gw.client() as client,
    ):
        for backend in ("flask", "flask", "flask", "fastapi", "fastapi"):
            assert client.get("/health", headers={BACKEND: backend}).status_code == 200
        deadline = time.monotonic() + 30
        while True:
            response = client.get("/_gateway/stats?minutes=1")
            assert response.status_code == 200, response.text
            body = response.json()
            served = {b: body["totals"][b]["requests"] for b in ("flask", "fastapi")}
            if served == {"flask": 3, "fastapi": 2} or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert served == {"flask": 3, "fastapi": 2}
        assert body["source"] == "fleet"
        assert sum(body["stacks"]["flask"]["requests"]) == 3
        assert {t for t in body["wsgi"]["threads"] if t is not None} == {3.0}
