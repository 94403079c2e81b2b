"""The rollout store and state, against the real moto DynamoDB through real aioboto3 clients.

pytest-asyncio is not installed: each test runs its scenario with `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from structlog.testing import capture_logs

from harness.gateway import rollout as rollout_module
from harness.gateway.policy import Rollout
from harness.gateway.rollout import (
    ROLLOUT_KEY,
    Change,
    RolloutState,
    RolloutStore,
    RolloutUnavailable,
)
from harness.gateway.settings import GatewaySettings
from harness.local.emulators import LocalEmulators
from shared.session import iso

OpenClient = Callable[[], AbstractAsyncContextManager[Any]]

NOW = 1_800_000_000.25
AT = iso(NOW)  # "2027-01-15T08:00:00.250Z"
INITIAL = Rollout(fastapi_percent=10)
REFRESH: float = GatewaySettings.model_fields["refresh_seconds"].default  # 1 s


def run(scenario: Awaitable[None]) -> None:
    asyncio.run(scenario)  # type: ignore[arg-type]


def store(client: Any, table: str, initial: Rollout = INITIAL) -> RolloutStore:
    return RolloutStore(client, table, initial=initial, clock=lambda: NOW)


async def wait_for(condition: Callable[[], bool], within: float = 30.0) -> float:
    """Seconds until `condition()` holds, checked on this loop between its other tasks;
    fails the test after `within` seconds (generous: it only runs out when the test fails)."""
    start = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - start
        assert elapsed < within, f"not within {within} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


class Counting:
    """The real client, counting the calls begun through it (`calls`) and the reads of the
    rollout item (`polls`: a poll is one `get_item` of it, and one of the plan when the
    version it read is new)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls = 0
        self.polls = 0

    def __getattr__(self, operation: str) -> Any:
        self.calls += 1
        call = getattr(self.client, operation)
        if operation != "get_item":
            return call

        async def get_item(**kwargs: Any) -> Any:
            if kwargs["Key"]["session_id"]["S"] == ROLLOUT_KEY:
                self.polls += 1
            return await call(**kwargs)

        return get_item


class Unreachable:
    """A DynamoDB client whose endpoint is down: every call fails to connect."""

    def __getattr__(self, operation: str) -> Callable[..., Awaitable[Any]]:
        async def call(**kwargs: Any) -> Any:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

        return call


