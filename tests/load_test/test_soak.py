"""The soak: its judgement (answers, memory, descriptors, rollout changes) from hand-made
readings, its readings of /proc and of the gateway's metrics, the faults it injects, and
one short soak through `main()` against the real emulators and gateway."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from harness.gateway.metrics import GatewayMetrics
from harness.gateway.policy import Rollout
from harness.local.emulators.faults import FAULTS, Fault, parse_directives
from load_test.__main__ import build_parser as build_cli
from load_test.__main__ import main, soak_plan_from
from load_test.client import Request, Response
from load_test.scenarios import ChatScenario
from load_test.soak import (
    CLOSE_WAIT,
    ESTABLISHED,
    FAULT_ANSWERS,
    FaultPlan,
    FaultyScenario,
    GroupFigures,
    Ledger,
    Limits,
    Reading,
    RolloutChange,
    SoakPlan,
    Verdict,
    busy_emulators,
    coarsen,
    drift,
    gateway_metrics,
    group_figures,
    judge,
    judge_soak,
    rollout_schedule,
    tcp_states,
    vm_rss_bytes,
    with_fault,
    with_latency,
)
from load_test.stats import Sample
from shared import contract

MB = 2**20


def _answer(status: int, error: str | None = None, *, retry_after: bool = False) -> Response:
    headers = {"content-type": "application/json"}
    if retry_after:
        headers["retry-after"] = "5"
    body = json.dumps({"error": error, "error_code": "x"} if error else {"response": "hi"})
    return Response(status, headers, body.encode())


SHED = "Service overloaded, retry later"
THROTTLED = _answer(503, contract.AGENT_THROTTLED, retry_after=True)
FAILED = _answer(502, contract.AGENT_FAILED)
BUSY = '503 "Agent is busy, retry later"'
BROKEN = '502 "Agent request failed"'
NO_ANSWER = "no answer (timeout or connection error)"


@pytest.mark.parametrize(
    ("fault", "response", "verdict"),
    [
        (None, _answer(200), Verdict("ok")),
        (None, _answer(503, SHED, retry_after=True), Verdict("error", f'503 "{SHED}"')),
        (None, _answer(500, "Oops"), Verdict("error", '500 "Oops"')),
        (None, Response(502, {}, b"<html>502</html>"), Verdict("error", "502 (no error message)")),
        (None, None, Verdict("error", NO_ANSWER)),
        ("throttle", THROTTLED, Verdict("fault")),
        ("stream-throttle", THROTTLED, Verdict("fault")),
        ("fail", FAILED, Verdict("fault")),
        ("stream-fail", FAILED, Verdict("fault")),
        ("denied", FAILED, Verdict("fault")),
        ("hang", _answer(504, contract.AGENT_TIMEOUT), Verdict("fault")),
        # A shed is a 503 with Retry-After too, but not the throttle's answer.
        ("throttle", _answer(503, SHED, retry_after=True),
         Verdict("error", f'throttle fault answered 503 "{SHED}", not {BUSY}')),
        ("throttle", _answer(503, contract.AGENT_THROTTLED),
         Verdict("error", f"throttle fault answered {BUSY} without Retry-After")),
        ("fail", _answer(502, contract.AGENT_FAILED, retry_after=True),
         Verdict("error", f"fail fault answered {BROKEN} with Retry-After")),
        ("fail", _answer(200),
         Verdict("error", f"fail fault answered 200 (no error message), not {BROKEN}")),
        ("denied", _answer(502, contract.AGENT_TIMEOUT),
         Verdict("error", f'denied fault answered 502 "Agent timed out", not {BROKEN}')),
        ("hang", None, Verdict("error", f"hang fault: {NO_ANSWER}")),
    ],
)  # fmt: skip
def test_judge(fault: Fault | None, response: Response | None, verdict: Verdict) -> None:
    assert judge(fault, response) == verdict


def test_every_fault_the_emulator_injects_has_a_contract_answer() -> None:
    assert set(FAULT_ANSWERS) == set(FAULTS)


def test_the_fault_plan_is_seeded_and_takes_the_faults_in_turn() -> None:
    always = FaultPlan(1.0, ("throttle", "hang"))
    assert [always.draw() for _ in range(5)] == ["throttle", "hang", "throttle", "hang", "throttle"]
    never = FaultPlan(0.0, ())
    assert {never.draw() for _ in range(1000)} == {None}
    draws = [FaultPlan(0.01, FAULTS, seed=7) for _ in range(2)]
    first, second = ([plan.draw() for _ in range(20_000)] for plan in draws)
    assert first == second  # the same seed, the same turns faulted
    assert 150 <= sum(f is not None for f in first) <= 250  # about 1 %
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="fault rate"):
            FaultPlan(bad, FAULTS)
    with pytest.raises(ValueError, match="at least one fault"):
        FaultPlan(0.5, ())


def test_a_faulted_turn_carries_the_directive_the_emulator_reads() -> None:
    body = {"message": "Where is my order?", "session_id": "s-1"}
    request = Request("POST", "/api/v1/chat", json.dumps(body).encode(), (("X-A", "b"),))
    faulted = with_fault(request, "stream-fail")
    sent = json.loads(faulted.body)
    assert sent == {"message": "Where is my order? [[emulator:stream-fail]]", "session_id": "s-1"}
    assert parse_directives(sent["message"]).fault == "stream-fail"
    assert (faulted.method, faulted.path, faulted.headers) == (
        request.method, request.path, request.headers,
    )  # fmt: skip


def test_the_faulty_scenario_judges_each_answer_against_its_own_turn() -> None:
    ledger = Ledger()
    scenario = FaultyScenario(ChatScenario(turns=3), FaultPlan(1.0, ("fail",)), ledger)
    user = scenario.new_user(0)
    first = user.next_request()
    assert ("Connection", "close") in first.headers
    assert parse_directives(json.loads(first.body)["message"]).fault == "fail"
    user.observe(_answer(502, contract.AGENT_FAILED))
    user.next_request()
    user.observe(_answer(200))  # a fault's turn answered 200: the directive was ignored
    assert (ledger.sent, ledger.ok, dict(ledger.faults)) == (2, 0, {"fail": 1})
    assert dict(ledger.errors) == {
        'fail fault answered 200 (no error message), not 502 "Agent request failed"': 1
    }
    assert ledger.examples[0]["status"] == 200 and ledger.examples[0]["fault"] == "fail"

    # Without faults the inner user's conversation goes on: the answered id is sent back.
    quiet = FaultyScenario(ChatScenario(turns=3), FaultPlan(0.0, ()), Ledger()).new_user(1)
    json.loads(quiet.next_request().body)
    quiet.observe(Response(200, {}, b'{"response": "hi", "session_id": "sess-9"}'))
    assert json.loads(quiet.next_request().body)["session_id"] == "sess-9"


def test_vm_rss_bytes() -> None:
    status = "Name:\tpython\nVmPeak:\t  300 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n"
    assert vm_rss_bytes(status) == 12345 * 1024
    assert vm_rss_bytes("Name:\tpython\nState:\tZ (zombie)\n") is None


TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 500 1
   1: 0100007F:1F90 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 501 1
   2: 0100007F:C350 0100007F:2328 01 00000000:00000000 00:00000000 00000000     0        0 502 1
   3: 0100007F:C351 0100007F:2328 08 00000000:00000000 00:00000000 00000000     0        0 503 1
   4: 0100007F:1F90 0100007F:A1B3 06 00000000:00000000 03:00001000 00000000     0        0 0 3
"""


