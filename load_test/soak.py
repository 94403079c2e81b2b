"""`python -m load_test soak`: the gateway under a long open-loop load, watched for leaks.

One run, on loopback: the emulators (moto's DynamoDB and the agent emulator, a process
each), then the gateway as production runs it (`uvicorn gateway:app`, one process, both
stacks mounted) at 50 % FastAPI with a rollout store of its own. First its capacity is
measured (a closed loop of chat conversations at a few user counts; the best successful
req/s), then it is driven by an open loop at a share of that capacity (70 %) for the
soak's duration, each turn on a connection of its own (`FaultyScenario` says why), while

- a rollout change is made every `rollout_every_s` (30, 50, 70, 50 % in turn) through the
  admin API, as an operator would;
- a share of the chat turns (1 %) carries an agent fault directive (`[[emulator:fail]]`,
  ...; each fault in turn), which must come back as that fault's contract answer
  (`FAULT_ANSWERS`: status, `error` message, `Retry-After` or not);
- every `interval_s` a `Reading` is taken: the gateway's resident memory and open file
  descriptors (from /proc, summed over its process group, workers included), its shed
  counter and FastAPI percentage (`/_gateway/metrics`), what the users saw since the last
  reading, and the CPU the gateway, each emulator and the client used; the latency of the
  successful answers in each interval is added once the load has ended (from the engine's
  samples, timed from each request's intended send time).

The soak fails (`Judgement`) on

- any unexpected answer: a non-2xx answer to a turn without a fault, a faulted turn not
  answered with its fault's contract answer, or no answer at all. A shed (the gateway's
  503 "Service overloaded") is one of them: at 70 % of capacity the gateway must not shed,
  and its answer is not an injected fault's;
- resident memory growing by more than `Limits.rss_growth` (10 %) from the median of the
  readings in the first `window_s` after the warm-up to the median of those in the last
  `window_s` of the load (medians, so one reading taken during a burst decides nothing);
- the descriptors other than open TCP connections (files, pipes, event and epoll
  descriptors, listening sockets, and connections the peer has closed but the gateway has
  not: CLOSE_WAIT) growing by more than `Limits.fd_slack` (10) between the same two
  windows: one leaked per request, or per faulted request, shows as hundreds by the end.
  Connections both ends hold open are not counted there: the load's come and go with it,
  and the AWS clients' keep-alive pools grow to the most calls the gateway has had in
  flight (up to `AWS_MAX_POOL_CONNECTIONS` each) and stay, so one latency spike of the
  emulators would read as a leak. They are read and drawn apart;
- a rollout change the admin API refused, or the gateway exiting.

The warm-up (default: 10 % of the duration or a minute, whichever is shorter) is left out
of the memory and descriptor judgement: caches, pools and the allocator fill up first.
Readings taken after the load's end, while the last answers drain, are shown but not judged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import random
import secrets
import statistics
import sys
import time
import uuid
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TextIO

from prometheus_client.parser import text_string_to_metric_families

from harness.local.emulators.faults import FAULTS, Fault
from harness.local.loop import fast_loop_factory
from harness.local.processes import ServerProcess, group_members, run_server
from load_test import engine, targets
from load_test.client import Connection, Outcome, Request, Response, exchange, parse_origin
from load_test.engine import ClosedLoop, OpenLoop, RunResult
from load_test.progress import ProgressLine, say
from load_test.report import EMULATOR_BUSY
from load_test.scenarios import CHAT_PATH, ChatScenario, Scenario, User
from load_test.stats import Sample, Summary, latency, summarize
from shared import contract

SHED_METRIC = "dualstack_shed_requests_total"
PERCENT_METRIC = "dualstack_fastapi_percent"
ROLLOUT_PATH = "/_gateway/rollout"
METRICS_PATH = "/_gateway/metrics"
ADMIN_TIMEOUT_S = 10.0
LOGS = ("gateway.log", "dynamodb.log", "agent.log")
EXAMPLES_KEPT = 20


# --- What an injected fault must be answered with ---------------------------------------


@dataclass(frozen=True)
class FaultAnswer:
    """The contract's answer, from either stack, to a chat turn whose agent call failed
    with a fault: its status, its `error` message, and whether it has `Retry-After`."""

    status: int
    error: str
    retry_after: bool = False


FAULT_ANSWERS: Final[Mapping[Fault, FaultAnswer]] = {
    "throttle": FaultAnswer(503, contract.AGENT_THROTTLED, retry_after=True),
    "stream-throttle": FaultAnswer(503, contract.AGENT_THROTTLED, retry_after=True),
    "fail": FaultAnswer(502, contract.AGENT_FAILED),
    "stream-fail": FaultAnswer(502, contract.AGENT_FAILED),
    "denied": FaultAnswer(502, contract.AGENT_FAILED),
    "hang": FaultAnswer(504, contract.AGENT_TIMEOUT),
}

Judged = Literal["ok", "fault", "error"]


@dataclass(frozen=True)
class Verdict:
    """How one answer is judged: `ok` (a 2xx to a turn without a fault), `fault` (an
    injected fault's contract answer) or `error`, with what was wrong (`reason`, short
    and free of ids, so errors can be counted by it)."""

    outcome: Judged
    reason: str = ""


def _error_message(body: bytes) -> str | None:
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    return message if isinstance(message, str) else None


def _describe(status: int, message: str | None) -> str:
    return f"{status} {json.dumps(message[:80]) if message else '(no error message)'}"


def judge(fault: Fault | None, response: Response | None) -> Verdict:
    """The verdict on the answer to a chat turn that carried `fault` (None: no fault);
    `response` is None when no answer came (a timeout or a connection error)."""
    if response is None:
        prefix = f"{fault} fault: " if fault else ""
        return Verdict("error", f"{prefix}no answer (timeout or connection error)")
    message = _error_message(response.body)
    said = _describe(response.status, message)
    if fault is None:
        return Verdict("ok") if 200 <= response.status < 300 else Verdict("error", said)
    expected = FAULT_ANSWERS[fault]
    if (response.status, message) != (expected.status, expected.error):
        want = _describe(expected.status, expected.error)
        return Verdict("error", f"{fault} fault answered {said}, not {want}")
    if ("retry-after" in response.headers) != expected.retry_after:
        missing = "without" if expected.retry_after else "with"
        return Verdict("error", f"{fault} fault answered {said} {missing} Retry-After")
    return Verdict("fault")


# --- Faults injected into the chat scenario ------------------------------------------------


class FaultPlan:
    """Which turns carry a fault directive: each one with probability `rate` (a draw from
    a generator seeded with `seed`), the `faults` taken in turn so that each is injected
    about as often as the others."""

    def __init__(self, rate: float, faults: Sequence[Fault], seed: int = 0) -> None:
        if not 0 <= rate <= 1:
            raise ValueError(f"the fault rate must be within 0 and 1, not {rate!r}")
        if rate > 0 and not faults:
            raise ValueError("name at least one fault to inject")
        self.rate = rate
        self.faults = tuple(faults)
        self._random = random.Random(seed)
        self._turn = 0

    def draw(self) -> Fault | None:
        """The fault for the next turn, or None."""
        if self._random.random() >= self.rate:
            return None
        fault = self.faults[self._turn % len(self.faults)]
        self._turn += 1
        return fault


def with_fault(request: Request, fault: Fault) -> Request:
    """`request` (a chat turn) with `[[emulator:<fault>]]` appended to its message."""
    payload = json.loads(request.body)
    payload["message"] = f"{payload['message']} [[emulator:{fault}]]"
    return replace(request, body=json.dumps(payload).encode())


class Ledger:
    """Every turn sent and every verdict, counted as the users see them (the event loop's
    thread only). `examples` keeps the first unexpected answers, with when they came."""

    def __init__(self, origin: float | None = None) -> None:
        self.origin = engine.clock() if origin is None else origin
        self.sent = 0
        self.injected: Counter[str] = Counter()
        self.ok = 0
        self.faults: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.examples: list[dict[str, Any]] = []

    @property
    def answered(self) -> int:
        """Turns judged so far (an unanswered one is judged as an error)."""
        return self.ok + self.faults.total() + self.errors.total()

    def sending(self, fault: Fault | None) -> None:
        """A turn (with `fault`, or none) is being sent."""
        self.sent += 1
        if fault is not None:
            self.injected[fault] += 1

    def record(self, fault: Fault | None, response: Response | None) -> Verdict:
        """Judge the answer to a turn that carried `fault` and count it."""
        verdict = judge(fault, response)
        if verdict.outcome == "ok":
            self.ok += 1
        elif verdict.outcome == "fault":
            assert fault is not None
            self.faults[fault] += 1
        else:
            self.errors[verdict.reason] += 1
            if len(self.examples) < EXAMPLES_KEPT:
                self.examples.append(
                    {
                        "at_s": round(engine.clock() - self.origin, 3),
                        "fault": fault,
                        "reason": verdict.reason,
                        "status": response.status if response else None,
                        "body": response.body[:300].decode(errors="replace") if response else None,
                    }
                )
        return verdict


CLOSE = ("Connection", "close")


class FaultyScenario:
    """A scenario whose turns carry fault directives as `plan` draws them, every answer
    judged into `ledger`, each turn on a connection of its own (`Connection: close`).

    Why not keep-alive: the open loop keeps idle connections for reuse, and the server
    closes one left idle past its keep-alive timeout (uvicorn's 5 s). A POST sent on it as
    it closes gets no answer, and the client may not send it again (the server may have
    acted on it): the client lost a race, yet the soak would count an unexpected error
    against the gateway. A connection per turn also puts the gateway's accept and close
    paths under the soak, where a descriptor leak would show."""

    def __init__(self, inner: Scenario, plan: FaultPlan, ledger: Ledger) -> None:
        self.inner = inner
        self.plan = plan
        self.ledger = ledger
        self.name = f"{inner.name} with faults"

    def new_user(self, number: int) -> User:
        """The inner scenario's user `number`, its turns faulted and judged."""
        return _FaultyUser(self.inner.new_user(number), self)


class _FaultyUser:
    # One turn in flight at a time (the engine's rule for a user), so the fault of the
    # turn sent last is the one its answer is judged against.
    def __init__(self, inner: User, scenario: FaultyScenario) -> None:
        self.inner = inner
        self.scenario = scenario
        self.fault: Fault | None = None

    def next_request(self) -> Request:
        request = self.inner.next_request()
        self.fault = self.scenario.plan.draw() if request.path == CHAT_PATH else None
        self.scenario.ledger.sending(self.fault)
        if self.fault is not None:
            request = with_fault(request, self.fault)
        return replace(request, headers=(*request.headers, CLOSE))

    def observe(self, response: Response | None) -> None:
        self.scenario.ledger.record(self.fault, response)
        self.inner.observe(response)


# --- Readings -----------------------------------------------------------------------------


ESTABLISHED = 0x01
CLOSE_WAIT = 0x08


@dataclass(frozen=True)
class GroupFigures:
    """A process group's resident memory (bytes) and open descriptors, summed over its
    live processes, how many there are, and among the descriptors the TCP connections
    both ends hold open (`connections`) and those the peer has closed (`close_wait`)."""

    rss_bytes: int
    fds: int
    processes: int
    connections: int = 0
    close_wait: int = 0


def vm_rss_bytes(status: str) -> int | None:
    """The `VmRSS` of a /proc/<pid>/status text, in bytes (None without one: a zombie)."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == "VmRSS":
            number, _, unit = value.strip().partition(" ")
            return int(number) * 1024 if unit.strip() == "kB" else int(number)
    return None


def tcp_states(table: str) -> dict[int, int]:
    """Socket inode -> TCP state (`ESTABLISHED`, `CLOSE_WAIT`, ...) from a /proc/net/tcp
    or tcp6 text; sockets without an inode (TIME_WAIT's: no descriptor) are left out."""
    states = {}
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 9 and fields[9] != "0":
            states[int(fields[9])] = int(fields[3], 16)
    return states


def _link(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:  # closed meanwhile
        return ""


def group_figures(group: int, proc: Path = Path("/proc")) -> GroupFigures | None:
    """The live processes of process group `group`, read from /proc (Linux); None when
    none is left or /proc cannot be read."""
    rss = count = 0
    links: list[str] = []
    first = ""
    for entry, _ in group_members(group, proc):
        try:
            resident = vm_rss_bytes((proc / entry / "status").read_text())
            if resident is None:
                continue  # a zombie: no memory, no descriptors
            fds = proc / entry / "fd"
            found = [_link(fds / fd) for fd in os.listdir(fds)]
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        rss += resident
        links += found
        count += 1
        first = first or entry
    if not count:
        return None
    states: dict[int, int] = {}
    for table in ("tcp", "tcp6"):  # the group's network namespace, seen from one member
        with contextlib.suppress(OSError):
            states.update(tcp_states((proc / first / "net" / table).read_text()))
    sockets = [states.get(int(link[8:-1])) for link in links if link.startswith("socket:[")]
    return GroupFigures(
        rss, len(links), count, sockets.count(ESTABLISHED), sockets.count(CLOSE_WAIT)
    )


def gateway_metrics(text: str) -> tuple[int, float | None]:
    """From the gateway's Prometheus text: requests shed so far (all backends) and the
    default FastAPI percentage (None when not exposed)."""
    shed = 0
    percent: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == SHED_METRIC:
                shed += int(sample.value)
            elif sample.name == PERCENT_METRIC and sample.labels.get("prefix") == "":
                percent = float(sample.value)
    return shed, percent


@dataclass(frozen=True)
class Reading:
    """The gateway at `t_s` seconds after the soak's load started: its memory, descriptors
    (all; the TCP connections among them both ends hold open; those the peer closed; all
    but the open connections, `held`, the figure a leak shows in) and processes (None if
    /proc could not tell), the FastAPI percentage it reported and
    its shed counter so far (None if the metrics could not be read), the turns sent so
    far; and for the `span_s` seconds before: the turns answered successfully (`ok`),
    with their fault's answer (`faults`) or otherwise (`errors`), the requests the gateway
    shed (`sheds`), the successful answers' latency (None without any), and the CPU each
    party used (`cpu`: the gateway, each emulator, the client; a share of one core)."""

    t_s: float
    span_s: float
    rss_bytes: int | None
    fds: int | None
    connections: int | None
    close_wait: int | None
    held: int | None
    processes: int
    percent: float | None
    sheds_total: int | None
    sent_total: int
    ok: int
    faults: int
    errors: int
    sheds: int | None
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu: Mapping[str, float | None] = field(default_factory=dict)


def _finished(samples: Sequence[Sample]) -> tuple[list[float], list[float]]:
    """The successful samples' end times (seconds from the load's start, ascending) and
    latencies (seconds) in the same order."""
    pairs = sorted((s.start_s + s.latency_s, s.latency_s) for s in samples if s.kind == "ok")
    return [end for end, _ in pairs], [lat for _, lat in pairs]


def with_latency(readings: Sequence[Reading], samples: Sequence[Sample]) -> list[Reading]:
    """The readings with the p50 and p99 of the successful answers that ended within each
    one's span."""
    ends, latencies = _finished(samples)
    filled = []
    for reading in readings:
        low = bisect_right(ends, reading.t_s - reading.span_s)
        high = bisect_right(ends, reading.t_s)
        if low >= high:
            filled.append(reading)
            continue
        figures = latency(latencies[low:high])
        filled.append(replace(reading, p50_ms=figures.p50_ms, p99_ms=figures.p99_ms))
    return filled


def mean_cpu(readings: Sequence[Reading]) -> dict[str, float]:
    """Each party's CPU over the readings' spans (a share of one core, weighted by span),
    for the parties some reading knows."""
    used: dict[str, float] = {}
    spans: dict[str, float] = {}
    for reading in readings:
        for name, share in reading.cpu.items():
            if share is not None and reading.span_s > 0:
                used[name] = used.get(name, 0.0) + share * reading.span_s
                spans[name] = spans.get(name, 0.0) + reading.span_s
    return {name: round(used[name] / spans[name], 3) for name in used}


def _highest(values: Iterable[int | None]) -> int | None:
    known = [value for value in values if value is not None]
    return max(known) if known else None


def coarsen(readings: Sequence[Reading], samples: Sequence[Sample], points: int) -> list[Reading]:
    """At most `points` readings for a chart: consecutive readings merged into one that
    spans them all, with the highest of each memory and descriptor figure among them, the
    counts added up, the last percentage, the mean CPU, and the latency of all the answers
    in its span. As they are when there are no more than `points`."""
    if len(readings) <= points:
        return list(readings)
    size = math.ceil(len(readings) / points)
    ends, latencies = _finished(samples)
    merged = []
    for first in range(0, len(readings), size):
        group = readings[first : first + size]
        last = group[-1]
        start = group[0].t_s - group[0].span_s
        low, high = bisect_right(ends, start), bisect_right(ends, last.t_s)
        figures = latency(latencies[low:high]) if low < high else None
        sheds = [r.sheds for r in group if r.sheds is not None]
        merged.append(
            replace(
                last,
                span_s=round(last.t_s - start, 3),
                rss_bytes=_highest(r.rss_bytes for r in group),
                fds=_highest(r.fds for r in group),
                connections=_highest(r.connections for r in group),
                close_wait=_highest(r.close_wait for r in group),
                held=_highest(r.held for r in group),
                ok=sum(r.ok for r in group),
                faults=sum(r.faults for r in group),
                errors=sum(r.errors for r in group),
                sheds=sum(sheds) if sheds else None,
                p50_ms=figures.p50_ms if figures else None,
                p99_ms=figures.p99_ms if figures else None,
                cpu=mean_cpu(group),
            )
        )
    return merged


# --- Judgement ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What the soak tolerates: resident memory growth as a fraction, descriptors other
    than open connections gained, both between the medians of the readings in the first
    and in the last `window_s` seconds of the judged readings."""

    rss_growth: float = 0.10
    fd_slack: int = 10
    window_s: float = 30.0


@dataclass(frozen=True)
class Drift:
    """A gauge's `baseline` (the median of the first `window` judged readings) and `end`
    (the median of the last `window`)."""

    baseline: float
    end: float
    window: int

    @property
    def change(self) -> float:
        """`end - baseline`."""
        return self.end - self.baseline

    @property
    def growth(self) -> float:
        """The change as a fraction of the baseline (0.0 for a baseline of 0)."""
        return self.change / self.baseline if self.baseline else 0.0


def drift(values: Sequence[float], window: int) -> Drift | None:
    """The drift of `values` (in time order) over windows of `window` values, shrunk to
    half of them at most so the two windows never overlap; None with fewer than two."""
    if len(values) < 2:
        return None
    size = max(1, min(window, len(values) // 2))
    return Drift(statistics.median(values[:size]), statistics.median(values[-size:]), size)


@dataclass(frozen=True)
class RolloutChange:
    """A rollout change the soak made: when (seconds from the load's start), to which
    percentage, and the admin API's status (0: no answer)."""

    at_s: float
    percent: float
    status: int


@dataclass(frozen=True)
class Judgement:
    """The soak's verdict: what failed (nothing: it passed), and the drifts judged."""

    failures: tuple[str, ...]
    rss: Drift | None
    fds: Drift | None

    @property
    def passed(self) -> bool:
        """Whether nothing failed."""
        return not self.failures


def judged(readings: Sequence[Reading], warmup_s: float, load_s: float) -> list[Reading]:
    """The readings the memory and descriptor judgement uses: taken after the warm-up and
    while the load ran, with /proc figures."""
    return [
        r
        for r in readings
        if warmup_s <= r.t_s <= load_s and r.rss_bytes is not None and r.held is not None
    ]


def judge_soak(
    readings: Sequence[Reading],
    errors: Mapping[str, int],
    rollouts: Sequence[RolloutChange],
    *,
    warmup_s: float,
    load_s: float,
    interval_s: float,
    limits: Limits,
    gateway_exited: bool = False,
) -> Judgement:
    """The verdict on a soak: its `readings`, its unexpected answers counted by reason
    (`errors`), the rollout changes it made, the warm-up and the load's length."""
    failures: list[str] = []
    if gateway_exited:
        failures.append("the gateway exited during the soak")
    total = sum(errors.values())
    if total:
        worst = ", ".join(f"{n} x {reason}" for reason, n in Counter(errors).most_common(3))
        failures.append(f"{total} unexpected error(s): {worst}")
    refused = [change for change in rollouts if change.status != 200]
    for change in refused:
        answer = f"answered {change.status}" if change.status else "got no answer"
        failures.append(
            f"the rollout change to {change.percent:g} % at {change.at_s:.0f} s {answer}"
        )
    steady = judged(readings, warmup_s, load_s)
    window = max(1, round(limits.window_s / interval_s))
    rss = drift([float(r.rss_bytes or 0) for r in steady], window)
    fds = drift([float(r.held or 0) for r in steady], window)
    if rss is None or fds is None:
        failures.append(
            f"{len(steady)} reading(s) after the warm-up: too few to judge memory and "
            "descriptors (at least 2 are needed)"
        )
    else:
        if rss.growth > limits.rss_growth:
            failures.append(
                f"resident memory grew {rss.growth:.1%} after the warm-up "
                f"({_mb(rss.baseline)} -> {_mb(rss.end)}), over the {limits.rss_growth:.0%} "
                "limit"
            )
        if fds.change > limits.fd_slack:
            failures.append(
                f"descriptors other than open connections grew by {fds.change:g} after the "
                f"warm-up ({fds.baseline:g} -> {fds.end:g}), over the slack of {limits.fd_slack}"
            )
    return Judgement(tuple(failures), rss, fds)


def _mb(value: float) -> str:
    return f"{value / 2**20:.1f} MB"


# --- The plan and the run -----------------------------------------------------------------


def rollout_schedule(
    duration_s: float, every_s: float, percents: Sequence[float]
) -> list[tuple[float, float]]:
    """(seconds from the start, percentage) of each rollout change: one every `every_s`
    seconds while the load runs (none at its start or its end), `percents` in turn."""
    changes = math.ceil(duration_s / every_s) - 1
    return [(every_s * k, percents[(k - 1) % len(percents)]) for k in range(1, changes + 1)]


@dataclass(frozen=True)
class SoakPlan:
    """What to run: the load's length and its share of the measured capacity (or a given
    `rate`), the readings' interval, the warm-up (None: 10 % of the duration or a minute,
    whichever is shorter), the rollout changes, the faults, the servers' settings."""

    duration_s: float = 600.0
    interval_s: float = 5.0
    warmup_s: float | None = None
    rollout_every_s: float = 60.0
    start_percent: float = 50.0
    percents: tuple[float, ...] = (30.0, 50.0, 70.0, 50.0)
    fault_rate: float = 0.01
    faults: tuple[Fault, ...] = FAULTS
    rate: float | None = None
    load_fraction: float = 0.7
    capacity_users: tuple[int, ...] = (32, 64, 128)
    capacity_s: float = 10.0
    turns: int = 5
    agent_latency_ms: float = 200.0
    agent_timeout_s: float = 30.0
    timeout_s: float = 60.0
    max_in_flight: int = 1000
    seed: int = 0
    limits: Limits = field(default_factory=Limits)
    log_dir: Path = Path("reports/soak/logs")
    log_level: str = "WARNING"

    def __post_init__(self) -> None:
        positive = {
            "duration": self.duration_s,
            "interval": self.interval_s,
            "rollout interval": self.rollout_every_s,
            "load fraction": self.load_fraction,
            "capacity duration": self.capacity_s,
            "turns": self.turns,
            "agent timeout": self.agent_timeout_s,
            "timeout": self.timeout_s,
            "max in flight": self.max_in_flight,
            "window": self.limits.window_s,
        }
        if self.rate is not None:
            positive["rate"] = self.rate
        bad = [name for name, value in positive.items() if not value > 0]
        if bad or not self.capacity_users or min(self.capacity_users) < 1:
            raise ValueError(f"{', '.join(bad) or 'capacity users'} must be positive")
        if self.warmup_s is not None and not 0 <= self.warmup_s < self.duration_s:
            raise ValueError("the warm-up must be at least 0 and shorter than the duration")
        percents = (self.start_percent, *self.percents)
        if not self.percents or not all(0 <= p <= 100 for p in percents):
            raise ValueError("percentages must be within 0 and 100")
        if self.agent_latency_ms < 0 or self.limits.rss_growth < 0 or self.limits.fd_slack < 0:
            raise ValueError("the agent latency and the limits must not be negative")
        if self.timeout_s <= self.agent_timeout_s:
            raise ValueError(
                "the client's timeout must be longer than the agent timeout (a hung agent's "
                "504 comes at the agent timeout)"
            )
        FaultPlan(self.fault_rate, self.faults)  # the same checks as the run's

    @property
    def warmup(self) -> float:
        """The warm-up in seconds."""
        return self.warmup_s if self.warmup_s is not None else min(0.1 * self.duration_s, 60.0)

    def to_json(self) -> dict[str, Any]:
        """The settings as recorded in the report."""
        data = asdict(self)
        data["log_dir"] = str(self.log_dir)
        data["warmup_s"] = self.warmup
        data["rollouts"] = rollout_schedule(self.duration_s, self.rollout_every_s, self.percents)
        return data


@dataclass(frozen=True)
class CapacityStep:
    """One closed-loop measurement of the capacity."""

    users: int
    summary: Summary


@dataclass(frozen=True)
class Capacity:
    """The capacity measured: each step, and the best successful req/s among them."""

    steps: tuple[CapacityStep, ...]

    @property
    def rps(self) -> float:
        """The highest successful req/s measured."""
        return max(step.summary.rps for step in self.steps)


@dataclass(frozen=True)
class SoakResult:
    """A whole soak: the plan, the capacity (None with a given rate), the rate driven, the
    readings, the rollout changes, the ledger, the load's summary and samples (the samples
    are kept for the charts, not written out), the verdict, and how the gateway ran."""

    plan: SoakPlan
    capacity: Capacity | None
    rate: float
    readings: list[Reading]
    rollouts: list[RolloutChange]
    ledger: Ledger
    result: RunResult
    summary: Summary
    judgement: Judgement
    gateway: dict[str, Any]
    machine: dict[str, Any]
    wall_s: float

    @property
    def samples(self) -> list[Sample]:
        """The engine's samples of the soak's load."""
        return self.result.samples

    @property
    def sheds(self) -> int | None:
        """Requests the gateway shed during the soak, by its own counter."""
        totals = [r.sheds_total for r in self.readings if r.sheds_total is not None]
        return totals[-1] - totals[0] if len(totals) >= 2 else None

    def to_json(self) -> dict[str, Any]:
        """Everything but the samples, JSON-ready."""
        capacity = None
        if self.capacity is not None:
            capacity = {
                "rps": self.capacity.rps,
                "steps": [
                    {"users": step.users, **asdict(step.summary)} for step in self.capacity.steps
                ],
            }
        judgement = self.judgement
        return {
            "verdict": "pass" if judgement.passed else "fail",
            "failures": list(judgement.failures),
            "rss_bytes": asdict(judgement.rss) if judgement.rss else None,
            "fds": asdict(judgement.fds) if judgement.fds else None,
            "capacity": capacity,
            "rate": self.rate,
            "totals": {
                "sent": self.result.sent,
                "answered": self.ledger.answered,
                "ok": self.ledger.ok,
                "faults_injected": dict(sorted(self.ledger.injected.items())),
                "fault_answers": dict(sorted(self.ledger.faults.items())),
                "errors": dict(self.ledger.errors.most_common()),
                "sheds": self.sheds,
                "rollout_changes": len(self.rollouts),
            },
            "load": asdict(self.summary),
            "error_examples": self.ledger.examples,
            "rollouts": [asdict(change) for change in self.rollouts],
            "readings": [asdict(reading) for reading in self.readings],
            "config": self.plan.to_json(),
            "gateway": self.gateway,
            "machine": self.machine,
            "wall_s": self.wall_s,
        }


def summary_lines(result: SoakResult) -> list[str]:
    """The soak in a few lines: the verdict, the load, the answers, the gauges."""
    plan, ledger, judgement = result.plan, result.ledger, result.judgement
    if result.capacity is not None:
        steps = ", ".join(f"{s.summary.rps:.1f} at {s.users} users" for s in result.capacity.steps)
        load = (
            f"{result.rate:g} req/s, {plan.load_fraction:.0%} of a measured capacity of "
            f"{result.capacity.rps:.1f} req/s ({steps})"
        )
    else:
        load = f"{result.rate:g} req/s (given)"
    lat = result.summary.latency
    sheds = "unknown" if result.sheds is None else str(result.sheds)
    lines = [
        f"soak {'PASSED' if judgement.passed else 'FAILED'}: {plan.duration_s / 60:g} min of "
        f"chat turns at {load}; {len(result.rollouts)} rollout changes",
        f"requests: {result.result.sent} sent, {ledger.ok} ok, "
        f"{ledger.faults.total()} injected faults answered as the contract says (of "
        f"{ledger.injected.total()} injected), {ledger.errors.total()} unexpected errors; "
        f"gateway sheds {sheds}",
        f"latency of successful answers: p50 {lat.p50_ms:.0f} ms, p99 {lat.p99_ms:.0f} ms, "
        f"max {lat.max_ms:.0f} ms",
    ]
    steady = judged(result.readings, plan.warmup, plan.duration_s)
    during = [r for r in result.readings if r.t_s <= plan.duration_s]
    cpu = mean_cpu(during)
    if cpu:
        shares = ", ".join(f"{name} {share:.0%}" for name, share in cpu.items())
        lines.append(f"CPU during the load (share of one core): {shares}")
    lines += busy_emulators(during)
    if judgement.rss is not None and judgement.fds is not None:
        rss, fds, limits = judgement.rss, judgement.fds, plan.limits
        lines += [
            f"RSS after the warm-up {_mb(rss.baseline)}, at the end {_mb(rss.end)} "
            f"({rss.growth:+.1%}; limit +{limits.rss_growth:.0%})",
            f"fds other than open connections after the warm-up {fds.baseline:g}, at the end "
            f"{fds.end:g} ({fds.change:+g}; slack {limits.fd_slack}); all open fds "
            f"{_range(steady, 'fds')}, open connections {_range(steady, 'connections')}",
        ]
    lines += [f"FAIL: {failure}" for failure in judgement.failures]
    return lines


def busy_emulators(readings: Sequence[Reading]) -> list[str]:
    """A line for each emulator that used `EMULATOR_BUSY` of a core or more in some
    readings: one interpreter each, so near one core it bounds the run, not the gateway
    (the load test's `BUSY` flag)."""
    lines = []
    for name in ("dynamodb", "agent"):
        shares = [share for r in readings if (share := r.cpu.get(name)) is not None]
        busy = [share for share in shares if share >= EMULATOR_BUSY]
        if busy:
            lines.append(
                f"note: the {name} emulator (one interpreter) used {EMULATOR_BUSY:.0%} of a "
                f"core or more in {len(busy)} of {len(shares)} readings (at most "
                f"{max(busy):.0%}): where it did, it, not the gateway, bounded the run"
            )
    return lines


def _range(readings: Sequence[Reading], name: str) -> str:
    values = [value for r in readings if (value := getattr(r, name)) is not None]
    return f"{min(values)}-{max(values)}" if values else "unknown"


def machine() -> dict[str, Any]:
    """Where the figures come from."""
    return {
        "cores": targets.CORES,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "load_average": list(os.getloadavg()),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def gateway_command() -> tuple[str, ...]:
    """`uvicorn gateway:app` on `127.0.0.1:{port}`, one process, as `make run` starts it."""
    return (
        sys.executable,
        "-m",
        "uvicorn",
        "gateway:app",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--no-access-log",
        "--log-level",
        "warning",
        "--http",
        "shared.serving:SnapshotHttpToolsProtocol",
    )


def measure_capacity(url: str, plan: SoakPlan, stream: TextIO | None) -> Capacity:
    """Closed loops of chat conversations at each of `plan.capacity_users`, sent as the
    soak sends them (a connection per turn) but without faults; RuntimeError when none got
    a successful answer."""
    steps = []
    scenario = FaultyScenario(ChatScenario(plan.turns), FaultPlan(0.0, ()), Ledger())
    for users in plan.capacity_users:
        load = ClosedLoop(users, plan.capacity_s, None, min(2.0, plan.capacity_s / 2))
        line = (
            ProgressLine(stream, f"capacity @ {users} users", load.ramp_up_s + plan.capacity_s)
            if stream
            else None
        )
        run = engine.run(url, scenario, load, timeout_s=plan.timeout_s, progress=line)
        summary = summarize(run.samples, run.elapsed_s)
        if line is not None:
            line.finish(summary)
        steps.append(CapacityStep(users, summary))
    capacity = Capacity(tuple(steps))
    if capacity.rps <= 0:
        raise RuntimeError("no successful answer while measuring the capacity")
    return capacity


class _Watch:
    """The soak's load, with the readings and the rollout changes around it, on one
    event loop."""

    def __init__(
        self,
        gateway: ServerProcess,
        emulators: targets.Emulators,
        token: str,
        plan: SoakPlan,
        stream: TextIO | None,
    ) -> None:
        self.gateway = gateway
        self.emulators = emulators
        self.token = token
        self.plan = plan
        self.stream = stream
        self.host, self.port = parse_origin(gateway.url)
        self.origin = 0.0
        self.ledger = Ledger()
        self.readings: list[Reading] = []
        self.rollouts: list[RolloutChange] = []
        self.counted = (0, 0, 0)  # the ledger's ok, faults and errors at the last reading
        self.cpu_seconds = self.cpu()  # each party's CPU seconds at the last reading

    def cpu(self) -> dict[str, float | None]:
        """CPU seconds used so far by the gateway, the emulators and this client."""
        return {
            "gateway": self.gateway.cpu_seconds(),
            **self.emulators.cpu_seconds(),
            "client": time.process_time(),
        }

    async def run(self, rate: float) -> RunResult:
        scenario = FaultyScenario(
            ChatScenario(self.plan.turns),
            FaultPlan(self.plan.fault_rate, self.plan.faults, self.plan.seed),
            self.ledger,
        )
        load = OpenLoop(rate, self.plan.duration_s, None, self.plan.max_in_flight)
        self.origin = self.ledger.origin = engine.clock()
        await self.read()
        task = asyncio.create_task(
            engine.run_load(self.gateway.url, scenario, load, timeout_s=self.plan.timeout_s)
        )
        changes = asyncio.create_task(self.roll())
        try:
            tick = 1
            while True:
                due = self.origin + tick * self.plan.interval_s
                done, _ = await asyncio.wait({task}, timeout=max(0.0, due - engine.clock()))
                await self.read()
                if done:
                    return task.result()
                tick += 1
        finally:
            changes.cancel()
            task.cancel()
            await asyncio.gather(changes, task, return_exceptions=True)

    async def admin(self, request: Request) -> Outcome:
        """One exchange with the admin API on a connection of its own (see
        `FaultyScenario` on idle connections)."""
        connection = Connection(self.host, self.port)
        try:
            return await exchange(
                connection, replace(request, headers=(*request.headers, CLOSE)), ADMIN_TIMEOUT_S
            )
        finally:
            connection.close()

    async def roll(self) -> None:
        plan = self.plan
        for at, percent in rollout_schedule(plan.duration_s, plan.rollout_every_s, plan.percents):
            await asyncio.sleep(max(0.0, self.origin + at - engine.clock()))
            body = json.dumps({"fastapi_percent": percent}).encode()
            headers = (
                ("Content-Type", "application/json"),
                ("Authorization", f"Bearer {self.token}"),
            )
            request = Request("PUT", ROLLOUT_PATH, body, headers)
            outcome = await self.admin(request)
            change = RolloutChange(round(at, 3), percent, outcome.status)
            self.rollouts.append(change)
            if self.stream:
                say(self.stream, f"{at:6.0f} s  rollout -> {percent:g} % ({outcome.status})")

    async def read(self) -> None:
        t = engine.clock() - self.origin
        figures = group_figures(self.gateway.pid)
        cpu, then = self.cpu(), self.cpu_seconds
        self.cpu_seconds = cpu
        outcome = await self.admin(Request("GET", METRICS_PATH))
        sheds_total: int | None = None
        percent: float | None = None
        if outcome.response is not None and outcome.status == 200:
            # Not Prometheus text: the reading says it does not know.
            with contextlib.suppress(ValueError):
                sheds_total, percent = gateway_metrics(outcome.response.body.decode())
        ledger, last = self.ledger, self.readings[-1] if self.readings else None
        counts = (ledger.ok, ledger.faults.total(), ledger.errors.total())
        ok, faults, errors = (now - then for now, then in zip(counts, self.counted, strict=True))
        self.counted = counts
        sheds = None
        if last is not None and last.sheds_total is not None and sheds_total is not None:
            sheds = sheds_total - last.sheds_total
        span = t - last.t_s if last else 0.0
        reading = Reading(
            t_s=round(t, 3),
            span_s=round(span, 3),
            rss_bytes=figures.rss_bytes if figures else None,
            fds=figures.fds if figures else None,
            connections=figures.connections if figures else None,
            close_wait=figures.close_wait if figures else None,
            held=figures.fds - figures.connections if figures else None,
            processes=figures.processes if figures else 0,
            percent=percent,
            sheds_total=sheds_total,
            sent_total=ledger.sent,
            ok=ok,
            faults=faults,
            errors=errors,
            sheds=sheds,
            cpu={name: _share(then[name], used, span) for name, used in cpu.items()},
        )
        self.readings.append(reading)
        if self.stream:
            say(self.stream, _progress(reading))


def _share(before: float | None, after: float | None, span_s: float) -> float | None:
    if before is None or after is None or span_s <= 0:
        return None
    return round((after - before) / span_s, 3)


def _known(value: int | None) -> str:
    return "-" if value is None else str(value)


def _progress(r: Reading) -> str:
    rss = "-" if r.rss_bytes is None else _mb(r.rss_bytes)
    percent = "-" if r.percent is None else f"{r.percent:g} %"
    sheds = "-" if r.sheds is None else str(r.sheds)
    return (
        f"{r.t_s:6.0f} s  rss {rss}  fds {_known(r.fds)} ({_known(r.connections)} connections)  "
        f"sent {r.sent_total}  ok {r.ok}  faults {r.faults}  errors {r.errors}  sheds {sheds}  "
        f"fastapi {percent}"
    )


def run_soak(plan: SoakPlan, stream: TextIO | None = None) -> SoakResult:
    """Start the emulators and the gateway, measure the capacity (unless `plan.rate`),
    soak, judge; everything started is stopped however it ends. RuntimeError when
    something cannot start or the capacity cannot be measured."""
    began = time.perf_counter()
    info = machine()
    for name in LOGS:  # one run, one set of logs: the servers append to theirs
        (plan.log_dir / name).unlink(missing_ok=True)
    if stream:
        say(stream, f"starting the emulators (agent latency {plan.agent_latency_ms:g} ms)")
    with targets.emulators_process(plan.agent_latency_ms, plan.log_dir) as emulators:
        table = f"soak_gateway_{uuid.uuid4().hex[:10]}"
        emulators.create_table(table)
        token = secrets.token_urlsafe(16)
        env = {
            **emulators.env,
            "GATEWAY_FASTAPI_PERCENT": f"{plan.start_percent:g}",
            "GATEWAY_ADMIN_TOKEN": token,
            # A table of its own: an earlier run's rollout must not be this one's.
            "GATEWAY_STATE_TABLE": table,
            "AGENT_TIMEOUT_SECONDS": f"{plan.agent_timeout_s:g}",
            "LOG_LEVEL": plan.log_level,
        }
        with run_server(
            "gateway",
            gateway_command(),
            env=env,
            log_path=plan.log_dir / LOGS[0],
            ready_path=ROLLOUT_PATH,
        ) as gateway:
            if stream:
                say(stream, f"gateway: {gateway.url}, pid {gateway.pid}")
            capacity = None
            rate = plan.rate
            if rate is None:
                capacity = measure_capacity(gateway.url, plan, stream)
                rate = round(capacity.rps * plan.load_fraction, 1)
            if stream:
                say(stream, f"soak: {plan.duration_s:g} s at {rate:g} req/s")
            watch = _Watch(gateway, emulators, token, plan, stream)
            with asyncio.Runner(loop_factory=fast_loop_factory()) as runner:
                result = runner.run(watch.run(rate))
            exited = gateway.exited()
            started = {"url": gateway.url, "pid": gateway.pid, "command": list(gateway_command())}
    readings = with_latency(watch.readings, result.samples)
    judgement = judge_soak(
        readings,
        watch.ledger.errors,
        watch.rollouts,
        warmup_s=plan.warmup,
        load_s=plan.duration_s,
        interval_s=plan.interval_s,
        limits=plan.limits,
        gateway_exited=exited,
    )
    info["load_average_end"] = list(os.getloadavg())
    return SoakResult(
        plan=plan,
        capacity=capacity,
        rate=rate,
        readings=readings,
        rollouts=watch.rollouts,
        ledger=watch.ledger,
        result=result,
        summary=summarize(result.samples, result.elapsed_s),
        judgement=judgement,
        gateway=started,
        machine=info,
        wall_s=round(time.perf_counter() - began, 1),
    )
