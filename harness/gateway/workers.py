"""The workers of one server, sharing what each has counted through a directory.

`uvicorn --workers N` runs N processes, each counting in its own memory, and a scrape
reaches one of them. So each worker writes a snapshot of its counts to
`<directory>/<pid>-<start>.json` (atomically: a temporary file, then `os.replace`) from a
task of its own every `WRITE_SECONDS`, never on a request's path, and the worker scraped
reads its siblings' snapshots.

Which directory: `GATEWAY_METRICS_DIR` when set (gunicorn forks its workers, so only the
setting can tell them apart from unrelated processes); else, for a worker a
`multiprocessing` parent started (uvicorn spawns its workers so), a private one under the
temporary directory named after that parent, its pid and start time (so a later server
given the same pid never reads an old one's counts); else none: a single process shares
nothing. Workers never remove a sibling's snapshot, nor their own: an exited worker's
counters still count. What is removed is what a server that has exited left: its default
directory (by any worker starting), or in a configured one the snapshots of exited
processes another parent started.

Liveness and start times come from /proc (Linux). Elsewhere a process is taken to run
while its pid exists, and the default directory is named after the parent's pid alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from harness.gateway.background import cancel

log = structlog.get_logger("harness.gateway.workers")

WRITE_SECONDS = 0.25
"""How often a worker writes its counts: the oldest a sibling's can be when a scrape
starts, so about the longest a scrape waits for them."""
PATIENCE_SECONDS = 1.0
"""The longest a scrape waits for its siblings' fresh counts before using them as last
written."""
POLL_SECONDS = 0.01
PREFIX = "dualstack-metrics-"
"""The default directories' names: the prefix, then the parent's pid and start time."""
_DEFAULT_DIRECTORY = re.compile(re.escape(PREFIX) + r"(\d+)-(\d+|x)")
_SNAPSHOT = re.compile(r"(\d+)-(\w+)\.json")
_TEMPORARY = re.compile(r"\.(\d+)-\w+\.tmp")
_PROC = Path("/proc")

Snapshot = Callable[[], dict[str, Any]]
"""This worker's counts, as JSON."""