def test_tcp_states_by_inode() -> None:
    # Listening, two established, one the peer closed; TIME_WAIT has no inode (no fd).
    assert tcp_states(TCP) == {500: 0x0A, 501: ESTABLISHED, 502: ESTABLISHED, 503: CLOSE_WAIT}


def _fake_process(proc: Path, pid: int, group: int, rss_kb: int | None, links: list[str]) -> None:
    folder = proc / str(pid)
    (folder / "fd").mkdir(parents=True)
    # A command name with ") " in it: the group is read after the last parenthesis.
    (folder / "stat").write_text(f"{pid} (odd) name) S 1 {group} {group} 0 -1\n")
    rss = f"VmRSS:\t{rss_kb} kB\n" if rss_kb is not None else ""
    (folder / "status").write_text(f"Name:\todd\n{rss}")
    for fd, target in enumerate(links):
        (folder / "fd" / str(fd)).symlink_to(target)
    (folder / "net").mkdir()
    (folder / "net" / "tcp").write_text(TCP)


def test_group_figures_add_up_the_group_s_live_processes(tmp_path: Path) -> None:
    files = ["/dev/null", "pipe:[7]", "anon_inode:[eventpoll]"]
    sockets = ["socket:[500]", "socket:[501]", "socket:[502]", "socket:[503]", "socket:[9]"]
    _fake_process(tmp_path, 100, 100, 1000, files + sockets)
    _fake_process(tmp_path, 101, 100, 500, ["/dev/null", "socket:[501]"])  # a worker
    _fake_process(tmp_path, 102, 100, None, [])  # a zombie: neither memory nor descriptors
    _fake_process(tmp_path, 200, 200, 9999, ["socket:[502]"] * 9)  # another group
    (tmp_path / "self").mkdir()
    # 10 descriptors; 3 of them open connections (501 twice, 502); 503 in CLOSE_WAIT;
    # the listening socket, the unix socket (9) and the files are neither.
    assert group_figures(100, tmp_path) == GroupFigures(1500 * 1024, 10, 2, 3, 1)
    assert group_figures(300, tmp_path) is None
    assert group_figures(100, tmp_path / "missing") is None


