"""The fleet's per-second counters, against the real moto DynamoDB through real aioboto3
clients; `Window`'s filters as pure tables.

pytest-asyncio is not installed: each test runs its scenario with `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from botocore.exceptions import ClientError
from structlog.testing import capture_logs

from harness.gateway.admission import Admission
from harness.gateway.fleet import MAX_TERMS, FleetCounters, FleetUnavailable, Window
from harness.gateway.gates import StackWindow
from harness.gateway.metrics import LATENCY_BUCKETS, GatewayMetrics
from harness.local.emulators import LocalEmulators

OpenClient = Callable[[], AbstractAsyncContextManager[Any]]

T = 1_800_000_000
"""The first second the tests flush in."""

CHAT = "/api/v1/chat"
SESSION = "/api/v1/chat/sessions/{session_id}"
CHATTY = "/api/v1/chatty"

# Latencies that are exact in binary, so sums compare exactly, and the bucket each falls in.
FAST, FAST_BUCKET = 0.00390625, 2  # (0.0025, 0.005]
MID, MID_BUCKET = 0.25, 7  # (0.1, 0.25]: a bound falls in its own bucket
SLOW, SLOW_BUCKET = 64.0, len(LATENCY_BUCKETS)  # +Inf


def run(scenario: Awaitable[None]) -> None:
    asyncio.run(scenario)  # type: ignore[arg-type]


def buckets(**counts: int) -> tuple[int, ...]:
    """Per-bucket counts, e.g. `buckets(b2=3, b14=1)`."""
    values = [0] * (len(LATENCY_BUCKETS) + 1)
    for name, count in counts.items():
        values[int(name[1:])] = count
    return tuple(values)


class Clock:
    def __init__(self, now: float = T + 0.75) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recording:
    """The real client, keeping every UpdateItem's and BatchGetItem's arguments."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.updates: list[dict[str, Any]] = []
        self.batches: list[dict[str, Any]] = []

    async def update_item(self, **kwargs: Any) -> Any:
        self.updates.append(kwargs)
        return await self.client.update_item(**kwargs)

    async def batch_get_item(self, **kwargs: Any) -> Any:
        self.batches.append(kwargs)
        return await self.client.batch_get_item(**kwargs)


class FailsOnce:
    """The real client, except that UpdateItem call number `failing` (from 1) is throttled
    without being made."""

    def __init__(self, client: Any, failing: int) -> None:
        self.client = client
        self.failing = failing
        self.calls = 0

    async def update_item(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == self.failing:
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}},
                "UpdateItem",
            )
        return await self.client.update_item(**kwargs)

    def __getattr__(self, operation: str) -> Any:
        return getattr(self.client, operation)


