"""The gateway's own cost: each gateway target against the stack it fronts, served alone by
the same uvicorn settings (one worker), side by side in one run.

On `/health`, three pairs: `gateway-100` against `fastapi-uvicorn`, `gateway-0` against
`flask-a2wsgi` (Flask through a2wsgi with the gateway's thread count), and upstream mode:
`gateway-upstream-100` (the gateway reaching FastAPI over HTTP, FastAPI in a process of its
own) against `fastapi-uvicorn`, the upstream alone; that pair on chat turns too (wall clock
and instructions, the gateway's and the upstream's counted together). On a chat POST (with
`--instructions`), the split: `gateway-50` serving chat conversations (a new conversation,
whose first turn the gateway routes by a `session_id` it mints into the body, then turns
routed by the sticky key it reads from the body) against the two stacks alone serving the
same conversations; the gateway's own cost is what it executed beyond what the stacks
execute alone for the requests each of them served through it. Two ways to measure:

- wall clock (default): rounds in ABBA order (the direct target first in even rounds, the
  gateway first in odd ones), each target freshly started; a 1-user run gives p50 (the
  added latency), a `users`-user run gives requests/s. Medians over the rounds. Honest but
  noisy on a shared machine: compare the pair, not figures from another run.
- instructions (`--instructions`): each target under valgrind's callgrind, counters zeroed
  after a warm-up, then `requests` sequential requests on one keep-alive connection; the
  instructions the server executed per request. The same count whatever else the machine
  is doing, so the ratio direct / gateway is the CPU-bound throughput ratio, repeatable.
  Chat requests cost the stacks far more than `/health` (the agent and store clients), so
  `chat_requests` of them are counted, after a warm-up that reaches both stacks.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import statistics
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from load_test import engine, stats
from load_test.client import Response
from load_test.engine import BACKEND_HEADER
from load_test.scenarios import Scenario, build_scenario
from load_test.targets import Emulators, Target, Workers, started

UPSTREAM = "gateway-upstream-100"
"""The gateway in upstream mode, in front of FastAPI running alone (`targets.UPSTREAM_OF`)."""
PAIRS: tuple[tuple[str, str], ...] = (
    ("fastapi-uvicorn", "gateway-100"),
    ("flask-a2wsgi", "gateway-0"),
    ("fastapi-uvicorn", UPSTREAM),
)
CHAT_PAIRS: tuple[tuple[str, str], ...] = (("fastapi-uvicorn", UPSTREAM),)
"""Pairs also compared on chat turns, by wall clock and by instructions."""
PATH = "/health"
SPLIT = "gateway-50"
"""The gateway target of the chat measurement: a split, so the sticky path and minting run."""
SPLIT_STACKS: dict[str, str] = {"flask": "flask-a2wsgi", "fastapi": "fastapi-uvicorn"}
"""The target serving each backend alone, by the name `X-Dualstack-Backend` gives it."""
CHAT_TURNS = 4

Say = Callable[[str], None]


@dataclass
class Figures:
    """What one target measured, one entry per round (wall clock) or one count."""

    rps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    chat_rps: list[float] = field(default_factory=list)
    chat_p50_ms: list[float] = field(default_factory=list)
    instructions: int | None = None
    """Per `/health` request."""
    chat_instructions: int | None = None
    """Per chat request."""
    served: dict[str, int] = field(default_factory=dict)
    """Chat requests counted, by the backend that served them."""

    def to_json(self) -> dict[str, object]:
        """The raw figures and their medians."""
        return {
            "rps": self.rps,
            "p50_ms": self.p50_ms,
            "median_rps": median(self.rps),
            "median_p50_ms": median(self.p50_ms),
            "chat_rps": self.chat_rps,
            "chat_p50_ms": self.chat_p50_ms,
            "median_chat_rps": median(self.chat_rps),
            "median_chat_p50_ms": median(self.chat_p50_ms),
            "instructions_per_request": self.instructions,
            "chat_instructions_per_request": self.chat_instructions,
            "chat_served": self.served,
        }


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values."""
    return statistics.median(values) if values else None


def round_order(pair: tuple[str, str], round_number: int) -> tuple[str, str]:
    """ABBA: the pair as given in even rounds, reversed in odd ones."""
    return pair if round_number % 2 == 0 else (pair[1], pair[0])


