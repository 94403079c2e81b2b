"""The routing salt: secret per deployment, generated once and kept in the state table (unless
`GATEWAY_SALT` is set), kept as it was by a deployment that already routes, the same for
gateways starting at once. Against the real moto DynamoDB through real aioboto3 clients."""

from __future__ import annotations

import asyncio
import itertools
import string
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
from structlog.testing import capture_logs

from harness.gateway.policy import LEGACY_SALT, Rollout, bucket
from harness.gateway.rollout import SALT_KEY, RolloutState, RolloutStore, Salt
from harness.local.emulators import LocalEmulators

from .conftest import StartGateway

OpenClient = Callable[[], AbstractAsyncContextManager[Any]]

INITIAL = Rollout(fastapi_percent=50)
CHAT = "/api/v1/chat"


def run(scenario: Awaitable[None]) -> None:
    asyncio.run(scenario)  # type: ignore[arg-type]


def store(client: Any, table: str, salt: str | None = None) -> RolloutStore:
    return RolloutStore(client, table, initial=INITIAL, salt=salt)


async def stored_salt(client: Any, table: str) -> dict[str, Any] | None:
    reply = await client.get_item(
        TableName=table, Key={"session_id": {"S": SALT_KEY}}, ConsistentRead=True
    )
    item: dict[str, Any] | None = reply.get("Item")
    return item


class BeforeWrite:
    """The real client, running `first()` once before its first transaction: what another
    gateway does between this one's reads and its write."""

    def __init__(self, client: Any, first: Callable[[], Awaitable[object]]) -> None:
        self.client = client
        self._first: Callable[[], Awaitable[object]] | None = first

    def __getattr__(self, operation: str) -> Any:
        return getattr(self.client, operation)

    async def transact_write_items(self, **kwargs: Any) -> Any:
        first, self._first = self._first, None
        if first is not None:
            await first()
        return await self.client.transact_write_items(**kwargs)