class HalfUnprocessed:
    """The real client, except that the first BatchGetItem reads only half its keys and
    hands the rest back as unprocessed, as DynamoDB does when throttled."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls = 0

    async def batch_get_item(self, RequestItems: dict[str, Any]) -> Any:
        self.calls += 1
        if self.calls > 1:
            return await self.client.batch_get_item(RequestItems=RequestItems)
        ((table, request),) = RequestItems.items()
        keys = request["Keys"]
        half = len(keys) // 2
        reply = await self.client.batch_get_item(
            RequestItems={table: {**request, "Keys": keys[:half]}}
        )
        reply["UnprocessedKeys"] = {table: {**request, "Keys": keys[half:]}}
        return reply


def counters(
    client: Any, table: str, metrics: GatewayMetrics, clock: Clock, **options: Any
) -> FleetCounters:
    return FleetCounters(client, table, metrics, clock=clock, **options)


def raw_item(emulators: LocalEmulators, table: str, second: int) -> dict[str, Any] | None:
    raw = emulators.dynamodb.client()
    try:
        reply = raw.get_item(TableName=table, Key={"session_id": {"S": f"gateway#fleet#{second}"}})
    finally:
        raw.close()
    item: dict[str, Any] | None = reply.get("Item")
    return item


def by_value(item: dict[str, Any]) -> dict[str, Any]:
    # Numbers by value: moto keeps an N as written, DynamoDB answers it in canonical form.
    return {k: float(v["N"]) if "N" in v else v for k, v in item.items()}


# --- writing and reading back ---------------------------------------------------------------


def test_two_workers_add_up_in_the_window(rollout_table: str, open_client: OpenClient) -> None:
    one, two = GatewayMetrics(), GatewayMetrics()
    one.observe("flask", CHAT, "POST", 200, FAST)
    one.observe("flask", CHAT, "POST", 201, FAST)
    one.observe("flask", CHAT, "POST", 502, MID)
    one.observe("fastapi", CHAT, "POST", 200, FAST)
    one.shed_routes[("flask", CHAT)] += 1
    one.shadowed[(CHAT, "match")] += 3
    one.shadowed[(CHAT, "breaking")] += 1
    two.observe("flask", SESSION, "GET", 404, FAST)
    two.observe("fastapi", CHAT, "POST", 500, SLOW)
    two.observe("fastapi", CHATTY, "GET", 200, MID)
    two.shed_routes[("flask", SESSION)] += 2
    two.shadowed[(SESSION, "additive")] += 2
    two.shadowed[(SESSION, "error")] += 5
    two.shadowed[(CHAT, "dropped")] += 7

    async def scenario() -> None:
        async with open_client() as client:
            clock = Clock()
            first = counters(client, rollout_table, one, clock)
            second = counters(client, rollout_table, two, clock)
            await first.flush()
            await second.flush()
            window = await first.window(T, T + 1)
            assert window.to_json() == {
                "start": T,
                "end": T + 1,
                "items": 1,
                "stacks": {
                    "fastapi": {
                        CHAT: {
                            "requests": 2,
                            "errors": 1,
                            "buckets": list(buckets(b2=1, b14=1)),
                            "seconds": FAST + SLOW,
                        },
                        CHATTY: {
                            "requests": 1,
                            "errors": 0,
                            "buckets": list(buckets(b7=1)),
                            "seconds": MID,
                        },
                    },
                    "flask": {
                        CHAT: {
                            "requests": 4,
                            "errors": 2,
                            "buckets": list(buckets(b2=2, b7=1)),
                            "seconds": 2 * FAST + MID,
                        },
                        SESSION: {
                            "requests": 3,
                            "errors": 2,
                            "buckets": list(buckets(b2=1)),
                            "seconds": FAST,
                        },
                    },
                },
                "shadow": {
                    CHAT: {"breaking": 1, "dropped": 7, "match": 3},
                    SESSION: {"additive": 2, "error": 5},
                },
            }
            # Errors are 5xx plus sheds; the chat prefix covers the session route, not chatty.
            assert window.stack("flask", CHAT) == StackWindow(7, 4, buckets(b2=3, b7=1))
            assert window.stack("fastapi", CHAT) == StackWindow(2, 1, buckets(b2=1, b14=1))
            assert window.stack("fastapi", None) == StackWindow(3, 1, buckets(b2=1, b7=1, b14=1))
            assert window.shadow(CHAT) == (1, 6)
            assert window.shadow(SESSION) == (0, 2)

    run(scenario())


def test_counts_land_in_the_second_they_were_flushed(
    rollout_table: str, open_client: OpenClient
) -> None:
    metrics = GatewayMetrics()

    async def scenario() -> None:
        async with open_client() as client:
            clock = Clock(T + 0.999)
            fleet = counters(client, rollout_table, metrics, clock)
            for second, count in ((T, 1), (T + 1, 2), (T + 2, 4)):
                for _ in range(count):
                    metrics.observe("fastapi", CHAT, "POST", 200, FAST)
                clock.now = second + 0.5
                await fleet.flush()

            async def requests(start: float, end: float) -> int:
                return (await fleet.window(start, end)).stack("fastapi", None).requests

            assert await requests(T, T + 3) == 7
            assert await requests(T, T + 2) == 3  # the end is excluded
            assert await requests(T + 1, T + 2) == 2
            assert await requests(T + 1.9, T + 2.9) == 2  # whole seconds: int() of each
            assert await requests(T - 10, T) == 0
            assert await fleet.window(T + 3, T + 60) == Window(start=T + 3, end=T + 60)

    run(scenario())


def test_the_item_layout_and_its_expiry(
    emulators: LocalEmulators, rollout_table: str, open_client: OpenClient
) -> None:
    metrics, other = GatewayMetrics(), GatewayMetrics()
    route = "/odd|route #{x} :v0 ,="  # any character, the separator included
    metrics.observe("flask", route, "GET", 503, MID)
    metrics.shed_routes[("fastapi", route)] += 1
    metrics.shadowed[(route, "match")] += 2
    other.observe("flask", route, "GET", 200, FAST)

    async def scenario() -> None:
        async with open_client() as client:
            await counters(client, rollout_table, metrics, Clock()).flush()
            # A later writer of the same second leaves the expiry the first one set.
            await counters(client, rollout_table, other, Clock(), ttl_seconds=10).flush()
            window = await FleetCounters(client, rollout_table, metrics).window(T, T + 1)
            assert window.stack("fastapi", "/") == StackWindow(1, 1, buckets())
            assert window.shadow(None) == (0, 2)

    run(scenario())
    item = raw_item(emulators, rollout_table, T)
    assert item is not None
    assert by_value(item) == {
        "session_id": {"S": f"gateway#fleet#{T}"},
        "ttl": T + 86400,
        f"n|flask|{route}": 2,
        f"e|flask|{route}": 1,
        f"b{FAST_BUCKET}|flask|{route}": 1,
        f"b{MID_BUCKET}|flask|{route}": 1,
        f"s|flask|{route}": MID + FAST,
        f"n|fastapi|{route}": 1,
        f"e|fastapi|{route}": 1,
        f"x|fastapi|{route}": 1,
        f"o|{route}|match": 2,
    }


def test_a_flush_writes_only_what_changed_and_leaves_the_metrics_alone(
    emulators: LocalEmulators, rollout_table: str, open_client: OpenClient
) -> None:
    metrics = GatewayMetrics()
    metrics.observe("flask", CHAT, "POST", 200, FAST)
    metrics.observe("fastapi", SESSION, "GET", 200, FAST)

    async def scenario() -> None:
        async with open_client() as real:
            client = Recording(real)
            clock = Clock()
            fleet = counters(client, rollout_table, metrics, clock)
            assert await fleet.flush() == 6
            before = raw_item(emulators, rollout_table, T)
            assert await fleet.flush() == 0
            assert len(client.updates) == 1
            assert raw_item(emulators, rollout_table, T) == before
            # Still Prometheus counters: not reset by the flush.
            assert dict(metrics.requests) == {
                ("flask", "POST", CHAT, "2xx"): 1,
                ("fastapi", "GET", SESSION, "2xx"): 1,
            }

            metrics.observe("fastapi", SESSION, "GET", 200, SLOW)
            clock.now = T + 1
            assert await fleet.flush() == 3
            written = client.updates[-1]["ExpressionAttributeNames"]
            assert sorted(written.values()) == [
                f"b{SLOW_BUCKET}|fastapi|{SESSION}",
                f"n|fastapi|{SESSION}",
                f"s|fastapi|{SESSION}",
                "ttl",
            ]
            assert (await fleet.window(T, T + 2)).stack("fastapi") == StackWindow(
                2, 0, buckets(b2=1, b14=1)
            )

    run(scenario())


def test_sheds_and_the_pool_readings_of_two_workers(
    emulators: LocalEmulators, rollout_table: str, open_client: OpenClient
) -> None:
    one, two = GatewayMetrics(), GatewayMetrics()
    one.admission, two.admission = Admission(8, 1.0), Admission(4, 1.0)
    one.shed_routes[("flask", CHAT)] += 2
    one.admission.busy = 8
    two.observe("flask", SESSION, "GET", 200, FAST)
    two.shed_routes[("flask", SESSION)] += 1

    async def scenario() -> None:
        async with open_client() as real:
            client = Recording(real)
            clock = Clock()
            first = counters(client, rollout_table, one, clock, worker="w1")
            second = counters(client, rollout_table, two, clock, worker="w2")
            assert await first.flush() == 3
            assert await second.flush() == 5  # n, e, x, b2 and s of one series
            # A pool with busy threads is read again though nothing was counted; an idle one
            # that counted nothing is not.
            clock.now = T + 1
            one.admission.busy = 5
            assert await first.flush() == 0
            assert await second.flush() == 0
            assert len(client.updates) == 3
            assert client.updates[-1]["UpdateExpression"] == (
                "SET #exp = if_not_exists(#exp, :exp), #g0 = :g0, #g1 = :g1"
            )
            one.admission.busy = 0
            assert await first.flush() == 0
            assert len(client.updates) == 3

            window = await first.window(T, T + 2)
            assert window.shed == {("flask", CHAT): 2, ("flask", SESSION): 1}
            assert window.sheds("flask") == 3
            assert window.sheds("flask", SESSION) == 1
            assert window.sheds("fastapi") == 0
            assert window.stack("flask") == StackWindow(4, 3, buckets(b2=1))
            assert window.pool == {T: {"w1": (8, 8), "w2": (0, 4)}, T + 1: {"w1": (5, 8)}}
            assert window.pool_use() == {T: (8, 12), T + 1: (5, 8)}

    run(scenario())
    item = raw_item(emulators, rollout_table, T + 1)
    assert item is not None
    assert by_value(item) == {
        "session_id": {"S": f"gateway#fleet#{T + 1}"},
        "ttl": T + 1 + 86400,
        "wb|w1": 5,
        "wt|w1": 8,
    }


def test_a_worker_is_named_by_its_process_and_a_random_suffix() -> None:
    metrics = GatewayMetrics()
    one, two = FleetCounters(None, "t", metrics), FleetCounters(None, "t", metrics)
    assert one.worker.startswith(f"{os.getpid()}-")
    assert two.worker.startswith(f"{os.getpid()}-")
    assert one.worker != two.worker
    assert "|" not in one.worker


def many(routes: int) -> GatewayMetrics:
    """One FastAPI request on each of `routes` routes: three counters each (n, b2, s)."""
    metrics = GatewayMetrics()
    for i in range(routes):
        metrics.observe("fastapi", f"/r/{i:03}", "GET", 200, FAST)
    return metrics


def test_many_routes_go_in_several_small_updates_and_all_land(
    rollout_table: str, open_client: OpenClient
) -> None:
    metrics = many(100)

    async def scenario() -> None:
        async with open_client() as real:
            client = Recording(real)
            fleet = counters(client, rollout_table, metrics, Clock())
            assert await fleet.flush() == 300
            window = await fleet.window(T, T + 1)

        adds = [len(u["ExpressionAttributeValues"]) - 1 for u in client.updates]
        assert adds == [39] * 7 + [27]  # whole series of 3, at most MAX_TERMS per update
        assert max(adds) <= MAX_TERMS
        assert window.requests == {("fastapi", f"/r/{i:03}"): 1 for i in range(100)}
        assert window.latency == {("fastapi", f"/r/{i:03}"): buckets(b2=1) for i in range(100)}

    run(scenario())


# --- a store that fails ---------------------------------------------------------------------


def test_counts_kept_while_the_store_is_down_land_once_after(
    rollout_table: str, open_client: OpenClient
) -> None:
    metrics = GatewayMetrics()
    metrics.observe("flask", CHAT, "POST", 500, FAST)

    async def scenario() -> None:
        async with open_client() as client:
            clock = Clock()
            fleet = counters(client, rollout_table, metrics, clock)
            client.broken = True
            with capture_logs() as logs:
                assert await fleet.flush() == 0
                metrics.observe("flask", CHAT, "POST", 200, MID)
                clock.now = T + 1
                assert await fleet.flush() == 0
            assert [(e["event"], e["log_level"], e["pending"]) for e in logs] == [
                ("fleet.flush_failed", "warning", 4),
                ("fleet.flush_failed", "warning", 5),
            ]
            with pytest.raises(FleetUnavailable):
                await fleet.window(T, T + 10)

            client.broken = False
            clock.now = T + 5
            with capture_logs() as logs:
                assert await fleet.flush() == 5
            assert [e["event"] for e in logs] == ["fleet.flush_recovered"]
            assert await fleet.flush() == 0
            window = await fleet.window(T, T + 10)
            assert window.items == 1  # all of it in the second it finally landed
            assert window.stack("flask") == StackWindow(2, 1, buckets(b2=1, b7=1))
            assert (await fleet.window(T, T + 5)).items == 0

    run(scenario())


def test_a_write_that_fails_midway_keeps_only_the_rest(
    rollout_table: str, open_client: OpenClient
) -> None:
    metrics = many(100)

    async def scenario() -> None:
        async with open_client() as real:
            client = FailsOnce(real, failing=2)
            clock = Clock()
            fleet = counters(client, rollout_table, metrics, clock)
            with capture_logs() as logs:
                assert await fleet.flush() == 39  # the first update, then a throttled one
            assert [(e["event"], e["pending"]) for e in logs] == [("fleet.flush_failed", 261)]
            first = await fleet.window(T, T + 1)
            assert first.requests == {("fastapi", f"/r/{i:03}"): 1 for i in range(13)}

            clock.now = T + 1
            assert await fleet.flush() == 261
            assert await fleet.flush() == 0
            both = await fleet.window(T, T + 2)
            assert both.requests == {("fastapi", f"/r/{i:03}"): 1 for i in range(100)}
            assert both.stack("fastapi") == StackWindow(100, 0, buckets(b2=100))

    run(scenario())


# --- the background task --------------------------------------------------------------------


def test_the_task_flushes_and_stop_flushes_the_rest(
    rollout_table: str, open_client: OpenClient
) -> None:
    metrics = GatewayMetrics()

    async def requests(fleet: FleetCounters) -> int:
        return (await fleet.window(T, T + 1)).stack("flask").requests

    async def scenario() -> None:
        async with open_client() as client:
            fleet = counters(client, rollout_table, metrics, Clock(), flush_seconds=0.01)
            fleet.start()
            metrics.observe("flask", CHAT, "POST", 200, FAST)
            started = time.monotonic()
            while await requests(fleet) != 1:
                assert time.monotonic() - started < 30, "never flushed"
                await asyncio.sleep(0.01)
            await fleet.stop()

            # A task that would not flush for an hour: stop() sends what it holds.
            slow = counters(client, rollout_table, metrics, Clock(), flush_seconds=3600)
            slow.start()
            await asyncio.sleep(0)  # the task is waiting
            await slow.stop()
            assert await requests(fleet) == 2  # the same request again, from its own memory
            await slow.stop()  # twice is fine, and writes nothing new
            assert await requests(fleet) == 2

    run(scenario())


def test_stop_never_raises_and_keeps_the_counts(
    rollout_table: str, open_client: OpenClient
) -> None:
    metrics = GatewayMetrics()
    metrics.observe("flask", CHAT, "POST", 200, FAST)

    async def scenario() -> None:
        async with open_client() as client:
            fleet = counters(client, rollout_table, metrics, Clock(), flush_seconds=3600)
            fleet.start()
            client.broken = True
            with capture_logs() as logs:
                await fleet.stop()
            assert [e["event"] for e in logs] == ["fleet.flush_failed"]
            client.broken = False
            assert await fleet.flush() == 3
            assert (await fleet.window(T, T + 1)).stack("flask").requests == 1

    run(scenario())


# --- reading a window -----------------------------------------------------------------------


def test_a_long_window_reads_in_batches_and_retries_unprocessed_keys(
    rollout_table: str, open_client: OpenClient
) -> None:
    metrics = GatewayMetrics()

    async def scenario() -> None:
        async with open_client() as real:
            clock = Clock()
            fleet = counters(real, rollout_table, metrics, clock)
            for second in (T, T + 99, T + 100, T + 249, T + 250):
                metrics.observe("flask", CHAT, "POST", 200, FAST)
                clock.now = second
                await fleet.flush()

            client = HalfUnprocessed(real)
            reader = FleetCounters(client, rollout_table, metrics)
            window = await reader.window(T, T + 250)
            assert client.calls == 4  # 100 + 100 + 50 keys, and the first's other half
            assert window.items == 4
            assert window.stack("flask") == StackWindow(4, 0, buckets(b2=4))
            inside = await reader.window(T + 1, T + 99)
            assert (inside.items, inside.stack("flask").requests) == (0, 0)

    run(scenario())


# --- Window: pure ---------------------------------------------------------------------------

ROUTES = {
    CHAT: 1,
    SESSION: 10,
    CHATTY: 100,
    "/api/v1/other": 1000,
    "unmatched": 10000,
}
PURE = Window(
    start=T,
    end=T + 60,
    requests={("fastapi", r): n for r, n in ROUTES.items()} | {("flask", CHAT): 7},
    errors={("fastapi", r): n // 10 for r, n in ROUTES.items()},
    latency={("fastapi", r): buckets(b0=n) for r, n in ROUTES.items()},
    shadowed={
        (CHAT, "match"): 1,
        (CHAT, "breaking"): 2,
        (SESSION, "additive"): 4,
        (SESSION, "error"): 8,
        (CHATTY, "breaking"): 16,
        (CHATTY, "dropped"): 32,
        ("unmatched", "match"): 64,
    },
)


@pytest.mark.parametrize(
    ("prefix", "requests"),
    [
        (None, 11111),
        ("/", 11111),
        (CHAT, 11),  # the template itself and the ones below it
        ("/api/v1/chat/sessions", 10),
        (SESSION, 10),
        (CHATTY, 100),
        ("/api/v1/chatt", 0),  # a segment boundary, not a string prefix
        ("/api/v1", 1111),
        ("/api", 1111),
        ("/ap", 0),
        ("/nowhere", 0),
    ],
)
def test_stack_sums_the_routes_under_a_prefix(prefix: str | None, requests: int) -> None:
    assert PURE.stack("fastapi", prefix) == StackWindow(
        requests, requests // 10, buckets(b0=requests)
    )


@pytest.mark.parametrize(
    ("backend", "prefix", "expected"),
    [
        ("flask", None, StackWindow(7, 0, buckets())),
        ("flask", SESSION, StackWindow(0, 0, buckets())),
        ("nobody", None, StackWindow(0, 0, buckets())),
    ],
)
def test_stack_is_per_backend(backend: str, prefix: str | None, expected: StackWindow) -> None:
    assert PURE.stack(backend, prefix) == expected


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (None, (18, 87)),
        ("/", (18, 87)),
        (CHAT, (2, 7)),  # errors and drops are not compared
        (SESSION, (0, 4)),
        (CHATTY, (16, 16)),
        ("/nowhere", (0, 0)),
    ],
)
def test_shadow_counts_breaking_among_compared(
    prefix: str | None, expected: tuple[int, int]
) -> None:
    assert PURE.shadow(prefix) == expected