@dataclass(frozen=True)
class Comparison:
    """A gateway target against the stack it fronts."""

    direct: str
    gateway: str
    throughput_ratio: float | None
    """Gateway requests/s over direct requests/s (wall clock)."""
    added_p50_ms: float | None
    """Gateway p50 minus direct p50, 1 user (wall clock)."""
    instruction_ratio: float | None
    """Direct instructions per request over the gateway's: its CPU-bound throughput ratio."""
    chat_throughput_ratio: float | None = None
    chat_added_p50_ms: float | None = None
    chat_instruction_ratio: float | None = None
    """The same three on chat turns (`CHAT_PAIRS` only)."""

    def to_json(self) -> dict[str, object]:
        """As JSON-ready data."""
        return {
            "direct": self.direct,
            "gateway": self.gateway,
            "throughput_ratio": self.throughput_ratio,
            "added_p50_ms": self.added_p50_ms,
            "instruction_ratio": self.instruction_ratio,
            "chat_throughput_ratio": self.chat_throughput_ratio,
            "chat_added_p50_ms": self.chat_added_p50_ms,
            "chat_instruction_ratio": self.chat_instruction_ratio,
        }


def compare(direct: Figures, gateway: Figures, names: tuple[str, str]) -> Comparison:
    """The ratios of one pair, from each side's medians (None where a side has none)."""
    throughput, added = _wall(direct.rps, gateway.rps, direct.p50_ms, gateway.p50_ms)
    chat_throughput, chat_added = _wall(
        direct.chat_rps, gateway.chat_rps, direct.chat_p50_ms, gateway.chat_p50_ms
    )
    return Comparison(
        names[0],
        names[1],
        throughput,
        added,
        _ratio(direct.instructions, gateway.instructions),
        chat_throughput,
        chat_added,
        _ratio(direct.chat_instructions, gateway.chat_instructions),
    )


def _wall(
    d_rps: Sequence[float], g_rps: Sequence[float], d_p50: Sequence[float], g_p50: Sequence[float]
) -> tuple[float | None, float | None]:
    direct_rps, gateway_rps = median(d_rps), median(g_rps)
    direct_p50, gateway_p50 = median(d_p50), median(g_p50)
    throughput = gateway_rps / direct_rps if direct_rps and gateway_rps is not None else None
    added = gateway_p50 - direct_p50 if direct_p50 is not None and gateway_p50 is not None else None
    return throughput, added


def _ratio(direct: int | None, gateway: int | None) -> float | None:
    return direct / gateway if direct and gateway else None


@dataclass(frozen=True)
class SplitCost:
    """The split gateway's chat requests against the stacks alone serving the same ones."""

    gateway: str
    instructions: int
    """The gateway's instructions per chat request, both stacks' work included."""
    stacks: float
    """What the stacks alone execute for those requests: each stack's own count per chat
    request, weighted by the share of the requests it served through the gateway."""
    served: dict[str, int]

    @property
    def added(self) -> float:
        """The gateway's own share on top of the serving stacks: 0.02 is 2 % more."""
        return self.instructions / self.stacks - 1

    def to_json(self) -> dict[str, object]:
        """As JSON-ready data."""
        return {
            "gateway": self.gateway,
            "instructions_per_request": self.instructions,
            "stacks_per_request": self.stacks,
            "served": self.served,
            "added": self.added,
        }


def split_cost(figures: dict[str, Figures]) -> SplitCost | None:
    """The split's cost from the figures of `SPLIT` and of the stacks it served through
    (`SPLIT_STACKS`); None when any of them has no chat count, or served nothing."""
    split = figures.get(SPLIT)
    if split is None or split.chat_instructions is None or not split.served:
        return None
    total = sum(split.served.values())
    weighted = 0.0
    for backend, count in split.served.items():
        alone = figures.get(SPLIT_STACKS.get(backend, ""))
        if alone is None or alone.chat_instructions is None:
            return None
        weighted += alone.chat_instructions * count / total
    return SplitCost(SPLIT, split.chat_instructions, weighted, dict(split.served))


