"""The gateway end to end: both stacks mounted, real emulators, real sockets."""

from __future__ import annotations

import http.client
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import create_gateway
from harness.gateway.policy import bucket
from harness.local.emulators import LocalEmulators
from harness.local.emulators.replies import compose_reply
from harness.local.servers import ASGIServer, environment
from shared import contract
from shared.settings import Settings

from .conftest import TOKEN, RunningGateway, StartGateway, gateway_settings

CHAT = "/api/v1/chat"
BACKEND = "x-dualstack-backend"
QUEUE = "dualstack_wsgi_queue_length"
ABANDONED = "dualstack_wsgi_queue_abandoned_total"


def _served_by(response: httpx.Response) -> str:
    return response.headers[BACKEND]


@pytest.mark.parametrize("backend", ["flask", "fastapi"])
def test_override_header_picks_the_stack(gateway: RunningGateway, backend: str) -> None:
    with gateway.client() as client:
        response = client.get("/health", headers={BACKEND: backend})
    assert _served_by(response) == backend
    # Only the FastAPI stack adds `environment`: the body proves who answered.
    assert ("environment" in response.json()) is (backend == "fastapi")


def test_override_can_be_disabled(start_gateway: StartGateway) -> None:
    with start_gateway(fastapi_percent=0, override_header="off") as gw, gw.client() as client:
        served = {_served_by(client.get("/health", headers={BACKEND: "fastapi"})) for _ in range(5)}
    assert served == {"flask"}


@pytest.mark.parametrize(
    "path", ["/health/detailed", f"{CHAT}/sessions/some-session", "/docs", "/openapi.json"]
)
def test_paths_only_fastapi_serves_always_go_there(start_gateway: StartGateway, path: str) -> None:
    with start_gateway(fastapi_percent=0) as gw, gw.client() as client:
        response = client.get(path, headers={BACKEND: "flask"})
    assert _served_by(response) == "fastapi"


def test_new_conversation_gets_its_session_id_from_the_gateway(gateway: RunningGateway) -> None:
    seen = set()
    with gateway.client() as client:
        for i in range(24):
            response = client.post(CHAT, json={"message": f"hello {i}"})
            assert response.status_code == 200
            sid = response.json()["session_id"]
            expected = "fastapi" if bucket(gateway.app.state.salt, sid) < 50 * 100 else "flask"
            assert _served_by(response) == expected  # routed by the id it was given
            seen.add(expected)
            follow = client.post(CHAT, json={"message": "again", "session_id": sid})
            assert _served_by(follow) == expected  # and the conversation stays there
            assert follow.json()["response"] == compose_reply("again", 2)
    assert seen == {"flask", "fastapi"}


