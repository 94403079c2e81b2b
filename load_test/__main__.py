"""`python -m load_test`: what each stack and the gateway sustain, measured side by side.

    python -m load_test bench [--report DIR] [--json PATH]
        the standard comparison: Flask on gunicorn (sync workers, threads), Flask through
        a2wsgi, FastAPI on uvicorn and the gateway at 50 %; 64 and 256 users; chat turns;
        200 ms agent latency; the client's own ceiling first.
    python -m load_test run --target fastapi-uvicorn --users 32 --duration 10
    python -m load_test run --url mine=http://127.0.0.1:8000 --rate 50,100 --duration 20
    python -m load_test overhead [--instructions]
        the gateway's own cost on /health: gateway-100 against FastAPI alone and gateway-0
        against Flask through a2wsgi alone, one uvicorn worker each, side by side; with
        --instructions also a split chat POST: gateway-50 against both stacks alone.
    python -m load_test soak [--minutes 10] [--report reports/soak]
        the gateway at 50 % under an open loop at 70 % of its measured capacity, a rollout
        change every minute, 1 % injected agent faults; its memory, descriptors, sheds and
        latency read every few seconds; fails on an unexpected answer, a leak, or memory
        growth over 10 % after the warm-up.
    python -m load_test gate [--update] [--margin 3] [--scenarios NAME,...] [--report DIR]
        the merge gate on CPU cost: instructions per request under callgrind for /health
        and chat on each stack alone and through the gateway at 0, 50 and 100 %, against
        load_test/baseline.json; fails when one got dearer than its margin (3 %).
    python -m load_test shadow [--rounds 4] [--duration 30] [--rate 20] [--json PATH]
        what shadowing costs the primary: the gateway at 50 %, runs at shadow_percent 0
        and 100 in ABBA order, switched through the admin API; fails when the p50 or p99
        at 100 exceeds --max-ratio (1.1) times that at 0, or the CPU passes --max-cpu.

Exit status: 0 when every run was measured (errors the servers answered are figures, not
failures) or the soak, shadow benchmark or gate passed, 1 when it failed, 2 on a usage or
set-up error.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.local.emulators.dynalite import CHOICES, choose_store
from harness.local.emulators.faults import FAULTS, is_fault
from load_test import gate, overhead, report, shadow, soak, soak_report, targets
from load_test.bench import Plan, compare, machine
from load_test.client import parse_origin
from load_test.engine import ClosedLoop, Load, OpenLoop
from load_test.progress import say
from load_test.scenarios import SCENARIOS
from load_test.targets import CEILING, STANDARD_TARGETS, Workers

_DEFAULTS: dict[str, dict[str, Any]] = {
    "bench": {"users": "64,256", "duration": 20.0, "ramp_up": 5.0, "ceiling": True},
    "run": {"users": "10", "duration": 10.0, "ramp_up": 1.0, "ceiling": False},
}


def _numbers(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas: {text!r}"
        ) from None
    if not values or any(value <= 0 for value in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers: {text!r}")
    return values


def _add_options(parser: argparse.ArgumentParser, command: str) -> None:
    defaults = _DEFAULTS[command]
    workers = Workers()
    what = parser.add_argument_group("what to measure")
    what.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help=f"targets to start: {', '.join(STANDARD_TARGETS)}, gateway-N (N %% to FastAPI), "
        f"{CEILING}" + (" (default: the standard five)" if command == "bench" else ""),
    )
    what.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="a server already running elsewhere (the tool starts nothing for it)",
    )
    what.add_argument("--scenario", choices=SCENARIOS, default="chat")
    what.add_argument("--turns", type=int, default=5, help="turns per conversation (chat)")
    load = parser.add_argument_group("load")
    load.add_argument(
        "--users",
        type=_numbers,
        default=_numbers(str(defaults["users"])),
        help=f"closed loop: concurrent users, comma-separated (default {defaults['users']})",
    )
    load.add_argument(
        "--rate", type=_numbers, default=None, help="open loop instead: arrivals per second"
    )
    load.add_argument("--duration", type=float, default=defaults["duration"], help="seconds")
    load.add_argument(
        "--requests",
        type=int,
        default=None,
        metavar="N",
        help="instead of --duration: send N requests to each target at each load, then stop "
        "(a hard cap: those sent during --ramp-up count, as warm-up, unmeasured; the open loop "
        "has none; the client-ceiling yardstick stays timed)",
    )
    load.add_argument(
        "--ramp-up",
        type=float,
        default=None,
        help=f"seconds over which the users start, unmeasured (default {defaults['ramp_up']:g}; "
        "0 with --requests)",
    )
    load.add_argument("--max-in-flight", type=int, default=1000, help="open loop's cap")
    load.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    load.add_argument("--pause", type=float, default=1.0, help="seconds between runs")
    ceiling = parser.add_argument_group("the client's ceiling")
    ceiling.add_argument(
        "--ceiling",
        action=argparse.BooleanOptionalAction,
        default=defaults["ceiling"],
        help="measure the client against a trivial server first",
    )
    ceiling.add_argument(
        "--ceiling-duration", type=float, default=None, help="seconds (default: up to 10)"
    )
    servers = parser.add_argument_group("servers")
    servers.add_argument("--agent-latency-ms", type=float, default=200.0)
    servers.add_argument(
        "--dynamodb",
        choices=CHOICES,
        default="moto",
        help="the local DynamoDB to start: moto (default), dynalite (Node, about a third of "
        "moto's CPU a request; installed on demand into the project's cache folder) or auto "
        "(dynalite where Node is; `make bench` passes auto)",
    )
    servers.add_argument(
        "--dynamodb-url",
        default=None,
        help="a DynamoDB to use instead of starting one (e.g. DynamoDB Local)",
    )
    servers.add_argument("--sync-workers", type=int, default=workers.sync_workers)
    servers.add_argument("--workers", type=int, default=workers.workers)
    servers.add_argument("--threads", type=int, default=workers.threads, help="per gthread worker")
    servers.add_argument("--wsgi-threads", type=int, default=workers.wsgi_threads, help="a2wsgi's")
    servers.add_argument("--log-level", default="WARNING", help="the stacks' LOG_LEVEL")
    out = parser.add_argument_group("output")
    out.add_argument("--json", type=Path, default=None, metavar="PATH", help="raw figures")
    out.add_argument("--report", type=Path, default=None, metavar="DIR", help="HTML report")
    out.add_argument("--quiet", action="store_true", help="no progress on stderr")


def build_parser() -> argparse.ArgumentParser:
    """The command line: `bench` and `run`, with the same options and other defaults."""
    parser = argparse.ArgumentParser(
        prog="python -m load_test",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("bench", "the standard comparison"), ("run", "a one-off measurement")):
        _add_options(commands.add_parser(name, help=help_), name)
    cost = commands.add_parser(
        "overhead",
        help="the gateway's own cost against the stacks alone",
        description=overhead.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cost.add_argument("--rounds", type=int, default=4, help="wall clock: ABBA rounds")
    cost.add_argument("--duration", type=float, default=8.0, help="wall clock: seconds a run")
    cost.add_argument("--users", type=int, default=16, help="wall clock: users for req/s")
    cost.add_argument(
        "--instructions", action="store_true", help="count instructions under callgrind instead"
    )
    cost.add_argument(
        "--requests", type=int, default=300, help="callgrind: /health requests counted"
    )
    cost.add_argument(
        "--chat-requests",
        type=int,
        default=100,
        help="callgrind: chat requests counted on the split gateway and the stacks alone"
        " (0 skips the chat measurement)",
    )
    cost.add_argument("--log-level", default="WARNING", help="the stacks' LOG_LEVEL")
    cost.add_argument(
        "--pin",
        action="store_true",
        help="wall clock: server on one CPU, client on another (Linux, taskset)",
    )
    cost.add_argument("--json", type=Path, default=None, metavar="PATH", help="raw figures")
    _add_soak_options(
        commands.add_parser(
            "soak",
            help="the gateway under a long load, watched for errors and leaks",
            description=soak.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    shadow.add_options(
        commands.add_parser(
            "shadow",
            help="the primary's latency with every conversation shadowed against none",
            description=shadow.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    gate.add_options(
        commands.add_parser(
            "gate",
            help="instructions per request against the committed baseline",
            description=gate.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    return parser


def _faults(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if not is_fault(name)]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(FAULTS)}"
        )
    return names


def _add_soak_options(parser: argparse.ArgumentParser) -> None:
    plan, limits = soak.SoakPlan(), soak.Limits()
    load = parser.add_argument_group("load")
    load.add_argument("--minutes", type=float, default=plan.duration_s / 60, help="(default 10)")
    load.add_argument(
        "--rate",
        type=float,
        default=None,
        help="arrivals per second, instead of measuring the capacity first",
    )
    load.add_argument(
        "--load-fraction",
        type=float,
        default=plan.load_fraction,
        help="the share of the measured capacity to drive (default 0.7)",
    )
    load.add_argument(
        "--capacity-users",
        type=_numbers,
        default=[float(users) for users in plan.capacity_users],
        help="closed-loop users of each capacity step, comma-separated (default 32,64,128)",
    )
    load.add_argument(
        "--capacity-seconds", type=float, default=plan.capacity_s, help="each step (default 10)"
    )
    load.add_argument("--turns", type=int, default=plan.turns, help="turns per conversation")
    load.add_argument("--max-in-flight", type=int, default=plan.max_in_flight)
    load.add_argument(
        "--timeout", type=float, default=plan.timeout_s, help="per request, seconds (default 60)"
    )
    load.add_argument("--seed", type=int, default=plan.seed, help="of the fault draws")
    changes = parser.add_argument_group("rollout changes and faults")
    changes.add_argument(
        "--start-percent", type=float, default=plan.start_percent, help="(default 50)"
    )
    changes.add_argument(
        "--rollout-every", type=float, default=plan.rollout_every_s, help="seconds (default 60)"
    )
    changes.add_argument(
        "--percents",
        type=_numbers_or_zero,
        default=list(plan.percents),
        help="the percentages set in turn (default 30,50,70,50)",
    )
    changes.add_argument(
        "--fault-rate",
        type=float,
        default=plan.fault_rate,
        help="share of chat turns carrying an agent fault (default 0.01)",
    )
    changes.add_argument(
        "--faults",
        type=_faults,
        default=FAULTS,
        help=f"the faults injected in turn (default {','.join(FAULTS)})",
    )
    watch = parser.add_argument_group("readings and limits")
    watch.add_argument(
        "--interval", type=float, default=plan.interval_s, help="seconds between readings"
    )
    watch.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds left out of the memory and descriptor judgement (default: 10 %% of the "
        "duration or 60, whichever is shorter)",
    )
    watch.add_argument(
        "--window",
        type=float,
        default=limits.window_s,
        help="seconds of readings whose median is the baseline (after the warm-up) and the "
        "end (default 30)",
    )
    watch.add_argument(
        "--max-rss-growth",
        type=float,
        default=limits.rss_growth * 100,
        metavar="PERCENT",
        help="(default 10)",
    )
    watch.add_argument(
        "--fd-slack",
        type=int,
        default=limits.fd_slack,
        help="open descriptors the gateway may gain (default 10)",
    )
    servers = parser.add_argument_group("servers")
    servers.add_argument("--agent-latency-ms", type=float, default=plan.agent_latency_ms)
    servers.add_argument(
        "--agent-timeout",
        type=float,
        default=plan.agent_timeout_s,
        help="the stacks' AGENT_TIMEOUT_SECONDS: when a hung agent's 504 comes (default 30)",
    )
    servers.add_argument("--log-level", default=plan.log_level, help="the stacks' LOG_LEVEL")
    out = parser.add_argument_group("output")
    out.add_argument(
        "--report",
        type=Path,
        default=Path("reports/soak"),
        metavar="DIR",
        help="soak.json, index.html and the servers' logs (default reports/soak)",
    )
    out.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _numbers_or_zero(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas: {text!r}"
        ) from None


def soak_plan_from(args: argparse.Namespace) -> soak.SoakPlan:
    """The soak the arguments describe; ValueError when they do not add up."""
    if any(users != int(users) for users in args.capacity_users):
        raise ValueError("--capacity-users must be whole numbers")
    return soak.SoakPlan(
        duration_s=args.minutes * 60,
        interval_s=args.interval,
        warmup_s=args.warmup,
        rollout_every_s=args.rollout_every,
        start_percent=args.start_percent,
        percents=tuple(args.percents),
        fault_rate=args.fault_rate,
        faults=tuple(args.faults),
        rate=args.rate,
        load_fraction=args.load_fraction,
        capacity_users=tuple(int(users) for users in args.capacity_users),
        capacity_s=args.capacity_seconds,
        turns=args.turns,
        agent_latency_ms=args.agent_latency_ms,
        agent_timeout_s=args.agent_timeout,
        timeout_s=args.timeout,
        max_in_flight=args.max_in_flight,
        seed=args.seed,
        limits=soak.Limits(args.max_rss_growth / 100, args.fd_slack, args.window),
        log_dir=args.report / "logs",
        log_level=args.log_level,
    )


def _soak(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not Path("/proc/self/fd").is_dir():
        parser.error("the soak reads memory and descriptors from /proc: Linux only")
    try:
        plan = soak_plan_from(args)
        check_writable(args.report, folder=True)
    except ValueError as error:
        parser.error(str(error))
    stream = None if args.quiet else sys.stderr
    try:
        result = soak.run_soak(plan, stream)
    except (RuntimeError, OSError) as error:
        say(sys.stderr, f"error: {error}")
        return 2
    except KeyboardInterrupt:
        say(sys.stderr, "interrupted; the servers were stopped")
        return 130
    data = soak_report.write_json(result, args.report)
    page = soak_report.write_html(result, args.report)
    print("\n".join(soak.summary_lines(result)))
    print(f"report: {page} (figures: {data})")
    return 0 if result.judgement.passed else 1


def _overhead(args: argparse.Namespace, log_dir: Path) -> int:
    def progress(line: str) -> None:
        say(sys.stderr, line)

    with targets.emulators_process(0.0, log_dir) as emulators:
        if args.instructions:
            figures = overhead.measure_instructions(
                emulators,
                log_dir,
                requests=args.requests,
                say=progress,
                log_level=args.log_level,
                chat_requests=args.chat_requests,
            )
        else:
            figures = overhead.measure_wall(
                emulators,
                log_dir,
                rounds=args.rounds,
                duration_s=args.duration,
                users=args.users,
                say=progress,
                log_level=args.log_level,
                pin=args.pin,
            )
    pairs = [overhead.compare(figures[d], figures[g], (d, g)) for d, g in overhead.PAIRS]
    print(overhead.table(figures, pairs))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "targets": {name: f.to_json() for name, f in figures.items()},
            "pairs": [p.to_json() for p in pairs],
            "split": split.to_json() if (split := overhead.split_cost(figures)) else None,
            "machine": machine(),
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        say(sys.stderr, f"wrote {args.json}")
    return 0


def _loads(args: argparse.Namespace, duration: float | None, ramp_up: float) -> tuple[Load, ...]:
    requests = args.requests
    if requests is not None:
        duration = None
    if args.rate:
        return tuple(OpenLoop(rate, duration, requests, args.max_in_flight) for rate in args.rate)
    return tuple(ClosedLoop(int(users), duration, requests, ramp_up) for users in args.users)


def _ramp_up(args: argparse.Namespace) -> float:
    # With a request count the ramp-up's requests come out of it: none unless asked for.
    if args.ramp_up is not None:
        return float(args.ramp_up)
    return 0.0 if args.requests is not None else float(_DEFAULTS[args.command]["ramp_up"])


def _check_numbers(args: argparse.Namespace) -> None:
    positive = {
        "--turns": args.turns,
        "--duration": args.duration,
        "--timeout": args.timeout,
        "--max-in-flight": args.max_in_flight,
        "--sync-workers": args.sync_workers,
        "--workers": args.workers,
        "--threads": args.threads,
        "--wsgi-threads": args.wsgi_threads,
    }
    if args.requests is not None:
        positive["--requests"] = args.requests
    if args.ceiling_duration is not None:
        positive["--ceiling-duration"] = args.ceiling_duration
    bad = [name for name, value in positive.items() if not value > 0]
    if bad:
        raise ValueError(f"{', '.join(bad)} must be positive")
    at_least_zero = {
        "--ramp-up": _ramp_up(args),
        "--pause": args.pause,
        "--agent-latency-ms": args.agent_latency_ms,
    }
    bad = [name for name, value in at_least_zero.items() if not value >= 0]
    if bad:
        raise ValueError(f"{', '.join(bad)} must not be negative")


def plan_from(args: argparse.Namespace, log_dir: Path, dynamodb: str = "moto") -> Plan:
    """The plan the arguments describe, starting the local DynamoDB `dynamodb` (what
    `--dynamodb` came to: `choose_store`); ValueError when they do not add up."""
    _check_numbers(args)
    names = [name.strip() for text in args.target for name in text.split(",") if name.strip()]
    urls = tuple(targets.parse_url_target(text) for text in args.url)
    if args.command == "bench" and not names and not urls:
        names = list(STANDARD_TARGETS)
    if not names and not urls:
        raise ValueError("name a --target or a --url")
    unknown = [name for name in names if not targets.is_known(name)]
    if unknown:
        raise ValueError(f"unknown target(s): {', '.join(unknown)}")
    loads = _loads(args, args.duration, _ramp_up(args))
    ceiling_loads: tuple[Load, ...] = ()
    if args.ceiling:
        duration = args.ceiling_duration or min(args.duration, 10.0)
        users = [int(u) for u in args.users] if not args.rate else [min(args.max_in_flight, 256)]
        ramp = min(_ramp_up(args), 2.0)
        ceiling_loads = tuple(ClosedLoop(u, duration, None, ramp) for u in users)
    return Plan(
        targets=tuple(dict.fromkeys(names)),
        loads=loads,
        urls=urls,
        scenario=args.scenario,
        turns=args.turns,
        timeout_s=args.timeout,
        agent_latency_ms=args.agent_latency_ms,
        dynamodb_url=args.dynamodb_url,
        dynamodb=dynamodb,
        workers=Workers(args.sync_workers, args.workers, args.threads, args.wsgi_threads),
        ceiling_loads=ceiling_loads,
        log_dir=log_dir,
        log_level=args.log_level,
        pause_s=args.pause,
    )


def _store(args: argparse.Namespace) -> str:
    """The local DynamoDB `--dynamodb` asks for (installing dynalite on demand), said on
    stderr; moto where `--dynamodb-url` names one elsewhere (nothing starts then)."""
    if args.dynamodb_url is not None:
        return "moto"
    try:
        store, why = choose_store(args.dynamodb)
    except RuntimeError as error:
        raise ValueError(f"--dynamodb {args.dynamodb}: {error}") from None
    if why and not args.quiet:
        say(sys.stderr, f"DynamoDB: {why}")
    return store


def check_writable(path: Path, *, folder: bool) -> None:
    """Create `path` (a folder) or its parent folder and prove it can be written to, so a
    bad output path fails before a long run rather than after it; ValueError if not."""
    where = path if folder else path.parent
    if not folder and path.is_dir():
        raise ValueError(f"{path} is a folder, not a file")
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as error:
        raise ValueError(f"cannot write to {where}: {error.strerror or error}") from None


def check_reachable(urls: Sequence[targets.Target], timeout_s: float = 5.0) -> None:
    """Connect once to each target given by URL; RuntimeError naming the first that
    cannot be reached (measuring it would only give a table of connection errors)."""
    for target in urls:
        host, port = parse_origin(target.url)
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
        except OSError as error:
            reason = error.strerror or str(error) or type(error).__name__
            raise RuntimeError(f"cannot reach {target.name} at {target.url}: {reason}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, measure, print the table, write what was asked for."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "soak":
        return _soak(args, parser)
    if args.command == "shadow":
        return shadow.command(args, parser)
    if args.command == "gate":
        return gate.command(args, parser)
    if args.command == "overhead":
        if min(args.rounds, args.requests, args.users) < 1 or args.duration <= 0:
            parser.error("--rounds, --requests, --users and --duration must be positive")
        if args.chat_requests < 0:
            parser.error("--chat-requests must be 0 or more")
        if args.json:
            try:
                check_writable(args.json, folder=False)
            except ValueError as error:
                parser.error(str(error))
        with tempfile.TemporaryDirectory(prefix="load_test_") as scratch:
            try:
                return _overhead(args, Path(scratch))
            except (RuntimeError, OSError) as error:
                say(sys.stderr, f"error: {error}")
                return 2
            except KeyboardInterrupt:
                say(sys.stderr, "interrupted; the servers were stopped")
                return 130
    with tempfile.TemporaryDirectory(prefix="load_test_") as scratch:
        log_dir = (args.report / "logs") if args.report else Path(scratch)
        try:
            plan = plan_from(args, log_dir, _store(args))
            if args.json:
                check_writable(args.json, folder=False)
            if args.report:
                check_writable(args.report, folder=True)
        except ValueError as error:
            parser.error(str(error))
        stream = None if args.quiet else sys.stderr
        try:
            check_reachable(plan.urls)
            bench = compare(plan, stream)
        except (RuntimeError, OSError) as error:
            say(sys.stderr, f"error: {error}")
            return 2
        except KeyboardInterrupt:
            say(sys.stderr, "interrupted; the servers were stopped")
            return 130
    print(report.format_table(bench))
    print(f"wall time {bench.wall_s:.0f} s")
    if args.json:
        report.write_json(bench, args.json)
        say(sys.stderr, f"wrote {args.json}")
    if args.report:
        path = report.write_html(bench, args.report)
        say(sys.stderr, f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
