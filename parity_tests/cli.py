"""The command line: `python -m parity_tests [options]`.

Exit status: 0 when no case shows an unexpected difference (and the latency gate, if set,
holds); 1 when some case does, or the gate fails; 2 on a usage or setup error (bad options,
an unreachable URL, a bad corpus or rules file), with a one-line reason on stderr."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import NoReturn, TextIO

from harness.diff import RulesError
from parity_tests import report as reports
from parity_tests.capture import load_capture
from parity_tests.cases import (
    DEFAULT_CORPUS,
    CorpusError,
    KeywordError,
    load_corpus,
    parse_keywords,
    select,
)
from parity_tests.runner import (
    DEFAULT_TIMEOUT_SECONDS,
    CaseResult,
    Options,
    RunReport,
    run,
)
from parity_tests.targets import (
    DEFAULT_FASTAPI_APP,
    DEFAULT_FLASK_APP,
    SetupError,
    Targets,
    check_reachable,
    live,
    serve_in_process,
    through_gateway,
)
from parity_tests.yaml_files import load_rules

DEFAULT_RULES = Path(__file__).with_name("rules.yaml")
PROG = "python -m parity_tests"

EPILOG = """\
targets: by default the suite starts the local emulators and both apps on free loopback
ports itself, and stops them at the end. --flask-url and --fastapi-url reach two running
servers; --gateway-url reaches both through one gateway, choosing the stack of each request
with its X-Dualstack-Backend header, and requires each answer to say (in the same header)
that the stack asked for served it. A gateway whose GATEWAY_OVERRIDE_HEADER is "token"
counts that header only with its token: give it with --override-token (default: the
GATEWAY_OVERRIDE_TOKEN environment variable, which keeps it off the command line). With URLs
nothing else needs to run. --flask-app and
--fastapi-app name the in-process apps' factories as import strings.

stale rules: a rule no case needed is reported as stale only when the whole corpus runs;
with -k the summary says "(subset run: not judged)".

latency: each case runs --repeat times per stack, alternating which stack goes first (ABBA).
Before the first case each stack gets an untimed GET /health and, with --repeat 2 or more,
an untimed run of the first case, so cold connections (client to stack, stack to its
upstreams) are not measured.
p50/p95 are reported per stack, per case and overall. --max-latency-ratio R fails the run
when FastAPI's overall p50 divided by Flask's is above R; the overall p50 pools every sample
of every case, because per-case ratios of fault cases and sub-millisecond requests are too
noisy to gate on. Use --repeat 3 or more when gating.

