"""Drive load at one target: closed loop (N users) or open loop (a fixed arrival rate).

Closed loop: each user sends, waits for the answer, sends again. Users start spread over
the ramp-up; what completes during the measurement window that follows is measured (a
request sent during the ramp-up and answered in the window counts: its latency is real).
With a request count instead of a duration, exactly that many requests are sent after the
ramp-up and all of them are measured.

Open loop: request i is due at `i / rate` seconds whatever happened before it, and its
latency runs from that intended time, so a server (or client) that falls behind shows up as
growing latency instead of as a quietly lower send rate (coordinated omission). In-flight
requests are capped by `max_in_flight` connections; a request waiting for one is late, and
its wait is counted.
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

from load_test.client import Connection, Outcome, exchange, parse_origin
from load_test.scenarios import Scenario, User
from load_test.stats import Sample

BACKEND_HEADER = "x-dualstack-backend"

# uvloop's loop.time() ticks in whole milliseconds: too coarse for latencies.
clock = time.perf_counter


@dataclass(frozen=True)
class ClosedLoop:
    """`users` concurrent users; `duration_s` of measurement or `requests` measured
    requests (exactly one of them), after `ramp_up_s`."""

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
    """`rate` requests per second for `duration_s` seconds or `requests` requests."""

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
    """The measured samples, the measured span, and what was left out of the figures:
    requests answered during the ramp-up (`warmup`), and requests still unanswered when
    the window closed (`abandoned`, as a client with a deadline would). Every request sent
    is in exactly one of the three."""

    samples: list[Sample]
    elapsed_s: float
    warmup: int
    abandoned: int


Progress = Callable[[Counters], None]


async def run_load(
    url: str,
    scenario: Scenario,
    load: Load,
    *,
    timeout_s: float = 30.0,
    progress: Progress | None = None,
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


async def _tick(counters: Counters, progress: Progress | None, interval_s: float) -> None:
    if progress is None:
        return
    while True:
        await asyncio.sleep(interval_s)
        progress(counters)


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
    budget = [load.requests if load.requests is not None else -1]
    samples: list[Sample] = []
    warmup = [0]
    late = [0]  # answered after the window closed, before the user was stopped
    last_end = [window_start]

    async def user(number: int) -> None:
        await asyncio.sleep(load.ramp_up_s * number / load.users)
        connection = Connection(host, port)
        person = scenario.new_user(number)
        try:
            while (sent_at := clock()) < window_end:
                in_window = sent_at >= window_start
                if load.requests is not None and in_window:
                    if budget[0] == 0:
                        break
                    budget[0] -= 1
                request = person.next_request()
                c.sent += 1
                c.in_flight += 1
                outcome = await exchange(connection, request, timeout_s)
                done = clock()
                _count(c, outcome.kind)
                person.observe(outcome.response)
                measured = done >= window_start if load.requests is None else in_window
                if not measured:
                    warmup[0] += 1
                elif done > window_end:
                    late[0] += 1
                else:
                    samples.append(_sample(outcome, sent_at - start, done - sent_at))
                    last_end[0] = max(last_end[0], done)
        finally:
            connection.close()

    tasks = [asyncio.create_task(user(n)) for n in range(load.users)]
    abandoned = 0
    if load.duration_s is not None:
        # Users still waiting when the window closes are abandoned, not waited for.
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, window_end - clock()))
        abandoned = sum(1 for _ in pending)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = load.duration_s
    else:
        await asyncio.gather(*tasks)
        elapsed = last_end[0] - window_start
    for task in tasks:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error
    c.in_flight = 0
    return RunResult(samples, elapsed, warmup[0], abandoned + late[0])


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
            delay = intended - clock()
            if delay > 0:
                await asyncio.sleep(delay)
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
    return RunResult(samples, elapsed, 0, 0)


def _sample(outcome: Outcome, start_s: float, latency_s: float) -> Sample:
    backend = outcome.response.headers.get(BACKEND_HEADER, "") if outcome.response else ""
    return Sample(round(start_s, 6), latency_s, outcome.kind, outcome.status, backend)


def run(
    url: str,
    scenario: Scenario,
    load: Load,
    *,
    timeout_s: float = 30.0,
    progress: Progress | None = None,
) -> RunResult:
    """`run_load` on a fresh event loop (uvloop when installed, as the servers use it)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(run_load(url, scenario, load, timeout_s=timeout_s, progress=progress))
    return uvloop.run(run_load(url, scenario, load, timeout_s=timeout_s, progress=progress))
