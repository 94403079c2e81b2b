"""How targets are started (pure), and one started for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from load_test import targets
from load_test.targets import Launch, Workers

PY = (sys.executable, "-m")
UVICORN = ("--host", "127.0.0.1", "--port", "{port}", "--no-access-log", "--log-level", "warning")
GUNICORN = (*PY, "gunicorn", "legacy_flask:create_app()", "--bind", "127.0.0.1:{port}")
WORKERS = Workers(sync_workers=5, workers=2, threads=16, wsgi_threads=10)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "flask-gunicorn-sync",
            Launch(
                (*GUNICORN, "--backlog", "2048", "--worker-class", "sync", "--workers", "5"),
                {},
                "/health",
                "gunicorn, 5 sync workers",
            ),
        ),
        (
            "flask-gunicorn-threads",
            Launch(
                (*GUNICORN, "--backlog", "2048", "--worker-class", "gthread", "--workers", "2",
                 "--threads", "16"),
                {},
                "/health",
                "gunicorn, 2 gthread workers x 16 threads",
            ),
        ),
        (
            "flask-a2wsgi",
            Launch(
                (*PY, "uvicorn", "--factory", "load_test.a2wsgi_app:create_app", *UVICORN,
                 "--workers", "2"),
                {"LOAD_TEST_WSGI_THREADS": "10"},
                "/health",
                "uvicorn, 2 workers, a2wsgi 10 threads",
            ),
        ),
        (
            "fastapi-uvicorn",
            Launch(
                (*PY, "uvicorn", "fastapi_app.main:app", *UVICORN, "--workers", "2"),
                {},
                "/health",
                "uvicorn, 2 workers",
            ),
        ),
        (
            "client-ceiling",
            Launch(
                (*PY, "load_test.ceiling", "--port", "{port}"),
                {},
                "/",
                "trivial asyncio server answering at once",
            ),
        ),
    ],
)  # fmt: skip
def test_launch(name: str, expected: Launch) -> None:
    assert targets.launch(name, WORKERS) == expected


def test_each_gateway_gets_its_percentage_and_a_table_of_its_own() -> None:
    first, second = (targets.launch("gateway-37.5", WORKERS) for _ in range(2))
    assert first.argv == (*PY, "uvicorn", "gateway:app", *UVICORN, "--workers", "2")
    assert {k: v for k, v in first.env.items() if k != "GATEWAY_STATE_TABLE"} == {
        "GATEWAY_FASTAPI_PERCENT": "37.5",
        "GATEWAY_WSGI_THREADS": "10",
    }
    assert first.env["GATEWAY_STATE_TABLE"] != second.env["GATEWAY_STATE_TABLE"]


@pytest.mark.parametrize(
    ("name", "percent"),
    [("gateway-50", 50.0), ("gateway-0", 0.0), ("gateway-100", 100.0), ("gateway-12.5", 12.5),
     ("gateway-101", None), ("gateway-", None), ("gateway-x", None), ("fastapi-uvicorn", None)],
)  # fmt: skip
def test_gateway_percent(name: str, percent: float | None) -> None:
    assert targets.gateway_percent(name) == percent


@pytest.mark.parametrize(
    ("name", "known"),
    [("flask-gunicorn-sync", True), ("gateway-50", True), ("client-ceiling", True),
     ("flask", False), ("gateway-200", False)],
)  # fmt: skip
def test_is_known(name: str, known: bool) -> None:
    assert targets.is_known(name) is known


def test_url_targets() -> None:
    target = targets.parse_url_target("staging=http://10.0.0.5:8000/")
    assert (target.name, target.url, target.process) == ("staging", "http://10.0.0.5:8000", None)
    assert target.cpu_seconds() is None
    bad_urls = ("http://10.0.0.5", "x=https://secure", "sp ace=http://h:1", "x=http://h:1/prefix",
                "x=http://h:1/?q=1", "x=http://:1", "x=http://h:port")  # fmt: skip
    for bad in bad_urls:
        with pytest.raises(ValueError, match="name=http"):
            targets.parse_url_target(bad)


def test_a_started_target_serves_is_measured_and_is_gone_after(tmp_path: Path) -> None:
    with targets.started(
        "client-ceiling", workers=WORKERS, emulators=None, log_dir=tmp_path
    ) as target:
        assert httpx.get(target.url).status_code == 200
        assert target.process is not None
        cpu = target.cpu_seconds()
        assert cpu is not None and cpu >= 0
        process = target.process.process
    assert process.poll() is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(target.url)


def _unreaped(pid: int) -> bool:
    # A child not reaped yet (running or a zombie) still holds its id, its group's too.
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] == b"Z"
    except FileNotFoundError:
        return True


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


# The leader dies on SIGTERM; its worker ignores SIGTERM and stays in the group.
_LEADER_WITH_A_STUBBORN_WORKER = """
import os, signal, sys, time
if os.fork() == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(sys.argv[1] + ".tmp", "w") as out:
        out.write(str(os.getpid()))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""


def test_stop_signals_the_group_only_while_the_leader_holds_its_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid_file = tmp_path / "worker.pid"
    argv = (sys.executable, "-c", _LEADER_WITH_A_STUBBORN_WORKER, str(pid_file))
    server = targets.ServerProcess("stubborn", argv, env={}, log_path=tmp_path / "s.log")
    _wait_for(pid_file.exists, "the worker did not start")
    worker = int(pid_file.read_text())
    real_killpg = os.killpg
    signalled: list[tuple[int, bool]] = []

    def killpg(group: int, signum: int) -> None:
        assert group == server.pid
        signalled.append((signum, _unreaped(server.pid)))
        real_killpg(group, signum)

    monkeypatch.setattr(os, "killpg", killpg)
    server.stop(grace_s=10)
    assert signalled == [(signal.SIGTERM, True), (signal.SIGKILL, True)]
    assert not _unreaped(server.pid)  # reaped in the end
    _wait_for(lambda: _gone(worker), "the worker outlived stop()")


def test_reading_the_exports_gives_up_at_its_deadline(tmp_path: Path) -> None:
    argv = (sys.executable, "-c", "import time; time.sleep(600)")
    server = targets.ServerProcess(
        "silent", argv, env={}, log_path=tmp_path / "s.log", stdout=subprocess.PIPE
    )
    try:
        with pytest.raises(RuntimeError, match="silent did not start"):
            server.read_exports("LAST", timeout_s=0.5)
    finally:
        server.stop(grace_s=10)


# The exports, then far more output than a pipe holds (64 KiB), then exit.
_CHATTY = """
import sys
print("export A=1")
print("export LAST=2", flush=True)
for n in range(400):
    print("x" * 1023)
print("the end", flush=True)
"""


def test_output_after_the_exports_goes_to_the_log_not_into_a_full_pipe(tmp_path: Path) -> None:
    log = tmp_path / "chatty.log"
    argv = (sys.executable, "-c", _CHATTY)
    server = targets.ServerProcess("chatty", argv, env={}, log_path=log, stdout=subprocess.PIPE)
    try:
        assert server.read_exports("LAST", timeout_s=60) == {"A": "1", "LAST": "2"}
        # Blocked on a full pipe, it would never exit by itself.
        _wait_for(server.exited, "the process blocked writing its output")
    finally:
        server.stop(grace_s=10)
    text = log.read_text()
    assert text.count("x" * 1023) == 400 and text.endswith("the end\n")
