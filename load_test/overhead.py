"""The gateway's own cost: each gateway target against the stack it fronts, served alone by
the same uvicorn settings (one worker), on `/health`, side by side in one run.

Two pairs: `gateway-100` against `fastapi-uvicorn`, and `gateway-0` against `flask-a2wsgi`
(Flask through a2wsgi with the gateway's thread count). Two ways to measure:

- wall clock (default): rounds in ABBA order (the direct target first in even rounds, the
  gateway first in odd ones), each target freshly started; a 1-user run gives p50 (the
  added latency), a `users`-user run gives requests/s. Medians over the rounds. Honest but
  noisy on a shared machine: compare the pair, not figures from another run.
- instructions (`--instructions`): each target under valgrind's callgrind, counters zeroed
  after a warm-up, then `requests` sequential requests on one keep-alive connection; the
  instructions the server executed per request. The same count whatever else the machine
  is doing, so the ratio direct / gateway is the CPU-bound throughput ratio, repeatable.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from load_test import engine, stats
from load_test.scenarios import Scenario, build_scenario
from load_test.targets import Emulators, Target, Workers, started

PAIRS: tuple[tuple[str, str], ...] = (
    ("fastapi-uvicorn", "gateway-100"),
    ("flask-a2wsgi", "gateway-0"),
)
PATH = "/health"

Say = Callable[[str], None]


@dataclass
class Figures:
    """What one target measured, one entry per round (wall clock) or one count."""

    rps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    instructions: int | None = None

    def to_json(self) -> dict[str, object]:
        """The raw figures and their medians."""
        return {
            "rps": self.rps,
            "p50_ms": self.p50_ms,
            "median_rps": median(self.rps),
            "median_p50_ms": median(self.p50_ms),
            "instructions_per_request": self.instructions,
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

    def to_json(self) -> dict[str, object]:
        """As JSON-ready data."""
        return {
            "direct": self.direct,
            "gateway": self.gateway,
            "throughput_ratio": self.throughput_ratio,
            "added_p50_ms": self.added_p50_ms,
            "instruction_ratio": self.instruction_ratio,
        }


def compare(direct: Figures, gateway: Figures, names: tuple[str, str]) -> Comparison:
    """The ratios of one pair, from each side's medians (None where a side has none)."""
    d_rps, g_rps = median(direct.rps), median(gateway.rps)
    d_p50, g_p50 = median(direct.p50_ms), median(gateway.p50_ms)
    throughput = g_rps / d_rps if d_rps and g_rps is not None else None
    added = g_p50 - d_p50 if d_p50 is not None and g_p50 is not None else None
    instructions = (
        direct.instructions / gateway.instructions
        if direct.instructions and gateway.instructions
        else None
    )
    return Comparison(names[0], names[1], throughput, added, instructions)


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
                figures[name].p50_ms.append(one.latency.p50_ms)
                figures[name].rps.append(many.rps)
                say(
                    f"round {number + 1}/{rounds} {name:16s} p50 {one.latency.p50_ms:6.2f} ms"
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
    emulators: Emulators, log_dir: Path, *, requests: int, say: Say, log_level: str = "WARNING"
) -> dict[str, Figures]:
    """Instructions per request of every target of `PAIRS`, counted by callgrind."""
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (Debian: apt-get install valgrind)")
    figures: dict[str, Figures] = {}
    for pair in PAIRS:
        for name in pair:
            out = log_dir / f"callgrind.{name}"
            for old in log_dir.glob(f"callgrind.{name}.*"):
                old.unlink()
            prefix = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p")
            say(f"{name}: starting under callgrind (a minute or two)")
            with started(
                name,
                workers=_ONE_WORKER,
                emulators=emulators,
                log_dir=log_dir,
                prefix=prefix,
                ready_timeout_s=900.0,
                # The gateway reads its rollout once a second. Under callgrind's slowdown
                # (some 50 times) that would be charged to 50 times fewer requests than at
                # full speed, so the count leaves it out.
                extra_env={"GATEWAY_REFRESH_SECONDS": "3600", "LOG_LEVEL": log_level},
            ) as target:
                assert target.process is not None
                pid = str(target.process.pid)
                with httpx.Client(base_url=target.url, timeout=120) as client:
                    for _ in range(30):  # warm-up: imports, caches, the first connection
                        client.get(PATH).raise_for_status()
                    _control("-z", pid)
                    for _ in range(requests):
                        client.get(PATH).raise_for_status()
                    _control("-d", pid)
                dump = Path(f"{out}.{pid}.1")
                total = callgrind_total(dump.read_text())
            figures[name] = Figures(instructions=total // requests)
            say(f"{name}: {total // requests:,} instructions per request")
    return figures


def _control(flag: str, pid: str) -> None:
    subprocess.run(  # noqa: S603 - our own argv
        ["callgrind_control", flag, pid],  # noqa: S607 - found on PATH above
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
    lines = [f"{'target':16s} {'req/s':>9s} {'p50 ms':>8s} {'instr/request':>14s}"]
    for name, f in figures.items():
        rps, p50 = median(f.rps), median(f.p50_ms)
        lines.append(
            f"{name:16s} {_fmt(rps, '9.1f')} {_fmt(p50, '8.2f')} {_fmt(f.instructions, '14,d')}"
        )
    lines.append("")
    for c in comparisons:
        parts = [f"{c.gateway} vs {c.direct}:"]
        if c.throughput_ratio is not None:
            parts.append(f"throughput x{c.throughput_ratio:.3f}")
        if c.added_p50_ms is not None:
            parts.append(f"added p50 {c.added_p50_ms:+.2f} ms")
        if c.instruction_ratio is not None:
            parts.append(f"CPU-bound throughput (instructions) x{c.instruction_ratio:.3f}")
        lines.append("  ".join(parts))
    return "\n".join(lines)


def _fmt(value: float | int | None, spec: str) -> str:
    width = int(re.match(r"\d+", spec).group(0))  # type: ignore[union-attr]
    return format(value, spec) if value is not None else "-".rjust(width)


_ONE_WORKER = Workers(workers=1)
