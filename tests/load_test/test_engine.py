"""Short runs against real servers on loopback: the figures must be consistent with what
the servers saw, errors counted by kind, open-loop latency taken from the intended time.
Nothing here asserts how fast anything is, only orderings and counts."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from harness.local.processes import free_port
from load_test import engine
from load_test.ceiling import Behaviour, TrivialServer
from load_test.engine import BACKOFF_FIRST_S, BACKOFF_MAX_S, ClosedLoop, OpenLoop, RunResult, run
from load_test.scenarios import ChatScenario, HealthScenario
from load_test.stats import Latency, Summary, summarize


def _consistent(result: RunResult) -> Summary:
    # `sent` is counted by the engine as it sends, apart from the samples: a request lost
    # on the way (cancelled, dropped at the window's end) breaks this.
    summary = summarize(result.samples, result.elapsed_s)
    assert result.sent == summary.measured + result.warmup
    assert summary.measured == summary.ok + sum(summary.errors.values())
    lat = summary.latency
    assert 0 <= lat.p50_ms <= lat.p90_ms <= lat.p99_ms <= lat.max_ms
    return summary


def _settled(server: TrivialServer, expected: int) -> int:
    # The server thread may still be parsing the last bytes the client wrote. Generous for
    # a loaded machine: the wait only runs to its deadline when the counts disagree.
    deadline = time.monotonic() + 30
    while server.requests != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return server.requests


def test_a_request_count_is_exactly_what_is_sent_and_measured() -> None:
    with TrivialServer() as server:
        result = run(server.url, HealthScenario(), ClosedLoop(8, None, requests=300))
    summary = _consistent(result)
    assert (result.sent, summary.ok, result.warmup) == (300, 300, 0)
    assert server.requests == 300
    assert summary.rps > 0


@pytest.mark.parametrize(
    "load",
    [
        # Warm-up included: the ramp-up's requests count towards the cap.
        ClosedLoop(8, None, requests=60, ramp_up_s=0.1),
        OpenLoop(rate=400, duration_s=None, requests=60, max_in_flight=8),
    ],
    ids=["closed", "open"],
)
def test_a_request_count_is_a_hard_cap(load: ClosedLoop | OpenLoop) -> None:
    with TrivialServer(Behaviour(delay_s=0.02)) as server:
        result = run(server.url, ChatScenario(), load)
        received = server.requests  # every request was answered: none is still arriving
    summary = _consistent(result)
    assert received == result.sent == summary.measured + result.warmup == 60
    assert summary.ok == summary.measured > 0
    # At most 8 users x 5 answers fit in the 0.1 s ramp-up: some are measured, some not.
    assert (result.warmup > 0) is isinstance(load, ClosedLoop)


def test_a_timed_run_accounts_for_every_request_the_server_received() -> None:
    with TrivialServer(Behaviour(delay_s=0.01)) as server:
        result = run(server.url, ChatScenario(), ClosedLoop(16, duration_s=1.0, ramp_up_s=0.3))
        received = _settled(server, result.sent)
    summary = _consistent(result)
    assert summary.ok == summary.measured > 0
    assert result.warmup > 0  # the ramp-up's answers are not measured
    assert received == result.sent
    # Measured: answered from the window's start (0.3 s) on, the last ones drained after
    # its end (1.3 s); the span runs to the last answer (start_s is rounded to 1 µs).
    ends = [s.start_s + s.latency_s for s in result.samples]
    assert min(ends) >= 0.3 - 1e-5
    assert abs(result.elapsed_s - max(1.0, max(ends) - 0.3)) < 1e-4
    assert summary.rps == round(summary.ok / result.elapsed_s, 2)


def test_status_errors_are_counted_by_status() -> None:
    with TrivialServer(Behaviour(status=503)) as server:
        result = run(server.url, ChatScenario(), ClosedLoop(4, None, requests=40))
    summary = _consistent(result)
    assert (result.sent, summary.ok, summary.errors, summary.statuses) == (
        40,
        0,
        {"status": 40, "timeout": 0, "connection": 0},
        {503: 40},
    )
    assert summary.rps == 0.0


def test_a_hanging_server_gives_timeouts() -> None:
    with TrivialServer(Behaviour(hang=True)) as server:
        result = run(server.url, HealthScenario(), ClosedLoop(3, None, requests=6), timeout_s=0.2)
    summary = _consistent(result)
    assert (result.sent, summary.errors) == (6, {"status": 0, "timeout": 6, "connection": 0})
    # The deadline runs on the event loop's clock, which uvloop ticks in milliseconds.
    assert all(sample.latency_s >= 0.19 for sample in result.samples)
    assert server.requests == 6  # one per (re)opened connection: none was reused after it


def test_a_closed_port_gives_connection_errors() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run(url, HealthScenario(), ClosedLoop(2, None, requests=10), timeout_s=2)
    summary = _consistent(result)
    assert (result.sent, summary.errors) == (10, {"status": 0, "timeout": 0, "connection": 10})
    assert {sample.status for sample in result.samples} == {0}


def test_a_hung_server_accounts_for_every_request_as_a_timeout() -> None:
    # Every request is in flight when the window closes: none may vanish from the figures.
    with TrivialServer(Behaviour(hang=True)) as server:
        load = ClosedLoop(8, duration_s=1.0, ramp_up_s=0.2)
        result = run(server.url, HealthScenario(), load, timeout_s=0.3)
        received = _settled(server, result.sent)
    summary = _consistent(result)
    assert summary.ok == 0 and summary.measured > 0
    assert summary.errors == {"status": 0, "timeout": summary.measured, "connection": 0}
    assert received == result.sent  # what the server saw, counted on its side
    # Each of the 8 users had a request in flight at the window's end: all drained, and
    # measured (timed out at 0.3 s, after the window's start at 0.2 s).
    assert summary.measured >= 8
    assert summary.latency == Latency()  # nothing succeeded: no latency figures


def test_refused_connections_are_retried_after_a_pause_not_in_a_spin() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    window = 0.5
    result = run(url, HealthScenario(), ClosedLoop(2, duration_s=window), timeout_s=2)
    summary = _consistent(result)
    assert summary.errors["connection"] == summary.measured == result.sent > 0
    # Pauses double from BACKOFF_FIRST_S: at most this many attempts fit in the window per
    # user, however fast the machine (a spinning client makes thousands).
    attempts, pause, spent = 1, BACKOFF_FIRST_S, 0.0
    while spent < window:
        spent += pause
        pause = min(2 * pause, BACKOFF_MAX_S)
        attempts += 1
    assert result.sent <= 2 * attempts


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
    summary = _consistent(result)
    assert result.sent == summary.ok == 30
    assert [s.start_s for s in result.samples] == [round(i / 40, 6) for i in range(30)]
    # Request i cannot end before (i + 1) x 50 ms, and was due at i x 25 ms.
    for i, sample in enumerate(result.samples):
        assert sample.latency_s >= 0.05 + 0.025 * i - 0.002
    latencies = [s.latency_s for s in result.samples]
    assert latencies[-1] > 5 * latencies[0]


def test_a_pause_lasts_until_the_clock_says_so_whatever_the_timer_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An event loop's timer can fire early (uvloop counts from its cached time): the pause
    # sleeps again until the clock reaches its deadline.
    now = [0.0]
    slept: list[float] = []

    async def early(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds / 2  # every wake-up comes halfway

    monkeypatch.setattr(engine, "clock", lambda: now[0])
    monkeypatch.setattr(engine.asyncio, "sleep", early)
    asyncio.run(engine._sleep_until(1.0))
    assert now[0] >= 1.0
    assert slept[:2] == [1.0, 0.5]  # slept again for what was left
