"""Child server processes and the stop signals: real processes, real signals."""

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

from harness.local.processes import ServerProcess, StopSignals, run_server

# A server that answers once it has printed a line, on the port it is given.
_SERVER = """
import http.server, sys
print("serving", flush=True)
http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port=int(sys.argv[1]),
                 bind="127.0.0.1")
"""


def test_run_server_yields_once_the_server_answers_and_stops_it_after(tmp_path: Path) -> None:
    argv = (sys.executable, "-c", _SERVER, "{port}")
    with run_server(
        "files", argv, env={}, log_path=tmp_path / "files.log", ready_path="/", cwd=tmp_path
    ) as server:
        answer = httpx.get(f"{server.url}/files.log")
        process = server.process
    assert answer.status_code == 200 and "serving" in answer.text  # cwd was tmp_path
    assert process.returncode == -signal.SIGTERM  # stopped by the signal, not killed
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url)


def test_a_server_that_fails_to_start_says_why_with_its_own_output_only(tmp_path: Path) -> None:
    log = tmp_path / "broken.log"
    log.write_text("an earlier run's line\n")
    argv = (sys.executable, "-c", "import sys; sys.exit('no such thing as {port}')")
    with (
        pytest.raises(RuntimeError) as error,
        run_server("broken", argv, env={}, log_path=log, ready_path="/") as server,
    ):
        raise AssertionError(f"{server.name} is not supposed to start")
    name, _, tail = str(error.value).partition("\n")
    assert name == "broken did not start:"
    assert tail.startswith("no such thing as ") and tail.rstrip()[-1].isdigit()
    assert log.read_text().startswith("an earlier run's line\n")  # appended to, not replaced


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
    server = ServerProcess("stubborn", argv, env={}, log_path=tmp_path / "s.log")
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
    server = ServerProcess(
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
    server = ServerProcess("chatty", argv, env={}, log_path=log, stdout=subprocess.PIPE)
    try:
        assert server.read_exports("LAST", timeout_s=60) == {"A": "1", "LAST": "2"}
        # Blocked on a full pipe, it would never exit by itself.
        _wait_for(server.exited, "the process blocked writing its output")
    finally:
        server.stop(grace_s=10)
    text = log.read_text()
    assert text.count("x" * 1023) == 400 and text.endswith("the end\n")


def test_stop_signals_ask_to_stop_and_the_former_handlers_come_back() -> None:
    before = {signum: signal.getsignal(signum) for signum in StopSignals.SIGNALS}
    for signum in StopSignals.SIGNALS:
        with StopSignals() as stop:
            assert stop.wait(until=lambda: True, interval_s=0.01) is False
            assert not stop.requested
            os.kill(os.getpid(), signum)  # neither KeyboardInterrupt nor the end of pytest
            assert stop.requested
            assert stop.wait() is True  # kept: returns at once
    assert {signum: signal.getsignal(signum) for signum in StopSignals.SIGNALS} == before


def test_a_leader_reaped_elsewhere_is_never_signalled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Someone else reaped the leader: its id is free for any new process, so neither
    # SIGTERM nor SIGKILL may go to that group any more.
    server = ServerProcess(
        "quick", (sys.executable, "-c", "pass"), env={}, log_path=tmp_path / "q.log"
    )
    os.waitpid(server.pid, 0)  # reaped behind the runner's back
    signalled: list[int] = []
    monkeypatch.setattr(os, "killpg", lambda group, signum: signalled.append(signum))
    server.stop(grace_s=1)
    assert signalled == []


def test_a_command_that_cannot_start_leaves_no_open_log(tmp_path: Path) -> None:
    opened: list[object] = []
    real_open = open

    def tracking_open(*args: object, **kwargs: object) -> object:
        handle = real_open(*args, **kwargs)  # type: ignore[call-overload]
        opened.append(handle)
        return handle

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("builtins.open", tracking_open)
        with pytest.raises(FileNotFoundError):
            ServerProcess("missing", ("/nonexistent/server",), env={}, log_path=tmp_path / "m.log")
    assert opened and all(handle.closed for handle in opened)  # type: ignore[attr-defined]
