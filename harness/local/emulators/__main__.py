"""``python -m harness.local.emulators``: run both emulators until SIGINT/SIGTERM.

``--print-setup`` (AWS CLI commands) or ``--print-setup=json`` (CreateTable and
UpdateTimeToLive requests) prints the tables the run would create, named by the same
settings the stacks and the gateway read, and exits: nothing starts, no AWS is needed.

Prints ``export NAME=value`` lines on stdout (``eval "$(python -m harness.local.emulators)"`` does
not work as the process stays up; redirect to a file and ``source`` it instead). Status
lines go to stderr so stdout stays machine-readable.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from harness.gateway.settings import GatewaySettings
from harness.local.emulators import EmulatorConfig, LocalEmulators
from harness.local.emulators.dynalite import CHOICES, choose_store
from harness.local.emulators.faults import FAULTS
from harness.local.emulators.heap import frozen_heap
from harness.local.emulators.setup import aws_cli_commands, setup_json
from harness.local.processes import StopSignals
from shared.schema_errors import one_line
from shared.settings import Settings


def _parser() -> argparse.ArgumentParser:
    defaults = EmulatorConfig()
    parser = argparse.ArgumentParser(
        prog="python -m harness.local.emulators",
        description="Run the DynamoDB and Bedrock Agent Runtime emulators on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--dynamodb-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--bedrock-port", type=int, default=0, help="0: any free port")
    parser.add_argument("--cloudwatch-port", type=int, default=0, help="0: any free port")
    parser.add_argument(
        "--dynamodb",
        choices=CHOICES,
        default="moto",
        help="the DynamoDB to start: moto (default, in this process), dynalite (Node; "
        "installed on demand into the project's cache folder) or auto (dynalite where Node is)",
    )
    parser.add_argument(
        "--dynamodb-url",
        default=None,
        help="use this DynamoDB (e.g. DynamoDB Local) instead of starting one",
    )
    parser.add_argument(
        "--table", default=None, help="the sessions table (default: DYNAMODB_TABLE's value)"
    )
    parser.add_argument(
        "--gateway-table",
        action="append",
        default=None,
        metavar="NAME",
        help="a gateway state table to create, repeatable (default: GATEWAY_STATE_TABLE's value)",
    )
    parser.add_argument("--region", default=None, help="default: AWS_REGION's value")
    parser.add_argument(
        "--print-setup",
        nargs="?",
        const="cli",
        choices=("cli", "json"),
        default=None,
        help="print the tables to create (AWS CLI commands, or =json: the requests) and exit",
    )
    parser.add_argument("--latency-ms", type=float, default=defaults.latency_ms)
    parser.add_argument("--chunk-count", type=int, default=defaults.chunk_count)
    parser.add_argument("--chunk-delay-ms", type=float, default=defaults.chunk_delay_ms)
    parser.add_argument("--fault", choices=FAULTS, default=None)
    parser.add_argument("--fault-rate", type=float, default=defaults.fault_rate)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    return parser


def _ignore_cpython_3130_wakeup_bug() -> None:
    """Python 3.13.0 only: asyncio's `Server._wakeup` iterates None when a transport left
    over from a stopped server is collected (fixed in 3.13.1), printing an "Exception
    ignored" traceback as the process exits after Ctrl-C. Drop exactly that one; every other
    unraisable error still reaches the usual hook."""
    if sys.version_info[:3] != (3, 13, 0):
        return
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        frames = traceback.extract_tb(unraisable.exc_traceback)
        if (
            isinstance(unraisable.exc_value, TypeError)
            and frames
            and frames[-1].name == "_wakeup"
            and frames[-1].filename.endswith(os.path.join("asyncio", "base_events.py"))
        ):
            return
        previous(unraisable)

    sys.unraisablehook = hook


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, start both emulators, print the exports, wait for a signal, stop (or
    with ``--print-setup``, print the tables and return)."""
    _ignore_cpython_3130_wakeup_bug()
    args = _parser().parse_args(argv)
    options = {
        "latency_ms": args.latency_ms,
        "chunk_count": args.chunk_count,
        "chunk_delay_ms": args.chunk_delay_ms,
        "fault": args.fault,
        "fault_rate": args.fault_rate,
        "seed": args.seed,
    }
    try:
        # Names and region the flags leave unset are the ones the stacks and the gateway read.
        settings, gateway = Settings(), GatewaySettings()
        store = "moto"
        if args.dynamodb_url is None and not args.print_setup:
            store, why = choose_store(args.dynamodb)
            if why:
                print(f"DynamoDB: {why}", file=sys.stderr, flush=True)
        emulators = LocalEmulators(
            host=args.host,
            dynamodb_port=args.dynamodb_port,
            bedrock_port=args.bedrock_port,
            cloudwatch_port=args.cloudwatch_port,
            table=args.table or settings.dynamodb_table,
            shadow_table=settings.dynamodb_shadow_table,
            extra_tables=args.gateway_table or [gateway.state_table],
            region=args.region or settings.aws_region,
            bedrock_options=options,
            external_dynamodb_url=args.dynamodb_url,
            dynamodb=store,
        )
    except (ValueError, RuntimeError) as error:  # pydantic's ValidationError is a ValueError
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2

    if args.print_setup:
        # The tables this run would create, listed by the same object, never started.
        if args.print_setup == "json":
            print(setup_json(emulators.tables))
        else:
            print(aws_cli_commands(emulators.tables, emulators.region))
        return 0

    with StopSignals() as stop, emulators, frozen_heap():
        for name, value in emulators.env().items():
            print(f"export {name}={value}")
        sys.stdout.flush()
        if emulators.ttl_note:
            print(emulators.ttl_note, file=sys.stderr, flush=True)
        print(
            f"emulators up: DynamoDB ({emulators.dynamodb.kind}) {emulators.dynamodb_url} "
            f"(table {emulators.table}), "
            f"Bedrock Agent Runtime {emulators.bedrock_url}, "
            f"CloudWatch {emulators.cloudwatch_url}; Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        stop.wait()
        print("stopping emulators", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
