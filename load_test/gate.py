"""`python -m load_test gate`: the merge gate on CPU cost, in instructions per request.

Wall-clock figures on a shared CI runner swing by a fifth from run to run; the instructions
a server executes for a request do not (callgrind counts them, whatever else the machine
does). The gate counts them for a fixed set of scenarios, compares each with the committed
baseline (`load_test/baseline.json`), and fails when one got dearer than its margin.

Scenarios: `/health` and a chat turn on each stack alone (FastAPI on uvicorn, Flask
through a2wsgi) and through the gateway at 0 % and 100 % (`gateway-0-*`, `gateway-100-*`),
and a chat turn through the gateway at 50 % (`gateway-50-chat`). The split's minted
session ids are random, and so is the share each stack serves, so its count is brought to
an even split: what it measured, minus the stacks alone weighted by the share each served,
plus the stacks alone half and half. The gateway's own cost on each path (its count minus
the stack's alone, per request) is reported beside the ratios, not gated: it is the
difference of two counts 20 to 120 times its size, so it moves by several percent between
runs on one commit. The gateway's `/health` paths are gated at 1 % instead (they repeat to
0.3 %), which 20 000 instructions more in the gateway's request path exceed.

How: every target starts at once under `valgrind --tool=callgrind --instr-atstart=no`
(nothing counted while it starts, several times faster than counting), one uvicorn worker
each, with the gateway's per-second work moved out of the way (`overhead.CALLGRIND_ENV`).
Once all have started, two at a time (one per core) are warmed up uncounted, switched to
counting, and counted idle twice (0.5 s and 2.5 s: callgrind's own cost per count and the
timers' per second, `Idle`); then one batch of each scenario is counted and dropped (the
first counted requests still fill caches) and `batches` batches are counted apart, on one
keep-alive connection, requests one after another. A batch's figure is its count less the
idle work of its duration (under callgrind a request lasts some 50 times longer than at
full speed, longer still on a busy machine, so the timers' share would follow the machine,
not the build), per request; a scenario's is its median batch's.

The servers inherit this process's environment: `GATEWAY_FASTAPI_APP` or
`GATEWAY_FLASK_APP` set to a wrapped app slows the gateway's paths only, which is how the
gate's own test proves a slower build fails (tests/load_test/test_gate.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from harness.report.page import render
from load_test import overhead, targets
from load_test.bench import machine
from load_test.progress import say
from load_test.targets import Workers

Kind = Literal["health", "chat"]
Say = Callable[[str], None]

BASELINE = Path(__file__).with_name("baseline.json")
DEFAULT_MARGIN = 3.0
"""Percent: how much dearer than its baseline a scenario may get."""
PARALLEL = 2
"""Targets measured at a time: one per core of the machines it runs on."""
UNIT: Final = "instructions per request (callgrind Ir)"


@dataclass(frozen=True)
class Scenario:
    """One figure the gate keeps: requests of `kind` to `target`."""

    name: str
    target: str
    kind: Kind


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("fastapi-health", "fastapi-uvicorn", "health"),
        Scenario("flask-health", "flask-a2wsgi", "health"),
        Scenario("fastapi-chat", "fastapi-uvicorn", "chat"),
        Scenario("flask-chat", "flask-a2wsgi", "chat"),
        Scenario("gateway-0-health", "gateway-0", "health"),
        Scenario("gateway-100-health", "gateway-100", "health"),
        Scenario("gateway-0-chat", "gateway-0", "chat"),
        Scenario("gateway-100-chat", "gateway-100", "chat"),
        Scenario("gateway-50-chat", "gateway-50", "chat"),
    )
}
STACK_CHAT: dict[str, str] = {"fastapi": "fastapi-chat", "flask": "flask-chat"}
"""The scenario of each stack alone serving chat turns, by the backend name the gateway
answers in `X-Dualstack-Backend`."""
SPLIT = "gateway-50-chat"
NEEDS: dict[str, tuple[str, ...]] = {SPLIT: tuple(STACK_CHAT.values())}
"""Scenarios measured along with one, to compute its figure."""
OWN: dict[str, tuple[str, ...]] = {
    "gateway-0-health": ("flask-health",),
    "gateway-100-health": ("fastapi-health",),
    "gateway-0-chat": ("flask-chat",),
    "gateway-100-chat": ("fastapi-chat",),
    SPLIT: tuple(STACK_CHAT.values()),
}
"""The stacks alone each gateway path fronts: the gateway's own cost on the path is its
figure minus theirs (for the split, their mean: its figure is brought to an even split)."""
MARGINS: dict[str, float | None] = {"gateway-0-health": 1.0, "gateway-100-health": 1.0}
"""Percent: the scenarios whose margin is not the default's. A gateway `/health` request is
some 1.1 to 1.6 million instructions, of which the gateway's own are 55 000 to 80 000, and
two runs on one commit agree to 0.3 %: at 1 %, 20 000 instructions more in the gateway's
request path (1.3 to 1.9 %) fail the gate, where the default 3 % would let them pass."""


def expand(names: Iterable[str]) -> list[str]:
    """The scenarios to measure for `names`, with those their figures need, in the
    order of `SCENARIOS`; ValueError naming any unknown one."""
    wanted = list(names)
    unknown = [name for name in wanted if name not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    chosen = set(wanted)
    for name in wanted:
        chosen.update(NEEDS.get(name, ()))
    return [name for name in SCENARIOS if name in chosen]


# --- figures from counts (pure) -------------------------------------------------------------


@dataclass
class Batch:
    """One counted batch: its instructions per request (the background's left out), and the
    requests each backend served (chat only)."""

    per_request: float
    served: dict[str, int] = field(default_factory=dict)
    background: float = 0.0
    """Per request: what was left out, the server's idle work during the batch."""


@dataclass(frozen=True)
class Idle:
    """What a server executes without any request: `fixed` per count (callgrind's own
    zeroing and dumping) and `per_second` (uvicorn's ticks, the gateway's timers). Counted
    under callgrind, a request takes some 50 times longer than at full speed and longer
    still on a busy machine, so each would carry a share of these that depends on the
    machine, not on the build: the gate leaves them out."""

    fixed: float
    per_second: float

    @classmethod
    def between(cls, short: tuple[int, float], long: tuple[int, float]) -> Idle:
        """From two idle counts of different lengths, each (instructions, seconds)."""
        (count_a, seconds_a), (count_b, seconds_b) = short, long
        if not seconds_b > seconds_a:
            raise ValueError("the second idle count must last longer than the first")
        per_second = max(0.0, (count_b - count_a) / (seconds_b - seconds_a))
        return cls(max(0.0, count_a - per_second * seconds_a), per_second)

    def of(self, seconds: float) -> float:
        """The idle instructions of a count that lasted `seconds`."""
        return self.fixed + self.per_second * seconds


def figures(batches: Mapping[str, Sequence[Batch]]) -> dict[str, int]:
    """Each scenario's figure from its counted batches: the median batch's instructions
    per request; the split's brought to an even split of the stacks alone (when both
    were counted)."""
    found = {
        name: round(statistics.median(b.per_request for b in counted))
        for name, counted in batches.items()
        if counted and name != SPLIT
    }
    split = batches.get(SPLIT)
    alone = {backend: found.get(name) for backend, name in STACK_CHAT.items()}
    if split and all(value is not None for value in alone.values()):
        stacks = {backend: float(value) for backend, value in alone.items() if value is not None}
        even = statistics.fmean(stacks.values())
        found[SPLIT] = round(statistics.median(_evened(b, stacks, even) for b in split))
    return {name: found[name] for name in SCENARIOS if name in found}


def own_costs(found: Mapping[str, int]) -> dict[str, int]:
    """The gateway's own instructions per request on each of its paths whose parts were
    counted: the path's figure minus the stacks' alone (`OWN`)."""
    return {
        path: found[path] - round(statistics.fmean(found[part] for part in parts))
        for path, parts in OWN.items()
        if path in found and all(part in found for part in parts)
    }


def _evened(batch: Batch, stacks: Mapping[str, float], even: float) -> float:
    total = sum(batch.served.values())
    if total == 0 or set(batch.served) - set(stacks):
        raise ValueError(f"the split served {batch.served}: not the stacks {sorted(stacks)}")
    weighted = sum(stacks[backend] * count / total for backend, count in batch.served.items())
    return batch.per_request - weighted + even


def ratios(found: Mapping[str, int]) -> dict[str, float]:
    """What a migration watches: FastAPI's count over Flask's (per chat turn, per
    `/health`), and the gateway's own share of each path it fronts (its own cost over the
    path's count: 0.04 is 4 %). Only those whose figures were measured."""
    pairs = {
        "fastapi/flask chat": ("fastapi-chat", "flask-chat"),
        "fastapi/flask health": ("fastapi-health", "flask-health"),
    }
    found_ratios = {
        name: found[top] / found[bottom]
        for name, (top, bottom) in pairs.items()
        if top in found and found.get(bottom)
    }
    for path, own in own_costs(found).items():
        if found[path]:
            found_ratios[f"gateway share {path}"] = own / found[path]
    return found_ratios


# --- the baseline and the verdicts (pure) ---------------------------------------------------


class Baseline(BaseModel):
    """`load_test/baseline.json`: each scenario's figure, and any margin of its own."""

    model_config = ConfigDict(extra="forbid")

    unit: Literal["instructions per request (callgrind Ir)"] = UNIT
    scenarios: dict[str, PositiveInt]
    margins: dict[str, float | None] = Field(default_factory=dict)
    """Percent, for a scenario whose margin is neither `--margin`'s nor `MARGINS`'; None:
    shown, not gated."""
    measured: dict[str, Any] = Field(default_factory=dict)
    """How and where the figures were counted (informational)."""


class BaselineError(ValueError):
    """The baseline is missing or not valid; its message is one line."""


def load_baseline(path: Path) -> Baseline:
    """The baseline at `path`; BaselineError in one line if it is missing or invalid."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BaselineError(
            f"baseline {path} is missing: `python -m load_test gate --update` writes it"
        ) from None
    except OSError as error:
        raise BaselineError(f"baseline {path}: {error.strerror or error}") from None
    try:
        return Baseline.model_validate_json(text)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(the file)"
        raise BaselineError(
            f"baseline {path} is not valid: {where}: {first['msg']}"
            + (f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else "")
        ) from None


def updated(old: Baseline | None, found: Mapping[str, int], measured: dict[str, Any]) -> Baseline:
    """The baseline with the figures `found` (those not measured now kept from `old`, as
    are the margins; names that are no scenario's any more dropped)."""
    kept = (
        {name: value for name, value in old.scenarios.items() if name in SCENARIOS} if old else {}
    )
    kept.update(found)
    scenarios = {name: kept[name] for name in SCENARIOS if name in kept}
    return Baseline(scenarios=scenarios, margins=old.margins if old else {}, measured=measured)


COUNTED_WITH = {
    "requests": "--requests",
    "chat_requests": "--chat-requests",
    "batches": "--batches",
}
"""The settings a figure depends on (the idle work left out is spread over a batch's
requests, imperfectly), as the baseline records them and the options that set them."""


def mismatch(baseline: Baseline, plan: Plan) -> str | None:
    """None when the baseline was counted as `plan` counts, else what differs, in words."""
    now = {key: getattr(plan, key) for key in COUNTED_WITH}
    differ = [
        f"{option} {baseline.measured[key]} (this run: {now[key]})"
        for key, option in COUNTED_WITH.items()
        if key in baseline.measured and baseline.measured[key] != now[key]
    ]
    if not differ:
        return None
    return f"was counted with {', '.join(differ)}: run with its options, or --update it"


Verdict = Literal["ok", "slower", "faster", "new", "info"]


@dataclass(frozen=True)
class Row:
    """One scenario against its baseline."""

    scenario: str
    baseline: int | None
    now: int
    margin: float | None
    """Percent; None: not gated."""

    @property
    def change(self) -> float | None:
        """Percent: +2.5 is 2.5 % more instructions than the baseline."""
        if self.baseline is None:
            return None
        return (self.now / self.baseline - 1) * 100

    @property
    def verdict(self) -> Verdict:
        """The verdict: "slower" past the margin (the gate fails), "faster" past it the other
        way (the baseline wants updating), "ok" within it, "new" without a baseline, "info"
        without a margin."""
        if self.baseline is None:
            return "new"
        if self.margin is None:
            return "info"
        # Compared without dividing: a change of exactly the margin is within it.
        if self.now * 100 > self.baseline * (100 + self.margin):
            return "slower"
        if self.now * 100 < self.baseline * (100 - self.margin):
            return "faster"
        return "ok"

    @property
    def failed(self) -> bool:
        """Whether this row fails the gate."""
        return self.verdict == "slower"

    def describe(self) -> str:
        """One line: the scenario and its figures."""
        if self.baseline is None:
            return f"{self.scenario}: {self.now:,} instructions per request, no baseline"
        return (
            f"{self.scenario}: {self.baseline:,} -> {self.now:,} instructions per request "
            f"({self.change:+.2f} %, {_margin(self.margin)})"
        )

    def to_json(self) -> dict[str, Any]:
        """As JSON-ready data."""
        return {
            "scenario": self.scenario,
            "baseline": self.baseline,
            "now": self.now,
            "change_percent": self.change,
            "margin_percent": self.margin,
            "verdict": self.verdict,
        }


def _margin(margin: float | None) -> str:
    return "not gated" if margin is None else f"margin {margin:g} %"


def compare(baseline: Baseline, found: Mapping[str, int], margin: float) -> list[Row]:
    """Each scenario found against the baseline, with its own margin where the baseline
    gives one, else `MARGINS`', else `margin` (percent)."""
    margins = {**MARGINS, **baseline.margins}
    return [
        Row(name, baseline.scenarios.get(name), now, margins.get(name, margin))
        for name, now in found.items()
    ]


def table(rows: Sequence[Row]) -> str:
    """The rows as the terminal shows them."""
    lines = [
        f"{'scenario':24s} {'baseline':>12s} {'now':>12s} {'change':>9s} {'margin':>7s}  verdict"
    ]
    for row in rows:
        base = f"{row.baseline:,}" if row.baseline is not None else "-"
        change = f"{row.change:+.2f} %" if row.change is not None else "-"
        margin = f"{row.margin:g} %" if row.margin is not None else "-"
        lines.append(
            f"{row.scenario:24s} {base:>12s} {row.now:>12,} {change:>9s} {margin:>7s}  "
            f"{row.verdict}"
        )
    return "\n".join(lines)


def summary(rows: Sequence[Row]) -> str:
    """The verdict in one line."""
    failed = [row.scenario for row in rows if row.failed]
    if failed:
        return f"gate: FAIL, more expensive than allowed: {', '.join(failed)}"
    faster = [row.scenario for row in rows if row.verdict == "faster"]
    also = f" ({', '.join(faster)} cheaper: `--update` records it)" if faster else ""
    shown = sum(row.verdict == "info" for row in rows)
    gated = f"{len(rows) - shown} scenarios within their margins" + (
        f", {shown} shown, not gated" if shown else ""
    )
    return f"gate: PASS, {gated}{also}"


# --- the reports ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """A gate run: its rows, ratios, the gateway's own cost on each path, settings and
    timing."""

    rows: list[Row]
    ratios: dict[str, float]
    own: dict[str, int]
    batches: dict[str, list[Batch]]
    settings: dict[str, Any]
    seconds: float

    @property
    def passed(self) -> bool:
        """Whether no scenario failed."""
        return not any(row.failed for row in self.rows)

    def to_json(self) -> dict[str, Any]:
        """As JSON-ready data."""
        return {
            "passed": self.passed,
            "unit": UNIT,
            "rows": [row.to_json() for row in self.rows],
            "ratios": self.ratios,
            "own": self.own,
            "batches": {
                name: [
                    {"per_request": b.per_request, "served": b.served, "background": b.background}
                    for b in counted
                ]
                for name, counted in self.batches.items()
            },
            "settings": self.settings,
            "seconds": round(self.seconds, 1),
        }


def to_junit(report: Report) -> ET.ElementTree:
    """One testcase per scenario (classname `gate.health`, `gate.chat`); a
    failure names the scenario and its figures, a scenario without a baseline is skipped."""
    failures = sum(row.failed for row in report.rows)
    skipped = sum(row.verdict == "new" for row in report.rows)
    suite = ET.Element(
        "testsuite",
        name="gate",
        tests=str(len(report.rows)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
        time=f"{report.seconds:.3f}",
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in report.settings.items():
        ET.SubElement(properties, "property", name=name, value=str(value))
    for row in report.rows:
        kind = SCENARIOS[row.scenario].kind
        case = ET.SubElement(suite, "testcase", classname=f"gate.{kind}", name=row.scenario)
        case.set("time", "0.000")
        if row.failed:
            failure = ET.SubElement(case, "failure", message=row.describe(), type="performance")
            failure.text = row.describe()
        elif row.verdict == "new":
            ET.SubElement(case, "skipped", message=row.describe())
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.ElementTree(root)


def render_html(report: Report) -> str:
    """The page: the verdict, the table, the ratios and own costs, the batches, the
    settings."""
    return render(
        "load_test",
        "gate.html.j2",
        {"report": report, "summary": summary(report.rows), "own": OWN},
    )


def write_reports(report: Report, directory: Path) -> list[Path]:
    """`gate.json`, `junit.xml` and `index.html` in `directory` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    data, junit, page = directory / "gate.json", directory / "junit.xml", directory / "index.html"
    data.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    to_junit(report).write(junit, encoding="utf-8", xml_declaration=True)
    page.write_text(render_html(report), encoding="utf-8")
    return [data, junit, page]


# --- measuring ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What to count: the scenarios, requests per batch, batches per scenario."""

    scenarios: tuple[str, ...] = tuple(SCENARIOS)
    requests: int = 50
    """`/health` requests per batch."""
    chat_requests: int = 40
    """Chat requests per batch: conversations of `overhead.CHAT_TURNS` turns. A chat turn
    allocates far more than `/health`, so the interpreter's full collections fall into its
    batches unevenly: 20 a batch spread them twice as far as 40."""
    batches: int = 3
    log_level: str = "WARNING"

    def __post_init__(self) -> None:
        if min(self.requests, self.chat_requests, self.batches) < 1:
            raise ValueError("--requests, --chat-requests and --batches must be positive")

    def by_target(self) -> dict[str, list[Scenario]]:
        """The scenarios of each target to start."""
        grouped: dict[str, list[Scenario]] = {}
        for name in self.scenarios:
            scenario = SCENARIOS[name]
            grouped.setdefault(scenario.target, []).append(scenario)
        return grouped


def measure(plan: Plan, log_dir: Path, progress: Say) -> dict[str, list[Batch]]:
    """Every scenario's counted batches: the emulators, then the targets all started at
    once, measured `PARALLEL` at a time; RuntimeError if one cannot be."""
    overhead.check_callgrind()
    grouped = plan.by_target()
    found: dict[str, list[Batch]] = {}
    with targets.emulators_process(0.0, log_dir) as emulators:
        progress(f"starting {len(grouped)} targets under callgrind: {', '.join(grouped)}")
        turns = _Turns(len(grouped))
        with ThreadPoolExecutor(max_workers=len(grouped), thread_name_prefix="gate") as pool:
            futures = [
                pool.submit(_measure_target, name, scenarios, plan, emulators, log_dir, turns)
                for name, scenarios in grouped.items()
            ]
            try:
                for future in as_completed(futures):
                    if future.exception() is not None:
                        turns.abort()  # the other targets stop at their next step
                        continue
                    for name, counted in future.result().items():
                        found[name] = counted
                        progress(f"{name}: {_batches(counted)}")
            except BaseException:
                turns.abort()
                raise
    errors = [error for future in futures if (error := future.exception()) is not None]
    if errors:
        # The one that failed, not those it stopped.
        raise next((e for e in errors if not isinstance(e, _Stopped)), errors[0])
    return {name: found[name] for name in plan.scenarios}


def _batches(counted: Sequence[Batch]) -> str:
    figures = ", ".join(f"{b.per_request:,.0f}" for b in counted)
    idle = ", ".join(f"{b.background:,.0f}" for b in counted)
    return f"{figures} instructions per request (idle work left out: {idle})"


class _Stopped(RuntimeError):
    pass


class _Turns:
    """When each target counts: once every one has started (one starting takes the cores
    the counted ones need, so their requests last longer and carry more of the idle work
    left out), `PARALLEL` at a time; none once one failed."""

    def __init__(self, count: int) -> None:
        self._started = threading.Barrier(count)
        self._slots = threading.Semaphore(PARALLEL)
        self._stop = threading.Event()

    def abort(self) -> None:
        """Stop every target at its next step."""
        self._stop.set()
        self._started.abort()

    @contextlib.contextmanager
    def turn(self, name: str) -> Iterator[None]:
        """The block runs in this target's turn."""
        try:
            self._started.wait()
        except threading.BrokenBarrierError:
            raise _Stopped(name) from None
        with self._slots:
            self.check(name)
            yield

    def check(self, name: str) -> None:
        """_Stopped if another target failed."""
        if self._stop.is_set():
            raise _Stopped(name)


def _measure_target(
    name: str,
    scenarios: Sequence[Scenario],
    plan: Plan,
    emulators: targets.Emulators,
    log_dir: Path,
    turns: _Turns,
) -> dict[str, list[Batch]]:
    try:
        return _count(name, scenarios, plan, emulators, log_dir, turns)
    except _Stopped:
        raise
    except Exception as error:
        turns.abort()
        # One line for the terminal, naming the target; the whole story in its log folder.
        trace = log_dir / f"{name}.error.txt"
        trace.write_text(traceback.format_exc(), encoding="utf-8")
        first = (str(error).splitlines() or [""])[0]
        raise RuntimeError(f"{name}: {type(error).__name__}: {first} (see {trace})") from error


def _count(
    name: str,
    scenarios: Sequence[Scenario],
    plan: Plan,
    emulators: targets.Emulators,
    log_dir: Path,
    turns: _Turns,
) -> dict[str, list[Batch]]:
    out = log_dir / f"callgrind.{name}"
    for old in log_dir.glob(f"callgrind.{name}.*"):
        old.unlink()
    with (
        targets.started(
            name,
            workers=Workers(workers=1),
            emulators=emulators,
            log_dir=log_dir,
            prefix=overhead.callgrind_prefix(out, instrumented=False),
            ready_timeout_s=600.0,
            extra_env={**overhead.CALLGRIND_ENV, "LOG_LEVEL": plan.log_level},
        ) as target,
        turns.turn(name),
    ):
        assert target.process is not None
        counter = overhead.Callgrind(str(target.process.pid), out)
        found: dict[str, list[Batch]] = {}
        with httpx.Client(base_url=target.url, timeout=120) as client:
            # Warm-up uncounted (and fast): imports, caches, pools, the first connection.
            kinds = {s.kind for s in scenarios}
            if "health" in kinds:
                overhead.send_health(client, 2 * plan.requests)
            if "chat" in kinds:
                overhead.warm_chat(client, split=name == SCENARIOS[SPLIT].target)
            counter.instrument(True)
            # Long enough to hold several of the slowest timer's turns (a quarter second).
            idle = Idle.between(_idle(counter, 0.5), _idle(counter, 2.5))
            for scenario in scenarios:
                # One more batch, counted but not kept: the first one counted after the
                # switch runs code paths once more (callgrind's own set-up is not counted,
                # the interpreter's lazily built caches are).
                found[scenario.name] = [
                    _batch(counter, client, scenario, plan, number, idle)
                    for number in range(-1, plan.batches)
                ][1:]
                turns.check(name)
        return found


def _idle(counter: overhead.Callgrind, seconds: float) -> tuple[int, float]:
    began = time.monotonic()
    with counter.count() as counted:
        time.sleep(seconds)  # the server's own timers run meanwhile: what is counted
    return counted.total, time.monotonic() - began


def _batch(
    counter: overhead.Callgrind,
    client: httpx.Client,
    scenario: Scenario,
    plan: Plan,
    number: int,
    idle: Idle,
) -> Batch:
    began = time.monotonic()
    served: dict[str, int] = {}
    if scenario.kind == "health":
        requests = plan.requests
        with counter.count() as counted:
            overhead.send_health(client, requests)
    else:
        # Each batch its own user: conversations of their own, the same in every run.
        requests = plan.chat_requests
        with counter.count() as counted:
            served = overhead.send_chat(client, requests, scenario.target, user=number + 1)
    background = idle.of(time.monotonic() - began)
    return Batch((counted.total - background) / requests, served, background / requests)


# --- the command ----------------------------------------------------------------------------


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    try:
        return expand(names)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_options(parser: argparse.ArgumentParser) -> None:
    """The gate's command line."""
    plan = Plan()
    parser.add_argument(
        "--baseline",
        type=Path,
        default=BASELINE,
        metavar="PATH",
        help="the committed figures (default load_test/baseline.json)",
    )
    parser.add_argument(
        "--update", action="store_true", help="measure, then rewrite the baseline (exit 0)"
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN,
        metavar="PERCENT",
        help="how much dearer a scenario may get, unless the baseline gives it a margin of "
        "its own or it has one in MARGINS (the gateway's /health paths: 1) (default "
        f"{DEFAULT_MARGIN:g})",
    )
    parser.add_argument(
        "--scenarios",
        type=_names,
        default=list(plan.scenarios),
        metavar="NAME[,NAME]",
        help=f"the scenarios to count (default all: {', '.join(SCENARIOS)}); "
        f"{SPLIT} brings the stacks' chat scenarios along",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=plan.requests,
        metavar="N",
        help=f"/health requests per batch (default {plan.requests})",
    )
    parser.add_argument(
        "--chat-requests",
        type=int,
        default=plan.chat_requests,
        metavar="N",
        help=f"chat requests per batch (default {plan.chat_requests})",
    )
    parser.add_argument(
        "--batches",
        type=int,
        default=plan.batches,
        metavar="N",
        help=f"batches per scenario, the median kept (default {plan.batches})",
    )
    parser.add_argument("--log-level", default=plan.log_level, help="the stacks' LOG_LEVEL")
    parser.add_argument(
        "--report",
        type=Path,
        default=Path("reports/gate"),
        metavar="DIR",
        help="gate.json, junit.xml, index.html and the servers' logs (default reports/gate)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Count, compare, print the table, write the reports; the exit status (0 passed or
    updated, 1 a scenario past its margin, 2 a set-up error, said in one line)."""
    try:
        plan = Plan(
            scenarios=tuple(args.scenarios),
            requests=args.requests,
            chat_requests=args.chat_requests,
            batches=args.batches,
            log_level=args.log_level,
        )
    except ValueError as error:
        parser.error(str(error))
    if args.margin < 0:
        parser.error("--margin must not be negative")

    def progress(line: str) -> None:
        if not args.quiet:
            say(sys.stderr, line)

    old: Baseline | None = None
    try:
        old = load_baseline(args.baseline)
        if not args.update and (different := mismatch(old, plan)):
            raise BaselineError(f"baseline {args.baseline} {different}")
    except BaselineError as error:
        if not args.update:
            say(sys.stderr, f"error: {error}")
            return 2
    started_at = time.monotonic()
    log_dir = args.report / "logs"
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=log_dir):
            pass
        batches = measure(plan, log_dir, progress)
        found = figures(batches)
    except (RuntimeError, OSError, ValueError, httpx.HTTPError) as error:
        first = (str(error).splitlines() or [type(error).__name__])[0]
        say(sys.stderr, f"error: {first} (the servers' logs: {log_dir})")
        return 2
    except KeyboardInterrupt:
        say(sys.stderr, "interrupted; the servers were stopped")
        return 130
    settings = {
        "requests": plan.requests,
        "chat_requests": plan.chat_requests,
        "batches": plan.batches,
        "margin_percent": args.margin,
        "baseline": str(args.baseline),
        "environment": _gateway_environment(),
    }
    if args.update:
        counted = {key: settings[key] for key in (*COUNTED_WITH, "environment")}
        baseline = updated(old, found, {**counted, "machine": machine()})
        args.baseline.write_text(baseline.model_dump_json(indent=2) + "\n", encoding="utf-8")
        progress(f"wrote {args.baseline}")
    else:
        assert old is not None
        baseline = old
    rows = compare(baseline, found, args.margin)
    own = own_costs(found)
    report = Report(rows, ratios(found), own, batches, settings, time.monotonic() - started_at)
    print(table(rows))
    print("\n".join(f"{name}: {value:.4f}" for name, value in report.ratios.items()))
    print("\n".join(f"gateway own {path}: {value:,} instructions" for path, value in own.items()))
    print(summary(rows) if not args.update else f"gate: baseline {args.baseline} updated")
    paths = write_reports(report, args.report)
    progress(f"wrote {', '.join(str(p) for p in paths)} in {report.seconds:.0f} s")
    return 0 if args.update or report.passed else 1


def _gateway_environment() -> dict[str, str]:
    # Settings the servers inherit that change what they run: shown in the reports, so a
    # figure counted against a wrapped app is never mistaken for the build's.
    return {
        name: value
        for name, value in sorted(os.environ.items())
        if name.startswith(("GATEWAY_", "LOAD_TEST_"))
    }
