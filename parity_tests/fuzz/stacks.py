"""The fuzzed servers: each stack under its production server and the gateway at 50 %,
on free loopback ports, against one set of local emulators. Each target writes to a
session table of its own, so every target sees the same sequence of requests and the same
state: a turn, a deletion, an owned session are the same on each."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from harness.local.emulators import LocalEmulators
from harness.local.processes import ServerProcess

TABLES = {"flask": "fuzz_flask", "fastapi": "fuzz_fastapi", "gateway": "fuzz_gateway"}
GATEWAY_STATE_TABLE = "fuzz_gateway_state"
_HTTP = "shared.serving:SnapshotHttpToolsProtocol"  # as production runs uvicorn

_STACK_ENV = {
    "LOG_LEVEL": "WARNING",
    "AGENT_MAX_ATTEMPTS": "1",
    "AGENT_TIMEOUT_SECONDS": "5",
    "ENVIRONMENT": "fuzz",
}


def _argv(target: str) -> list[str]:
    python = [sys.executable, "-m"]
    uvicorn = ["--host", "127.0.0.1", "--port", "{port}", "--http", _HTTP]
    uvicorn += ["--no-access-log", "--log-level", "warning"]
    if target == "flask":
        bind = ["--bind", "127.0.0.1:{port}", "--worker-class", "gthread", "--threads", "8"]
        config = ["--config", "python:legacy_flask.gunicorn_conf"]  # as production runs it
        return [*python, "gunicorn", "legacy_flask:create_app()", *config, *bind]
    app = "fastapi_app.main:app" if target == "fastapi" else "gateway:app"
    return [*python, "uvicorn", app, *uvicorn]


@contextlib.contextmanager
def serve(log_dir: Path) -> Iterator[dict[str, str]]:
    """Start the emulators and the three targets; yields their base URLs by target (flask,
    fastapi, gateway); stops everything it started on exit."""
    with contextlib.ExitStack() as stack:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per DynamoDB call
        emulators = stack.enter_context(
            LocalEmulators(
                table=TABLES["flask"],
                extra_tables=(TABLES["fastapi"], TABLES["gateway"], GATEWAY_STATE_TABLE),
            )
        )
        gateway_env = {
            "GATEWAY_FASTAPI_PERCENT": "50",
            "GATEWAY_STATE_TABLE": GATEWAY_STATE_TABLE,
            "GATEWAY_OVERRIDE_HEADER": "open",  # schemathesis pins each stack through it
        }
        processes: dict[str, ServerProcess] = {}
        for target, table in TABLES.items():
            env = {**emulators.env(), **_STACK_ENV, "DYNAMODB_TABLE": table}
            if target == "gateway":
                env.update(gateway_env)
            process = ServerProcess(
                target, _argv(target), env=env, log_path=log_dir / f"{target}.log"
            )
            stack.callback(process.stop)
            processes[target] = process
        for process in processes.values():  # started together, awaited in turn
            process.wait_ready("/health")
        yield {target: process.url for target, process in processes.items()}