exit status: 0 no unexpected difference, 1 differences (or the latency gate failed),
2 usage or setup error (one line on stderr).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, as every other setup error: the usage is one --help away.
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def _url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (its --help is the CLI's documentation)."""
    parser = _Parser(
        prog=PROG,
        description="Replay the parity corpus against the Flask and FastAPI stacks and diff "
        "every answer: status, chosen headers, JSON body, latency.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_argument_group("targets")
    where.add_argument(
        "--flask-url", type=_url, metavar="URL", help="base URL of a running Flask stack"
    )
    where.add_argument(
        "--fastapi-url", type=_url, metavar="URL", help="base URL of a running FastAPI stack"
    )
    where.add_argument(
        "--gateway-url", type=_url, metavar="URL", help="base URL of a gateway serving both"
    )
    where.add_argument(
        "--override-token",
        metavar="TOKEN",
        help="with --gateway-url: sent as X-Dualstack-Override-Token with every request, for "
        "a gateway in token mode (default: $GATEWAY_OVERRIDE_TOKEN)",
    )
    where.add_argument(
        "--flask-app",
        default=DEFAULT_FLASK_APP,
        metavar="MODULE:FACTORY",
        help="in-process Flask app factory, called with the settings (default %(default)s)",
    )
    where.add_argument(
        "--fastapi-app",
        default=DEFAULT_FASTAPI_APP,
        metavar="MODULE:FACTORY",
        help="in-process FastAPI app factory, called with the settings (default %(default)s)",
    )
    what = parser.add_argument_group("what to run")
    what.add_argument(
        "--corpus",
        type=Path,
        default=DEFAULT_CORPUS,
        metavar="DIR|FILE.jsonl",
        help="case directory, or traffic the gateway captured (GATEWAY_CAPTURE_PATH) to replay",
    )
    what.add_argument(
        "--rules", type=Path, default=DEFAULT_RULES, metavar="FILE", help="rules YAML file"
    )
    what.add_argument(
        "-k",
        "--case",
        action="append",
        default=[],
        metavar="EXPRESSION",
        help="run only the cases whose id (file/name) matches EXPRESSION, as pytest -k: words "
        "matched as substrings ignoring case, joined by and, or, not and parentheses, e.g. "
        "-k chat, -k 'not hang', -k '(cors or unicode) and not preflight'; repeated: a case "
        "matching any",
    )
    what.add_argument("--list", action="store_true", help="list the selected cases and exit")
    how = parser.add_argument_group("how")
    how.add_argument(
        "--repeat", type=_positive_int, default=1, metavar="N", help="rounds per case (ABBA)"
    )
    how.add_argument(
        "--noise-check",
        action="store_true",
        help="send each request to Flask twice; paths that differ are noise for that request",
    )
    how.add_argument(
        "--max-latency-ratio",
        type=_positive_float,
        metavar="R",
        help="fail when FastAPI's overall p50 / Flask's overall p50 is above R",
    )
    how.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="longest wait for one answer (default %(default)g); the hung-agent case takes "
        "the stacks' AGENT_TIMEOUT_SECONDS x AGENT_MAX_ATTEMPTS",
    )
    how.add_argument("--report", type=Path, metavar="DIR", help="write reports into DIR")
    return parser


class Progress:
    """A live line on a terminal (rewritten in place), plain lines anywhere else."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()

    def __call__(self, done: int, total: int, result: CaseResult) -> None:
        state = "FAILED" if result.failed else "ok"
        line = f"[{done:>3}/{total}] {result.case.id} {state}"
        if self.live:
            self.stream.write("\r\x1b[2K" + line[:120])
            if done == total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _targets(args: argparse.Namespace) -> AbstractContextManager[Targets]:
    if args.gateway_url:
        token = args.override_token or os.environ.get("GATEWAY_OVERRIDE_TOKEN") or None
        return nullcontext(through_gateway(args.gateway_url, token))
    if args.flask_url:
        return nullcontext(live(args.flask_url, args.fastapi_url))
    return serve_in_process(flask_app=args.flask_app, fastapi_app=args.fastapi_app)


@contextmanager
def _reachable(targets: AbstractContextManager[Targets]) -> Iterator[Targets]:
    with targets as running:
        check_reachable(running)
        yield running


def _check_writable(directory: Path) -> None:
    # Before the run, not after minutes of it: a report that cannot be written is a setup
    # error like any other.
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise SetupError(f"cannot write the reports into {directory}: {reason}") from None


def _emit(text: str) -> None:
    """Print `text` to stdout; a reader that went away (`--list | head`) is not an error:
    the rest of the output goes nowhere, quietly."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit and would complain there: point it at devnull.
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        except (AttributeError, OSError, ValueError):  # not a real file (tests)
            pass
        finally:
            os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.flask_url) != bool(args.fastapi_url):
        parser.error("--flask-url and --fastapi-url go together")
    if args.gateway_url and args.flask_url:
        parser.error("--gateway-url or --flask-url/--fastapi-url, not both")
    if args.override_token and not args.gateway_url:
        parser.error("--override-token goes with --gateway-url")
    for expression in args.case:
        try:
            parse_keywords(expression)
        except KeywordError as error:
            parser.error(f"bad -k expression {expression!r}: {error}")
    try:
        rules = load_rules(args.rules)
        corpus = args.corpus
        loaded = load_capture(corpus) if corpus.suffix == ".jsonl" else load_corpus(corpus)
        cases = select(loaded, args.case)
        if not cases:
            # A typo must not quietly run nothing.
            wanted = " or ".join(f"-k {expression!r}" for expression in args.case)
            raise CorpusError(f"no case matches {wanted}")
        if args.list:
            _emit("\n".join(case.id for case in cases))
            return 0
        if args.report:
            _check_writable(args.report)
        options = Options(args.repeat, args.noise_check, args.max_latency_ratio, args.timeout)
        with _reachable(_targets(args)) as targets:
            result: RunReport = run(
                cases, targets, rules, options, Progress(sys.stderr), judge_stale=not args.case
            )
    except (RulesError, CorpusError, SetupError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    _emit(reports.summary(result))
    if args.report:
        try:
            written = reports.write(result, args.report)
        except OSError as error:
            print(f"{PROG}: error: cannot write the reports: {error}", file=sys.stderr)
            return 2
        _emit("reports: " + ", ".join(str(path) for path in written))
    return result.exit_code