def measure_wall(
    emulators: Emulators,
    log_dir: Path,
    *,
    rounds: int,
    duration_s: float,
    users: int,
    say: Say,
    log_level: str = "WARNING",
    pin: bool = False,
) -> dict[str, Figures]:
    """Wall-clock figures of every target of `PAIRS`, rounds in ABBA order. With `pin`,
    the server runs on the first CPU and this process (the client) on the second, so the
    two never take each other's core: steadier figures on a small machine."""
    figures = {name: Figures() for pair in PAIRS for name in pair}
    scenario = build_scenario("health")
    chat = build_scenario("chat", turns=CHAT_TURNS)
    prefix: tuple[str, ...] = ()
    if pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2 or shutil.which("taskset") is None:
            raise RuntimeError("--pin needs two CPUs and taskset (util-linux)")
        prefix = ("taskset", "-c", str(cpus[0]))
        os.sched_setaffinity(0, {cpus[1]})
    for number in range(rounds):
        for pair in PAIRS:
            for name in round_order(pair, number):
                with started(
                    name,
                    workers=_ONE_WORKER,
                    emulators=emulators,
                    log_dir=log_dir,
                    extra_env={"LOG_LEVEL": log_level},
                    prefix=prefix,
                ) as target:
                    engine.run(target.url, scenario, engine.ClosedLoop(1, duration_s / 4))
                    one = _summary(target, scenario, engine.ClosedLoop(1, duration_s))
                    many = _summary(target, scenario, engine.ClosedLoop(users, duration_s))
                    if pair in CHAT_PAIRS:
                        engine.run(target.url, chat, engine.ClosedLoop(1, duration_s / 4))
                        chat_one = _summary(target, chat, engine.ClosedLoop(1, duration_s))
                        chat_many = _summary(target, chat, engine.ClosedLoop(users, duration_s))
                        figures[name].chat_p50_ms.append(chat_one.latency.p50_ms)
                        figures[name].chat_rps.append(chat_many.rps)
                figures[name].p50_ms.append(one.latency.p50_ms)
                figures[name].rps.append(many.rps)
                say(
                    f"round {number + 1}/{rounds} {name:20s} p50 {one.latency.p50_ms:6.2f} ms"
                    f" (1 user)  {many.rps:8.1f} req/s ({users} users)"
                )
    return figures


def _summary(target: Target, scenario: Scenario, load: engine.ClosedLoop) -> stats.Summary:
    result = engine.run(target.url, scenario, load)
    summary = stats.summarize(result.samples, result.elapsed_s)
    if summary.ok != result.sent:
        raise RuntimeError(f"{target.name} answered {summary.errors} during the measurement")
    return summary


def measure_instructions(
    emulators: Emulators,
    log_dir: Path,
    *,
    requests: int,
    say: Say,
    log_level: str = "WARNING",
    chat_requests: int = 0,
) -> dict[str, Figures]:
    """Instructions per request counted by callgrind: `/health` on every target of `PAIRS`,
    and with `chat_requests`, chat conversations on the split gateway and on the stacks it
    fronts (each target started once, both counts read from it)."""
    check_callgrind()
    health = [name for pair in PAIRS for name in pair]
    chat = [*SPLIT_STACKS.values(), SPLIT, UPSTREAM] if chat_requests else []
    figures: dict[str, Figures] = {}
    for name in dict.fromkeys([*health, *chat]):
        out = log_dir / f"callgrind.{name}"
        for old in log_dir.glob(f"callgrind.{name}.*"):
            old.unlink()
        prefix = callgrind_prefix(out)
        say(f"{name}: starting under callgrind (a minute or two)")
        with started(
            name,
            workers=_ONE_WORKER,
            emulators=emulators,
            log_dir=log_dir,
            prefix=prefix,
            ready_timeout_s=900.0,
            extra_env={**CALLGRIND_ENV, "LOG_LEVEL": log_level},
        ) as target:
            counter = _counters(target, out)
            found = figures[name] = Figures()
            with httpx.Client(base_url=target.url, timeout=120) as client:
                if name in health:
                    send_health(client, 30)  # warm-up: imports, caches, the first connection
                    with counter.count() as counted:
                        send_health(client, requests)
                    found.instructions = counted.total // requests
                    say(f"{name}: {found.instructions:,} instructions per /health request")
                if name in chat:
                    warm_chat(client, split=name == SPLIT)
                    with counter.count() as counted:
                        found.served = send_chat(client, chat_requests, name)
                    found.chat_instructions = counted.total // chat_requests
                    say(
                        f"{name}: {found.chat_instructions:,} instructions per chat request"
                        f" (served by {_served(found.served)})"
                    )
    return figures


