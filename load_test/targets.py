"""The servers under test, started by the tool on loopback, each in its own processes.

Every target runs its production server as a subprocess in a session of its own
(`harness.local.processes.ServerProcess`: its workers are found, measured and stopped with
it, by its process group id): Flask on
gunicorn with sync workers or with threads, Flask alone behind a2wsgi on uvicorn, FastAPI
on uvicorn, and the gateway at a given percentage. They share one set of emulators with
the agent latency of the run: a local DynamoDB (moto's, or dynalite on Node) and the agent
emulator in a process each, so neither competes with the other or with the client for a
GIL, and each one's CPU can be read apart. Stacks are named by import string only: this
package imports neither.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from harness.gateway.settings import GatewaySettings
from harness.local.emulators.dynalite import DynaliteServer
from harness.local.emulators.dynamodb import ExternalDynamoDB
from harness.local.processes import ServerProcess, run_server

CORES = os.cpu_count() or 2
STANDARD_TARGETS = (
    "flask-gunicorn-sync",
    "flask-gunicorn-threads",
    "flask-a2wsgi",
    "fastapi-uvicorn",
    "gateway-50",
)
CEILING = "client-ceiling"
_GATEWAY = re.compile(r"gateway-(\d{1,3}(?:\.\d+)?)")
_UPSTREAM = re.compile(r"gateway-upstream-(\d{1,3}(?:\.\d+)?)")
UPSTREAM_OF = "fastapi-uvicorn"
"""The FastAPI stack a `gateway-upstream-N` target reaches over HTTP (upstream mode),
started with it; its Flask stack stays mounted."""
_TARGET_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class Workers:
    """Process and thread counts. Defaults for this machine's cores: gunicorn's own advice
    (2 x cores + 1) for sync workers, which block on every call; one process per core for
    the others, with `threads` threads per gthread worker and `wsgi_threads` in a2wsgi's
    pool (the gateway's default) per process."""

    sync_workers: int = 2 * CORES + 1
    workers: int = CORES
    threads: int = 16
    wsgi_threads: int = GatewaySettings.model_fields["wsgi_threads"].default


@dataclass(frozen=True)
class Launch:
    """How to start a target: `argv` (`{port}` is replaced), extra environment, and the
    path that answers 2xx once it serves."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    ready_path: str
    describe: str
    upstream: str | None = None
    """A target started first, whose URL the gateway's `GATEWAY_FASTAPI_URL` names."""


def is_known(name: str) -> bool:
    """Whether the tool can start a target by that name."""
    return (
        name in STANDARD_TARGETS
        or name == CEILING
        or gateway_percent(name) is not None
        or upstream_percent(name) is not None
    )


def gateway_percent(name: str) -> float | None:
    """50.0 for "gateway-50"; None for any other name."""
    return _percent(_GATEWAY, name)


def upstream_percent(name: str) -> float | None:
    """100.0 for "gateway-upstream-100" (the gateway in upstream mode in front of
    `UPSTREAM_OF`); None for any other name."""
    return _percent(_UPSTREAM, name)


def _percent(pattern: re.Pattern[str], name: str) -> float | None:
    match = pattern.fullmatch(name)
    if match is None or float(match.group(1)) > 100:
        return None
    return float(match.group(1))


def launch(name: str, workers: Workers) -> Launch:
    """The command line of target `name` on `127.0.0.1:{port}`."""
    python: tuple[str, ...] = (sys.executable, "-m")
    uvicorn: tuple[str, ...] = ("--host", "127.0.0.1", "--port", "{port}", "--no-access-log")
    uvicorn += ("--log-level", "warning")
    uvicorn += ("--http", "shared.serving:SnapshotHttpToolsProtocol")  # as production runs it
    uvicorn += ("--workers", str(workers.workers))
    gunicorn: tuple[str, ...] = (*python, "gunicorn", "legacy_flask:create_app()")
    gunicorn += ("--config", "python:legacy_flask.gunicorn_conf")  # as production runs it
    gunicorn += ("--bind", "127.0.0.1:{port}", "--backlog", "2048")
    argv: tuple[str, ...]
    if name == "flask-gunicorn-sync":
        n = workers.sync_workers
        argv = (*gunicorn, "--worker-class", "sync", "--workers", str(n))
        return Launch(argv, {}, "/health", f"gunicorn, {n} sync workers")
    if name == "flask-gunicorn-threads":
        n, t = workers.workers, workers.threads
        argv = (*gunicorn, "--worker-class", "gthread", "--workers", str(n), "--threads", str(t))
        return Launch(argv, {}, "/health", f"gunicorn, {n} gthread workers x {t} threads")
    if name == "flask-a2wsgi":
        argv = (*python, "uvicorn", "--factory", "load_test.a2wsgi_app:create_app", *uvicorn)
        env = {"LOAD_TEST_WSGI_THREADS": str(workers.wsgi_threads)}
        describe = f"uvicorn, {workers.workers} workers, a2wsgi {workers.wsgi_threads} threads"
        return Launch(argv, env, "/health", describe)
    if name == "fastapi-uvicorn":
        argv = (*python, "uvicorn", "fastapi_app.main:app", *uvicorn)
        return Launch(argv, {}, "/health", f"uvicorn, {workers.workers} workers")
    if name == CEILING:
        argv = (*python, "load_test.ceiling", "--port", "{port}")
        return Launch(argv, {}, "/", "trivial asyncio server answering at once")
    upstream = upstream_percent(name)
    percent = gateway_percent(name) if upstream is None else upstream
    if percent is None:
        raise ValueError(f"unknown target {name!r}")
    argv = (*python, "uvicorn", "gateway:app", *uvicorn)
    env = {
        "GATEWAY_FASTAPI_PERCENT": f"{percent:g}",
        "GATEWAY_WSGI_THREADS": str(workers.wsgi_threads),
        # A table of its own: an earlier run's percentage must not override this one's.
        "GATEWAY_STATE_TABLE": f"load_gateway_{uuid.uuid4().hex[:10]}",
        # The overhead and stall measurements pin requests to a stack by the override header.
        "GATEWAY_OVERRIDE_HEADER": "open",
    }
    describe = (
        f"uvicorn, {workers.workers} workers, {percent:g} % FastAPI, "
        f"a2wsgi {workers.wsgi_threads} threads"
    )
    if upstream is not None:
        describe = (
            f"uvicorn, {workers.workers} workers, {percent:g} % FastAPI, upstream mode: "
            f"FastAPI over HTTP ({UPSTREAM_OF}), Flask mounted"
        )
        return Launch(argv, env, "/health", describe, upstream=UPSTREAM_OF)
    return Launch(argv, env, "/health", describe)


@dataclass
class Emulators:
    """The emulators' environment for the stacks, and their processes by role
    ("dynamodb", "agent"; only "agent" when DynamoDB runs elsewhere)."""

    env: dict[str, str]
    processes: dict[str, ServerProcess]

    def create_table(self, name: str) -> None:
        """Create a table (the session table's schema) in the emulated DynamoDB."""
        dynamodb = ExternalDynamoDB(self.env["AWS_ENDPOINT_URL_DYNAMODB"])
        dynamodb.create_table(name, self.env["AWS_REGION"])

    def cpu_seconds(self) -> dict[str, float | None]:
        """CPU seconds used so far by each emulator process."""
        return {role: process.cpu_seconds() for role, process in self.processes.items()}


@contextlib.contextmanager
def emulators_process(
    agent_latency_ms: float,
    log_dir: Path,
    dynamodb_url: str | None = None,
    dynamodb: str = "moto",
) -> Iterator[Emulators]:
    """The emulators with that agent latency, until the block ends: a local DynamoDB
    (`dynamodb`: "moto", `python -m load_test.emulators dynamodb`, or "dynalite", a Node
    process; installed beforehand) and the agent emulator in a process each, or with
    `dynamodb_url` that DynamoDB (DynamoDB Local, say) and the agent emulator only."""
    python = (sys.executable, "-m", "load_test.emulators")
    with contextlib.ExitStack() as stack:
        processes: dict[str, ServerProcess] = {}
        if dynamodb_url is None and dynamodb == "dynalite":
            server = DynaliteServer(log_path=log_dir / "dynamodb.log")
            stack.callback(server.stop)
            dynamodb_url = server.start()
            assert server.process is not None
            processes["dynamodb"] = server.process
        elif dynamodb_url is None:
            moto = ServerProcess(
                "dynamodb",
                (*python, "dynamodb"),
                env={},
                log_path=log_dir / "dynamodb.log",
                stdout=subprocess.PIPE,
            )
            stack.callback(moto.stop)
            processes["dynamodb"] = moto
            dynamodb_url = moto.read_exports("AWS_ENDPOINT_URL_DYNAMODB")[
                "AWS_ENDPOINT_URL_DYNAMODB"
            ]
        agent = ServerProcess(
            "agent",
            (*python, "--latency-ms", f"{agent_latency_ms:g}", "--dynamodb-url", dynamodb_url),
            env={},
            log_path=log_dir / "agent.log",
            stdout=subprocess.PIPE,
        )
        stack.callback(agent.stop)
        processes["agent"] = agent
        env = agent.read_exports("AWS_DEFAULT_REGION")
        yield Emulators(env, processes)


@dataclass
class Target:
    """A server to measure: started by the tool (`process`) or given by URL."""

    name: str
    url: str
    describe: str
    process: ServerProcess | None = None
    upstream: Target | None = None
    """The target this one reaches over HTTP (upstream mode), started and stopped with it."""

    def cpu_seconds(self) -> float | None:
        """CPU used so far by the target's processes, its upstream's included (None for a
        target given by URL)."""
        own = self.process.cpu_seconds() if self.process else None
        theirs = self.upstream.cpu_seconds() if self.upstream else 0.0
        return None if own is None or theirs is None else own + theirs


@contextlib.contextmanager
def started(
    name: str,
    *,
    workers: Workers,
    emulators: Emulators | None,
    log_dir: Path,
    extra_env: Mapping[str, str] | None = None,
    prefix: Sequence[str] = (),
    ready_timeout_s: float = 60.0,
) -> Iterator[Target]:
    """Target `name` running on loopback until the block ends; `prefix` goes before its
    command line (a profiler, say, which may need a longer `ready_timeout_s`)."""
    spec = launch(name, workers)
    env = {**(emulators.env if emulators else {}), **spec.env, **(extra_env or {})}
    if emulators is not None and "GATEWAY_STATE_TABLE" in spec.env:
        emulators.create_table(spec.env["GATEWAY_STATE_TABLE"])
    with contextlib.ExitStack() as stack:
        upstream = None
        if spec.upstream is not None:
            upstream = stack.enter_context(
                started(
                    spec.upstream,
                    workers=workers,
                    emulators=emulators,
                    log_dir=log_dir,
                    extra_env=extra_env,
                    prefix=prefix,
                    ready_timeout_s=ready_timeout_s,
                )
            )
            env["GATEWAY_FASTAPI_URL"] = upstream.url
        process = stack.enter_context(
            run_server(
                name,
                (*prefix, *spec.argv),
                env=env,
                log_path=log_dir / f"{name}.log",
                ready_path=spec.ready_path,
                ready_timeout_s=ready_timeout_s,
            )
        )
        yield Target(name, process.url, spec.describe, process, upstream)


def parse_url_target(text: str) -> Target:
    """`name=http://host[:port]` (from `--url`) as a target the tool does not start.

    The scenarios send absolute paths (`/api/v1/chat`, `/health`), so a URL with a path
    (`http://h:p/prefix`) is refused rather than silently measured without its prefix."""
    name, sep, url = text.partition("=")
    if not sep or not _TARGET_NAME.fullmatch(name) or not url.startswith("http://"):
        raise ValueError(f"expected name=http://host:port, got {text!r}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError(f"expected name=http://host:port, got {text!r}") from None
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"--url takes an origin only (name=http://host:port, no path, query or "
            f"fragment; the scenarios use the stacks' own paths), got {text!r}"
        )
    origin = f"http://{parts.netloc}"
    return Target(name, origin, f"given: {origin}")
