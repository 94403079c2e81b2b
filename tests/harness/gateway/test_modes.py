"""The gateway's behaviour in both modes, by the same tests: the stacks mounted in its process,
and the stacks behind HTTP (upstream mode: Flask on gunicorn with 2 workers, FastAPI on
uvicorn), so the two cannot drift. Split, stickiness, ownership, the override header, the
request id and the answers' shape are the gateway's, whichever way it reaches the stacks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from harness.gateway.policy import BUCKETS, bucket
from harness.local.emulators import LocalEmulators

from .conftest import RunningGateway, StartGateway, wait_until_judged

CHAT = "/api/v1/chat"


@pytest.fixture(scope="module")
def half(start_in_mode: StartGateway) -> Iterator[RunningGateway]:
    """A gateway at 50 %, the override header off: only the split decides."""
    with start_in_mode(fastapi_percent=50) as running:
        yield running


@pytest.fixture(scope="module")
def pinned(start_in_mode: StartGateway) -> Iterator[RunningGateway]:
    """A gateway at 50 % whose override header is open."""
    with start_in_mode(fastapi_percent=50, override_header="open") as running:
        yield running


def _expected(gateway: RunningGateway, key: str, percent: float) -> str:
    slot = bucket(gateway.app.state.salt, key)
    return "fastapi" if slot < round(percent * BUCKETS / 100, 6) else "flask"


def _turn(client: httpx.Client, message: str, sid: str | None = None) -> httpx.Response:
    body: dict[str, str] = {"message": message, "user_id": "alice"}
    if sid is not None:
        body["session_id"] = sid
    return client.post(CHAT, json=body)


def test_conversations_split_by_their_key_and_stay_on_their_stack(
    half: RunningGateway, mode: str
) -> None:
    keys = [f"{mode}-split-{n}-{uuid.uuid4().hex[:6]}" for n in range(16)]
    expected = {key: _expected(half, key, 50) for key in keys}
    with half.client() as client:
        for turn in ("first", "second"):
            for key in keys:
                answer = _turn(client, turn, key)
                assert answer.status_code == 200, answer.text
                assert answer.json()["session_id"] == key
                assert answer.headers["x-dualstack-backend"] == expected[key], (key, turn)
    # Both stacks served: a gateway sending everything one way would fail above or here.
    assert set(expected.values()) == {"flask", "fastapi"}


def test_a_new_conversation_gets_a_key_and_keeps_its_stack(half: RunningGateway) -> None:
    with half.client() as client:
        for _ in range(6):
            first = _turn(client, "hello")
            assert first.status_code == 200, first.text
            sid = first.json()["session_id"]
            served = first.headers["x-dualstack-backend"]
            assert served == _expected(half, sid, 50)  # routed by the key it was given
            again = _turn(client, "and again", sid)
            assert again.status_code == 200, again.text
            assert again.headers["x-dualstack-backend"] == served


def test_raising_the_share_moves_conversations_to_fastapi_only(
    start_in_mode: StartGateway,
) -> None:
    keys = [f"raise-{n}-{uuid.uuid4().hex[:6]}" for n in range(12)]
    with start_in_mode(fastapi_percent=25) as gateway, gateway.client() as client:
        before = {key: _turn(client, "one", key).headers["x-dualstack-backend"] for key in keys}
        gateway.set_percent(75)
        after = {key: _turn(client, "two", key).headers["x-dualstack-backend"] for key in keys}
    assert before == {key: _expected(gateway, key, 25) for key in keys}
    assert after == {key: _expected(gateway, key, 75) for key in keys}
    assert all(after[key] == "fastapi" for key in keys if before[key] == "fastapi")


@pytest.mark.parametrize("path", ["/health/detailed", "/api/v1/chat/sessions/nobody-here"])
def test_paths_only_fastapi_serves_go_there_at_zero_percent(
    start_in_mode: StartGateway, path: str
) -> None:
    with start_in_mode(fastapi_percent=0) as gateway, gateway.client() as client:
        answers = [client.get(path) for _ in range(3)]
        shared = client.get("/health")
    assert {a.headers["x-dualstack-backend"] for a in answers} == {"fastapi"}
    assert shared.headers["x-dualstack-backend"] == "flask"


@pytest.mark.parametrize("backend", ["flask", "fastapi"])
def test_the_override_header_picks_the_stack(pinned: RunningGateway, backend: str) -> None:
    with pinned.client() as client:
        answer = client.get("/health", headers={"X-Dualstack-Backend": backend})
    assert answer.status_code == 200
    assert answer.headers["x-dualstack-backend"] == backend
    assert answer.json()["version"] == {"flask": "1.0.0", "fastapi": "2.0.0"}[backend]


def test_the_request_id_is_kept_or_minted(pinned: RunningGateway) -> None:
    with pinned.client() as client:
        kept = client.get("/health", headers={"X-Request-ID": "mode-rid-1"})
        minted = client.get("/health")
    assert kept.headers["x-request-id"] == "mode-rid-1"
    assert len(minted.headers["x-request-id"]) >= 16
    # One of each, whichever way the stack was reached.
    for answer in (kept, minted):
        assert len(answer.headers.get_list("x-request-id")) == 1
        assert len(answer.headers.get_list("x-dualstack-backend")) == 1


@pytest.mark.parametrize("backend", ["flask", "fastapi"])
def test_bad_input_gets_the_contract_s_error_from_either_stack(
    pinned: RunningGateway, backend: str
) -> None:
    headers = {"X-Dualstack-Backend": backend, "Content-Type": "application/json"}
    with pinned.client() as client:
        malformed = client.post(CHAT, content=b"{not json", headers=headers)
        empty = client.post(CHAT, json={"message": ""}, headers=headers)
    assert malformed.status_code == empty.status_code == 400
    assert isinstance(malformed.json()["error"], str) and isinstance(empty.json()["error"], str)
    assert malformed.headers["x-dualstack-backend"] == backend


@pytest.mark.parametrize("backend", ["flask", "fastapi"])
def test_a_chunked_upload_reaches_the_stack_whole(pinned: RunningGateway, backend: str) -> None:
    sid = f"chunked-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"message": "in parts", "session_id": sid}).encode()

    def parts() -> Iterator[bytes]:
        yield body[:10]
        yield body[10:]

    with pinned.client() as client:
        answer = client.post(
            CHAT,
            content=parts(),
            headers={"Content-Type": "application/json", "X-Dualstack-Backend": backend},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["session_id"] == sid
    assert answer.headers["x-dualstack-backend"] == backend


def test_shadowed_turns_match_and_write_only_the_shadow_table(
    start_in_mode: StartGateway, emulators: LocalEmulators
) -> None:
    # At 0 % and 100 % shadowed, Flask answers and FastAPI gets each turn's copy, marked;
    # over HTTP the marker is the header the upstream trusts (TRUST_SHADOW_HEADER).
    sessions = [f"modes-shadow-{uuid.uuid4().hex[:10]}" for _ in range(3)]
    with (
        start_in_mode(fastapi_percent=0, shadow_percent=100) as gateway,
        gateway.client() as client,
    ):
        for turn in ("hello", "and again"):
            for sid in sessions:
                answer = _turn(client, turn, sid)
                assert answer.status_code == 200, answer.text
                assert answer.headers["x-dualstack-backend"] == "flask"
        routes = wait_until_judged(client, 2 * len(sessions))
    assert routes == {
        "/api/v1/chat": {"match": 6, "additive": 0, "breaking": 0, "error": 0, "dropped": 0}
    }
    raw = emulators.dynamodb.client()
    try:
        for sid in sessions:
            for table in (emulators.table, emulators.shadow_table):
                item = raw.get_item(
                    TableName=table, Key={"session_id": {"S": sid}}, ConsistentRead=True
                ).get("Item")
                assert item is not None and item["turns"]["N"] == "2", (table, item)
    finally:
        raw.close()
