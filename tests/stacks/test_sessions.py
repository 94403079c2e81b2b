"""One session schema written by both stacks: conversations that switch stacks, concurrent
turns, expiry, and the FastAPI-only session endpoints."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager

import httpx
import pytest
from fastapi.testclient import TestClient

from fastapi_app import create_app as create_fastapi_app
from harness.local.emulators import LocalEmulators
from harness.local.emulators.replies import compose_reply
from shared import contract, session
from shared.agent import agent_session_id
from shared.session import HistoryEntry, SessionRecord
from shared.settings import Settings
from shared.store import AsyncSessionStore

from .conftest import STACKS, Stacks

CHAT = "/api/v1/chat"


def _sid(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


def _turn(
    stacks: Stacks, stack: str, session_id: str, message: str, **extra: str
) -> httpx.Response:
    with stacks.client(stack) as client:
        return client.post(CHAT, json={"message": message, "session_id": session_id, **extra})


def _record(stacks: Stacks, session_id: str, user_id: str | None = None) -> httpx.Response:
    headers = {"X-User-ID": user_id} if user_id else {}
    with stacks.client("fastapi") as client:
        return client.get(f"{CHAT}/sessions/{session_id}", headers=headers)


def test_conversation_continues_across_stacks(stacks: Stacks) -> None:
    sid = _sid("cross")
    plan = [("flask", "first"), ("fastapi", "second"), ("flask", "third"), ("fastapi", "fourth")]
    for turn, (stack, message) in enumerate(plan, start=1):
        response = _turn(stacks, stack, sid, message, user_id="alice")
        assert response.status_code == 200, response.text
        # The agent session is the same whichever stack calls it: the turn count goes on.
        assert response.json()["response"] == compose_reply(message, turn)
    record = _record(stacks, sid, "alice").json()
    assert record["turns"] == 4
    assert record["user_id"] == "alice"
    assert [(e["role"], e["text"]) for e in record["history"]] == [
        pair
        for _, message in plan
        for pair in (
            ("user", message),
            ("agent", compose_reply(message, plan_index(plan, message))),
        )
    ]
    assert record["created_at"] <= record["updated_at"]
    assert record["ttl"] > time.time() + 23 * 3600


def plan_index(plan: list[tuple[str, str]], message: str) -> int:
    return [m for _, m in plan].index(message) + 1


def test_concurrent_turns_on_both_stacks_are_all_kept(
    start_stacks: Callable[..., AbstractContextManager[Stacks]],
    make_settings: Callable[..., Settings],
) -> None:
    sid = _sid("concurrent")
    messages = [f"message {i}" for i in range(50)]
    with start_stacks(make_settings(session_history_limit=100)) as stacks:

        def send(i: int) -> int:
            return _turn(stacks, STACKS[i % 2], sid, messages[i]).status_code

        with ThreadPoolExecutor(max_workers=50) as pool:
            statuses = list(pool.map(send, range(50)))
        record = _record(stacks, sid).json()
    assert statuses == [200] * 50
    assert record["turns"] == 50
    users = [e["text"] for e in record["history"] if e["role"] == "user"]
    assert sorted(users) == sorted(messages)  # every turn's entry, none lost
    # Each exchange stays together: the agent entry right after its user entry.
    for user, agent in zip(record["history"][::2], record["history"][1::2], strict=True):
        assert (user["role"], agent["role"]) == ("user", "agent")
        assert agent["text"].startswith(compose_reply(user["text"], 1).split(" This is turn")[0])


def test_concurrent_turns_keep_the_newest_window(stacks: Stacks) -> None:
    sid = _sid("window")
    with ThreadPoolExecutor(max_workers=30) as pool:
        statuses = list(
            pool.map(lambda i: _turn(stacks, STACKS[i % 2], sid, f"m{i}").status_code, range(30))
        )
    record = _record(stacks, sid).json()
    assert statuses == [200] * 30
    assert record["turns"] == 30
    assert len(record["history"]) == 20
    roles = [e["role"] for e in record["history"]]
    assert roles == ["user", "agent"] * 10


def test_sequential_turns_keep_exactly_the_last_twenty_entries(stacks: Stacks) -> None:
    sid = _sid("trim")
    for i in range(13):
        assert _turn(stacks, STACKS[i % 2], sid, f"turn {i}").status_code == 200
    record = _record(stacks, sid).json()
    assert record["turns"] == 13
    assert [e["text"] for e in record["history"] if e["role"] == "user"] == [
        f"turn {i}" for i in range(3, 13)
    ]


def _store_expired(emulators: LocalEmulators, sid: str, user_id: str | None) -> None:
    past = time.time() - 3600
    record = SessionRecord(
        session_id=sid,
        user_id=user_id,
        created_at=session.iso(past - 86400),
        updated_at=session.iso(past - 60),
        ttl=int(past),
        turns=7,
        history=(
            HistoryEntry("user", "old question", "x"),
            HistoryEntry("agent", "old answer", "x"),
        ),
    )
    client = emulators.dynamodb.client()
    try:
        client.put_item(TableName=emulators.table, Item=session.to_item(record))
    finally:
        client.close()


def test_expired_session_is_absent_and_starts_afresh(
    stacks: Stacks, stack: str, emulators: LocalEmulators
) -> None:
    sid = _sid(f"expired-{stack}")
    _store_expired(emulators, sid, "bob")
    assert _record(stacks, sid, "bob").status_code == 404
    response = _turn(stacks, stack, sid, "new start", user_id="bob")
    assert response.status_code == 200
    record = _record(stacks, sid, "bob").json()
    assert record["turns"] == 1
    assert [e["text"] for e in record["history"]] == ["new start", response.json()["response"]]
    assert record["ttl"] > time.time()


def test_session_endpoints_respect_the_owner(stacks: Stacks) -> None:
    sid = _sid("owned")
    assert _turn(stacks, "flask", sid, "mine", user_id="carol").status_code == 200
    assert _record(stacks, sid, "carol").status_code == 200
    for other in ("dave", None):
        response = _record(stacks, sid, other)
        assert (response.status_code, response.json()["error"]) == (404, contract.SESSION_NOT_FOUND)
    with stacks.client("fastapi") as client:
        path = f"{CHAT}/sessions/{sid}"
        assert client.delete(path, headers={"X-User-ID": "dave"}).status_code == 404
        assert client.delete(path).status_code == 404
        deleted = client.delete(path, headers={"X-User-ID": "carol"})
        assert (deleted.status_code, deleted.json()) == (
            200,
            {"message": "Session deleted successfully"},
        )
        assert client.delete(path, headers={"X-User-ID": "carol"}).status_code == 404
    assert _record(stacks, sid, "carol").status_code == 404


def test_anonymous_session_and_bad_ids(stacks: Stacks) -> None:
    sid = _sid("anon")
    assert _turn(stacks, "fastapi", sid, "hello").status_code == 200
    assert _record(stacks, sid).status_code == 200
    assert _record(stacks, sid, "someone").status_code == 404
    assert _record(stacks, _sid("never")).status_code == 404
    with stacks.client("fastapi") as client:
        assert client.get(f"{CHAT}/sessions/bad%20id").status_code == 404
        assert client.get(f"{CHAT}/sessions/ratelimit%23x").status_code == 404


def _history(stacks: Stacks, session_id: str, user_id: str | None) -> list[str]:
    record = _record(stacks, session_id, user_id)
    assert record.status_code == 200, record.text
    return [entry["text"] for entry in record.json()["history"] if entry["role"] == "user"]


@pytest.mark.parametrize(("first", "then"), [("flask", "fastapi"), ("fastapi", "flask")])
def test_an_owned_session_takes_turns_only_from_its_owner(
    stacks: Stacks, first: str, then: str
) -> None:
    sid = _sid("owned-turns")
    assert _turn(stacks, first, sid, "alice 1", user_id="alice").status_code == 200
    for stack in STACKS:
        for intruder in ({"user_id": "mallory"}, {}):
            response = _turn(stacks, stack, sid, "mallory", **intruder)
            assert (response.status_code, response.json()["error"]) == (
                404,
                contract.SESSION_NOT_FOUND,
            ), (stack, intruder)
    assert _history(stacks, sid, "alice") == ["alice 1"]  # nothing written
    second = _turn(stacks, then, sid, "alice 2", user_id="alice")
    # The refused turns never reached the agent: Alice's agent session is on its turn 2.
    assert second.json()["response"] == compose_reply("alice 2", 2)
    assert _history(stacks, sid, "alice") == ["alice 1", "alice 2"]


@pytest.mark.parametrize(("first", "then"), [("flask", "fastapi"), ("fastapi", "flask")])
def test_an_anonymous_session_stays_anonymous(stacks: Stacks, first: str, then: str) -> None:
    sid = _sid("anon-turns")
    assert _turn(stacks, first, sid, "creator 1").status_code == 200
    # A turn naming a user continues it but does not claim it: the creator is not locked out.
    assert _turn(stacks, then, sid, "bob", user_id="bob").status_code == 200
    third = _turn(stacks, first, sid, "creator 2")
    assert third.json()["response"] == compose_reply("creator 2", 3)
    record = _record(stacks, sid).json()
    assert (record["user_id"], record["turns"]) == (None, 3)
    assert _record(stacks, sid, "bob").status_code == 404


def test_no_client_session_id_shares_another_sessions_agent_memory(stacks: Stacks) -> None:
    sid = _sid("memory")
    assert _turn(stacks, "flask", sid, "hello", user_id="alice").status_code == 200
    # Alice's agent session id, taken by another client as a session id of its own.
    taken = agent_session_id(sid, "alice")
    for stack in STACKS:
        reply = _turn(stacks, stack, taken, "hello", user_id="mallory")
        assert reply.status_code == 200, reply.text
    assert reply.json()["response"] == compose_reply("hello", 2)  # its own agent session
    assert _turn(stacks, "flask", sid, "again", user_id="alice").json()["response"] == (
        compose_reply("again", 2)
    )


def test_a_session_the_gateway_minted_is_not_read_before_its_first_turn(
    emulators: LocalEmulators, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in emulators.env().items():
        monkeypatch.setenv(name, value)
    reads: list[str] = []

    class CountingStore(AsyncSessionStore):
        async def get(self, session_id: str) -> SessionRecord | None:
            reads.append(session_id)
            return await super().get(session_id)

    sid = _sid("minted")
    minted = {contract.MINTED_KEY_HEADER: sid}
    with TestClient(create_fastapi_app(settings, store=CountingStore)) as client:
        first = client.post(CHAT, json={"message": "hi", "session_id": sid}, headers=minted)
        second = client.post(CHAT, json={"message": "again", "session_id": sid})
    assert (first.status_code, second.json()["response"]) == (200, compose_reply("again", 2))
    assert reads == [sid]  # the second turn's: the first was known to be new


def test_a_minted_key_hint_cannot_take_a_session(stacks: Stacks) -> None:
    sid = _sid("hinted")
    assert _turn(stacks, "flask", sid, "alice 1", user_id="alice").status_code == 200
    for stack in STACKS:
        with stacks.client(stack) as client:
            forged = client.post(
                CHAT,
                json={"message": "mallory", "session_id": sid, "user_id": "mallory"},
                headers={contract.MINTED_KEY_HEADER: sid},
            )
        assert (forged.status_code, forged.json()["error"]) == (404, contract.SESSION_NOT_FOUND)
    assert _history(stacks, sid, "alice") == ["alice 1"]
