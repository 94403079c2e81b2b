"""`make run`: the local emulators and the gateway (both stacks mounted) on loopback,
stopped together by Ctrl-C.

The gateway runs as it would in production, `uvicorn gateway:app` in a child process,
with boto3 pointed at the emulators through `AWS_ENDPOINT_URL_*`. The harness names it
by import string only: it never imports a stack.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import TextIO

import httpx

from harness.local.emulators import LocalEmulators


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited with {process.returncode} (port in use?)")
        try:
            if httpx.get(f"{url}/_gateway/rollout", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the gateway did not answer {url} within {timeout:.0f}s")


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _banner(url: str, emulators: LocalEmulators, env: dict[str, str], token_note: str) -> str:
    chat = f"curl -s {url}/api/v1/chat -H 'Content-Type: application/json'"
    auth = f"-H 'Authorization: Bearer {env['GATEWAY_ADMIN_TOKEN']}'"
    return "\n".join(
        [
            "dualstack is running (Ctrl-C stops everything):",
            f"  gateway (Flask + FastAPI)  {url}   {env['GATEWAY_FASTAPI_PERCENT']}% to FastAPI",
            f"  FastAPI docs               {url}/docs",
            f"  rollout and metrics        {url}/_gateway/rollout   {url}/_gateway/metrics",
            f"  DynamoDB emulator (moto)   {emulators.dynamodb_url}",
            f"  Bedrock agent emulator     {emulators.bedrock_url}",
            f"  admin token                {env['GATEWAY_ADMIN_TOKEN']}{token_note}",
            "try:",
            f'  {chat} -d \'{{"message": "hello"}}\' -i   # see X-Dualstack-Backend',
            f"  {chat} -H 'X-Dualstack-Backend: flask' -d '{{\"message\": \"hi\"}}'",
            f"  curl -s -X PUT {url}/_gateway/rollout {auth} -d '{{\"fastapi_percent\": 80}}'",
            "ready",
        ]
    )


def _say(text: str, stream: TextIO | None = None) -> None:
    # A closed stdout (`make run | head`) must not take the servers down with it.
    with contextlib.suppress(BrokenPipeError, ValueError):
        print(text, file=stream or sys.stdout, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Start everything, print where it listens, run until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m harness.local.devstack", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    parser.add_argument("--agent-latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)

    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines
    table = os.environ.get("DYNAMODB_TABLE", "chat_sessions")
    gateway_table = os.environ.get("GATEWAY_STATE_TABLE", "dualstack_gateway")
    options = {"latency_ms": args.agent_latency_ms}
    emulators = LocalEmulators(
        host=args.host, table=table, extra_tables=(gateway_table,), bedrock_options=options
    )
    token_note = "" if os.environ.get("GATEWAY_ADMIN_TOKEN") else "   (made for this run)"
    env = {
        **os.environ,
        "GATEWAY_FASTAPI_PERCENT": os.environ.get("GATEWAY_FASTAPI_PERCENT", "50"),
        "GATEWAY_ADMIN_TOKEN": os.environ.get("GATEWAY_ADMIN_TOKEN") or secrets.token_urlsafe(16),
    }
    url = f"http://{args.host}:{args.port}"
    process: subprocess.Popen[bytes] | None = None
    with emulators:
        env.update(emulators.env())
        try:  # the gateway is stopped however this ends
            command = [
                sys.executable,
                "-m",
                "uvicorn",
                "gateway:app",
                f"--host={args.host}",
                f"--port={args.port}",
                "--no-access-log",  # the stacks log every request themselves, as JSON
            ]
            process = subprocess.Popen(command, env=env)  # noqa: S603 - our own argv
            _wait_ready(url, process, timeout=30)
            _say(_banner(url, emulators, env, token_note))
            while not stopping.wait(0.5):
                if process.poll() is not None:
                    raise RuntimeError(f"the gateway exited with {process.returncode}")
        except RuntimeError as error:
            _say(f"error: {error}", sys.stderr)
            return 2
        finally:
            _stop(process)
    _say("stopped", sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
