"""The locustfile runs under locust (in processes of their own: locust patches the standard
library for gevent), plays the same conversations, names each request by the stack that
answered it, counts status errors as failures, and paces its users."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from load_test.ceiling import Behaviour, TrivialServer
from load_test.scenarios import parse_wait

ROOT = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).parent / "locust"


def _start(url: str, user_class: str, wait: str = "0") -> subprocess.Popen[str]:
    argv = [
        str(LOCUST), "-f", str(ROOT / "load_test" / "locustfile.py"), "--headless",
        "--users", "4", "--spawn-rate", "4", "--host", url, "--json", "--only-summary",
        "--loglevel", "ERROR", user_class,
    ]  # fmt: skip
    return subprocess.Popen(
        argv,
        cwd=ROOT,
        env={**os.environ, "LOAD_TEST_WAIT": wait},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop_after(
    process: subprocess.Popen[str], server: TrivialServer, requests: int
) -> list[dict[str, object]]:
    # Stopped by its PID once the server has seen enough, rather than by --run-time, whose
    # timer gevent may start late (its clock is stale after locust's imports).
    deadline = time.monotonic() + 30
    while server.requests < requests and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode in (0, 1), err[-3000:]  # 1: some requests failed
    stats = json.loads(out[: out.rindex("]") + 1])
    assert isinstance(stats, list)
    return stats


def test_locust_plays_the_scenarios_and_names_requests_by_backend() -> None:
    with (
        TrivialServer(Behaviour(record=True, backends=("flask", "fastapi"))) as chat_server,
        TrivialServer(Behaviour(status=503)) as failing_server,
    ):
        # Both at once: each spends most of its time starting up.
        chat_run = _start(chat_server.url, "ChatConversations")
        health_run = _start(failing_server.url, "HealthChecks")
        chat = _stop_after(chat_run, chat_server, 20)
        health = _stop_after(health_run, failing_server, 20)

    # The server names the backends in turn: each gets a row of its own in locust's table.
    counts = {(s["name"], s["method"], s["num_failures"]): s["num_requests"] for s in chat}
    assert set(counts) == {
        ("POST /api/v1/chat [flask]", "POST", 0),
        ("POST /api/v1/chat [fastapi]", "POST", 0),
    }
    flask, fastapi = (n for n in counts.values() if isinstance(n, int))
    assert flask + fastapi >= 20
    assert abs(flask - fastapi) <= 5  # alternate, but for the 4 users' requests in flight
    bodies = [json.loads(body) for body in chat_server.bodies]
    # Turns after the first continue the conversation with the id the server answered.
    continued = [body["session_id"] for body in bodies if "session_id" in body]
    assert continued and all(sid.startswith("trivial-") for sid in continued)
    assert len(continued) < len(bodies)

    # No backend header (a stack alone): named by method and path.
    (row,) = health
    assert (row["name"], row["method"]) == ("GET /health", "GET")
    assert isinstance(row["num_requests"], int) and row["num_requests"] >= 20
    assert row["num_failures"] == row["num_requests"]


def test_users_wait_between_their_requests() -> None:
    with TrivialServer() as server:
        run = _start(server.url, "HealthChecks", wait="3600")
        (row,) = _stop_after(run, server, 4)
        received = server.requests
    # Each of the 4 users sent its first request, then waits an hour: without the wait they
    # would have sent hundreds while locust was being stopped.
    assert received == row["num_requests"] == 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.5,1.5", (0.5, 1.5)), ("0", (0.0, 0.0)), ("2", (2.0, 2.0)), (" 1 , 3 ", (1.0, 3.0)),
     ("1,1", (1.0, 1.0))],
)  # fmt: skip
def test_the_wait_is_seconds_or_a_range(text: str, expected: tuple[float, float]) -> None:
    assert parse_wait(text) == expected


@pytest.mark.parametrize("text", ["", "x", "2,1", "-1", "-1,1", "1,2,3", "nan", "1,inf", "1,"])
def test_a_wait_that_is_not_seconds_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected SECONDS or MIN,MAX"):
        parse_wait(text)