def _served(served: dict[str, int]) -> str:
    return ", ".join(f"{backend} {count}" for backend, count in sorted(served.items()))


def send_health(client: httpx.Client, count: int) -> None:
    """`count` `/health` requests, one after another; HTTPStatusError on any not 2xx."""
    for _ in range(count):
        client.get(PATH).raise_for_status()


def send_chat(client: httpx.Client, count: int, name: str, user: int = 0) -> dict[str, int]:
    """`count` chat requests as a user sends them (conversations of `CHAT_TURNS` turns, the
    first without a `session_id`); the requests each backend served."""
    scenario = build_scenario("chat", turns=CHAT_TURNS).new_user(user)
    served: dict[str, int] = {}
    for _ in range(count):
        request = scenario.next_request()
        received = client.request(
            request.method, request.path, content=request.body, headers=dict(request.headers)
        )
        if received.status_code != 200:
            raise RuntimeError(f"{name} answered {received.status_code} to a chat request")
        scenario.observe(Response(received.status_code, dict(received.headers), received.content))
        backend = received.headers.get(BACKEND_HEADER) or _backend_of(name)
        served[backend] = served.get(backend, 0) + 1
    return served


def _backend_of(name: str) -> str:
    return next(backend for backend, alone in SPLIT_STACKS.items() if alone == name)


def warm_chat(client: httpx.Client, *, split: bool) -> None:
    """Warm-up chat turns: the stacks' AWS clients, pools and caches. Through the split
    gateway each stack is warmed by the override header, so neither starts cold whatever
    the minted ids draw."""
    for backend in SPLIT_STACKS if split else ("",):
        headers = {"Content-Type": "application/json"}
        if backend:
            headers["X-Dualstack-Backend"] = backend
        for turn in range(2 * CHAT_TURNS):
            body = {"message": f"warm-up turn {turn}"}
            client.post("/api/v1/chat", json=body, headers=headers).raise_for_status()


CALLGRIND_ENV: dict[str, str] = {
    # The gateway reads its rollout once a second, and adds its counts to the fleet's item
    # in the state table once a second. Under callgrind's slowdown (some 50 times) each
    # would be charged to 50 times fewer requests than at full speed, so the count leaves
    # both out (their cost is per second, not per request: README, "What the gateway
    # costs").
    "GATEWAY_REFRESH_SECONDS": "3600",
    "GATEWAY_FLEET_FLUSH_SECONDS": "3600",
    # The FastAPI stack's CloudWatch flush, once a minute, likewise (its per-request
    # buffering is counted: it is the stack's own cost).
    "METRICS_FLUSH_SECONDS": "3600",
    # A fixed hash seed: str hashes (and so dict and set layouts) are the same in every
    # run, which keeps the count repeatable from one run to the next.
    "PYTHONHASHSEED": "0",
}
"""The environment of a target whose instructions are counted."""


def check_callgrind() -> None:
    """RuntimeError naming the tool missing to count instructions, if one is."""
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (Debian: apt-get install valgrind)")


def callgrind_prefix(out: Path, *, instrumented: bool = True) -> tuple[str, ...]:
    """The command line that runs a server under callgrind, its dumps in `<out>.<pid>*`.
    Not `instrumented`: nothing is counted, and it runs several times faster, until
    `Callgrind.instrument(True)`."""
    return (
        "valgrind",
        "--tool=callgrind",
        f"--instr-atstart={'yes' if instrumented else 'no'}",
        f"--callgrind-out-file={out}.%p",
    )