_CHILD = """
import socket, subprocess, sys
kept = []
for line in sys.stdin:
    command, *arguments = line.split()
    if command == "open":
        kept += [open(sys.executable, "rb") for _ in range(int(arguments[0]))]
    elif command == "connect":
        kept.append(socket.create_connection(("127.0.0.1", int(arguments[0]))))
    elif command == "alloc":
        kept.append(bytearray(int(arguments[0]) * 2**20))
    elif command == "spawn":
        kept.append(subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                     stdin=subprocess.PIPE))
    print("done", flush=True)
"""


def test_group_figures_of_a_real_process_group() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as child:
        stdin, stdout = child.stdin, child.stdout
        assert stdin is not None and stdout is not None

        def ask(command: str) -> GroupFigures:
            # The child answers once it has done it: the figures are read after that.
            stdin.write(command + "\n")
            stdin.flush()
            assert stdout.readline() == "done\n"
            figures = group_figures(child.pid)
            assert figures is not None
            return figures

        try:
            before = ask("open 0")
            opened = ask("open 7")
            with socket.create_server(("127.0.0.1", 0)) as server:
                connected = ask(f"connect {server.getsockname()[1]}")
            grown = ask("alloc 64")
            spawned = ask("spawn")
        finally:
            os.killpg(child.pid, signal.SIGKILL)  # the group this test started, and only it
            child.wait()
    assert before.processes == 1 and before.fds >= 3 and before.rss_bytes > 0
    assert before.connections == opened.connections == 0
    assert opened.fds - before.fds == 7
    # Connected (the handshake done: accepted or not, both ends are established).
    assert (connected.fds - opened.fds, connected.connections) == (1, 1)
    assert grown.rss_bytes - opened.rss_bytes >= 60 * MB
    assert spawned.processes == 2
    assert spawned.rss_bytes > grown.rss_bytes and spawned.fds > grown.fds


def test_gateway_metrics_read_the_gateway_s_own_exposition() -> None:
    metrics = GatewayMetrics()
    metrics.shed["flask"] += 3
    metrics.shed["fastapi"] += 2
    metrics.set_rollout(Rollout(30.0, {"/api/v2": 70.0}))
    body, _ = metrics.render()
    assert gateway_metrics(body.decode()) == (5, 30.0)
    assert gateway_metrics(GatewayMetrics().render()[0].decode()) == (0, None)


