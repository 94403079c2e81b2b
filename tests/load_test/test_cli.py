"""`python -m load_test`: usage errors, the progress display, and a tiny `bench` through
`main()` (the command line, in this process) against the real stacks."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from harness.local.processes import free_port
from load_test.__main__ import build_parser, main, plan_from
from load_test.ceiling import TrivialServer
from load_test.engine import ClosedLoop, Counters, OpenLoop
from load_test.progress import ProgressLine
from load_test.stats import Sample, summarize
from load_test.targets import STANDARD_TARGETS


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],
        ["run", "--target", "flask"],
        ["run", "--url", "nourl"],
        ["bench", "--users", "0"],
        ["bench", "--users", "many"],
        ["walk"],
        ["run", "--target", "fastapi-uvicorn", "--turns", "0"],
        ["run", "--target", "fastapi-uvicorn", "--timeout", "0"],
        ["run", "--target", "fastapi-uvicorn", "--timeout", "-1"],
        ["run", "--target", "fastapi-uvicorn", "--requests", "0"],
        ["run", "--target", "fastapi-uvicorn", "--duration", "0"],
        ["run", "--target", "fastapi-uvicorn", "--ramp-up", "-1"],
        ["run", "--target", "fastapi-uvicorn", "--ceiling", "--ceiling-duration", "0"],
        ["run", "--target", "fastapi-uvicorn", "--json", "/dev/null/x.json"],
        ["run", "--target", "fastapi-uvicorn", "--report", "/dev/null/report"],
        ["run", "--target", "fastapi-uvicorn", "--json", "/"],
        ["run", "--url", "a=http://127.0.0.1:1/prefix"],
        ["overhead", "--json", "/dev/null/x.json"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # Each fails before anything is started: the tests would hang or take seconds if not.
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error" in err
    assert "Traceback" not in err


def test_an_unreachable_url_is_refused_up_front_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["run", "--url", f"mine={url}", "--duration", "30", "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"error: cannot reach mine at {url}: Connection refused"]


@pytest.mark.parametrize(
    ("load", "warmup"),
    [(["--users", "4"], 0), (["--users", "4", "--ramp-up", "1"], 25), (["--rate", "400"], 0)],
    ids=["closed", "closed-ramp-up", "open"],
)
def test_requests_caps_what_reaches_the_server(
    load: list[str], warmup: int, tmp_path: Path
) -> None:
    results = tmp_path / "results.json"
    with TrivialServer() as server:
        argv = ["run", "--url", f"trivial={server.url}", "--scenario", "health", *load]
        assert main([*argv, "--requests", "25", "--quiet", "--json", str(results)]) == 0
        received = server.requests
    (measured,) = json.loads(results.read_text())["measurements"]
    assert received == measured["sent"] == 25
    # Without a ramp-up every request is measured; with one (1 s, far longer than 25
    # requests to a trivial server take) its requests are warm-up, out of the same 25.
    assert (measured["warmup"], measured["summary"]["measured"]) == (warmup, 25 - warmup)


def test_requests_says_it_is_a_cap_warm_up_included(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--requests N instead of --duration: send N requests to each target at each load" in (
        help_text
    )
    assert "a hard cap: those sent during --ramp-up count, as warm-up" in help_text


def test_bench_defaults_are_the_standard_comparison(tmp_path: Path) -> None:
    plan = plan_from(build_parser().parse_args(["bench"]), tmp_path)
    assert plan.targets == STANDARD_TARGETS
    assert plan.loads == (ClosedLoop(64, 20.0, None, 5.0), ClosedLoop(256, 20.0, None, 5.0))
    assert plan.ceiling_loads == (ClosedLoop(64, 10.0, None, 2.0), ClosedLoop(256, 10.0, None, 2.0))
    assert (plan.scenario, plan.agent_latency_ms) == ("chat", 200.0)


def test_run_with_rates_is_open_loop(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["run", "--url", "a=http://127.0.0.1:1", "--rate", "5,10", "--requests", "50"]
    )
    plan = plan_from(args, tmp_path)
    assert plan.targets == ()
    assert plan.loads == (OpenLoop(5.0, None, 50, 1000), OpenLoop(10.0, None, 50, 1000))
    assert plan.ceiling_loads == ()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_in_place_on_a_terminal_and_not_in_a_log() -> None:
    terminal, log = _Terminal(), io.StringIO()
    for stream in (terminal, log):
        display = ProgressLine(stream, "t @ 4 users", 10)
        display(Counters(sent=5, ok=3, errors=1, in_flight=1))
        display.finish(summarize([], 1.0))
    assert terminal.getvalue().startswith("\r\x1b[Kt @ 4 users")
    assert "sent 5  ok 3  errors 1  in flight 1" in terminal.getvalue()
    # Nothing succeeded: no latency to show, rather than "p50 0 ms".
    assert (
        log.getvalue()
        == "t @ 4 users: running\nt @ 4 users: no successful answer, 0 ok, no errors\n"
    )
    mixed = io.StringIO()
    samples = [Sample(0, 0.012, "ok", 200), Sample(0, 0.3, "timeout"), Sample(0, 0, "connection")]
    ProgressLine(mixed, "t", None).finish(summarize(samples, 1.0))
    assert mixed.getvalue().splitlines()[1] == (
        "t: 1.0 req/s, p50 12 ms, p99 12 ms, 1 ok, 1 timeout, 1 connection errors"
    )


def test_a_tiny_bench_writes_consistent_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # One stack and one load (plus the ceiling), in this process, keep this to seconds:
    # starting the emulators and the stack is most of it. Comparisons between stacks are
    # tested purely in test_report.py.
    argv = [
        "bench",
        "--target", "fastapi-uvicorn",
        "--users", "2", "--duration", "0.3", "--ramp-up", "0.1", "--pause", "0",
        "--ceiling-duration", "0.2", "--agent-latency-ms", "5", "--workers", "1",
        "--json", str(tmp_path / "bench" / "results.json"), "--report", str(tmp_path / "bench"),
    ]  # fmt: skip
    code = main(argv)
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr[-3000:]
    assert "fastapi-uvicorn @ 2 users: running" in stderr  # not a terminal: lines

    data = json.loads((tmp_path / "bench" / "results.json").read_text())
    runs = [(m["target"], m["load"]) for m in data["ceiling"] + data["measurements"]]
    assert runs == [("client-ceiling", 2), ("fastapi-uvicorn", 2)]
    for m in data["ceiling"] + data["measurements"]:
        s, lat = m["summary"], m["summary"]["latency"]
        # `sent` is the engine's own count, made as it sent: every request is accounted for.
        assert m["sent"] == m["warmup"] + s["measured"], m
        assert s["measured"] == s["ok"] + sum(s["errors"].values()), m
        assert s["ok"] > 0 and s["rps"] > 0, m
        assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"], m
    (m,) = data["measurements"]
    assert set(m["cpu"]) == {"client", "target", "dynamodb", "agent"}
    assert all(share >= 0 for share in m["cpu"].values())
    # The chat turns went through the agent emulator: its 5 ms are a floor for every turn.
    assert m["summary"]["latency"]["p50_ms"] >= 5
    assert data["comparisons"] == []
    assert data["config"]["agent_latency_ms"] == 5

    page = (tmp_path / "bench" / "index.html").read_text()
    assert page.count("<svg") == 3 and "fastapi-uvicorn" in page
    logs = {path.name for path in (tmp_path / "bench" / "logs").iterdir()}
    assert {"dynamodb.log", "agent.log", "fastapi-uvicorn.log"} <= logs
    table = stdout.splitlines()
    assert table[0].split()[:3] == ["target", "load", "req/s"]
    row = table[3].split()  # the target's row, after the ceiling's
    assert row[0] == "fastapi-uvicorn"
    sent, warmup, ok, *errors = (int(cell) for cell in row[8:14])
    assert (sent, warmup, ok, sum(errors)) == (
        m["sent"], m["warmup"], m["summary"]["ok"], sum(m["summary"]["errors"].values()),
    )  # fmt: skip
