"""Short runs against real servers on loopback: the figures must be consistent with what
the servers saw, errors counted by kind, open-loop latency taken from the intended time.
Nothing here asserts how fast anything is, only orderings and counts."""

from __future__ import annotations

import json
import time

from harness.serving import free_port
from load_test.engine import ClosedLoop, OpenLoop, RunResult, run
from load_test.scenarios import ChatScenario, HealthScenario
from load_test.stats import Summary, summarize
from load_test.trivial import Behaviour, TrivialServer


def _consistent(summary: Summary) -> None:
    assert summary.sent == summary.ok + sum(summary.errors.values())
    lat = summary.latency
    assert 0 <= lat.p50_ms <= lat.p90_ms <= lat.p99_ms <= lat.max_ms


def _settled(server: TrivialServer, expected: int) -> int:
    # The server thread may still be parsing the last bytes the client wrote.
    deadline = time.monotonic() + 2
    while server.requests != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return server.requests


def test_a_request_count_is_exactly_what_is_sent_and_measured() -> None:
    with TrivialServer() as server:
        result = run(server.url, HealthScenario(), ClosedLoop(8, None, requests=300))
    summary = summarize(result.samples, result.elapsed_s)
    _consistent(summary)
    assert (summary.sent, summary.ok, result.warmup, result.abandoned) == (300, 300, 0, 0)
    assert server.requests == 300
    assert summary.rps > 0


def test_a_timed_run_accounts_for_every_request_the_server_received() -> None:
    with TrivialServer(Behaviour(delay_s=0.01)) as server:
        result = run(server.url, ChatScenario(), ClosedLoop(16, duration_s=1.0, ramp_up_s=0.3))
        received = _settled(server, len(result.samples) + result.warmup + result.abandoned)
    summary = summarize(result.samples, result.elapsed_s)
    _consistent(summary)
    assert summary.ok == summary.sent > 0
    assert result.warmup > 0  # the ramp-up's answers are not measured
    assert received == summary.sent + result.warmup + result.abandoned
    assert summary.elapsed_s == 1.0
    assert summary.rps == round(summary.ok / 1.0, 2)
    # Measured: answered within the window [0.3 s, 1.3 s] (start_s is rounded to 1 µs).
    assert all(0.3 - 1e-5 <= s.start_s + s.latency_s <= 1.3 + 1e-5 for s in result.samples)


def test_status_errors_are_counted_by_status() -> None:
    with TrivialServer(Behaviour(status=503)) as server:
        result = run(server.url, ChatScenario(), ClosedLoop(4, None, requests=40))
    summary = summarize(result.samples, result.elapsed_s)
    _consistent(summary)
    assert (summary.sent, summary.ok, summary.errors, summary.statuses) == (
        40,
        0,
        {"status": 40, "timeout": 0, "connection": 0},
        {503: 40},
    )
    assert summary.rps == 0.0


def test_a_hanging_server_gives_timeouts() -> None:
    with TrivialServer(Behaviour(hang=True)) as server:
        result = run(server.url, HealthScenario(), ClosedLoop(3, None, requests=6), timeout_s=0.2)
    summary = summarize(result.samples, result.elapsed_s)
    _consistent(summary)
    assert (summary.sent, summary.errors) == (6, {"status": 0, "timeout": 6, "connection": 0})
    # The deadline runs on the event loop's clock, which uvloop ticks in milliseconds.
    assert all(sample.latency_s >= 0.19 for sample in result.samples)
    assert server.requests == 6  # one per (re)opened connection: none was reused after it


def test_a_closed_port_gives_connection_errors() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run(url, HealthScenario(), ClosedLoop(2, None, requests=10), timeout_s=2)
    summary = summarize(result.samples, result.elapsed_s)
    _consistent(summary)
    assert (summary.sent, summary.errors) == (10, {"status": 0, "timeout": 0, "connection": 10})
    assert {sample.status for sample in result.samples} == {0}


def test_chat_users_continue_conversations_then_start_new_ones() -> None:
    with TrivialServer(Behaviour(record=True)) as server:
        run(server.url, ChatScenario(turns=3), ClosedLoop(1, None, requests=7))
    bodies = [json.loads(body) for body in server.bodies]
    # The trivial server answers session_id "trivial-N" to its N-th request.
    assert [body.get("session_id") for body in bodies] == [
        None,
        "trivial-1",
        "trivial-2",
        None,
        "trivial-4",
        "trivial-5",
        None,
    ]
    assert all(body["message"] for body in bodies)


def test_a_failed_turn_ends_the_conversation() -> None:
    with TrivialServer(Behaviour(status=500, record=True)) as server:
        run(server.url, ChatScenario(turns=5), ClosedLoop(1, None, requests=3))
    assert ["session_id" in json.loads(body) for body in server.bodies] == [False] * 3


def _open_loop_against_a_slow_server() -> RunResult:
    # One request at a time, 50 ms each: 20/s at most, while 40/s arrive, and one connection
    # so the queue builds up in the client, where only the intended send time can see it.
    with TrivialServer(Behaviour(delay_s=0.05, serial=True)) as server:
        load = OpenLoop(rate=40, duration_s=None, requests=30, max_in_flight=1)
        return run(server.url, HealthScenario(), load)


def test_open_loop_measures_from_the_intended_send_time() -> None:
    result = _open_loop_against_a_slow_server()
    summary = summarize(result.samples, result.elapsed_s)
    _consistent(summary)
    assert summary.sent == summary.ok == 30
    assert [s.start_s for s in result.samples] == [round(i / 40, 6) for i in range(30)]
    # Request i cannot end before (i + 1) x 50 ms, and was due at i x 25 ms.
    for i, sample in enumerate(result.samples):
        assert sample.latency_s >= 0.05 + 0.025 * i - 0.002
    latencies = [s.latency_s for s in result.samples]
    assert latencies[-1] > 5 * latencies[0]