def test_drift_compares_medians_of_windows_that_never_overlap() -> None:
    values = [10.0, 11.0, 10.0, 12.0, 30.0, 31.0, 29.0]
    found = drift(values, 3)
    assert found is not None
    assert (found.baseline, found.end, found.window, found.change) == (10.0, 30.0, 3, 20.0)
    assert found.growth == 2.0
    shrunk = drift([1.0, 2.0, 3.0, 4.0, 5.0], 10)
    assert shrunk is not None and (shrunk.baseline, shrunk.end, shrunk.window) == (1.5, 4.5, 2)
    assert drift([5.0], 3) is None


def _reading(t: float, rss_mb: float, held: int, ok: int = 10, errors: int = 0) -> Reading:
    # `held` descriptors, and as many open connections again: those are never judged.
    return Reading(
        t_s=t,
        span_s=1.0 if t else 0.0,
        rss_bytes=int(rss_mb * MB),
        fds=2 * held,
        connections=held,
        close_wait=0,
        held=held,
        processes=1,
        percent=50.0,
        sheds_total=0,
        sent_total=int(t * 10),
        sheds=0,
        ok=ok,
        faults=0,
        errors=errors,
    )


def _judge(readings: list[Reading], **overrides: object) -> list[str]:
    options: dict[str, object] = {
        "errors": {},
        "rollouts": [RolloutChange(5.0, 30.0, 200)],
        "warmup_s": 2.0,
        "load_s": 10.0,
        "interval_s": 1.0,
        "limits": Limits(rss_growth=0.10, fd_slack=10, window_s=3.0),
    }
    options.update(overrides)
    return list(judge_soak(readings, **options).failures)  # type: ignore[arg-type]


def _steady(rss_end: float = 100.0, fds_end: int = 40) -> list[Reading]:
    # Warm-up readings far below, three at the baseline, middle ones, three at the end,
    # then a drain reading after the load that is never judged.
    warmup = [_reading(0, 20, 5), _reading(1, 60, 15)]
    baseline = [_reading(t, 100, 40) for t in (2, 3, 4)]
    middle = [_reading(t, 100, 40) for t in (5, 6, 7)]
    end = [_reading(t, rss_end, fds_end) for t in (8, 9, 10)]
    return [*warmup, *baseline, *middle, *end, _reading(11, 500, 900)]


def test_a_clean_soak_passes_whatever_the_warm_up_and_the_drain_did() -> None:
    judgement = judge_soak(
        _steady(), {}, [], warmup_s=2.0, load_s=10.0, interval_s=1.0, limits=Limits(window_s=3)
    )
    assert judgement.passed and judgement.failures == ()
    assert judgement.rss is not None and judgement.fds is not None
    assert (judgement.rss.baseline, judgement.rss.end) == (100 * MB, 100 * MB)
    assert (judgement.fds.baseline, judgement.fds.end, judgement.fds.window) == (40, 40, 3)


def test_memory_growth_fails_just_past_the_limit() -> None:
    assert _judge(_steady(rss_end=110.0)) == []  # exactly +10 %
    assert _judge(_steady(rss_end=110.0 + 1 / MB)) == [
        "resident memory grew 10.0% after the warm-up (100.0 MB -> 110.0 MB), over the 10% limit"
    ]


def test_a_descriptor_leak_fails_just_past_the_slack() -> None:
    assert _judge(_steady(fds_end=50)) == []
    assert _judge(_steady(fds_end=51)) == [
        "descriptors other than open connections grew by 11 after the warm-up (40 -> 51), "
        "over the slack of 10"
    ]


def test_one_high_reading_in_a_window_decides_nothing() -> None:
    readings = _steady()
    readings[-2] = _reading(10, 300, 400)  # the last reading of the load: a burst
    assert _judge(readings) == []


