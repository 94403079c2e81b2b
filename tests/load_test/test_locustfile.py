"""The locustfile runs under locust (in processes of their own: locust patches the standard
library for gevent) and plays the same conversations, counting status errors as failures."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from load_test.ceiling import Behaviour, TrivialServer

ROOT = Path(__file__).resolve().parents[2]
LOCUST = Path(sys.executable).parent / "locust"


def _start(url: str, user_class: str) -> subprocess.Popen[str]:
    argv = [
        str(LOCUST), "-f", str(ROOT / "load_test" / "locustfile.py"), "--headless",
        "--users", "4", "--spawn-rate", "4", "--host", url, "--json", "--only-summary",
        "--loglevel", "ERROR", user_class,
    ]  # fmt: skip
    return subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _stop_after(
    process: subprocess.Popen[str], server: TrivialServer, requests: int
) -> dict[str, object]:
    # Stopped by its PID once the server has seen enough, rather than by --run-time, whose
    # timer gevent may start late (its clock is stale after locust's imports).
    deadline = time.monotonic() + 30
    while server.requests < requests and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode in (0, 1), err[-3000:]  # 1: some requests failed
    (stats,) = json.loads(out[: out.rindex("]") + 1])
    assert isinstance(stats, dict)
    return stats


def test_locust_plays_the_scenarios() -> None:
    with (
        TrivialServer(Behaviour(record=True)) as chat_server,
        TrivialServer(Behaviour(status=503)) as failing_server,
    ):
        # Both at once: each spends most of its time starting up.
        chat_run = _start(chat_server.url, "ChatConversations")
        health_run = _start(failing_server.url, "HealthChecks")
        chat = _stop_after(chat_run, chat_server, 20)
        health = _stop_after(health_run, failing_server, 20)

    assert (chat["name"], chat["method"], chat["num_failures"]) == ("chat turn", "POST", 0)
    assert isinstance(chat["num_requests"], int) and chat["num_requests"] >= 20
    bodies = [json.loads(body) for body in chat_server.bodies]
    # Turns after the first continue the conversation with the id the server answered.
    continued = [body["session_id"] for body in bodies if "session_id" in body]
    assert continued and all(sid.startswith("trivial-") for sid in continued)
    assert len(continued) < len(bodies)

    assert (health["name"], health["method"]) == ("health", "GET")
    assert isinstance(health["num_requests"], int) and health["num_requests"] >= 20
    assert health["num_failures"] == health["num_requests"]
