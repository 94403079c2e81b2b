"""The session store against the DynamoDB emulator, at the edges of expiry: the conditions
DynamoDB evaluates and the store's own checks must agree to the second."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness.local.emulators import LocalEmulators
from shared.session import SessionRecord, to_item
from shared.settings import Settings
from shared.store import SessionStore

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