def process_start(pid: int, proc: Path = _PROC) -> str | None:
    """When process `pid` started, in clock ticks since boot (/proc): what tells it apart
    from a later process given the same pid. None when it does not run (a zombie has
    exited); "" where there is no /proc to tell, but the pid exists."""
    if pid <= 0:
        return None
    if not proc.is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # another user's: it exists
            pass
        return ""
    try:
        line = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # After the command name (in parentheses, and it may hold any character): the state,
    # then 18 more fields to the start time (fields 3 and 22 of proc(5)).
    fields = line[line.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def is_running(pid: int, started: str) -> bool:
    """Whether the process `pid` that started at `started` (`process_start`) runs."""
    now = process_start(pid)
    return now is not None and now in ("", started)


@dataclass(frozen=True)
class Worker:
    """A process, by its pid and start time, and the server it belongs to: its parent,
    by the same two."""

    pid: int
    started: str
    server: str

    @classmethod
    def this(cls) -> Worker:
        """This process. Without /proc its start is this moment, which only needs to
        differ from that of an earlier process given the same pid."""
        pid = os.getpid()
        parent = multiprocessing.parent_process()
        ppid = parent.pid if parent is not None and parent.pid else os.getppid()
        started = process_start(pid) or f"t{time.time_ns()}"
        return cls(pid, started, f"{ppid}-{process_start(ppid) or 'x'}")


def server_directory(
    configured: str | None, spawned: bool, worker: Worker, temp: Path
) -> Path | None:
    """Where the workers of this server share their counts: the `configured` directory,
    else (for a worker a `multiprocessing` parent `spawned`) one named after the parent;
    None for a single process, which shares nothing."""
    if configured is not None:
        return Path(configured)
    return temp / f"{PREFIX}{worker.server}" if spawned else None


def sweep(temp: Path, keep: Path) -> list[Path]:
    """Removes the default directories (this user's) of servers whose parent process has
    exited, so server restarts do not pile them up; the ones removed."""
    removed: list[Path] = []
    for entry in temp.glob(f"{PREFIX}*"):
        found = _DEFAULT_DIRECTORY.fullmatch(entry.name)
        if found is None or entry == keep or not _is_own_directory(entry):
            continue
        if not is_running(int(found[1]), found[2]):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _is_own_directory(path: Path) -> bool:
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()


def _open_private(path: Path) -> None:
    """Creates `path` readable by this user alone, or checks that it is: in the shared
    temporary directory, another user could have made it first, to feed us counts."""
    path.mkdir(mode=0o700, exist_ok=True)
    if not _is_own_directory(path) or path.lstat().st_mode & 0o077:
        raise PermissionError(f"{path} is not a private directory of this user")


@dataclass(frozen=True)
class Sibling:
    """Another worker's last snapshot: who wrote it, when, and whether it still runs."""

    worker: Worker
    at: float
    counts: dict[str, Any]
    running: bool


class Siblings:
    """This worker's side of the sharing: it writes its counts, and reads the others'."""

    def __init__(
        self,
        directory: Path,
        worker: Worker,
        snapshot: Snapshot,
        *,
        clock: Callable[[], float] = time.time,
        running: Callable[[int, str], bool] = is_running,
        write_seconds: float = WRITE_SECONDS,
        patience_seconds: float = PATIENCE_SECONDS,
    ) -> None:
        self.directory = directory
        self.worker = worker
        self.path = directory / f"{worker.pid}-{worker.started}.json"
        self._snapshot = snapshot
        self._clock = clock
        self._running = running
        self.write_seconds = write_seconds
        self.patience_seconds = patience_seconds
        self.since: float | None = None
        """When the latest scrape started: a running sibling's counts written before it
        are stale."""
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def write(self) -> None:
        """This worker's counts as of now, replacing the ones it wrote last (OSError when
        they cannot be written)."""
        w = self.worker
        at = self._clock()
        data = {"pid": w.pid, "started": w.started, "server": w.server, "at": at}
        data["counts"] = self._snapshot()
        body = json.dumps(data, separators=(",", ":")).encode()
        fd, temp = tempfile.mkstemp(dir=self.directory, prefix=f".{w.pid}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(body)
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def read(self) -> list[Sibling]:
        """Every other worker's last snapshot (exited ones too), by file name."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError as error:
            log.warning("workers.unreadable_directory", path=str(self.directory), error=str(error))
            return []
        found: list[Sibling] = []
        for name in names:
            if name != self.path.name and _SNAPSHOT.fullmatch(name):
                sibling = self._read(self.directory / name)
                if sibling is not None:
                    found.append(sibling)
        return found

    def _read(self, path: Path) -> Sibling | None:
        try:
            data = json.loads(path.read_bytes())
            worker = Worker(int(data["pid"]), str(data["started"]), str(data["server"]))
            at, counts = float(data["at"]), data["counts"]
            if not isinstance(counts, dict):
                raise TypeError("counts is not an object")
        except FileNotFoundError:  # removed since listed: a server's directory swept
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("workers.unreadable_snapshot", path=str(path), error=str(error))
            return None
        return Sibling(worker, at, counts, self._running(worker.pid, worker.started))

    def prune(self) -> list[Path]:
        """Removes the snapshots of exited processes another parent started: a previous
        server's, in a configured directory it shared with this one. This server's
        siblings (same parent) are kept, exited or not: their counters count. Also the
        temporary files of writers that no longer run (killed while writing)."""
        removed: list[Path] = []
        for temp in self.directory.glob(".*.tmp"):
            found = _TEMPORARY.fullmatch(temp.name)
            if found is not None and process_start(int(found[1])) is None:
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
                    removed.append(temp)
        for sibling in self.read():
            if not sibling.running and sibling.worker.server != self.worker.server:
                w = sibling.worker
                path = self.directory / f"{w.pid}-{w.started}.json"
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
        return removed

    def start(self) -> None:
        """Writes this worker's first snapshot, then one every `write_seconds`."""
        self.prune()
        self.write()
        self._task = asyncio.create_task(self._keep_writing(), name="metrics-snapshots")

    async def stop(self) -> None:
        """Stops writing, after a last snapshot: what this worker counted stays counted."""
        task, self._task = self._task, None
        await cancel(task)
        self._write_logged()

    async def refresh(self) -> None:
        """Makes a scrape's view fresh: writes this worker's counts, then waits (polling,
        at most `patience_seconds`) until every running sibling has written its counts
        since the scrape started. One that has not is used as last written, and logged."""
        since = self.since = self._clock()
        self._write_logged()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.patience_seconds
        while True:
            behind = [s.worker.pid for s in self.read() if s.running and s.at < since]
            if not behind:
                return
            if loop.time() >= deadline:
                log.warning("workers.stale_counts", pids=behind, waited=self.patience_seconds)
                return
            await asyncio.sleep(POLL_SECONDS)

    async def _keep_writing(self) -> None:
        while True:
            await asyncio.sleep(self.write_seconds)
            self._write_logged()

    def _write_logged(self) -> None:
        # A full disk or a removed directory must not stop the worker: its scrapes still
        # show its own counts. Said once per run of failures, not four times a second.
        try:
            self.write()
        except OSError as error:
            if not self._failing:
                log.warning("workers.write_failed", path=str(self.path), error=str(error))
            self._failing = True
        else:
            self._failing = False


def join(configured: str | None, snapshot: Snapshot) -> Siblings | None:
    """This worker's place among its server's workers (not yet started); None for a single
    process (no `configured` directory, no `multiprocessing` parent), or when the default
    directory cannot be used safely (logged). OSError when the `configured` one cannot be
    created."""
    spawned = multiprocessing.parent_process() is not None
    worker = Worker.this()
    temp = Path(tempfile.gettempdir())
    directory = server_directory(configured, spawned, worker, temp)
    if directory is None:
        return None
    if configured is not None:
        directory.mkdir(parents=True, exist_ok=True)
        return Siblings(directory, worker, snapshot)
    sweep(temp, keep=directory)
    try:
        _open_private(directory)
    except OSError as error:
        log.warning("workers.not_shared", path=str(directory), error=str(error))
        return None
    return Siblings(directory, worker, snapshot)


class FreshScrape:
    """ASGI middleware over the admin app: before it answers `GET /metrics`, the siblings'
    counts are made fresh (`Siblings.refresh`), so the scrape counts every request that
    had been answered when it came."""

    def __init__(self, app: ASGIApp, siblings: Siblings, path: str = "/metrics") -> None:
        self.app = app
        self.siblings = siblings
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and _route(scope) == self.path:
            await self.siblings.refresh()
        await self.app(scope, receive, send)


def _route(scope: Scope) -> str:
    # The path below the app's mount point, as Starlette routes it.
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
