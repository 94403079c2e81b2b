"""Shadowing's settings and state: `shadow_percent` in the rollout (stored, audited, changed
through the admin API, read as 0 from items written before it), the rules it judges by, the
WSGI pool's threads for shadows; and the real gateway over the reference stacks, whose
answers to requests that write nothing compare as a match."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import ValidationError

from gateway import create_gateway
from harness.diff import parse_rules
from harness.gateway.build import build_gateway
from harness.gateway.policy import Rollout
from harness.gateway.rollout import ROLLOUT_KEY, RolloutStore
from harness.gateway.shadow_rules import PARITY_RULES, load_rules
from harness.local.emulators import LocalEmulators
from harness.local.servers import ASGIServer, environment

from .conftest import TOKEN, OpenClient, StartGateway, gateway_settings, wait_until_judged
from .test_admin import AUTH, running_admin

RULES_YAML = Path(__file__).parents[3] / "parity_tests" / "rules.yaml"


def test_shadow_percent_is_changed_through_the_admin_api_and_audited(
    rollout_table: str, open_client: OpenClient
) -> None:
    answers: list[httpx.Response] = []

    async def scenario() -> None:
        async with running_admin(open_client, rollout_table) as admin:
            put = admin.http.put
            answers.append(await put("/rollout", json={"shadow_percent": 20}, headers=AUTH))
            answers.append(await put("/rollout", json={"shadow_percent": None}, headers=AUTH))
            answers.append(await put("/rollout", json={"shadow_percent": 101}, headers=AUTH))
            answers.append(await put("/rollout", json={"shadow_percent": 5}))
            answers.append(await admin.http.get("/rollout"))
            history = await admin.history()
            assert [(c["old"]["shadow_percent"], c["new"]["shadow_percent"]) for c in history] == [
                (0.0, 20.0)
            ]
            assert admin.state.current.shadow_percent == 20.0

    asyncio.run(scenario())
    changed, null, too_much, anonymous, current = answers
    assert (changed.status_code, changed.json()["new"]["shadow_percent"]) == (200, 20.0)
    assert (null.status_code, null.json()) == (
        400,
        {"error": "shadow_percent must be a number from 0 to 100, not null"},
    )
    assert too_much.status_code == 400
    assert "shadow_percent" in too_much.json()["error"]
    assert anonymous.status_code == 401
    assert current.json()["shadow_percent"] == 20.0


def test_a_rollout_stored_before_shadowing_reads_as_none_shadowed(
    rollout_table: str, open_client: OpenClient
) -> None:
    async def scenario() -> None:
        async with open_client() as client:
            await client.put_item(
                TableName=rollout_table,
                Item={
                    "session_id": {"S": ROLLOUT_KEY},
                    "fastapi_percent": {"N": "30"},
                    "routes": {"M": {}},
                    "version": {"N": "4"},
                    "updated_at": {"S": "2027-01-01T00:00:00Z"},
                },
            )
            store = RolloutStore(client, rollout_table, initial=Rollout(0, shadow_percent=50))
            assert (await store.load()) == Rollout(30, version=4, shadow_percent=0)
            change = await store.update(shadow_percent=10, actor="admin")
            assert (change.new.fastapi_percent, change.new.shadow_percent) == (30, 10)
            assert (await store.load()).shadow_percent == 10

    asyncio.run(scenario())


# --- rules -----------------------------------------------------------------------------------


def test_the_built_in_rules_are_the_parity_suites() -> None:
    # Edited rules.yaml? Copy it into harness/gateway/shadow_rules.py's PARITY_RULES:
    #   python -c 'import json, yaml; print(json.dumps(yaml.safe_load(open(
    #       "parity_tests/rules.yaml")), indent=4))'
    assert yaml.safe_load(RULES_YAML.read_text()) == PARITY_RULES
    assert load_rules(None) == parse_rules(PARITY_RULES)


def test_a_rules_file_is_read_as_json_and_a_broken_one_stops_the_start(tmp_path: Path) -> None:
    good = tmp_path / "rules.json"
    good.write_text(json.dumps({"ignore": ["header:vary"]}))
    assert gateway_settings(shadow_rules=str(good)).shadow_rules == str(good)
    assert load_rules(str(good)) == parse_rules({"ignore": ["header:vary"]})
    broken = tmp_path / "rules.yaml"
    broken.write_text(RULES_YAML.read_text())
    with pytest.raises(ValidationError) as caught:
        gateway_settings(shadow_rules=str(broken))
    assert "the gateway reads rules as JSON only" in str(caught.value)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"ignored": []}))
    with pytest.raises(ValidationError) as caught:
        gateway_settings(shadow_rules=str(wrong))
    assert f"{wrong}: unknown section 'ignored'" in str(caught.value)


def test_the_wsgi_pool_holds_the_shadows_threads_beside_the_primaries() -> None:
    def legacy(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b""]

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never called")

    settings = gateway_settings(wsgi_threads=5, shadow_wsgi_threads=3)
    gateway = build_gateway(legacy, asgi, settings)
    assert gateway.stacks.flask.executor._max_workers == 8  # type: ignore[attr-defined]
    assert (gateway.admission.threads, gateway.shadow.wsgi_threads) == (5, 3)


# --- the real gateway and stacks -------------------------------------------------------------


@pytest.mark.parametrize("primary", [0, 100])
def test_the_reference_stacks_match_on_requests_that_write_nothing(
    start_gateway: StartGateway, emulators: LocalEmulators, primary: float
) -> None:
    # Both stacks' /health (their versions and FastAPI's environment differ by design: a
    # match) and the chat endpoint's refusals, which write no session: judged by the parity
    # rules, whichever stack is the primary.
    with (
        start_gateway(fastapi_percent=primary, shadow_percent=100) as gw,
        gw.client() as client,
    ):
        served = {client.get("/health").headers["x-dualstack-backend"]}
        refusals = [
            client.post("/api/v1/chat", json={"session_id": "s-1"}),  # no message
            client.post("/api/v1/chat", content=b"{not json", headers={"X-User-ID": "u-1"}),
            client.post("/api/v1/chat", json={"message": "hi", "session_id": "bad id!"}),
        ]
        served |= {r.headers["x-dualstack-backend"] for r in refusals}
        assert [r.status_code for r in refusals] == [400, 415, 400]
        routes = wait_until_judged(client, 4)
        diffs = client.get("/_gateway/shadow/diffs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert served == {"fastapi" if primary else "flask"}
    assert routes == {
        "/health": {"match": 1, "additive": 0, "breaking": 0, "error": 0, "dropped": 0},
        "/api/v1/chat": {"match": 3, "additive": 0, "breaking": 0, "error": 0, "dropped": 0},
    }
    # FastAPI's refusals add `request_id` and `error_code`, both expected by the parity
    # rules: a match, so no exchange is kept as a difference.
    assert diffs.json()["diffs"] == []


def test_shadowed_conversations_leave_the_primary_table_as_it_would_be(
    start_gateway: StartGateway, emulators: LocalEmulators, make_settings: Any
) -> None:
    # At 0 % FastAPI and 100 % shadowed, every answer is Flask's; each turn's copy goes to
    # FastAPI, which (honouring the marker) writes the shadow table, never the primary's.
    settings = make_settings()
    sessions = [f"shadowed-{uuid.uuid4().hex}" for _ in range(3)]
    with (
        start_gateway(settings, fastapi_percent=0, shadow_percent=100) as gw,
        gw.client() as client,
    ):
        served = set()
        for turn in ("hello", "and again"):
            for sid in sessions:
                response = client.post("/api/v1/chat", json={"message": turn, "session_id": sid})
                assert response.status_code == 200, response.text
                served.add(response.headers["x-dualstack-backend"])
        routes = wait_until_judged(client, 2 * len(sessions))
    assert served == {"flask"}
    # FastAPI's chat answers add `timestamp` and `tokens_used` (both expected): every copy
    # matches, the shadow answering each turn as the primary did; none is lost.
    assert routes == {
        "/api/v1/chat": {"match": 6, "additive": 0, "breaking": 0, "error": 0, "dropped": 0}
    }
    raw = emulators.dynamodb.client()
    try:

        def item(table: str, sid: str) -> dict[str, Any] | None:
            found: dict[str, Any] | None = raw.get_item(
                TableName=table, Key={"session_id": {"S": sid}}, ConsistentRead=True
            ).get("Item")
            return found

        primary = [item(settings.dynamodb_table, sid) for sid in sessions]
        shadow = [item(settings.shadow_table, sid) for sid in sessions]
    finally:
        raw.close()
    assert [p["turns"]["N"] if p else None for p in primary] == ["2"] * 3
    assert [s["turns"]["N"] if s else None for s in shadow] == ["2"] * 3


@pytest.mark.parametrize("primary", [0, 100])
def test_a_conversation_begun_before_shadowing_matches_once_it_is_on(
    start_gateway: StartGateway, emulators: LocalEmulators, primary: float
) -> None:
    # Two turns unshadowed; then shadowing is switched on at run time and the third turn's
    # copy, seeded from the primary's record as it stood before it, answers as the primary.
    with (
        start_gateway(fastapi_percent=primary, admin_token=TOKEN) as gw,
        gw.client() as client,
    ):
        sid = client.post("/api/v1/chat", json={"message": "one"}).json()["session_id"]
        assert client.post("/api/v1/chat", json={"message": "two", "session_id": sid}).is_success
        changed = client.put(
            "/_gateway/rollout",
            json={"shadow_percent": 100},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert changed.status_code == 200, changed.text
        third = client.post("/api/v1/chat", json={"message": "three", "session_id": sid})
        assert third.json()["response"].endswith("This is turn 3 of our conversation.")
        routes = wait_until_judged(client, 1)
    assert routes == {
        "/api/v1/chat": {"match": 1, "additive": 0, "breaking": 0, "error": 0, "dropped": 0}
    }


def test_an_altered_candidate_is_breaking_on_exactly_its_altered_answers(
    emulators: LocalEmulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The candidate by import string, as a team would name theirs: its "Message is required"
    # answers are reworded, and only those.
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    table = f"gw_altered_{uuid.uuid4().hex[:8]}"
    emulators.dynamodb.create_table(table)
    settings = gateway_settings(
        fastapi_app="capture_altered:create_app()",
        fastapi_percent=0,
        shadow_percent=100,
        state_table=table,
    )
    with environment({**emulators.env(), "LOG_LEVEL": "WARNING"}):
        app = create_gateway(gateway_settings=settings)
        server = ASGIServer(app).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/health").status_code == 200
            assert client.post("/api/v1/chat", json={"message": "hello"}).status_code == 200
            assert client.post("/api/v1/chat", json={"message": ""}).status_code == 400
            assert client.post("/api/v1/chat", json={"message": 7}).status_code == 400
            routes = wait_until_judged(client, 4)
            diffs = client.get(
                "/_gateway/shadow/diffs", headers={"Authorization": f"Bearer {TOKEN}"}
            )
    finally:
        server.stop()
    assert routes == {
        "/health": {"match": 1, "additive": 0, "breaking": 0, "error": 0, "dropped": 0},
        "/api/v1/chat": {"match": 2, "additive": 0, "breaking": 1, "error": 0, "dropped": 0},
    }
    [sample] = diffs.json()["diffs"]
    breaking = [d for d in sample["differences"] if d["severity"] == "breaking"]
    assert [(d["path"], d["legacy"], d["candidate"]) for d in breaking] == [
        ("$.error", "Message is required", "Message is REQUIRED")
    ]
