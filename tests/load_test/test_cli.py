"""`python -m load_test`: usage errors, the progress display, and a tiny `bench` through the
real command line against the real stacks."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from load_test.__main__ import build_parser, main, plan_from
from load_test.engine import ClosedLoop, Counters, OpenLoop
from load_test.progress import Display
from load_test.stats import summarize
from load_test.targets import STANDARD_TARGETS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],
        ["run", "--target", "flask"],
        ["run", "--url", "nourl"],
        ["bench", "--users", "0"],
        ["bench", "--users", "many"],
        ["walk"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "error" in capsys.readouterr().err


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
        display = Display(stream, "t @ 4 users", 10)
        display(Counters(sent=5, ok=3, errors=1, in_flight=1))
        display.finish(summarize([], 1.0))
    assert terminal.getvalue().startswith("\r\x1b[Kt @ 4 users")
    assert "sent 5  ok 3  errors 1  in flight 1" in terminal.getvalue()
    assert log.getvalue() == (
        "t @ 4 users: running\nt @ 4 users: 0.0 req/s, p50 0 ms, p99 0 ms, 0 ok, 0 errors\n"
    )


def test_a_tiny_bench_writes_consistent_figures(tmp_path: Path) -> None:
    argv = [
        sys.executable, "-m", "load_test", "bench",
        "--target", "flask-gunicorn-sync,fastapi-uvicorn",
        "--users", "2,4", "--duration", "0.6", "--ramp-up", "0.2", "--pause", "0",
        "--ceiling-duration", "0.5", "--agent-latency-ms", "5",
        "--workers", "1", "--sync-workers", "2",
        "--json", str(tmp_path / "bench" / "results.json"), "--report", str(tmp_path / "bench"),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "flask-gunicorn-sync @ 2 users: running" in done.stderr  # not a terminal: lines

    data = json.loads((tmp_path / "bench" / "results.json").read_text())
    runs = [(m["target"], m["load"]) for m in data["ceiling"] + data["measurements"]]
    assert runs == [
        ("client-ceiling", 2), ("client-ceiling", 4),
        ("flask-gunicorn-sync", 2), ("flask-gunicorn-sync", 4),
        ("fastapi-uvicorn", 2), ("fastapi-uvicorn", 4),
    ]  # fmt: skip
    for m in data["ceiling"] + data["measurements"]:
        s, lat = m["summary"], m["summary"]["latency"]
        assert s["sent"] == s["ok"] + sum(s["errors"].values()), m
        assert s["ok"] > 0 and s["rps"] > 0, m
        assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"], m
    for m in data["measurements"]:
        assert set(m["cpu"]) == {"client", "target", "dynamodb", "agent"}
        assert all(share >= 0 for share in m["cpu"].values())
    # The chat turns went through the agent emulator: its 5 ms are a floor for every turn.
    assert all(m["summary"]["latency"]["p50_ms"] >= 5 for m in data["measurements"])
    assert [c["denominator"] for c in data["comparisons"]] == ["flask-gunicorn-sync"] * 2
    assert data["config"]["agent_latency_ms"] == 5

    page = (tmp_path / "bench" / "index.html").read_text()
    assert page.count("<svg") == 3 and "fastapi-uvicorn" in page
    logs = {path.name for path in (tmp_path / "bench" / "logs").iterdir()}
    assert {"dynamodb.log", "agent.log", "fastapi-uvicorn.log"} <= logs
    table = done.stdout.splitlines()
    assert table[0].split()[:3] == ["target", "load", "req/s"]
    assert "at 4: fastapi-uvicorn / flask-gunicorn-sync throughput =" in done.stdout