def test_unexpected_answers_refused_rollouts_and_an_exited_gateway_fail() -> None:
    errors = {'503 "Service overloaded, retry later"': 7, "no answer": 1, "b": 1, "c": 1}
    rollouts = [RolloutChange(5.0, 30.0, 200), RolloutChange(6.0, 70.0, 503)]
    rollouts.append(RolloutChange(7.0, 50.0, 0))
    assert _judge(_steady(), errors=errors, rollouts=rollouts, gateway_exited=True) == [
        "the gateway exited during the soak",
        '10 unexpected error(s): 7 x 503 "Service overloaded, retry later", 1 x no answer, 1 x b',
        "the rollout change to 70 % at 6 s answered 503",
        "the rollout change to 50 % at 7 s got no answer",
    ]


def test_too_few_readings_after_the_warm_up_cannot_pass() -> None:
    readings = [_reading(0, 100, 40), _reading(1, 100, 40), _reading(2, 100, 40)]
    assert _judge(readings) == [
        "1 reading(s) after the warm-up: too few to judge memory and descriptors "
        "(at least 2 are needed)"
    ]


def test_a_busy_emulator_is_named_from_the_threshold_on() -> None:
    cpu = [{"dynamodb": 0.5, "agent": 0.1}, {"dynamodb": 0.75}, {"dynamodb": 0.99}, {}]
    readings = [replace(_reading(t, 100, 40), cpu=shares) for t, shares in enumerate(cpu)]
    assert busy_emulators(readings) == [
        "note: the dynamodb emulator (one interpreter) used 75% of a core or more in 2 of 3 "
        "readings (at most 99%): where it did, it, not the gateway, bounded the run"
    ]
    assert busy_emulators(readings[:1]) == []


def test_rollout_schedule() -> None:
    assert rollout_schedule(600, 60, (30, 50, 70, 50)) == [
        (60, 30), (120, 50), (180, 70), (240, 50), (300, 30),
        (360, 50), (420, 70), (480, 50), (540, 30),
    ]  # fmt: skip
    assert rollout_schedule(61, 60, (30,)) == [(60, 30)]
    assert rollout_schedule(60, 60, (30,)) == []  # none at the load's very end


