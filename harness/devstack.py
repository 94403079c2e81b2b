"""`make run` until the gateway exists: the local emulators, the legacy app on gunicorn and
the migrated app on uvicorn, all on loopback, stopped together by Ctrl-C.

The stacks run as their production servers would run them, in child processes, with
boto3 pointed at the emulators through `AWS_ENDPOINT_URL_*`. The harness names them by
import string only: it never imports a stack.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

import httpx

from harness.emulators import LocalEmulators

BIN = Path(sys.executable).parent


def _commands(host: str, flask_port: int, fastapi_port: int) -> dict[str, list[str]]:
    return {
        "flask": [
            str(BIN / "gunicorn"),
            "legacy_flask:create_app()",
            f"--bind={host}:{flask_port}",
            "--workers=1",
            "--threads=10",
        ],
        "fastapi": [
            str(BIN / "uvicorn"),
            "fastapi_app.main:app",
            f"--host={host}",
            f"--port={fastapi_port}",
            "--no-access-log",  # the app logs every request itself, as JSON
        ],
    }


def _wait_healthy(name: str, url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} (port in use?)")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer {url}/health within {timeout:.0f}s")


def _stop(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    for process in processes.values():
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _banner(urls: dict[str, str], emulators: LocalEmulators, table: str) -> str:
    chat = "/api/v1/chat -H 'Content-Type: application/json'"
    return "\n".join(
        [
            "dualstack is running (Ctrl-C stops everything):",
            f"  legacy Flask on gunicorn   {urls['flask']}",
            f"  FastAPI on uvicorn         {urls['fastapi']}   (docs: {urls['fastapi']}/docs)",
            f"  DynamoDB emulator (moto)   {emulators.dynamodb_url}   table {table}",
            f"  Bedrock agent emulator     {emulators.bedrock_url}",
            "try:",
            f"  curl -s {urls['flask']}{chat} "
            '-d \'{"message": "hello", "session_id": "demo-1"}\'',
            f"  curl -s {urls['fastapi']}{chat} "
            '-d \'{"message": "and again", "session_id": "demo-1"}\'',
            f"  curl -s {urls['fastapi']}/api/v1/chat/sessions/demo-1",
            "ready",
        ]
    )


def _say(text: str, stream: TextIO | None = None) -> None:
    # A closed stdout (`make run | head`) must not take the servers down with it.
    with contextlib.suppress(BrokenPipeError, ValueError):
        print(text, file=stream or sys.stdout, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Start everything, print where it listens, run until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m harness.devstack", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--flask-port", type=int, default=int(os.environ.get("FLASK_PORT", 8001)))
    parser.add_argument(
        "--fastapi-port", type=int, default=int(os.environ.get("FASTAPI_PORT", 8002))
    )
    parser.add_argument("--agent-latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)

    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines
    table = os.environ.get("DYNAMODB_TABLE", "chat_sessions")
    options = {"latency_ms": args.agent_latency_ms}
    with LocalEmulators(host=args.host, table=table, bedrock_options=options) as emulators:
        env = {**os.environ, **emulators.env()}
        urls = {
            "flask": f"http://{args.host}:{args.flask_port}",
            "fastapi": f"http://{args.host}:{args.fastapi_port}",
        }
        processes: dict[str, subprocess.Popen[bytes]] = {}
        try:  # the children are stopped however this ends
            for name, command in _commands(args.host, args.flask_port, args.fastapi_port).items():
                processes[name] = subprocess.Popen(command, env=env)  # noqa: S603 - our own argv
            for name, process in processes.items():
                _wait_healthy(name, urls[name], process, timeout=30)
            _say(_banner(urls, emulators, table))
            while not stopping.wait(0.5):
                for name, process in processes.items():
                    if process.poll() is not None:
                        raise RuntimeError(f"{name} exited with {process.returncode}")
        except RuntimeError as error:
            _say(f"error: {error}", sys.stderr)
            return 2
        finally:
            _stop(processes)
    _say("stopped", sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
