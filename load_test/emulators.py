"""`python -m load_test.emulators`: the harness's emulators, run for load.

    python -m load_test.emulators dynamodb      moto's DynamoDB alone; prints its export line
    python -m load_test.emulators [FLAGS]       as `python -m harness.local.emulators [FLAGS]`

Both without werkzeug's line per DynamoDB request (`make run` silences it too): under load
that is thousands of lines a second, formatted and written by the interpreter that serves
the store. The load test runs DynamoDB in a process of its own and the agent emulator in
another (`--dynamodb-url`), so the two do not share one GIL, and each one's CPU can be
read apart: with moto serialising every request, the store is often what limits a run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from harness.local.emulators.__main__ import main as run_emulators
from harness.local.emulators.dynamodb import DynamoDBEmulator
from harness.local.emulators.heap import frozen_heap
from harness.local.processes import StopSignals


def _quiet() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def serve_dynamodb(host: str, port: int) -> int:
    """moto's DynamoDB on `host:port` until SIGTERM or SIGINT; prints its export line."""
    with StopSignals() as stop, DynamoDBEmulator(host, port) as dynamodb, frozen_heap():
        print(f"export AWS_ENDPOINT_URL_DYNAMODB={dynamodb.url}", flush=True)
        stop.wait()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Quiet werkzeug's request log, then serve DynamoDB alone or both emulators."""
    _quiet()
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["dynamodb"]:
        parser = argparse.ArgumentParser(prog="python -m load_test.emulators dynamodb")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=0, help="0: any free port")
        options = parser.parse_args(args[1:])
        return serve_dynamodb(options.host, options.port)
    return run_emulators(args)


if __name__ == "__main__":
    sys.exit(main())