class LostReply:
    """The first transaction lands but its reply is lost, and botocore's retry of it then
    fails its condition: what a timeout after a successful write looks like."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.lost = 0

    async def transact_write_items(self, **kwargs: Any) -> Any:
        await self.client.transact_write_items(**kwargs)
        if self.lost:
            return {}
        self.lost += 1
        raise ClientError(
            {
                "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
                "CancellationReasons": [{"Code": "ConditionalCheckFailed"}, {"Code": "None"}],
            },
            "TransactWriteItems",
        )

    def __getattr__(self, operation: str) -> Any:
        return getattr(self.client, operation)


# --- the store ------------------------------------------------------------------------------


def test_first_load_creates_the_item_from_initial(
    emulators: LocalEmulators, rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with open_client() as client:
            assert await store(client, rollout_table).load() == INITIAL
            # Once created, the stored rollout wins over another worker's initial one.
            assert await store(client, rollout_table, Rollout(90)).load() == INITIAL

    run(scenario())
    raw = emulators.dynamodb.client()
    try:
        item = raw.get_item(TableName=rollout_table, Key={"session_id": {"S": "gateway#rollout"}})
    finally:
        raw.close()
    # Numbers by value: moto keeps an N as written ("10.0"), DynamoDB (and dynalite)
    # answers it in canonical form ("10").
    numbers = {k: float(v["N"]) for k, v in item["Item"].items() if "N" in v}
    others = {k: v for k, v in item["Item"].items() if "N" not in v}
    assert numbers == {"fastapi_percent": 10.0, "version": 0.0, "shadow_percent": 0.0}
    assert others == {
        "session_id": {"S": "gateway#rollout"},
        "routes": {"M": {}},
        "updated_at": {"S": AT},
    }


def test_racing_first_loads_all_get_the_one_created(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with open_client() as client:
            initials = [Rollout(float(p)) for p in range(0, 100, 10)]
            loaded = await asyncio.gather(
                *(store(client, rollout_table, r).load() for r in initials)
            )
            assert len(set(loaded)) == 1
            assert loaded[0] in initials
            assert await store(client, rollout_table).load() == loaded[0]

    run(scenario())


def test_update_persists_bumps_the_version_and_returns_the_change(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with open_client() as client:
            first = await store(client, rollout_table).update(
                fastapi_percent=60, routes={"/api/v1/chat": 25}, actor="alice"
            )
            assert first == Change(
                at=AT,
                actor="alice",
                old=INITIAL,
                new=Rollout(fastapi_percent=60, routes={"/api/v1/chat": 25}, version=1),
            )
            # Only routes: the default percentage is kept; another store reads it back.
            second = await store(client, rollout_table).update(routes={"/health": 0}, actor="bob")
            expected = Rollout(60, {"/api/v1/chat": 25, "/health": 0}, version=2)
            assert second.old == first.new
            assert second.new == expected
            assert await store(client, rollout_table, Rollout(0)).load() == expected

    run(scenario())


def test_none_removes_a_route_override(rollout_table: str, open_client: OpenClient) -> None:
    async def scenario() -> None:
        async with open_client() as client:
            rollouts = store(client, rollout_table)
            await rollouts.update(routes={"/a": 5, "/b": 50}, actor="t")
            change = await rollouts.update(routes={"/a": None, "/never-set": None}, actor="t")
            assert change.new == Rollout(10, {"/b": 50}, version=2)
            assert (await rollouts.load()).percent_for("/a/x") == 10

    run(scenario())


def test_history_is_newest_first_with_old_new_and_actor(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with open_client() as client:
            rollouts = store(client, rollout_table)
            assert await rollouts.history() == []
            changes = [
                await rollouts.update(fastapi_percent=20, actor="a"),
                await rollouts.update(routes={"/x": 70}, actor="b"),
                await rollouts.update(fastapi_percent=40, routes={"/x": None}, actor="c"),
            ]
            assert await rollouts.history() == changes[::-1]
            assert await rollouts.history(limit=2) == changes[:0:-1]
            assert await rollouts.history(limit=0) == []
            assert [c.to_json() for c in await rollouts.history(limit=1)] == [
                {
                    "at": AT,
                    "actor": "c",
                    "old": {
                        "fastapi_percent": 20.0,
                        "routes": {"/x": 70.0},
                        "version": 2,
                        "shadow_percent": 0.0,
                    },
                    "new": {
                        "fastapi_percent": 40.0,
                        "routes": {},
                        "version": 3,
                        "shadow_percent": 0.0,
                    },
                }
            ]

    run(scenario())


def test_history_keeps_only_the_newest_changes(
    monkeypatch: pytest.MonkeyPatch,
    emulators: LocalEmulators,
    rollout_table: str,
    open_client: OpenClient,
) -> None:
    monkeypatch.setattr(rollout_module, "HISTORY_LIMIT", 5)  # 200 in production

    async def scenario() -> None:
        async with open_client() as client:
            rollouts = store(client, rollout_table)
            for percent in range(8):
                await rollouts.update(fastapi_percent=percent, actor="t")
            history = await rollouts.history(limit=100)
            assert [c.new.fastapi_percent for c in history] == [7, 6, 5, 4, 3]

    run(scenario())
    raw = emulators.dynamodb.client()
    try:
        stored = raw.scan(TableName=rollout_table)["Items"]
    finally:
        raw.close()
    # The trimmed changes are deleted, not merely hidden: the rollout and five changes.
    assert sorted(i["session_id"]["S"] for i in stored) == [
        "gateway#rollout",
        *(f"gateway#rollout#change#{v}" for v in (4, 5, 6, 7, 8)),
    ]


def test_history_of_a_recreated_rollout_leaves_out_the_old_changes(
    emulators: LocalEmulators, rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with open_client() as client:
            for percent in (20, 30, 40):
                await store(client, rollout_table).update(fastapi_percent=percent, actor="old")
            # An operator deletes the rollout item; it comes back from an initial rollout
            # whose version overlaps the old changes, which are still in the table.
            await client.delete_item(
                TableName=rollout_table, Key={"session_id": {"S": "gateway#rollout"}}
            )
            recreated = store(client, rollout_table, Rollout(5, version=3))
            assert await recreated.load() == Rollout(5, version=3)
            assert await recreated.history() == []
            change = await recreated.update(fastapi_percent=6, actor="new")
            assert await recreated.history() == [change]

    run(scenario())


def test_concurrent_updates_from_two_stores_are_all_kept(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with open_client() as one, open_client() as two:
            stores = [store(one, rollout_table), store(two, rollout_table)]
            changes = await asyncio.gather(
                *(
                    stores[i % 2].update(routes={f"/r{i}": float(i)}, actor=f"admin-{i}")
                    for i in range(10)
                )
            )
            assert sorted(c.new.version for c in changes) == list(range(1, 11))
            assert all(c.old.version == c.new.version - 1 for c in changes)
            # No lost update: every writer's route is in the final rollout.
            final = await stores[0].load()
            assert final == Rollout(10, {f"/r{i}": float(i) for i in range(10)}, version=10)
            history = await stores[1].history()
            assert sorted(c.actor for c in history) == sorted(f"admin-{i}" for i in range(10))
            assert [c.new.version for c in history] == list(range(10, 0, -1))
            # Each recorded change continues the previous one exactly.
            assert all(older.new == newer.old for newer, older in itertools.pairwise(history))

    run(scenario())


def test_a_write_whose_reply_was_lost_is_applied_once(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with open_client() as client:
            rollouts = store(LostReply(client), rollout_table)
            change = await rollouts.update(fastapi_percent=33, actor="t")
            assert change.new == Rollout(33, version=1)
            assert await rollouts.history() == [change]

    run(scenario())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "Nothing to change: give fastapi_percent, shadow_percent and/or routes"),
        ({"routes": {}}, "Nothing to change: give fastapi_percent, shadow_percent and/or routes"),
        ({"fastapi_percent": 101}, "fastapi_percent: percent must be from 0 to 100, not 101"),
        (
            {"fastapi_percent": "60"},
            "fastapi_percent: percent must be a number from 0 to 100, not '60'",
        ),
        ({"routes": {"api": 5}}, "route prefix must start with '/', not 'api'"),
        ({"routes": {"/api/": 5}}, "route prefix must not end with '/', not '/api/'"),
        (
            {"routes": {"/api": True}},
            "routes['/api']: percent must be a number from 0 to 100, not True",
        ),
        ({"routes": {"/" + "a" * 256: 5}}, "route prefix must be at most 256 characters"),
        ({"routes": [("/a", 5)]}, "routes must map path prefixes to a percent or null"),
        (
            {"fastapi_percent": 50, "routes": {f"/r{i}": 1 for i in range(65)}},
            "At most 64 route overrides are allowed",
        ),
    ],
)
def test_invalid_updates_are_refused_and_nothing_is_written(
    arguments: dict[str, Any], message: str, rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with open_client() as client:
            rollouts = store(client, rollout_table)
            with pytest.raises(ValueError) as caught:
                await rollouts.update(actor="t", **arguments)
            assert str(caught.value) == message
            assert await rollouts.load() == INITIAL
            assert await rollouts.history() == []

    run(scenario())


def test_an_unreachable_store_raises_rollout_unavailable() -> None:
    async def scenario() -> None:
        rollouts = store(Unreachable(), "any")
        for call in (
            rollouts.load(),
            rollouts.update(fastapi_percent=5, actor="t"),
            rollouts.history(),
        ):
            with pytest.raises(RolloutUnavailable):
                await call
        state = RolloutState(rollouts)
        with pytest.raises(RolloutUnavailable):
            await state.start()
        with pytest.raises(RuntimeError, match="before start"):
            _ = state.current

    run(scenario())


def test_other_store_errors_are_not_disguised_as_unavailability() -> None:
    class Invalid:
        async def get_item(self, **kwargs: Any) -> Any:
            raise ClientError(
                {"Error": {"Code": "ValidationException", "Message": "bad key"}}, "GetItem"
            )

    async def scenario() -> None:
        with pytest.raises(ClientError, match="bad key"):
            await store(Invalid(), "any").load()

    run(scenario())


# --- the in-memory state --------------------------------------------------------------------


def test_two_states_converge_at_the_first_poll_after_a_change(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with open_client() as one, open_client() as two:
            # The gateway's default refresh interval, as it runs it.
            here = RolloutState(store(one, rollout_table), interval=REFRESH)
            reads = Counting(two)
            there = RolloutState(store(reads, rollout_table, Rollout(99)), interval=REFRESH)
            seen: list[Rollout] = []
            there.add_listener(seen.append)
            await here.start()
            await there.start()
            try:
                assert there.current == INITIAL  # the stored rollout, not its own initial
                change = await here.store.update(fastapi_percent=60, actor="t")
                await here.apply(change)
                assert here.current == change.new  # at once, where the change was made
                polls_before = reads.polls
                elapsed = await wait_for(lambda: there.current == change.new)
                # Converged by the first poll begun after the change (or one in flight).
                assert reads.polls - polls_before <= 1
                # Within one interval plus a read; the factor leaves room for a loaded
                # machine, yet a poll loop sleeping several intervals would exceed it.
                assert elapsed < 5 * REFRESH
                assert seen == [INITIAL, change.new]
            finally:
                await here.stop()
                await there.stop()

    run(scenario())


def test_a_failed_poll_keeps_the_last_rollout_and_polling_goes_on(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with open_client() as client, open_client() as admin:
            flaky = client  # open_client's clients can be broken on demand
            state = RolloutState(store(flaky, rollout_table), interval=0.05)
            await state.start()
            try:
                before = state.current
                with capture_logs() as logs:

                    def failed() -> int:
                        return sum(e["event"] == "rollout.poll_failed" for e in logs)

                    flaky.broken = True
                    # Once one poll has failed, every later one begins with the store down:
                    # none can read the change below.
                    await wait_for(lambda: failed() >= 1)
                    await store(admin, rollout_table).update(fastapi_percent=70, actor="t")
                    after_change = failed()
                    await wait_for(lambda: failed() >= after_change + 3)
                    assert state.current == before  # the store is down: nothing moves
                    flaky.broken = False
                    await wait_for(lambda: state.current.fastapi_percent == 70)
                failures = [e for e in logs if e["event"] == "rollout.poll_failed"]
                assert len(failures) >= 4
                assert {e["log_level"] for e in failures} == {"warning"}
                assert failures[0]["error"] == (
                    "RolloutUnavailable: rollout store unavailable: "
                    'Could not connect to the endpoint URL: "http://127.0.0.1:9"'
                )
                assert [e["event"] for e in logs if e["event"] == "rollout.poll_recovered"] == [
                    "rollout.poll_recovered"
                ]
            finally:
                await state.stop()

    run(scenario())


def test_apply_is_immediate_but_never_goes_back_a_version(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with open_client() as client:
            state = RolloutState(store(client, rollout_table), interval=60)
            seen: list[Rollout] = []
            state.add_listener(seen.append)
            await state.start()
            try:
                newer = Rollout(50, version=5)
                await state.apply(Change(AT, "t", INITIAL, newer))
                await state.apply(Change(AT, "t", INITIAL, Rollout(20, version=3)))
                await state.apply(Change(AT, "t", INITIAL, newer))  # same again: no event
                assert state.current == newer
                assert seen == [INITIAL, newer]
            finally:
                await state.stop()

    run(scenario())


def test_a_failing_listener_does_not_stop_the_others(
    rollout_table: str, open_client: OpenClient
) -> None:
    def broken(rollout: Rollout) -> None:
        raise RuntimeError("gauge exploded")

    async def scenario() -> None:
        async with open_client() as client:
            state = RolloutState(store(client, rollout_table), interval=60)
            seen: list[Rollout] = []
            state.add_listener(broken)
            state.add_listener(seen.append)
            with capture_logs() as logs:
                await state.start()
            await state.stop()
            assert seen == [INITIAL]
            assert [e["event"] for e in logs] == ["rollout.listener_failed"]

    run(scenario())


def test_stop_ends_polling_and_is_idempotent(rollout_table: str, open_client: OpenClient) -> None:
    async def scenario() -> None:
        async with open_client() as client:
            polled = Counting(client)
            state = RolloutState(store(polled, rollout_table), interval=0.02)
            await state.start()
            started = polled.calls
            await wait_for(lambda: polled.calls >= started + 3)  # it does poll
            await state.stop()
            after_stop = polled.calls
            # A witness polling at the same interval on the same loop: while it polls three
            # times, a state still polling would have polled too.
            watched = Counting(client)
            witness = RolloutState(store(watched, rollout_table), interval=0.02)
            await witness.start()
            witnessed = watched.calls
            try:
                await wait_for(lambda: watched.calls >= witnessed + 3)
            finally:
                await witness.stop()
            assert polled.calls == after_stop  # and no longer does
            await state.stop()
            with pytest.raises(ValueError, match="interval"):
                RolloutState(state.store, interval=0)

    run(scenario())
