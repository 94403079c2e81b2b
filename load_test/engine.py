"""Drive load at one target: closed loop (N users) or open loop (a fixed arrival rate).

Closed loop: each user sends, waits for the answer, sends again. Users start spread over
the ramp-up; what is answered from the start of the measurement window on is measured (a
request sent during the ramp-up and answered in the window counts: its latency is real).
When the window closes no new request is sent, and the ones in flight are waited for (each
ends within the per-request timeout, as a timeout if the server is slower): they are the
slowest requests, and leaving them out would bias p99 and max low. With a request count
instead of a duration, exactly that many requests are sent in all, the ramp-up's included:
those sent during the ramp-up are warm-up, the others are measured. A user whose request
failed to connect waits a little (doubling up to `BACKOFF_MAX_S`) before its next one, so a
server that refuses connections does not make the client spin.

Open loop: request i is due at `i / rate` seconds whatever happened before it, and its
latency runs from that intended time, so a server (or client) that falls behind shows up as
growing latency instead of as a quietly lower send rate (coordinated omission). In-flight
requests are capped by `max_in_flight` connections; a request waiting for one is late, and
its wait is counted.

Every request sent is counted when it is sent (`RunResult.sent`), apart from the samples,
so that `sent == len(samples) + warmup` is a check on the engine, not a tautology.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.local.loop import fast_loop_factory
from load_test.client import Connection, Outcome, exchange, parse_origin
from load_test.scenarios import Scenario, User
from load_test.stats import Sample

BACKEND_HEADER = "x-dualstack-backend"

# uvloop's loop.time() ticks in whole milliseconds: too coarse for latencies.
clock = time.perf_counter

# A refused connection fails in microseconds: without a pause, users would spin on it.
BACKOFF_FIRST_S = 0.01
BACKOFF_MAX_S = 1.0


@dataclass(frozen=True)
class ClosedLoop:
    """`users` concurrent users, started over `ramp_up_s`; then `duration_s` of
    measurement, or (exactly one of the two) `requests` requests in all, a hard cap: the
    ones sent during the ramp-up count towards it, as warm-up."""

    users: int
    duration_s: float | None = 10.0
    requests: int | None = None
    ramp_up_s: float = 0.0

    def __post_init__(self) -> None:
        _check_extent(self.duration_s, self.requests)
        if self.users < 1 or self.ramp_up_s < 0:
            raise ValueError("users must be >= 1 and ramp-up >= 0")

    @property
    def label(self) -> str:
        """How this load is named in tables."""
        return f"{self.users} users"


@dataclass(frozen=True)
class OpenLoop:
    """`rate` requests per second for `duration_s` seconds or `requests` requests (all
    measured: the open loop has no warm-up)."""

    rate: float
    duration_s: float | None = 10.0
    requests: int | None = None
    max_in_flight: int = 1000

    def __post_init__(self) -> None:
        _check_extent(self.duration_s, self.requests)
        if self.rate <= 0 or self.max_in_flight < 1:
            raise ValueError("rate must be > 0 and max_in_flight >= 1")

    @property
    def label(self) -> str:
        """How this load is named in tables."""
        return f"{self.rate:g} req/s"


Load = ClosedLoop | OpenLoop


def _check_extent(duration_s: float | None, requests: int | None) -> None:
    if (duration_s is None) == (requests is None):
        raise ValueError("give either a duration or a request count")
    if (duration_s is not None and duration_s <= 0) or (requests is not None and requests < 1):
        raise ValueError("the duration and the request count must be positive")


@dataclass
class Counters:
    """Live figures for the progress display (not the measurement: samples are)."""

    sent: int = 0
    ok: int = 0
    errors: int = 0
    in_flight: int = 0
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class RunResult:
    """The measured samples, the measured span (the window, stretched to the last measured
    answer when draining ran past it), the requests answered during the ramp-up and left
    out of the figures (`warmup`), and the requests sent, counted as they were sent
    (`sent`). Every request sent is a sample or a warm-up one:
    `sent == len(samples) + warmup`."""

    samples: list[Sample]
    elapsed_s: float
    warmup: int
    sent: int


# Called with the live counters every `progress_interval_s` and once at the end
# (`progress.ProgressLine` draws them).
ProgressCallback = Callable[[Counters], None]


async def run_load(
    url: str,
    scenario: Scenario,
    load: Load,
    *,
    timeout_s: float = 30.0,
    progress: ProgressCallback | None = None,
    progress_interval_s: float = 0.5,
) -> RunResult:
    """Run `load` against the server at `url` and return what was measured."""
    host, port = parse_origin(url)
    counters = Counters()
    ticker = asyncio.create_task(_tick(counters, progress, progress_interval_s))
    try:
        if isinstance(load, ClosedLoop):
            return await _closed(host, port, scenario, load, timeout_s, counters)
        return await _open(host, port, scenario, load, timeout_s, counters)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        if progress is not None:
            progress(counters)


async def _tick(counters: Counters, progress: ProgressCallback | None, interval_s: float) -> None:
    if progress is None:
        return
    while True:
        await asyncio.sleep(interval_s)
        progress(counters)


async def _sleep_until(deadline: float) -> None:
    """Sleep until `clock()` reaches `deadline`. An event loop's timer can fire early by
    the clock: uvloop's (libuv's) counts from the loop's cached time, and a busy 2-core
    machine has shown a backoff's pauses short enough for 20 attempts where 14 fit, so
    the clock decides, not the timer."""
    while (left := deadline - clock()) > 0:  # noqa: ASYNC110 - waiting on the clock, no event
        await asyncio.sleep(left)


def _count(counters: Counters, kind: str) -> None:
    counters.in_flight -= 1
    if kind == "ok":
        counters.ok += 1
    else:
        counters.errors += 1


async def _closed(
    host: str, port: int, scenario: Scenario, load: ClosedLoop, timeout_s: float, c: Counters
) -> RunResult:
    start = clock()
    window_start = start + load.ramp_up_s
    window_end = window_start + load.duration_s if load.duration_s is not None else math.inf
    budget = [load.requests if load.requests is not None else -1]  # -1 (and below): no cap
    samples: list[Sample] = []
    warmup = [0]
    sent = [0]
    last_end = [window_start]

    async def user(number: int) -> None:
        await asyncio.sleep(load.ramp_up_s * number / load.users)
        connection = Connection(host, port)
        person = scenario.new_user(number)
        backoff = 0.0
        try:
            while (sent_at := clock()) < window_end and budget[0] != 0:
                budget[0] -= 1
                in_window = sent_at >= window_start
                request = person.next_request()
                sent[0] += 1
                c.sent += 1
                c.in_flight += 1
                outcome = await exchange(connection, request, timeout_s)
                done = clock()
                _count(c, outcome.kind)
                person.observe(outcome.response)
                measured = done >= window_start if load.requests is None else in_window
                if measured:
                    samples.append(_sample(outcome, sent_at - start, done - sent_at))
                    last_end[0] = max(last_end[0], done)
                else:
                    warmup[0] += 1
                if outcome.kind == "connection":
                    backoff = min(max(2 * backoff, BACKOFF_FIRST_S), BACKOFF_MAX_S)
                    await _sleep_until(min(clock() + backoff, window_end))
                else:
                    backoff = 0.0
        finally:
            connection.close()

    # No cut-off: once the window closes users send nothing more, and each one's request
    # in flight ends within the timeout; it is measured like any other.
    await asyncio.gather(*(user(n) for n in range(load.users)))
    c.in_flight = 0
    if load.duration_s is not None:
        elapsed = max(load.duration_s, last_end[0] - window_start)
    else:
        elapsed = last_end[0] - window_start
    samples.sort(key=lambda sample: sample.start_s)
    return RunResult(samples, elapsed, warmup[0], sent[0])


async def _open(
    host: str, port: int, scenario: Scenario, load: OpenLoop, timeout_s: float, c: Counters
) -> RunResult:
    start = clock()
    if load.requests is not None:
        total = load.requests
    else:
        assert load.duration_s is not None
        total = math.ceil(load.duration_s * load.rate)
    slots = asyncio.Semaphore(load.max_in_flight)
    idle_connections: deque[Connection] = deque()
    idle_users: deque[User] = deque()
    numbers = itertools.count()
    samples: list[Sample] = []
    last_end = [start]
    sent = 0

    async def one(intended: float) -> None:
        async with slots:
            connection = idle_connections.pop() if idle_connections else Connection(host, port)
            person = idle_users.popleft() if idle_users else scenario.new_user(next(numbers))
            request = person.next_request()
            outcome = await exchange(connection, request, timeout_s)
            done = clock()
            idle_connections.append(connection)
            person.observe(outcome.response)
            idle_users.append(person)
        _count(c, outcome.kind)
        samples.append(_sample(outcome, intended - start, done - intended))
        last_end[0] = max(last_end[0], done)

    tasks: list[asyncio.Task[None]] = []
    try:
        for i in range(total):
            intended = start + i / load.rate
            await _sleep_until(intended)
            sent += 1
            c.sent += 1
            c.in_flight += 1
            tasks.append(asyncio.create_task(one(intended)))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        for connection in idle_connections:
            connection.close()
    samples.sort(key=lambda sample: sample.start_s)
    elapsed = max(last_end[0] - start, total / load.rate)
    return RunResult(samples, elapsed, 0, sent)


def _sample(outcome: Outcome, start_s: float, latency_s: float) -> Sample:
    backend = outcome.response.headers.get(BACKEND_HEADER, "") if outcome.response else ""
    return Sample(round(start_s, 6), latency_s, outcome.kind, outcome.status, backend)


def run(
    url: str,
    scenario: Scenario,
    load: Load,
    *,
    timeout_s: float = 30.0,
    progress: ProgressCallback | None = None,
) -> RunResult:
    """`run_load` on a fresh event loop (uvloop when installed, as the servers use it)."""
    with asyncio.Runner(loop_factory=fast_loop_factory()) as runner:
        return runner.run(run_load(url, scenario, load, timeout_s=timeout_s, progress=progress))