def test_latency_per_reading_and_merged_readings_for_the_charts() -> None:
    samples = [
        Sample(0.1, 0.2, "ok", 200),  # ends at 0.3: the first span
        Sample(0.5, 0.5, "ok", 200),  # ends at 1.0: on the boundary, still the first span
        Sample(1.0, 0.1, "status", 503),  # an error's latency counts nowhere
        Sample(1.2, 0.4, "ok", 200),  # ends at 1.6: the second span
        Sample(2.5, 0.3, "ok", 200),  # ends at 2.8: the third
    ]
    readings = [_reading(0, 100, 40), _reading(1, 100, 40), _reading(2, 101, 44)]
    readings.append(_reading(3, 102, 41, ok=5, errors=1))
    filled = with_latency(readings, samples)
    assert [(r.p50_ms, r.p99_ms) for r in filled] == [
        (None, None), (350.0, 497.0), (400.0, 400.0), (300.0, 300.0),
    ]  # fmt: skip
    assert coarsen(filled, samples, 4) == filled
    first, second = coarsen(filled, samples, 2)
    assert (first.t_s, first.span_s, first.held, first.ok) == (1, 1.0, 40, 20)
    assert (second.t_s, second.span_s, second.held, second.fds, second.ok, second.errors) == (
        3, 2.0, 44, 88, 15, 1,
    )  # fmt: skip
    assert second.rss_bytes == 102 * MB
    assert (second.p50_ms, second.p99_ms) == (350.0, 399.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["soak", "--minutes", "0"],
        ["soak", "--fault-rate", "2"],
        ["soak", "--faults", "throttle,nope"],
        ["soak", "--percents", "30,120"],
        ["soak", "--agent-timeout", "30", "--timeout", "30"],
        ["soak", "--minutes", "1", "--warmup", "60"],
        ["soak", "--capacity-users", "2.5"],
        ["soak", "--interval", "0"],
        ["soak", "--report", "/dev/null/soak"],
    ],
)
def test_soak_usage_errors_exit_2_before_anything_starts(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err


def test_the_soak_command_s_defaults_are_the_issue_s_soak() -> None:
    plan = soak_plan_from(build_cli().parse_args(["soak"]))
    defaults = SoakPlan(log_dir=Path("reports/soak/logs"))
    assert plan == defaults
    assert (plan.duration_s, plan.start_percent, plan.fault_rate, plan.load_fraction) == (
        600, 50, 0.01, 0.7,
    )  # fmt: skip
    assert (plan.warmup, plan.interval_s, plan.rollout_every_s) == (60, 5, 60)
    assert plan.limits == Limits(rss_growth=0.10, fd_slack=10, window_s=30)


def test_a_short_soak_recognises_every_injected_fault(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Seconds instead of minutes: a tiny capacity step, a fifth of it as the rate, readings
    # every half second, a rollout change every 1.5 s, a quarter of the turns faulted (a
    # hung agent's 504 coming after 4 s). 4 s, not less: the agent's three attempts wait up
    # to 1 + 2 s between them, and a retry that starts just before the deadline is cut by
    # it, so a failing agent would now and then answer 504 instead of 502.
    report = tmp_path / "soak"
    argv = [
        "soak", "--minutes", "0.08", "--interval", "0.5", "--warmup", "1", "--window", "1",
        "--capacity-users", "2", "--capacity-seconds", "1", "--load-fraction", "0.2",
        "--rollout-every", "1.5", "--percents", "30,70", "--fault-rate", "0.25",
        "--agent-timeout", "4", "--timeout", "10", "--agent-latency-ms", "5",
        "--report", str(report),
    ]  # fmt: skip
    (report / "logs").mkdir(parents=True)
    (report / "logs" / "gateway.log").write_text("an earlier run's\n")
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, out + err[-3000:]
    lines = out.splitlines()
    assert lines[0].startswith("soak PASSED: 0.08 min of chat turns at ")
    assert lines[-1] == f"report: {report / 'index.html'} (figures: {report / 'soak.json'})"

    data = json.loads((report / "soak.json").read_text())
    assert (data["verdict"], data["failures"]) == ("pass", [])
    assert data["rate"] == round(data["capacity"]["rps"] * 0.2, 1) > 0
    totals = data["totals"]
    # Every turn sent was judged; every injected fault came back as its contract answer.
    assert (
        totals["sent"] == totals["answered"] == totals["ok"] + sum(totals["fault_answers"].values())
    )
    assert totals["errors"] == {} and totals["sheds"] == 0
    assert totals["fault_answers"] == totals["faults_injected"]
    assert sum(totals["faults_injected"].values()) > 0
    assert [(c["at_s"], c["percent"], c["status"]) for c in data["rollouts"]] == [
        (1.5, 30, 200), (3.0, 70, 200), (4.5, 30, 200),
    ]  # fmt: skip

    readings = data["readings"]
    times = [r["t_s"] for r in readings]
    assert times[0] == 0 and times == sorted(times) and times[-1] >= 4.8
    for r in readings:
        assert r["rss_bytes"] > 10 * MB and r["processes"] >= 1, r
        assert r["fds"] == r["connections"] + r["held"] and r["held"] > 0, r
    # The load's connections (one per turn) are open ones while it runs.
    assert max(r["connections"] for r in readings) > 0
    # The gateway's own percentage, read from its metrics, followed the changes.
    assert {r["percent"] for r in readings} == {50, 30, 70}
    assert all(r["sheds_total"] is not None for r in readings)
    # The readings' counts, each of its own span, add up to the totals.
    assert sum(r["ok"] for r in readings) == totals["ok"]
    assert sum(r["faults"] for r in readings) == sum(totals["fault_answers"].values())
    assert sum(r["errors"] for r in readings) == 0
    assert any(r["p99_ms"] for r in readings)

    pid = data["gateway"]["pid"]
    assert not Path(f"/proc/{pid}").exists()  # stopped (and reaped) when the soak ended
    page = (report / "index.html").read_text()
    assert page.count("<svg") == 7 and "soak PASSED" in page
    assert {"gateway.log", "dynamodb.log", "agent.log"} <= {
        p.name for p in (report / "logs").iterdir()
    }
    assert "an earlier run's" not in (report / "logs" / "gateway.log").read_text()
