"""Shadow traffic in the gateway, with small stacks that record what they get: the copy is
the primary's request, marked, sent to the other stack after the primary answered; a client
cannot mark a request; the copies are bounded and dropped, never queued; Flask-bound copies
have WSGI threads of their own; every answer is judged, counted and sampled."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.gateway import proxy
from harness.gateway.admin import build_admin
from harness.gateway.build import wsgi_app
from harness.gateway.lifespan import run_lifespan
from harness.gateway.ownership import Ownership, template_matcher
from harness.gateway.policy import Rollout, bucket, mirrors, shadow_salt
from harness.gateway.proxy import Gateway, Stacks
from harness.gateway.settings import GatewaySettings
from shared import contract

TOKEN = "shadow-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MARKER = contract.SHADOW_HEADER.lower()


class State:
    """The rollout state without a store; a test sets `current` as the admin API would."""

    def __init__(self, fastapi: float = 0, shadow: float = 100) -> None:
        self.current = Rollout(fastapi_percent=fastapi, shadow_percent=shadow)
        self.salt = "test"

    def add_listener(self, listener: Any) -> None:
        pass


Answer = tuple[int, dict[str, Any]]


class Stack:
    """An ASGI stack that records each request (scope, body) and answers JSON; `answer`
    decides the answer from the path, `gate` (when set) holds every answer until opened."""

    def __init__(
        self,
        name: str,
        events: list[str] | None = None,
        answer: Callable[[str], Answer] = lambda path: (200, {"a": 1}),
    ) -> None:
        self.name = name
        self.calls: list[tuple[dict[str, Any], bytes]] = []
        self.events = events if events is not None else []
        self.answer = answer
        self.gate: asyncio.Event | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.calls.append((scope, body))
        self.events.append(f"{self.name} called")
        if self.gate is not None:
            await self.gate.wait()
        status, payload = self.answer(scope["path"])
        headers = [(b"content-type", b"application/json")]
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                headers.append((name, value))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for _ in range(10):  # turns of the loop mid-answer, where a copy started early
            await asyncio.sleep(0)  # would reach its stack (no time passes)
        await send({"type": "http.response.body", "body": json.dumps(payload).encode()})
        self.events.append(f"{self.name} answered")


async def _lifespan(receive: Any, send: Any) -> None:
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


PATHS = ["/api/v1/chat", "/health", "/x/{n}"]


def shadow_gateway(flask: Any, fastapi: Any, state: State, **settings: Any) -> Gateway:
    """A gateway over two stacks that both serve `PATHS`, with the admin API (and its
    shadow endpoints) over `state`."""
    options = GatewaySettings(salt="test", admin_token=TOKEN, **settings)

    @asynccontextmanager
    async def control() -> AsyncIterator[tuple[Any, Any]]:
        admin = build_admin(
            state,  # type: ignore[arg-type]
            token=TOKEN,
            metrics=gateway.metrics.render,
            shadow=gateway.shadow,
        )
        yield state, admin

    both = template_matcher(PATHS)
    gateway = Gateway(Stacks(flask, fastapi), Ownership(both, both), options, control)
    return gateway


@asynccontextmanager
async def serving(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        run_lifespan(gateway),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gateway), base_url="http://gateway"
        ) as client,
    ):
        yield client


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        # Generous: only a broken gateway (one that waits for its shadow) runs into it.
        await asyncio.wait_for(scenario(), timeout=30)

    asyncio.run(main())


def outcomes(gateway: Gateway) -> dict[tuple[str, str], int]:
    return {key: count for key, count in gateway.metrics.shadowed.items() if count}


# --- the copy and its marker -----------------------------------------------------------------


def test_the_copy_is_the_primarys_request_marked_and_sent_after_the_answer() -> None:
    events: list[str] = []
    flask, fastapi = Stack("flask", events), Stack("fastapi", events)
    gateway = shadow_gateway(flask, fastapi, State(fastapi=0, shadow=100))

    async def scenario() -> None:
        async with serving(gateway) as client:
            response = await client.post(
                "/api/v1/chat?lang=fr",
                json={"message": "hi"},
                headers={"X-Request-ID": "req-1", "X-User-ID": "alice"},
            )
            assert response.status_code == 200
            await gateway.shadow.settled()

    run(scenario)
    assert events == ["flask called", "flask answered", "fastapi called", "fastapi answered"]
    [(primary, primary_body)] = flask.calls
    [(copy, copy_body)] = fastapi.calls
    # The body as the primary got it: with the session id the gateway minted.
    minted = json.loads(primary_body)["session_id"]
    assert contract.is_identifier(minted)
    assert copy_body == primary_body
    assert (copy["method"], copy["path"], copy["query_string"]) == (
        "POST",
        "/api/v1/chat",
        b"lang=fr",
    )
    assert copy["headers"] == [*primary["headers"], (MARKER.encode(), b"req-1")]
    assert dict(copy["headers"])[b"x-request-id"] == b"req-1"
    assert copy["extensions"][contract.SHADOW_SCOPE_KEY] == {"request_id": "req-1"}
    assert MARKER.encode() not in dict(primary["headers"])
    assert contract.SHADOW_SCOPE_KEY not in (primary.get("extensions") or {})
    assert outcomes(gateway) == {("/api/v1/chat", "match"): 1}


@pytest.mark.parametrize("shadow", [0, 100])
def test_a_client_cannot_mark_a_request_as_a_shadow(shadow: float) -> None:
    flask, fastapi = Stack("flask"), Stack("fastapi")
    gateway = shadow_gateway(flask, fastapi, State(fastapi=0, shadow=shadow))

    async def scenario() -> None:
        async with serving(gateway) as client:
            forged = {contract.SHADOW_HEADER: "forged", "X-Request-ID": "req-2"}
            await client.get("/health", headers=forged)
            await gateway.shadow.settled()

    run(scenario)
    [(primary, _)] = flask.calls
    assert [v for n, v in primary["headers"] if n == MARKER.encode()] == []
    copies = [
        [v for n, v in scope["headers"] if n == MARKER.encode()] for scope, _ in fastapi.calls
    ]
    assert copies == ([[b"req-2"]] if shadow else [])


def test_the_wsgi_app_finds_the_marker_in_its_environ() -> None:
    seen: list[dict[str, Any]] = []

    def legacy(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(dict(environ))
        echo = ("X-Request-ID", environ["HTTP_X_REQUEST_ID"])
        start_response("200 OK", [("Content-Type", "application/json"), echo])
        return [b'{"a": 1}']

    fastapi = Stack("fastapi")
    state = State(fastapi=100, shadow=100)
    gateway = shadow_gateway(wsgi_app(legacy, 2), fastapi, state, override_header="open")

    async def scenario() -> None:
        async with serving(gateway) as client:
            headers = {"X-Request-ID": "req-3", contract.SHADOW_HEADER: "forged"}
            await client.get("/health", headers=headers)  # FastAPI's; Flask gets the copy
            await gateway.shadow.settled()
            state.current = Rollout(fastapi_percent=100, shadow_percent=0)
            await client.get("/health", headers={**headers, "X-Dualstack-Backend": "flask"})

    run(scenario)
    assert [environ.get(contract.SHADOW_ENVIRON_KEY) for environ in seen] == ["req-3", None]
    assert outcomes(gateway) == {("/health", "match"): 1}


def test_nothing_is_shadowed_at_zero_percent() -> None:
    flask, fastapi = Stack("flask"), Stack("fastapi")
    gateway = shadow_gateway(flask, fastapi, State(fastapi=0, shadow=0))

    async def scenario() -> None:
        async with serving(gateway) as client:
            for _ in range(3):
                await client.post("/api/v1/chat", json={"message": "hi"})
            await gateway.shadow.settled()

    run(scenario)
    assert (len(flask.calls), fastapi.calls, outcomes(gateway)) == (3, [], {})
    # At 0 % neither a split nor a shadow needs the key: none is minted, as before shadowing.
    assert [json.loads(body) for _, body in flask.calls] == [{"message": "hi"}] * 3
    assert dict(gateway.metrics.decisions) == {("flask", "random"): 3}


# --- sampling --------------------------------------------------------------------------------


def test_a_conversation_is_shadowed_whole_independently_of_the_split() -> None:
    salt = "deployment-secret"
    mirror = shadow_salt(salt)
    assert mirror not in (salt, shadow_salt("another-secret"))
    keys = [f"session-{n}" for n in range(20_000)]

    def never() -> float:
        raise AssertionError("a keyed request is never drawn for")

    at = {p: {k for k in keys if mirrors(mirror, k, p, never)} for p in (0, 20, 50, 100)}
    assert (len(at[0]), len(at[100])) == (0, len(keys))
    assert at[0] <= at[20] <= at[50] <= at[100]  # raising the share only adds conversations
    assert abs(len(at[20]) / len(keys) - 0.20) < 0.02
    # Independent of the split: half of FastAPI's conversations, and half of Flask's.
    fastapi = {k for k in keys if bucket(salt, k) < 5000}
    for served in (fastapi, set(keys) - fastapi):
        assert abs(len(served & at[50]) / len(served) - 0.5) < 0.03
    # A request without a key is drawn for, at the same share.
    assert (mirrors(mirror, None, 20, lambda: 0.19), mirrors(mirror, None, 20, lambda: 0.2)) == (
        True,
        False,
    )


# --- judging ---------------------------------------------------------------------------------


def _candidate(path: str) -> Answer:
    return {
        "/x/1": (200, {"a": 1}),
        "/x/2": (200, {"a": 1, "extra": True}),
        "/x/3": (500, {"a": 1}),
        "/x/5": (200, {}),
    }[path]


def test_every_answer_is_judged_counted_and_the_differing_ones_sampled(tmp_path: Path) -> None:
    log = tmp_path / "shadow.jsonl"
    flask, fastapi = Stack("flask"), Stack("fastapi", answer=_candidate)
    gateway = shadow_gateway(flask, fastapi, State(fastapi=0, shadow=100), shadow_log=str(log))
    answers: list[Any] = []

    async def scenario() -> None:
        async with serving(gateway) as client:
            for n in (1, 2, 3, 4, 5):  # /x/4 raises in the candidate
                await client.get(f"/x/{n}", headers={"X-Request-ID": f"req-{n}"})
                await gateway.shadow.settled()
            answers.append(await client.get("/_gateway/shadow"))
            answers.append(await client.get("/_gateway/shadow/diffs"))
            answers.append(await client.get("/_gateway/shadow/diffs?limit=2", headers=AUTH))
            answers.append(await client.get("/_gateway/shadow/diffs?limit=0", headers=AUTH))
            answers.append(await client.get("/_gateway/metrics"))

    run(scenario)
    route = "/x/{n}"
    assert outcomes(gateway) == {
        (route, "match"): 1,
        (route, "additive"): 1,
        (route, "breaking"): 2,
        (route, "error"): 1,
    }
    summary, refused, diffs, bad_limit, metrics = answers
    body = summary.json()
    assert body["routes"] == {
        route: {"match": 1, "additive": 1, "breaking": 2, "error": 1, "dropped": 0}
    }
    assert {
        side: {b: v["count"] for b, v in by.items()} for side, by in body["latency"].items()
    } == {
        "primary": {"flask": 5},
        "shadow": {"fastapi": 5},
    }
    assert (body["shadow_percent"], body["in_flight"], body["max_in_flight"]) == (100.0, 0, 16)
    assert refused.status_code == 401
    assert bad_limit.status_code == 400
    newest = diffs.json()["diffs"]
    assert [(d["request_id"], d["outcome"]) for d in newest] == [
        ("req-5", "breaking"),
        ("req-4", "error"),
    ]
    dropped_field = newest[0]
    assert dropped_field["differences"] == [
        {
            "path": "$.a",
            "kind": "missing",
            "severity": "breaking",
            "reason": "",
            "legacy": 1,
            "candidate": None,
        }
    ]
    assert (dropped_field["primary"]["backend"], dropped_field["primary"]["body"]) == (
        "flask",
        '{"a": 1}',
    )
    assert (dropped_field["shadow"]["backend"], dropped_field["shadow"]["body"]) == (
        "fastapi",
        "{}",
    )
    assert dropped_field["request"]["path"] == "/x/5"
    assert newest[1]["shadow"]["failure"] == "KeyError: '/x/4'"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(d["request_id"], d["outcome"]) for d in lines] == [
        ("req-2", "additive"),
        ("req-3", "breaking"),
        ("req-4", "error"),
        ("req-5", "breaking"),
    ]
    assert lines[1]["differences"][0]["path"] == "status"
    exposition = metrics.text
    assert 'dualstack_shadow_requests_total{outcome="breaking",route="/x/{n}"} 2.0' in exposition
    assert 'dualstack_shadow_duration_seconds_count{backend="fastapi"} 5.0' in exposition


def test_the_rules_decide_what_differs_by_design() -> None:
    # The parity suite's rules: FastAPI's `environment` on /health is expected, a timestamp
    # is volatile (it must still be a recent number), whichever stack is the primary.
    def health(name: str) -> Callable[[str], Answer]:
        def answer(path: str) -> Answer:
            body: dict[str, Any] = {"status": "healthy", "timestamp": time.time(), "version": "1"}
            if name == "fastapi":
                body |= {"environment": "local", "version": "2"}
            return 200, body

        return answer

    flask, fastapi = (
        Stack("flask", answer=health("flask")),
        Stack("fastapi", answer=health("fastapi")),
    )
    state = State(fastapi=0, shadow=100)
    gateway = shadow_gateway(flask, fastapi, state)

    async def scenario() -> None:
        async with serving(gateway) as client:
            await client.get("/health")
            state.current = Rollout(fastapi_percent=100, shadow_percent=100)
            await client.get("/health")
            await gateway.shadow.settled()

    run(scenario)
    assert (len(flask.calls), len(fastapi.calls)) == (2, 2)
    assert outcomes(gateway) == {("/health", "match"): 2}


def test_a_shadow_that_never_answers_is_an_error_after_its_timeout() -> None:
    flask, fastapi = Stack("flask"), Stack("fastapi")
    fastapi.gate = asyncio.Event()  # never opened
    gateway = shadow_gateway(
        flask, fastapi, State(fastapi=0, shadow=100), shadow_timeout_seconds=0.01
    )

    async def scenario() -> None:
        async with serving(gateway) as client:
            assert (await client.get("/health")).status_code == 200
            await gateway.shadow.settled()

    run(scenario)
    assert outcomes(gateway) == {("/health", "error"): 1}
    assert gateway.shadow.diffs(1)[0]["shadow"]["failure"] == "no whole answer within 0.01 s"


# --- bounds ----------------------------------------------------------------------------------


def test_a_shadow_side_behind_is_dropped_not_queued(monkeypatch: pytest.MonkeyPatch) -> None:
    flask, fastapi = Stack("flask"), Stack("fastapi")
    gateway = shadow_gateway(flask, fastapi, State(fastapi=0, shadow=100), shadow_max_in_flight=2)
    statuses: list[int] = []
    recorded: list[object] = []  # primary answers recorded for a copy: memory a copy holds

    class Counting(proxy.Recorder):
        def __init__(self, send: object) -> None:
            recorded.append(self)
            super().__init__(send)  # type: ignore[arg-type]

    monkeypatch.setattr(proxy, "Recorder", Counting)

    async def scenario() -> None:
        fastapi.gate = asyncio.Event()
        async with serving(gateway) as client:
            for n in range(5):
                # Answered while every shadow is stuck: the client never waits for one.
                statuses.append((await client.get(f"/x/{n}")).status_code)
            assert (gateway.shadow.in_flight, gateway.metrics.shadow_in_flight) == (2, 2)
            assert outcomes(gateway) == {("/x/{n}", "dropped"): 3}
            fastapi.gate.set()
            await gateway.shadow.settled()
            assert gateway.shadow.in_flight == 0

    run(scenario)
    assert statuses == [200] * 5
    assert len(fastapi.calls) == 2
    assert outcomes(gateway) == {("/x/{n}", "dropped"): 3, ("/x/{n}", "match"): 2}
    # Only the copies that could start held their primary's answer: the dropped ones were
    # dropped before it was recorded, so a slow side holds no more than the bound.
    assert len(recorded) == 2


def test_flask_bound_shadows_have_threads_of_their_own() -> None:
    entered, release = threading.Event(), threading.Event()
    primaries: list[str] = []

    def legacy(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if contract.SHADOW_ENVIRON_KEY in environ:
            entered.set()
            release.wait(10)
        else:
            primaries.append(environ["PATH_INFO"])
        echo = ("X-Request-ID", environ["HTTP_X_REQUEST_ID"])
        start_response("200 OK", [("Content-Type", "application/json"), echo])
        return [b'{"a": 1}']

    fastapi = Stack("fastapi")
    options = {"wsgi_threads": 1, "shadow_wsgi_threads": 1, "override_header": "open"}
    # The pool as `build_gateway` makes it: the primaries' threads and the shadows'.
    flask = wsgi_app(legacy, 2)
    gateway = shadow_gateway(flask, fastapi, State(fastapi=100, shadow=100), **options)

    async def scenario() -> None:
        async with serving(gateway) as client:
            await client.get("/x/1")  # served by FastAPI, its copy holds the shadows' thread
            await asyncio.to_thread(entered.wait, 10)
            await client.get("/x/2")  # its copy finds the shadows' thread taken: dropped
            assert outcomes(gateway) == {("/x/{n}", "dropped"): 1}
            assert gateway.shadow.in_flight == 1  # far below the bound of 16
            # A Flask primary still gets its thread at once (no queue, no 503).
            pinned = await client.get("/x/3", headers={"X-Dualstack-Backend": "flask"})
            assert (pinned.status_code, primaries) == (200, ["/x/3"])
            assert gateway.admission.busy == 0
            release.set()
            await gateway.shadow.settled()

    try:
        run(scenario)
    finally:
        release.set()
    assert outcomes(gateway) == {("/x/{n}", "dropped"): 1, ("/x/{n}", "match"): 2}