class Callgrind:
    """Zeroes and dumps the counters of a process under callgrind; each dump is a file of
    its own (`<out>.<pid>.<n>`)."""

    def __init__(self, pid: str, out: Path) -> None:
        self.pid = pid
        self.out = out
        self.dumps = 0

    def instrument(self, on: bool) -> None:
        """Switch counting on or off (a process started with `--instr-atstart=no` counts
        nothing until it is switched on)."""
        _control("-i", "on" if on else "off", self.pid)

    @contextlib.contextmanager
    def count(self) -> Iterator[_Count]:
        """The instructions executed inside the block, in `.total` once it ends."""
        counted = _Count()
        _control("-z", self.pid)
        yield counted
        _control("-d", self.pid)
        self.dumps += 1
        dump = Path(f"{self.out}.{self.pid}.{self.dumps}")
        counted.total = callgrind_total(dump.read_text())


@dataclass
class _Count:
    total: int = 0


class _Together:
    """Counts several processes at once (a gateway and its upstream), as one total."""

    def __init__(self, counters: Sequence[Callgrind]) -> None:
        self.counters = counters

    @contextlib.contextmanager
    def count(self) -> Iterator[_Count]:
        """The instructions all of them executed inside the block, in `.total`."""
        counted = _Count()
        with contextlib.ExitStack() as stack:
            parts = [stack.enter_context(counter.count()) for counter in self.counters]
            yield counted
        counted.total = sum(part.total for part in parts)


def _counters(target: Target, out: Path) -> _Together:
    """The callgrind counters of `target`'s process and of its upstream's, if it has one
    (both started under the same `callgrind_prefix(out)`)."""
    found = []
    while target is not None:
        assert target.process is not None
        found.append(Callgrind(str(target.process.pid), out))
        target = target.upstream  # type: ignore[assignment]
    return _Together(found)


def _control(*args: str) -> None:
    subprocess.run(  # noqa: S603 - our own argv
        ["callgrind_control", *args],  # noqa: S607 - found on PATH above
        check=True,
        capture_output=True,
    )


def callgrind_total(dump: str) -> int:
    """The instruction total of a callgrind dump (its `summary:` or `totals:` line)."""
    found = re.search(r"^(?:summary|totals):\s+(\d+)", dump, re.MULTILINE)
    if found is None:
        raise ValueError("not a callgrind dump: no summary or totals line")
    return int(found.group(1))


def table(figures: dict[str, Figures], comparisons: Sequence[Comparison]) -> str:
    """The figures and the ratios, as the terminal shows them."""
    lines = [
        f"{'target':20s} {'req/s':>9s} {'p50 ms':>8s} {'chat req/s':>10s} {'chat p50':>8s}"
        f" {'instr/request':>14s} {'instr/chat':>12s}"
    ]
    for name, f in figures.items():
        rps, p50 = median(f.rps), median(f.p50_ms)
        chat_rps, chat_p50 = median(f.chat_rps), median(f.chat_p50_ms)
        lines.append(
            f"{name:20s} {_fmt(rps, '9.1f')} {_fmt(p50, '8.2f')} {_fmt(chat_rps, '10.1f')}"
            f" {_fmt(chat_p50, '8.2f')} {_fmt(f.instructions, '14,d')}"
            f" {_fmt(f.chat_instructions, '12,d')}"
        )
    lines.append("")
    for c in comparisons:
        for kind, throughput, added, instructions in (
            ("", c.throughput_ratio, c.added_p50_ms, c.instruction_ratio),
            (" chat", c.chat_throughput_ratio, c.chat_added_p50_ms, c.chat_instruction_ratio),
        ):
            if throughput is None and added is None and instructions is None:
                continue
            parts = [f"{c.gateway} vs {c.direct}{kind}:"]
            if throughput is not None:
                parts.append(f"throughput x{throughput:.3f}")
            if added is not None:
                parts.append(f"added p50 {added:+.2f} ms")
            if instructions is not None:
                parts.append(f"CPU-bound throughput (instructions) x{instructions:.3f}")
            lines.append("  ".join(parts))
    split = split_cost(figures)
    if split is not None:
        lines.append(
            f"{split.gateway} chat vs the stacks alone (served {_served(split.served)}):"
            f"  {split.instructions:,} vs {split.stacks:,.0f} instructions per request,"
            f" the gateway adds {split.added:+.2%}"
        )
    return "\n".join(lines)


def _fmt(value: float | int | None, spec: str) -> str:
    width = int(re.match(r"\d+", spec).group(0))  # type: ignore[union-attr]
    return format(value, spec) if value is not None else "-".rjust(width)


_ONE_WORKER = Workers(workers=1)
