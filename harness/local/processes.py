"""Servers run as child processes, and the stop signals of the process that runs them.

`ServerProcess` runs a server command in a process group of its own, its output in a log
file, and stops the whole group (workers included) by the group's id; `run_server` is the
same as a block that yields once the server answers. `StopSignals` turns SIGINT and SIGTERM
into a request to stop that the main thread waits for, so a command-line runner (`make
run`, `make emulators`) stops what it started in order instead of dying mid-way.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Self

import httpx

__all__ = ["ServerProcess", "StopSignals", "cpu_seconds", "free_port", "run_server"]

_LOCALHOST = "127.0.0.1"


def free_port(host: str = _LOCALHOST) -> int:
    """A port free right now on `host` (for subprocess servers that must bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def group_members(group: int, proc: Path = Path("/proc")) -> Iterator[tuple[str, list[bytes]]]:
    """The processes of process group `group` as /proc lists them now (Linux): each one's
    id and the fields of its `stat` after the command name. Nothing where /proc cannot be
    read; a process gone meanwhile is skipped."""
    try:
        entries = os.listdir(proc)
    except OSError:
        return
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            fields = (proc / entry / "stat").read_bytes().rpartition(b")")[2].split()
            if int(fields[2]) != group:
                continue
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        yield entry, fields


def cpu_seconds(group: int) -> float | None:
    """CPU seconds (user + system) used so far by the live processes of process group
    `group`, from /proc; None where /proc cannot tell (not Linux)."""
    if not os.path.isdir("/proc"):
        return None
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = sum(int(fields[11]) + int(fields[12]) for _, fields in group_members(group))
    return total / ticks


class ServerProcess:
    """A server command in a process group of its own, stopped by its id (SIGTERM, then
    SIGKILL after `grace_s`); its output is appended to `log_path`. `{port}` in `argv`
    becomes `port` (a free one unless given); the server is reached at `url`.

    The leader is reaped only once its group has been signalled for the last time: until
    then it is at worst a zombie, which keeps its id (the group's) from being given to
    another process, so a signal to the group cannot reach a process this tool did not
    start."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        stdout: int | IO[bytes] | None = None,
        cwd: str | Path | None = None,
        host: str = _LOCALHOST,
        port: int | None = None,
    ) -> None:
        self.name = name
        self.port = free_port(host) if port is None else port
        self.url = f"http://{host}:{self.port}"
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_start = self._log.tell()  # what was there before is not this process's
        self._pump: threading.Thread | None = None
        self._reaped_elsewhere = False
        try:
            self.process = subprocess.Popen(  # noqa: S603 - the caller's own argv
                [arg.format(port=self.port) for arg in argv],
                cwd=cwd,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=stdout if stdout is not None else self._log,
                stderr=self._log,
                start_new_session=True,
            )
        except BaseException:  # nothing started: nothing else will close the log
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        """The leader's process id, which is also its group's."""
        return self.process.pid

    def cpu_seconds(self) -> float | None:
        """CPU seconds used so far by the group (workers included)."""
        return cpu_seconds(self.pid)

    def wait_ready(self, path: str, timeout_s: float = 60.0) -> None:
        """Return once `path` answers 2xx; otherwise stop the group and raise RuntimeError
        (with the log's tail) when the process exits or the timeout passes first."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                httpx.get(f"{self.url}{path}", timeout=2).raise_for_status()
                return
            except httpx.HTTPError:
                if self.exited() or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.name} did not start:\n{self.log_tail()}") from None
                time.sleep(0.1)

    def log_tail(self, size: int = 2000) -> str:
        """The end of what this process wrote to its log."""
        with contextlib.suppress(OSError):
            written = self.log_path.read_bytes()[self._log_start :]
            return written[-size:].decode(errors="replace")
        return ""

    def exited(self) -> bool:
        """Whether the leader has exited, without reaping it (see the class)."""
        if self.process.returncode is not None:
            return True
        try:
            found = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped behind our back: nothing left to signal safely
            self._reaped_elsewhere = True
            return True
        return found is not None

    def stop(self, grace_s: float = 15.0) -> None:
        """Stop the group: SIGTERM to it, then SIGKILL to what is left of it after the
        leader exits or `grace_s` passes (workers a leader left behind), then reap. Safe
        to call twice."""
        if self.process.returncode is None:  # not reaped: the group id is still ours
            if not self.exited():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while not self.exited() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not self._reaped_elsewhere:  # else the id may be another process's by now
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                self.process.wait()
        if self._pump is not None:
            self._pump.join(timeout=5)  # the pipe ends when the group is gone
        if self.process.stdout:
            self.process.stdout.close()
        self._log.close()

    def read_exports(self, last: str, timeout_s: float = 60.0) -> dict[str, str]:
        """The `export NAME=value` lines the process prints once it serves, up to the one
        naming `last`; RuntimeError (with the log's tail) if it exits or `timeout_s` passes
        first. Everything it prints afterwards is copied to its log, so it never blocks on
        a full pipe."""
        stdout = self.process.stdout
        if stdout is None:
            raise ValueError(f"{self.name} was not started with stdout=PIPE")
        found: queue.Queue[dict[str, str] | None] = queue.Queue()

        def pump() -> None:
            env: dict[str, str] = {}
            told = False
            with open(self.log_path, "ab") as log:
                for raw in stdout:
                    line = raw.decode(errors="replace").strip()
                    if not told and line.startswith("export "):
                        name, _, value = line.removeprefix("export ").partition("=")
                        env[name] = value
                        if name == last:
                            found.put(env)
                            told = True
                    else:
                        log.write(raw)
                        log.flush()
            if not told:
                found.put(None)

        self._pump = threading.Thread(target=pump, name=f"{self.name}-stdout", daemon=True)
        self._pump.start()
        try:
            env = found.get(timeout=timeout_s)
        except queue.Empty:
            env = None
        if env is None:
            raise RuntimeError(f"{self.name} did not start:\n{self.log_tail()}")
        return env


@contextlib.contextmanager
def run_server(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    ready_path: str,
    ready_timeout_s: float = 60.0,
    cwd: str | Path | None = None,
    host: str = _LOCALHOST,
    port: int | None = None,
) -> Iterator[ServerProcess]:
    """`ServerProcess(...)` until the block ends, yielded once `ready_path` answers 2xx
    (RuntimeError with the log's tail if it does not); its group is stopped however the
    block ends."""
    server = ServerProcess(name, argv, env=env, log_path=log_path, cwd=cwd, host=host, port=port)
    try:
        server.wait_ready(ready_path, ready_timeout_s)
        yield server
    finally:
        server.stop()


class StopSignals:
    """While the block runs, SIGINT (Ctrl-C) and SIGTERM ask to stop instead of raising
    KeyboardInterrupt or ending the process; the former handlers come back at its end.

        with StopSignals() as stop, Emulators():
            stop.wait()

    A signal that arrives while things start is kept: `wait()` then returns at once, and
    what started is stopped in order. Main thread only (Python's rule for signals)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._requested = threading.Event()
        self._previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return self._requested.is_set()

    def wait(self, until: Callable[[], bool] | None = None, interval_s: float = 0.5) -> bool:
        """Block until a stop signal arrives (True) or `until()` holds (False), checked
        every `interval_s` seconds."""
        # Waiting with a timeout keeps the main thread where its signal handlers run.
        while not self._requested.wait(interval_s):
            if until is not None and until():
                return False
        return True

    def _request(self, signum: int, frame: FrameType | None) -> None:
        self._requested.set()

    def __enter__(self) -> Self:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._request)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
