"""The session store against the DynamoDB emulator, at the edges of expiry: the conditions
DynamoDB evaluates and the store's own checks must agree to the second. Then both stores
over fake clients: one deadline per operation."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError

from harness.local.emulators import LocalEmulators
from shared.aws import AsyncRetrier, Retrier, current_timeouts, store_policy
from shared.deadline import Timeouts
from shared.errors import StoreUnavailable
from shared.session import HistoryEntry, SessionRecord, to_item
from shared.settings import Settings
from shared.store import AsyncSessionStore, SessionStore

EXPIRES = 1_800_000_000
_sessions = itertools.count()


@pytest.fixture
def client(emulators: LocalEmulators) -> Iterator[Any]:
    dynamodb = emulators.dynamodb.client()
    yield dynamodb
    dynamodb.close()


@pytest.fixture
def store_at(
    client: Any, emulators: LocalEmulators, make_settings: Callable[..., Settings]
) -> Callable[[float], SessionStore]:
    settings = make_settings(dynamodb_table=emulators.table)
    return lambda now: SessionStore(client, settings, clock=lambda: now)


def _stored(client: Any, table: str, ttl: int) -> str:
    session_id = f"edge-{next(_sessions)}"
    record = SessionRecord(session_id, "u1", "a", "b", ttl, 3)
    client.put_item(TableName=table, Item=to_item(record))
    return session_id


@pytest.mark.parametrize(
    ("now", "expired"),
    [(EXPIRES - 1.0, False), (EXPIRES - 0.5, False), (float(EXPIRES), True), (EXPIRES + 0.5, True)],
)
def test_a_record_is_expired_from_its_ttl_second_on(
    client: Any,
    emulators: LocalEmulators,
    store_at: Callable[[float], SessionStore],
    now: float,
    expired: bool,
) -> None:
    session_id = _stored(client, emulators.table, EXPIRES)
    store = store_at(now)
    assert (store.get(session_id) is None) is expired
    # A turn at the same instant: a fresh session when expired, the fourth turn otherwise;
    # never the store and DynamoDB disagreeing (which loops until a RuntimeError, a 500).
    record = store.record_turn(session_id, "u1", "question", "answer")
    assert record.turns == (1 if expired else 4)
    assert [entry.text for entry in record.history][-2:] == ["question", "answer"]


# -- one deadline per operation, over fake clients ----------------------------------------------


class TimedDynamoDB:
    """A DynamoDB client whose every call takes `seconds` of fake time; it records the
    timeouts each call was given. Its first reply holds a history one entry too long, so
    a turn is an append and then a trim: two calls of one plan."""

    def __init__(self, seconds: float) -> None:
        self.now = 0.0
        self.seconds = seconds
        self.seen: list[Timeouts | None] = []

    def update_item(self, **kwargs: Any) -> dict[str, Any]:
        self.seen.append(current_timeouts())
        self.now += self.seconds
        entries = tuple(HistoryEntry("user", f"m{i}", "a") for i in range(21))
        return {"Attributes": to_item(SessionRecord("s1", None, "a", "b", EXPIRES, 11, entries))}


class AsyncTimedDynamoDB(TimedDynamoDB):
    async def update_item(self, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return super().update_item(**kwargs)


@pytest.mark.parametrize("twin", ["sync", "async"])
def test_a_plans_calls_share_one_deadline(
    twin: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(store_timeout_seconds=2.0, session_history_limit=20)
    policy = store_policy(settings)
    if twin == "sync":
        client = TimedDynamoDB(seconds=1.5)
        store = SessionStore(client, settings, retrier=Retrier(policy, clock=lambda: client.now))
        store.record_turn("s1", None, "question", "answer")
    else:
        client = AsyncTimedDynamoDB(seconds=1.5)
        twin_store = AsyncSessionStore(
            client, settings, retrier=AsyncRetrier(policy, clock=lambda: client.now)
        )
        asyncio.run(twin_store.record_turn("s1", None, "question", "answer"))
    # The trim gets what the append left of the 2 s, not 2 s of its own.
    assert client.seen == [Timeouts(connect=2.0, read=2.0), Timeouts(connect=0.5, read=0.5)]


class HungDynamoDB:
    async def get_item(self, **kwargs: Any) -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def test_an_async_store_call_in_flight_at_the_deadline_is_store_unavailable(
    make_settings: Callable[..., Settings],
) -> None:
    store = AsyncSessionStore(HungDynamoDB(), make_settings(store_timeout_seconds=0.05))
    with pytest.raises(StoreUnavailable) as raised:
        asyncio.run(store.get("s1"))
    assert raised.value.headers() == {"Retry-After": "5"}


# -- writes applied, then lost on the way back: the retry must not apply them twice ------------


class LostReplies:
    """A real DynamoDB client whose first `update_item` is applied and then times out, as
    a reply lost on the network is: the store's retrier sends the very call again."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.lost = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_item(self, **kwargs: Any) -> dict[str, Any]:
        reply: dict[str, Any] = self._client.update_item(**kwargs)
        if not self.lost:
            self.lost += 1
            raise ReadTimeoutError(endpoint_url="http://dynamodb")
        return reply


def test_a_retried_rate_limit_hit_is_counted_once(
    client: Any, emulators: LocalEmulators, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(dynamodb_table=emulators.table, rate_limit_requests=2)
    lossy = LostReplies(client)
    # One instant for all three hits: on the wall clock they could straddle the window's end
    # and start a new count.
    now = time.time()
    store = SessionStore(lossy, settings, clock=lambda: now)
    address = f"retried-{next(_sessions)}"
    first = store.hit(address)
    assert lossy.lost == 1  # the first attempt was applied and its reply lost
    second = store.hit(address)
    # Counted once each: the client's two requests are both within its budget of two.
    assert [(d.allowed, d.count) for d in (first, second)] == [(True, 1), (True, 2)]
    assert [(d.allowed, d.count) for d in (store.hit(address),)] == [(False, 3)]
