"""`make run`: the local emulators and the gateway (both stacks mounted) on loopback,
stopped together by Ctrl-C.

The gateway runs as it would in production, `uvicorn gateway:app` in a child process,
with boto3 pointed at the emulators through `AWS_ENDPOINT_URL_*` and `ENVIRONMENT=local`
(unless set), and with the override header open (`GATEWAY_OVERRIDE_HEADER=open`, unless
set): on loopback, any request may pin a stack, for trying things. Its output, every
request logged as JSON by both stacks, goes to a log file (`reports/run/gateway.log`, or
`--log-file`) so the banner stays readable in the terminal.
The harness names the gateway by import string only: it never imports a stack.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from harness.local.emulators import LocalEmulators
from harness.local.emulators.dynalite import CHOICES, choose_store
from harness.local.emulators.heap import frozen_heap
from harness.local.processes import StopSignals, run_server

DEFAULT_LOG = Path("reports/run/gateway.log")


def _banner(
    url: str,
    emulators: LocalEmulators,
    env: dict[str, str],
    token_note: str,
    log_file: Path,
    notes: Sequence[str] = (),
) -> str:
    chat = f"curl -s {url}/api/v1/chat -H 'Content-Type: application/json'"
    auth = f"-H 'Authorization: Bearer {env['GATEWAY_ADMIN_TOKEN']}'"
    return "\n".join(
        [
            "dualstack is running (Ctrl-C stops everything):",
            f"  gateway (Flask + FastAPI)  {url}   {env['GATEWAY_FASTAPI_PERCENT']}% to FastAPI",
            f"  dashboard                  {url}/_gateway/ui",
            f"  FastAPI docs               {url}/docs",
            f"  rollout and metrics        {url}/_gateway/rollout   {url}/_gateway/metrics",
            f"  {f'DynamoDB ({emulators.dynamodb.kind})':<27}{emulators.dynamodb_url}",
            f"  Bedrock agent emulator     {emulators.bedrock_url}",
            f"  CloudWatch (FastAPI's)     {emulators.cloudwatch_url}"
            f"   (flushed every {env['METRICS_FLUSH_SECONDS']} s)",
            f"  admin token                {env['GATEWAY_ADMIN_TOKEN']}{token_note}",
            f"  override header            {env['GATEWAY_OVERRIDE_HEADER']}",
            f"  logs (both stacks, JSON)   {log_file}   (tail -f {log_file})",
            f"  environment                {env['ENVIRONMENT']}",
            *(f"  note: {note}" for note in (*notes, emulators.ttl_note) if note),
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
    parser.add_argument(
        "--log-file",
        type=Path,
        default=DEFAULT_LOG,
        help=f"the gateway's output: both stacks' JSON logs (default {DEFAULT_LOG})",
    )
    parser.add_argument(
        "--dynamodb",
        choices=CHOICES,
        default="moto",
        help="the local DynamoDB: moto (default), dynalite (Node; installed on demand into "
        "the project's cache folder) or auto (dynalite where Node is; `make run` passes auto)",
    )
    args = parser.parse_args(argv)

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines
    table = os.environ.get("DYNAMODB_TABLE", "chat_sessions")
    gateway_table = os.environ.get("GATEWAY_STATE_TABLE", "dualstack_gateway")
    options = {"latency_ms": args.agent_latency_ms}
    try:
        store, why = choose_store(args.dynamodb)
    except RuntimeError as error:
        _say(f"error: {error}", sys.stderr)
        return 2
    emulators = LocalEmulators(
        host=args.host,
        table=table,
        extra_tables=(gateway_table,),
        bedrock_options=options,
        dynamodb=store,
    )
    token_note = "" if os.environ.get("GATEWAY_ADMIN_TOKEN") else "   (made for this run)"
    env = {
        "GATEWAY_FASTAPI_PERCENT": os.environ.get("GATEWAY_FASTAPI_PERCENT", "50"),
        "GATEWAY_ADMIN_TOKEN": os.environ.get("GATEWAY_ADMIN_TOKEN") or secrets.token_urlsafe(16),
        "ENVIRONMENT": os.environ.get("ENVIRONMENT", "local"),
        # Open for trying things on loopback; a deployment leaves it off, or uses a token.
        "GATEWAY_OVERRIDE_HEADER": os.environ.get("GATEWAY_OVERRIDE_HEADER", "open"),
        # FastAPI's CloudWatch metrics reach the local CloudWatch within seconds, not a minute.
        "METRICS_FLUSH_SECONDS": os.environ.get("METRICS_FLUSH_SECONDS", "5"),
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "gateway:app",
        f"--host={args.host}",
        "--port={port}",
        "--no-access-log",  # the stacks log every request themselves, as JSON
        "--http=shared.serving:SnapshotHttpToolsProtocol",  # trailers never become headers
    ]
    args.log_file.parent.mkdir(parents=True, exist_ok=True)
    args.log_file.write_bytes(b"")  # one run, one log
    with StopSignals() as stop, emulators, frozen_heap():
        env.update(emulators.env())
        try:  # the gateway is stopped however this ends
            with run_server(
                "the gateway",
                command,
                env=env,
                log_path=args.log_file,
                ready_path="/_gateway/rollout",
                ready_timeout_s=30,
                host=args.host,
                port=args.port,
            ) as gateway:
                _say(_banner(gateway.url, emulators, env, token_note, args.log_file, [why]))
                if not stop.wait(until=gateway.exited):
                    raise RuntimeError(f"the gateway exited:\n{gateway.log_tail()}")
        except RuntimeError as error:
            _say(f"error: {error}", sys.stderr)
            return 2
    _say("stopped", sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