def test_minting_keeps_the_rest_of_the_body(gateway: RunningGateway) -> None:
    body = b'{ "message" : "caf\\u00e9 \\ud83d\\ude00",\n  "user_id": "u1", "session_id": null }'
    with gateway.client() as client:
        response = client.post(CHAT, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["response"] == compose_reply("café 😀", 1)
    assert uuid.UUID(response.json()["session_id"])


def test_bad_bodies_still_get_the_stacks_answer(gateway: RunningGateway) -> None:
    with gateway.client() as client:
        for backend in ("flask", "fastapi"):
            response = client.post(
                CHAT,
                content=b"{broken",
                headers={"Content-Type": "application/json", BACKEND: backend},
            )
            assert (response.status_code, response.json()["error"]) == (
                400,
                contract.MALFORMED_JSON,
            )
            assert _served_by(response) == backend


def test_chunked_upload_reaches_flask_whole(gateway: RunningGateway) -> None:
    message = "chunked " * 200

    def chunks() -> Iterator[bytes]:
        payload = json.dumps(
            {"message": message, "session_id": f"chunk-{uuid.uuid4().hex}"}
        ).encode()
        for i in range(0, len(payload), 100):
            yield payload[i : i + 100]

    with gateway.client() as client:
        response = client.post(
            CHAT, content=chunks(), headers={"Content-Type": "application/json", BACKEND: "flask"}
        )
    assert _served_by(response) == "flask"
    assert response.status_code == 200, response.text
    assert response.json()["response"] == compose_reply(message, 1)


def test_lifespan_reaches_fastapi(gateway: RunningGateway) -> None:
    # FastAPI opens its aioboto3 clients in its lifespan: these only work if it ran.
    with gateway.client() as client:
        detailed = client.get("/health/detailed")
        turn = client.post(CHAT, json={"message": "hi"}, headers={BACKEND: "fastapi"})
    assert detailed.status_code == 200 and detailed.json()["checks"]["dynamodb"]["ok"] is True
    assert turn.status_code == 200


def test_request_id_is_kept_or_minted_and_passed_to_the_stack(gateway: RunningGateway) -> None:
    with gateway.client() as client:
        kept = client.get("/nope", headers={"X-Request-ID": "trace-42", BACKEND: "fastapi"})
        minted = client.get("/nope", headers={"X-Request-ID": "bad id!", BACKEND: "fastapi"})
    # FastAPI's error body says which request id the stack itself saw.
    assert kept.headers["x-request-id"] == kept.json()["request_id"] == "trace-42"
    assert minted.headers["x-request-id"] == minted.json()["request_id"] != "bad id!"


def test_backend_header_can_be_hidden(start_gateway: StartGateway) -> None:
    with start_gateway(show_backend_header=False) as gw, gw.client() as client:
        response = client.get("/health")
    assert response.status_code == 200
    assert BACKEND not in response.headers


def test_oversized_bodies_are_refused_before_any_stack(start_gateway: StartGateway) -> None:
    with start_gateway(max_body_bytes=2048) as gw, gw.client() as client:
        declared = client.post(CHAT, json={"message": "x" * 4000})

        def chunks() -> Iterator[bytes]:
            yield b'{"message": "'
            yield b"y" * 4096
            yield b'"}'

        streamed = client.post(CHAT, content=chunks(), headers={"Content-Type": "application/json"})
        metrics = client.get("/_gateway/metrics").text
    for response in (declared, streamed):
        assert (response.status_code, response.json()) == (413, {"error": contract.BODY_TOO_LARGE})
        assert _served_by(response) == "gateway"
    assert "dualstack_requests_total{" not in metrics  # no stack saw them


def test_admin_changes_need_the_token(start_gateway: StartGateway) -> None:
    with start_gateway(admin_token=None) as gw, gw.client() as client:
        refused = client.put(
            "/_gateway/rollout", json={"fastapi_percent": 80}, headers={"Authorization": "Bearer x"}
        )
        after = client.get("/_gateway/rollout").json()
    assert refused.status_code == 403
    assert "GATEWAY_ADMIN_TOKEN" in refused.json()["error"]
    assert after["fastapi_percent"] == 0

    with start_gateway(fastapi_percent=10) as gw, gw.client() as client:
        missing = client.put("/_gateway/rollout", json={"fastapi_percent": 80})
        wrong = client.put(
            "/_gateway/rollout",
            json={"fastapi_percent": 80},
            headers={"Authorization": "Bearer nope"},
        )
        right = client.put(
            "/_gateway/rollout",
            json={"fastapi_percent": 80, "routes": {CHAT: 25}},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        shown = client.get("/_gateway/rollout").json()
        history = client.get(
            "/_gateway/rollout/history", headers={"Authorization": f"Bearer {TOKEN}"}
        ).json()["changes"]
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert (shown["fastapi_percent"], shown["routes"]) == (80, {CHAT: 25})
    assert len(history) == 1
    assert history[0]["old"]["fastapi_percent"] == 10
    assert history[0]["new"]["fastapi_percent"] == 80
    assert history[0]["at"]


def test_a_change_applies_at_once_and_per_prefix(start_gateway: StartGateway) -> None:
    with start_gateway(fastapi_percent=0) as gw, gw.client() as client:
        before = {_served_by(client.get("/health")) for _ in range(10)}
        gw.set_percent(0, routes={"/health": 100})
        after = {_served_by(client.get("/health")) for _ in range(10)}
        chat = {_served_by(client.post(CHAT, json={"message": "m"})) for _ in range(10)}
    assert (before, after, chat) == ({"flask"}, {"fastapi"}, {"flask"})


def test_metrics_count_what_the_gateway_routes(start_gateway: StartGateway) -> None:
    with start_gateway(fastapi_percent=0, override_header="open") as gw, gw.client() as client:
        for _ in range(3):
            client.get("/health")
        client.get("/health", headers={BACKEND: "fastapi"})
        gw.set_percent(40)
        text = client.get("/_gateway/metrics").text
    labels = 'method="GET",route="/health",status_class="2xx"'
    assert f'dualstack_requests_total{{backend="flask",{labels}}} 3.0' in text
    assert f'dualstack_requests_total{{backend="fastapi",{labels}}} 1.0' in text
    assert 'dualstack_fastapi_percent{prefix=""} 40.0' in text
    assert 'dualstack_routing_decisions_total{backend="fastapi",reason="override"} 1.0' in text
    assert "dualstack_wsgi_threads 64.0" in text  # the default pool


# Long enough that the stall outlasts the maximum wait several times over on a loaded
# machine: the test waits on state, never on the clock, but only while these hold.
SLOW_MS = 5000
MAX_WAIT = 1.0
# Sheds are timed from outside, through a real socket, on a busy 2-core machine: the bound
# is generous, and still far below what a pool that lets requests wait for threads that
# never free would show (the slow requests' 5 s).
MARGIN = 1.0


def _metric(client: httpx.Client, name: str) -> float:
    """One unlabelled sample of `/_gateway/metrics` (an admin path: it takes no thread)."""
    text = client.get("/_gateway/metrics").text
    (sample,) = (
        s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name
    )
    return sample.value


def _wait_until(condition: Callable[[], bool], what: str, within: float = 30.0) -> None:
    """Polls `condition` until it holds; fails after `within` seconds (generous: it only
    runs out when the test fails)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _send_and_leave(url: str, body: dict[str, object]) -> socket.socket:
    """A Flask-bound chat turn sent whole on a raw socket, its answer not read: the
    caller closes the socket to leave."""
    origin = httpx.URL(url)
    payload = json.dumps(body).encode()
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: {origin.host}\r\nContent-Type: application/json\r\n"
        f"{BACKEND}: flask\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection((origin.host, origin.port))
    sock.sendall(head + payload)
    return sock


def test_a_stalled_flask_is_shed_within_the_maximum_wait_and_fastapi_is_unaffected(
    start_gateway: StartGateway, emulators: LocalEmulators, make_settings: Callable[..., Settings]
) -> None:
    def flask_bound(message: str) -> dict[str, object]:
        return {"headers": {BACKEND: "flask"}, "json": {"message": message}}

    slow = flask_bound(f"slow [[emulator:latency={SLOW_MS}]]")
    # The agent may take its time: slow answers are what stall the pool.
    stack_settings = make_settings(agent_timeout_seconds=4 * SLOW_MS / 1000)

    def call(method: str, path: str, **options: object) -> tuple[httpx.Response, float]:
        with httpx.Client(base_url=gw.url, timeout=60) as client:
            began = time.monotonic()
            response = client.request(method, path, **options)  # type: ignore[arg-type]
            return response, time.monotonic() - began

    def invocations() -> int:
        count: int = emulators.bedrock.stats()["invocations"]
        return count

    abandoned_session = f"abandoned-{uuid.uuid4().hex}"
    with (
        start_gateway(
            stack_settings, wsgi_threads=2, wsgi_max_wait_seconds=MAX_WAIT, override_header="open"
        ) as gw,
        gw.client() as scraper,
        ThreadPoolExecutor(max_workers=12) as pool,
    ):
        # Two slow requests hold both threads, both at the agent: the pool is stalled.
        at_agent = invocations() + 2
        running = [pool.submit(call, "POST", CHAT, **slow) for _ in range(2)]
        _wait_until(lambda: invocations() == at_agent, "the slow requests never reached the agent")
        assert _metric(scraper, "dualstack_wsgi_threads_busy") == 2
        # A request queues for a thread; its client leaves while it waits.
        leaving = _send_and_leave(gw.url, {"message": "bye", "session_id": abandoned_session})
        _wait_until(lambda: _metric(scraper, QUEUE) == 1, "the request was not queued")
        leaving.close()
        _wait_until(lambda: _metric(scraper, ABANDONED) == 1, "the departure was not seen")
        assert _metric(scraper, QUEUE) == 0
        # Further Flask-bound requests: shed within the maximum wait (queued, then shed
        # when it runs out, or at once once no thread has freed for that long).
        first = call("POST", CHAT, **slow)
        later = [pool.submit(call, "POST", CHAT, **slow) for _ in range(4)]
        quick = [
            pool.submit(call, "GET", "/health", headers={BACKEND: "fastapi"}) for _ in range(4)
        ]
        later_answers = [future.result() for future in later]
        quick_answers = [future.result()[0] for future in quick]
        # All of that came back while Flask was still stalled, and nothing new reached
        # the agent: not the shed requests, not the abandoned one.
        assert [future.done() for future in running] == [False, False]
        assert invocations() == at_agent
        busy_answers = [future.result()[0] for future in running]
        _wait_until(
            lambda: _metric(scraper, "dualstack_wsgi_threads_busy") == 0,
            "the threads were not given back",
        )
        assert invocations() == at_agent  # the abandoned request never started
        session = scraper.get(f"{CHAT}/sessions/{abandoned_session}")
        metrics = scraper.get("/_gateway/metrics").text
    for response, seconds in [first, *later_answers]:
        assert (response.status_code, response.json()) == (
            503,
            {"error": "Service overloaded, retry later"},
        )
        assert response.headers["retry-after"] == "1"
        assert _served_by(response) == "gateway"
        assert seconds < MAX_WAIT + MARGIN
    # By the time `first` was answered no thread had freed for the maximum wait: the
    # later ones were shed at once, not after waiting it out.
    assert max(seconds for _, seconds in later_answers) < MAX_WAIT / 2
    assert [(r.status_code, _served_by(r)) for r in quick_answers] == [(200, "fastapi")] * 4
    assert [(r.status_code, _served_by(r)) for r in busy_answers] == [(200, "flask")] * 2
    assert (session.status_code, session.json()["error"]) == (404, contract.SESSION_NOT_FOUND)
    assert 'dualstack_shed_requests_total{backend="flask"} 5.0' in metrics


def test_requests_that_can_start_in_time_wait_for_a_thread(
    start_gateway: StartGateway, make_settings: Callable[..., Settings]
) -> None:
    # One thread, each turn holding it ~0.2 s, eight at once: the last starts after about
    # 1.4 s, within the maximum wait; a fixed-size queue would have shed most of them.
    def turn(i: int) -> httpx.Response:
        with httpx.Client(base_url=gw.url, timeout=60) as client:
            return client.post(
                CHAT,
                headers={BACKEND: "flask"},
                json={"message": f"turn {i} [[emulator:latency=200]]"},
            )

    def probe(_: int) -> httpx.Response:
        with httpx.Client(base_url=gw.url, timeout=60) as client:
            return client.get("/health", headers={BACKEND: "flask"})

    with (
        start_gateway(wsgi_threads=1, wsgi_max_wait_seconds=10) as gw,
        gw.client() as scraper,
        ThreadPoolExecutor(max_workers=10) as pool,
    ):
        turns = pool.map(turn, range(8))
        # Bodiless requests queue too: what the gateway read from the client while
        # watching it (the empty body) reaches Flask once they start.
        probes = pool.map(probe, range(2))
        answers, probe_answers = list(turns), list(probes)
        metrics = scraper.get("/_gateway/metrics").text
    assert [(r.status_code, _served_by(r)) for r in answers] == [(200, "flask")] * 8
    assert [(r.status_code, r.json()["status"]) for r in probe_answers] == [(200, "healthy")] * 2
    assert [r.json()["response"] for r in answers] == [
        compose_reply(f"turn {i} [[emulator:latency=200]]", 1) for i in range(8)
    ]
    samples = {s.name: s.value for f in text_string_to_metric_families(metrics) for s in f.samples}
    assert "dualstack_shed_requests_total" not in samples  # none was shed
    waited = samples["dualstack_wsgi_queue_wait_seconds_count"]
    assert waited >= 2  # some of them did queue


def test_an_empty_post_body_reaches_the_stack(gateway: RunningGateway) -> None:
    # The gateway reads (and so must replay) even an empty body; a stack left waiting for
    # it would hang until the client gave up.
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        for backend in ("flask", "fastapi"):
            response = client.post(
                CHAT, content=b"", headers={"Content-Type": "application/json", BACKEND: backend}
            )
            assert (response.status_code, response.json()["error"]) == (
                400,
                contract.MALFORMED_JSON,
            )


def test_a_missing_rollout_table_fails_start_up(
    emulators: LocalEmulators, make_settings: Callable[..., Settings]
) -> None:
    # The rollout store is read at start-up: without it the gateway must not start
    # serving with a made-up percentage.
    settings = gateway_settings(state_table=f"missing_{uuid.uuid4().hex[:8]}")
    with environment(emulators.env()):
        app = create_gateway(make_settings(), settings)
        server = ASGIServer(app)
        with pytest.raises(RuntimeError, match=r"uvicorn did not start \(exit code 3\)"):
            server.start(timeout=20)
    server.stop()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_a_new_conversation_not_in_utf8_is_answered_as_the_stacks_answer_it(
    gateway: RunningGateway, encoding: str
) -> None:
    # No session id to route by, and none can be spliced into this body: routed without
    # one (not a 500), and the stack that serves it mints the conversation's id.
    body = json.dumps({"message": "hello"}).encode(encoding)
    with gateway.client() as client:
        before = _metric(client, "dualstack_unminted_requests_total")
        answers = [
            client.post(CHAT, content=body, headers={"Content-Type": "application/json"})
            for _ in range(6)
        ]
        after = _metric(client, "dualstack_unminted_requests_total")
    for response in answers:
        assert response.status_code == 200, response.text
        assert response.json()["response"] == compose_reply("hello", 1)
        assert uuid.UUID(response.json()["session_id"])
        assert response.headers["x-request-id"]
    assert after - before == 6


def test_minting_never_pushes_a_body_past_the_stacks_limit(gateway: RunningGateway) -> None:
    # 65 500 bytes: within the stacks' 64 KiB, but not with a minted id added. Directly,
    # either stack answers 200; through a split gateway, so must it.
    tail = b'"message": "big"}'
    body = b"{" + b" " * (65_500 - len(tail) - 1) + tail
    with gateway.client() as client:
        answers = [
            client.post(CHAT, content=body, headers={"Content-Type": "application/json"})
            for _ in range(4)
        ]
    assert [r.status_code for r in answers] == [200] * 4
    assert {r.json()["response"] for r in answers} == {compose_reply("big", 1)}


@pytest.mark.parametrize("path", ["/_gateway/rollout", "/_gateway/health", "/_gateway/nowhere"])
def test_the_admin_api_answers_carry_the_request_id_and_say_gateway(
    gateway: RunningGateway, path: str
) -> None:
    given = "0123456789abcdef0123456789abcdef"
    with gateway.client() as client:
        minted = client.get(path)
        echoed = client.get(path, headers={"X-Request-ID": given})
    assert minted.headers[BACKEND] == echoed.headers[BACKEND] == "gateway"
    assert minted.headers["x-request-id"] and minted.headers["x-request-id"] != given
    assert echoed.headers["x-request-id"] == given
    assert minted.headers["content-type"] == "application/json"  # its own answer, kept


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Padding": "x" * 20_000},  # one large header
        {f"X-Many-{n}": "y" * 10 for n in range(1_000)},  # many small ones
    ],
    ids=["one-large", "many-small"],
)
def test_request_headers_past_the_limit_get_431(
    gateway: RunningGateway, headers: dict[str, str]
) -> None:
    # uvicorn with httptools enforces no limit: the gateway does (16 KiB by default),
    # before any stack or the admin API reads them.
    with gateway.client() as client:
        refused = [client.get(path, headers=headers) for path in ("/health", "/_gateway/health")]
        within = client.get("/health", headers={"X-Padding": "x" * 15_000})
    for response in refused:
        assert (response.status_code, response.json()) == (
            431,
            {"error": "Request headers too large"},
        )
        assert response.headers[BACKEND] == "gateway"
        assert response.headers["x-request-id"]
    assert within.status_code == 200


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("X-Dualstack-Backend", ("flask", "fastapi")),
        ("X-User-ID", ("mallory", "alice")),
        ("X-Request-ID", ("0" * 32, "1" * 32)),
        ("Content-Type", ("application/json", "text/plain")),
        ("Authorization", ("Bearer a", "Bearer b")),
    ],
)
def test_a_header_that_routes_or_identifies_sent_twice_is_refused(
    gateway: RunningGateway, name: str, values: tuple[str, str]
) -> None:
    # The gateway, Starlette and Flask would each read a different value of it.
    headers = [(name, value) for value in values]
    with gateway.client() as client:
        response = client.post(CHAT, json={"message": "hi"}, headers=headers)
    assert (response.status_code, response.json()) == (400, {"error": f"Duplicate {name} header"})
    assert response.headers[BACKEND] == "gateway"


def test_other_headers_may_repeat(gateway: RunningGateway) -> None:
    headers = [("Accept", "application/json"), ("Accept", "*/*"), ("X-Dualstack-Backend", "flask")]
    with gateway.client() as client:
        response = client.get("/health", headers=headers)
    assert (response.status_code, _served_by(response)) == (200, "flask")


def test_two_host_headers_are_refused_as_gunicorn_refuses_them(gateway: RunningGateway) -> None:
    # httpx will not send a second Host; http.client sends headers as they are put.
    url = httpx.URL(gateway.url)
    connection = http.client.HTTPConnection(url.host, url.port, timeout=30)
    try:
        connection.putrequest("GET", "/health", skip_host=True)
        connection.putheader("Host", "a.example")
        connection.putheader("Host", "b.example")
        connection.endheaders()
        response = connection.getresponse()
        answer = (response.status, json.loads(response.read()), response.getheader(BACKEND))
    finally:
        connection.close()
    assert answer == (400, {"error": "Duplicate Host header"}, "gateway")
