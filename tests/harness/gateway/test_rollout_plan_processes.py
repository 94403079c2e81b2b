"""Progressive rollouts end to end: `uvicorn gateway:app` as real processes over the real
stacks and the emulators, chat traffic flowing, the controller stepping the share by the
fleet's counters. FastAPI variants come by `GATEWAY_FASTAPI_APP` (rollout_variants.py)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from harness.local.emulators import LocalEmulators
from harness.local.processes import ServerProcess, run_server

from .rollout_variants import SLOWER_SECONDS

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
TOKEN = "plan-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LEASE_SECONDS = 2.0
GATEWAY = [sys.executable, "-m", "uvicorn", "gateway:app", "--host=127.0.0.1", "--port={port}"]
FINISHED = {"promoted", "rolled_back", "aborted"}


@contextmanager
def gateways(
    emulators: LocalEmulators, logs: Path, *, count: int = 1, **settings: str
) -> Iterator[list[ServerProcess]]:
    """`count` gateway processes sharing one new state table."""
    table = f"gw_plan_{uuid.uuid4().hex[:8]}"
    emulators.dynamodb.create_table(table)
    env = {
        **emulators.env(),
        "GATEWAY_STATE_TABLE": table,
        "GATEWAY_ADMIN_TOKEN": TOKEN,
        "GATEWAY_FASTAPI_PERCENT": "0",
        "GATEWAY_REFRESH_SECONDS": "0.25",
        "GATEWAY_FLEET_FLUSH_SECONDS": "0.25",
        "GATEWAY_CONTROLLER_LEASE_SECONDS": str(LEASE_SECONDS),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "LOG_LEVEL": "WARNING",
        **{f"GATEWAY_{name.upper()}": value for name, value in settings.items()},
    }
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                run_server(
                    f"gateway-{n}",
                    GATEWAY,
                    env=env,
                    log_path=logs / f"gateway-{n}.log",
                    ready_path="/_gateway/rollout",
                    cwd=ROOT,
                )
            )
            for n in range(count)
        ]


class Traffic:
    """Chat turns, each a new conversation (so the split draws for each), from `threads`
    threads to `url` until stopped; counts answers by (backend, status)."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.answers: Counter[tuple[str, int]] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._send) for _ in range(threads)]

    def _send(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                answer = client.post("/api/v1/chat", json={"message": "Hello there"})
                backend = answer.headers.get("x-dualstack-backend", "?")
                with self._lock:
                    self.answers[(backend, answer.status_code)] += 1

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def put_plan(url: str, **body: Any) -> dict[str, Any]:
    answer = httpx.put(f"{url}/_gateway/rollout/plan", json=body, headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    shown: dict[str, Any] = answer.json()
    return shown


def plan_of(url: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/_gateway/rollout/plan", timeout=10)
    assert answer.status_code == 200, answer.text
    shown: dict[str, Any] = answer.json()
    return shown


def wait_plan(url: str, until: Callable[[dict[str, Any]], bool], within: float) -> dict[str, Any]:
    """The plan once `until(plan)`; AssertionError with the last one seen after `within` s.
    Polled: the plan lives in another process, with no event to wait on."""
    deadline = time.monotonic() + within
    while True:
        plan = plan_of(url)
        if until(plan):
            return plan
        assert time.monotonic() < deadline, f"not reached within {within} s: {plan}"
        time.sleep(0.1)


def history(url: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/_gateway/rollout/history", headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    changes: list[dict[str, Any]] = answer.json()["changes"]
    return list(reversed(changes))  # oldest first


def percent(url: str) -> float:
    value: float = httpx.get(f"{url}/_gateway/rollout", timeout=10).json()["fastapi_percent"]
    return value


def plan_events(url: str) -> list[dict[str, Any]]:
    return [c for c in history(url) if "event" in c]


def test_a_healthy_fastapi_under_steady_traffic_is_promoted_through_every_step_in_order(
    emulators: LocalEmulators, tmp_path: Path
) -> None:
    with gateways(emulators, tmp_path) as (gateway,):
        with Traffic(gateway.url) as traffic:
            # Samples of 20 a stack at least: a healthy FastAPI's warm-up (its first
            # turns) must not read as a slower p99 on a handful of requests.
            put_plan(gateway.url, steps=[20, 50, 100], interval_seconds=1, min_requests=20)
            plan = wait_plan(gateway.url, lambda p: p["phase"] in FINISHED, within=60)
        assert percent(gateway.url) == 100
        events = plan_events(gateway.url)
    assert plan["phase"] == "promoted", plan
    moved = [(c["event"]["action"], c["new"]["fastapi_percent"]) for c in events]
    assert [m for m in moved if m[0] != "waiting"] == [
        ("started", 20),
        ("check", 50),
        ("promoted", 100),
    ]
    assert {c["actor"] for c in events[1:]} == {"controller"}
    passed = [c["event"]["check"] for c in events if c["event"]["action"] != "started"]
    assert [c["verdict"] for c in passed if c["verdict"] != "waiting"] == ["passed", "passed"]
    assert plan["failed_checks"] == 0
    assert traffic.answers[("fastapi", 200)] > 0 and traffic.answers[("flask", 200)] > 0
    assert {status for _, status in traffic.answers} == {200}


def test_a_fastapi_failing_a_fifth_of_chat_turns_is_rolled_back_to_where_the_plan_started(
    emulators: LocalEmulators, tmp_path: Path
) -> None:
    failing = {"fastapi_app": "rollout_variants:failing()"}
    with gateways(emulators, tmp_path, **failing) as (gateway,):
        with Traffic(gateway.url):
            changed = httpx.put(
                f"{gateway.url}/_gateway/rollout", json={"fastapi_percent": 5}, headers=AUTH
            )
            assert changed.status_code == 200
            put_plan(
                gateway.url,
                steps=[50, 100],
                interval_seconds=1,
                # Every fifth FastAPI turn fails: fifty turns hold ten errors, beyond doubt.
                min_requests=50,
                max_failed_checks=2,
            )
            plan = wait_plan(gateway.url, lambda p: p["phase"] in FINISHED, within=60)
        assert percent(gateway.url) == 5  # where the plan started
        last = plan_events(gateway.url)[-1]
    assert plan["phase"] == "rolled_back", plan
    checks = [c for c in plan["checks"] if c["verdict"] != "waiting"]
    # Within max_failed_checks intervals, plus one: every check with a verdict failed.
    assert [c["verdict"] for c in checks] == ["failed", "failed"]
    assert (last["actor"], last["event"]["action"]) == ("controller", "rolled_back")
    assert last["new"]["fastapi_percent"] == 5
    (gate,) = [g for g in last["event"]["check"]["gates"] if g["name"] == "error_rate"]
    assert gate["passed"] is False
    assert gate["thresholds"]["max_error_rate_increase"] == 0.01
    measured = gate["measured"]
    assert measured["flask_error_rate"] == 0
    assert 0.1 < measured["fastapi_error_rate"] < 0.3  # one in five, over a window
    assert measured["fastapi_requests"] >= 50 and measured["flask_requests"] >= 50


def test_a_fastapi_600_ms_slower_than_flask_fails_the_latency_gate(
    emulators: LocalEmulators, tmp_path: Path
) -> None:
    slow = {"fastapi_app": "rollout_variants:slow()"}
    with gateways(emulators, tmp_path, **slow) as (gateway,):
        with Traffic(gateway.url, threads=8):
            put_plan(
                gateway.url,
                steps=[50, 100],
                interval_seconds=1,
                min_requests=10,
                max_failed_checks=1,
            )
            plan = wait_plan(gateway.url, lambda p: p["phase"] in FINISHED, within=60)
        assert percent(gateway.url) == 0
    assert plan["phase"] == "rolled_back", plan
    gates = {g["name"]: g for g in plan["last_check"]["gates"]}
    assert gates["p99_latency"]["passed"] is False
    assert gates["p99_latency"]["measured"]["fastapi_p99_ms"] >= SLOWER_SECONDS * 1000
    assert gates["error_rate"]["passed"] is True  # slow, not failing


def test_without_traffic_the_plan_waits_and_a_person_can_pause_resume_or_abort_it(
    emulators: LocalEmulators, tmp_path: Path
) -> None:
    with gateways(emulators, tmp_path) as (gateway,):
        put_plan(gateway.url, steps=[10, 100], interval_seconds=1, min_requests=1)
        plan = wait_plan(gateway.url, lambda p: p["checks_made"] >= 2, within=30)
        assert (plan["phase"], plan["step"], plan["failed_checks"]) == ("waiting", 1, 0)
        assert percent(gateway.url) == 10
        assert {c["verdict"] for c in plan["checks"]} == {"waiting"}
        assert plan["last_check"]["requests"] == {"flask": 0, "fastapi": 0}
        # Entering waiting is audited once, not every idle interval.
        actions = [c["event"]["action"] for c in plan_events(gateway.url)]
        assert actions == ["started", "waiting"]

        url = f"{gateway.url}/_gateway/rollout"
        paused = httpx.post(f"{url}/plan/pause", headers=AUTH)
        assert (paused.status_code, paused.json()["phase"]) == (200, "paused")
        resumed = httpx.post(f"{url}/plan/resume", headers=AUTH)
        assert (resumed.status_code, resumed.json()["phase"]) == (200, "progressing")
        manual = httpx.put(url, json={"fastapi_percent": 3}, headers=AUTH)
        assert manual.status_code == 200
        assert plan_of(gateway.url)["phase"] == "paused"
        assert percent(gateway.url) == 3  # the person's share, kept while paused
        resumed = httpx.post(f"{url}/plan/resume", headers=AUTH)
        assert resumed.json()["current_percent"] == 10  # the step's share again
        aborted = httpx.post(f"{url}/plan/abort", headers=AUTH)
        assert (aborted.status_code, aborted.json()["phase"]) == (200, "aborted")
        assert httpx.post(f"{url}/plan/resume", headers=AUTH).status_code == 409
        actions = [(c["actor"], c["event"]["action"]) for c in plan_events(gateway.url)][2:]
        assert actions == [
            ("admin", "paused"),
            ("admin", "resumed"),
            ("admin", "paused"),
            ("admin", "resumed"),
            ("admin", "aborted"),
        ]
        metrics = httpx.get(f"{gateway.url}/_gateway/metrics").text
        assert 'dualstack_rollout_phase{phase="aborted"} 1.0' in metrics
        assert percent(gateway.url) == 10  # an abort keeps the share


def test_two_gateways_count_together_and_the_plan_survives_its_controllers_death(
    emulators: LocalEmulators, tmp_path: Path
) -> None:
    with gateways(emulators, tmp_path, count=2) as (one, two):
        put_plan(one.url, steps=[5, 10, 20, 40, 60, 80, 100], interval_seconds=1, min_requests=3)
        holder = wait_plan(one.url, lambda p: p["controller"]["holder"] is not None, within=10)
        held_by = holder["controller"]["holder"]
        pids = {str(one.pid): one, str(two.pid): two}
        leader = pids[held_by.split(":")[1]]
        other = two if leader is one else one
        # Traffic only to the gateway that does not hold the lease: its counters alone can
        # move the plan, and do.
        with Traffic(other.url):
            wait_plan(other.url, lambda p: p["step"] >= 2, within=30)
            os.killpg(leader.pid, signal.SIGKILL)  # no shutdown: the lease is not given up
            killed = time.monotonic()
            taken = wait_plan(
                other.url,
                lambda p: p["controller"]["holder"] not in (None, held_by),
                within=4 * LEASE_SECONDS,
            )
            handed_over = time.monotonic() - killed
            step = taken["step"]
            wait_plan(other.url, lambda p: p["step"] > step, within=30)
        assert handed_over <= 2 * LEASE_SECONDS, handed_over
        assert taken["controller"]["holder"].split(":")[1] == str(other.pid)
        events = [c["event"] for c in plan_events(other.url)]
        steps = [e["step"] for e in events if e["action"] in ("check", "promoted")]
        verdicts = [e["check"]["verdict"] for e in events if e["action"] == "check"]
        numbers = [e["check"]["number"] for e in events if "check" in e]
    # Every step once, in order: none applied twice across the handover.
    moved = [s for s, v in zip(steps, verdicts, strict=False) if v == "passed"]
    assert moved == list(range(2, 2 + len(moved))), steps
    assert len(numbers) == len(set(numbers))
