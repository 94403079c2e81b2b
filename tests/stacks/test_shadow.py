"""Shadow turns in the stacks: the copy of a request the gateway sends to the stack that did
not serve it reads and writes the shadow table only, seeded from the primary's record as it
stood before the turn, in an agent session of its own, outside the rate limit.

The gateway marks a shadow request in-process (scope extension, WSGI environ key); these tests
reach the stacks over HTTP, so they run them with `TRUST_SHADOW_HEADER` and send the header, as
a gateway that runs elsewhere would.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest

from harness.local.emulators import LocalEmulators
from harness.local.emulators.replies import compose_reply
from shared import contract
from shared.settings import Settings

from .conftest import STACKS, Stacks

CHAT = "/api/v1/chat"
OTHER = {"flask": "fastapi", "fastapi": "flask"}


@pytest.fixture(scope="module")
def trusting(
    start_stacks: Callable[..., AbstractContextManager[Stacks]],
    make_settings: Callable[..., Settings],
) -> Iterator[Stacks]:
    with start_stacks(make_settings(trust_shadow_header=True)) as stacks:
        yield stacks


def _turn(
    stacks: Stacks, stack: str, rid: str, body: dict[str, str], *, shadow: bool = False
) -> httpx.Response:
    headers = {"X-Request-ID": rid}
    if shadow:
        headers[contract.SHADOW_HEADER] = rid
    with stacks.client(stack) as client:
        return client.post(CHAT, json=body, headers=headers)


def _item(emulators: LocalEmulators, table: str, sid: str) -> dict[str, Any] | None:
    client = emulators.dynamodb.client()
    try:
        found: dict[str, Any] | None = client.get_item(
            TableName=table, Key={"session_id": {"S": sid}}, ConsistentRead=True
        ).get("Item")
        return found
    finally:
        client.close()


def _texts(item: dict[str, Any] | None) -> list[str]:
    assert item is not None
    return [e["M"]["text"]["S"] for e in item["history"]["L"] if e["M"]["role"]["S"] == "user"]


def _rid() -> str:
    return uuid.uuid4().hex


@pytest.mark.parametrize("primary", STACKS)
def test_a_shadowed_conversation_leaves_the_primary_table_as_it_was(
    trusting: Stacks, emulators: LocalEmulators, settings: Settings, primary: str
) -> None:
    sid = f"shadowed-{uuid.uuid4().hex[:12]}"
    for n, message in enumerate(["first", "second"], start=1):
        body = {"message": message, "session_id": sid, "user_id": "alice"}
        rid = _rid()
        served = _turn(trusting, primary, rid, body)
        shadowed = _turn(trusting, OTHER[primary], rid, body, shadow=True)
        assert served.status_code == shadowed.status_code == 200, shadowed.text
        # The same answer: the shadow's agent session is its own, at the same turn.
        assert served.json()["response"] == shadowed.json()["response"]
        assert shadowed.json()["response"] == compose_reply(message, n)
    primary_item = _item(emulators, settings.dynamodb_table, sid)
    shadow_item = _item(emulators, settings.shadow_table, sid)
    assert _texts(primary_item) == _texts(shadow_item) == ["first", "second"]
    assert primary_item is not None and shadow_item is not None
    assert primary_item["turns"] == shadow_item["turns"] == {"N": "2"}
    assert shadow_item["user_id"] == {"S": "alice"}


def test_a_conversation_begun_before_shadowing_is_shadowed_from_where_it_stands(
    trusting: Stacks, emulators: LocalEmulators, settings: Settings
) -> None:
    sid = f"late-{uuid.uuid4().hex[:12]}"
    for message in ("one", "two"):  # shadowing off
        assert _turn(trusting, "flask", _rid(), {"message": message, "session_id": sid}).is_success
    body = {"message": "three", "session_id": sid}
    rid = _rid()
    served = _turn(trusting, "flask", rid, body)
    shadowed = _turn(trusting, "fastapi", rid, body, shadow=True)
    # Seeded from the primary's record without its own third turn, and the agent given that
    # history: the shadow answers turn three as the primary did.
    assert served.json()["response"] == shadowed.json()["response"] == compose_reply("three", 3)
    assert _texts(_item(emulators, settings.shadow_table, sid)) == ["one", "two", "three"]
    assert _texts(_item(emulators, settings.dynamodb_table, sid)) == ["one", "two", "three"]


def test_a_shadow_turn_on_another_users_session_is_refused_alike(
    trusting: Stacks, emulators: LocalEmulators, settings: Settings
) -> None:
    sid = f"owned-{uuid.uuid4().hex[:12]}"
    assert _turn(
        trusting, "fastapi", _rid(), {"message": "mine", "session_id": sid, "user_id": "alice"}
    ).is_success
    body = {"message": "mallory", "session_id": sid, "user_id": "mallory"}
    rid = _rid()
    served = _turn(trusting, "fastapi", rid, body)
    shadowed = _turn(trusting, "flask", rid, body, shadow=True)
    assert served.status_code == shadowed.status_code == 404
    assert _texts(_item(emulators, settings.shadow_table, sid)) == ["mine"]


def test_shadow_turns_do_not_count_against_the_rate_limit(
    emulators: LocalEmulators,
    start_stacks: Callable[..., AbstractContextManager[Stacks]],
    make_settings: Callable[..., Settings],
) -> None:
    # Tables of this test's own, so the budget (per client address) is this test's alone;
    # a window longer than any run, so no edge falls inside it.
    table = f"shadow_rate_{uuid.uuid4().hex[:8]}"
    for name in (table, f"{table}_shadow"):
        emulators.dynamodb.create_table(name, emulators.region)
    settings = make_settings(
        trust_shadow_header=True,
        rate_limit_requests=1,
        rate_limit_window_seconds=10**10,
        dynamodb_table=table,
    )
    with start_stacks(settings) as stacks:
        first = _turn(stacks, "flask", _rid(), {"message": "spend"})
        shadows = [
            _turn(stacks, stack, _rid(), {"message": "shadow"}, shadow=True) for stack in STACKS
        ]
        second = _turn(stacks, "fastapi", _rid(), {"message": "over"})
    assert [first.status_code, *(s.status_code for s in shadows)] == [200, 200, 200]
    assert second.status_code == 429  # the budget of one: the shadows took none of it


def test_the_shadow_header_is_not_trusted_by_default(
    stacks: Stacks, emulators: LocalEmulators, settings: Settings
) -> None:
    sid = f"untrusted-{uuid.uuid4().hex[:12]}"
    rid = _rid()
    answer = _turn(stacks, "fastapi", rid, {"message": "hi", "session_id": sid}, shadow=True)
    assert answer.status_code == 200
    # A client's header marks nothing: the turn is a primary one.
    assert _texts(_item(emulators, settings.dynamodb_table, sid)) == ["hi"]
    assert _item(emulators, settings.shadow_table, sid) is None