def test_a_new_deployment_generates_a_secret_salt_and_keeps_it(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with open_client() as client:
            first = await store(client, rollout_table).load_salt()
            item = await stored_salt(client, rollout_table)
            again = await store(client, rollout_table).load_salt()  # a restart, another replica
        assert first.origin == "generated"
        assert len(first.value) == 43  # 32 random bytes, URL-safe base64
        assert set(first.value) <= set(string.ascii_letters + string.digits + "-_")
        assert item is not None and item["salt"] == {"S": first.value}
        assert item["origin"] == {"S": "generated"}
        assert again == first
        assert first.value not in repr(first)

    run(scenario())


def test_gateway_salt_is_used_as_given_and_nothing_is_stored(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with open_client() as client:
            salt = await store(client, rollout_table, salt="from-the-setting").load_salt()
            assert salt == Salt("from-the-setting", "setting")
            assert await stored_salt(client, rollout_table) is None

    run(scenario())


def test_a_deployment_that_already_routes_keeps_the_legacy_salt(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with open_client() as client:
            await store(client, rollout_table).load()  # an earlier version's rollout, no salt
            salt = await store(client, rollout_table).load_salt()
            item = await stored_salt(client, rollout_table)
            again = await store(client, rollout_table).load_salt()
        assert salt == Salt(LEGACY_SALT, "legacy")
        assert item is not None and (item["salt"], item["origin"]) == (
            {"S": LEGACY_SALT},
            {"S": "legacy"},
        )
        assert again == salt

    run(scenario())


def test_gateways_starting_at_once_end_with_the_same_salt(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        both_read = asyncio.Barrier(2)  # each has found no salt before either writes
        async with open_client() as one, open_client() as other:
            salts = await asyncio.gather(
                store(BeforeWrite(one, both_read.wait), rollout_table).load_salt(),
                store(BeforeWrite(other, both_read.wait), rollout_table).load_salt(),
            )
            item = await stored_salt(one, rollout_table)
        assert salts[0] == salts[1]
        assert salts[0].origin == "generated"
        assert item is not None and item["salt"] == {"S": salts[0].value}

    run(scenario())


def test_a_rollout_created_meanwhile_keeps_the_legacy_salt(
    rollout_table: str, open_client: OpenClient
) -> None:
    # An earlier version's gateway creates the rollout after this one found none: it routes
    # by the legacy salt from then on, so this one must too.
    async def scenario() -> None:
        async with open_client() as client:

            async def old_gateway_starts() -> None:
                await store(client, rollout_table).load()

            racing = BeforeWrite(client, old_gateway_starts)
            salt = await store(racing, rollout_table).load_salt()
        assert salt == Salt(LEGACY_SALT, "legacy")

    run(scenario())


def test_the_state_stores_the_salt_before_the_rollout(
    rollout_table: str, open_client: OpenClient
) -> None:
    # Rollout first, and a second gateway could find a rollout without a salt: legacy.
    async def scenario() -> None:
        async with open_client() as client:
            state = RolloutState(store(client, rollout_table), interval=60)
            with capture_logs() as logs:
                await state.start()
            await state.stop()
            later = RolloutState(store(client, rollout_table), interval=60)
            await later.start()
            await later.stop()
        assert state.salt != LEGACY_SALT
        assert later.salt == state.salt
        assert state.health()["salt_origin"] == "generated"
        assert logs == []  # nothing to say, and never the salt

    run(scenario())


def test_the_legacy_salt_is_warned_about_without_being_shown(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with open_client() as client:
            await store(client, rollout_table).load()
            state = RolloutState(store(client, rollout_table), interval=60)
            with capture_logs() as logs:
                await state.start()
            await state.stop()
        assert state.salt == LEGACY_SALT
        assert state.health()["salt_origin"] == "legacy"
        assert [(e["event"], e["log_level"]) for e in logs] == [("rollout.legacy_salt", "warning")]
        assert all(LEGACY_SALT not in str(value) for value in logs[0].values())

    run(scenario())


# --- served gateways ------------------------------------------------------------------------

_tables = itertools.count(1)


def test_gateways_of_one_deployment_route_by_its_secret_salt(
    start_gateway: StartGateway, emulators: LocalEmulators
) -> None:
    table = f"gw_salt_{next(_tables)}"
    emulators.dynamodb.create_table(table)
    with (
        start_gateway(fastapi_percent=50, state_table=table) as one,
        start_gateway(fastapi_percent=50, state_table=table) as other,
    ):
        salt = one.app.state.salt
        assert other.app.state.salt == salt != LEGACY_SALT
        # Session ids the public salt would send elsewhere: each goes where the secret one says.
        ids = [f"salted-{n}" for n in range(200)]
        moved = [
            sid for sid in ids if (bucket(salt, sid) < 5000) != (bucket(LEGACY_SALT, sid) < 5000)
        ][:6]
        served = []
        for gw in (one, other):
            with gw.client() as client:
                for sid in moved:
                    answer = client.post(CHAT, json={"message": "hi", "session_id": sid})
                    served.append(answer.headers["x-dualstack-backend"])
        health = httpx.get(f"{one.url}/_gateway/health").json()
        metrics = httpx.get(f"{one.url}/_gateway/metrics").text
    expected = ["fastapi" if bucket(salt, sid) < 5000 else "flask" for sid in moved]
    assert len(moved) == 6
    assert served == expected * 2
    assert health["salt_origin"] == "generated"
    assert salt not in str(health) and salt not in metrics


def test_a_gateway_with_gateway_salt_routes_by_it(
    start_gateway: StartGateway, emulators: LocalEmulators
) -> None:
    with start_gateway(fastapi_percent=50, salt="deployment-salt") as gw:
        assert gw.app.state.salt == "deployment-salt"
        health = httpx.get(f"{gw.url}/_gateway/health").json()
    assert health["salt_origin"] == "setting"
