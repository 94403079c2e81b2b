"""`python -m parity_tests.fuzz --cases 1000 --seed 1`: start the emulators, both stacks
under their production servers and the gateway at 50 %, fuzz them, print a summary.
Exit 0: no failure; 1: failures; 2: a setup error."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from parity_tests.fuzz.run import fuzz, schemathesis_cli
from parity_tests.fuzz.stacks import serve


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m parity_tests.fuzz", description=__doc__)
    parser.add_argument("--cases", type=int, default=1000, help="how many cases (about)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed, the same cases")
    parser.add_argument("--logs", type=Path, default=None, help="where the servers log")
    parser.add_argument(
        "--cli-examples",
        type=int,
        default=100,
        help="then `schemathesis run --checks all` with this many examples an operation, "
        "against each stack through the gateway (0: skip)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, serve, fuzz, print; the exit status says whether anything failed."""
    args = _parser().parse_args(argv)
    logs = args.logs or Path(tempfile.mkdtemp(prefix="dualstack-fuzz-"))
    try:
        with serve(logs) as urls:
            print(f"fuzzing {', '.join(f'{t} {u}' for t, u in urls.items())}", flush=True)
            summary = fuzz(
                urls, args.cases, args.seed, progress=lambda line: print(line, flush=True)
            )
            print("\n".join(summary.lines()), flush=True)
            failed: list[str] = []
            if args.cli_examples:
                failed = schemathesis_cli(urls["gateway"], args.cli_examples, args.seed, logs)
    except (OSError, RuntimeError) as exc:
        print(f"fuzz: setup failed: {exc}", file=sys.stderr)
        return 2
    if failed:
        print(f"schemathesis run found failures against: {', '.join(failed)}")
    print(f"server logs: {logs}")
    return 1 if summary.failures or failed else 0


if __name__ == "__main__":
    sys.exit(main())
