"""The fleet's traffic over the last minutes, as time series for the dashboard:
`GET /_gateway/stats?minutes=5&step=5`.

Every number is the whole fleet's (every worker of every replica), read from the fleet's
per-second items in the state table (`harness.gateway.fleet`), never one worker's memory.
Open to read, as `/metrics` is: aggregate numbers only.

The points are `step` seconds each, aligned to multiples of `step` in epoch seconds, and
end at the last final second (`FleetCounters.final_before()`, a few seconds ago) rounded
down to a step: a point's numbers are complete when first shown and never change after, so
a dashboard that polls every `step` seconds sees one new point at the end and the older
ones as they were. There are `minutes * 60 // step` of them (at least one).

A worker answers from what it computed within the last second when it can, so many
viewers cost one read; `FleetCounters.seconds()` keeps the final seconds it read, so a
read asks only for the seconds that became final since.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from harness.gateway.admin import RETRY_AFTER_SECONDS
from harness.gateway.fleet import FleetCounters, FleetUnavailable, SecondCounts
from harness.gateway.gates import quantile
from harness.gateway.metrics import LATENCY_BUCKETS, GatewayMetrics
from harness.gateway.policy import BACKENDS
from harness.gateway.shadow import OUTCOMES
from shared.session import iso

__all__ = ["CACHE_SECONDS", "MAX_MINUTES", "MAX_STEP", "Query", "stats_routes", "summarize"]

MAX_MINUTES = 60
MAX_STEP = 600
"""At most ten minutes a point; `harness.gateway.fleet.KEPT_SECONDS` keeps an hour and
that much more, so an hour aligned to any step is read from memory."""

CACHE_SECONDS = 1.0
"""How long a worker answers a query from what it last computed for it."""

UNAVAILABLE = "Fleet counters unavailable"
_NO_STORE = {"Cache-Control": "no-store"}
_BUCKETS = len(LATENCY_BUCKETS) + 1

log = structlog.get_logger("harness.gateway.stats")


@dataclass(frozen=True)
class Query:
    """What `GET /stats` asks for: the last `minutes`, in points of `step` seconds."""

    minutes: int = 5
    step: int = 5

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> Query:
        """The query's values; ValueError, with a message for the client, when one is not
        an integer in its range. `step` defaults to `minutes` (sixty points)."""
        minutes = _integer(params, "minutes", MAX_MINUTES, default=5)
        return cls(minutes, _integer(params, "step", MAX_STEP, default=minutes))

    def points(self, final_before: int) -> tuple[int, int]:
        """(the first point's start, how many points) for the seconds before
        `final_before`, the last point ending on a multiple of `step` at or before it."""
        end = final_before - final_before % self.step
        points = max(1, self.minutes * 60 // self.step)
        return end - points * self.step, points


def _integer(params: Mapping[str, str], name: str, most: int, *, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    # The length test first: int() of thousands of digits raises instead of answering.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4 and 1 <= int(raw) <= most):
        raise ValueError(f"{name} must be an integer from 1 to {most}")
    return int(raw)


@dataclass
class _Stack:
    requests: int = 0
    errors: int = 0
    shed: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * _BUCKETS)

    def add(self, backend: str, second: SecondCounts) -> None:
        self.requests += second.requests.get(backend, 0)
        self.errors += second.errors.get(backend, 0)
        self.shed += second.shed.get(backend, 0)
        counts = second.latency.get(backend)
        if counts is not None:
            self.buckets = [a + b for a, b in zip(self.buckets, counts, strict=True)]

    def add_up(self, other: _Stack) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.shed += other.shed
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]

    def figures(self, seconds: int) -> dict[str, int | float | None]:
        p50, p99 = quantile(self.buckets, 0.5), quantile(self.buckets, 0.99)
        return {
            "requests": self.requests,
            "errors": self.errors,
            "shed": self.shed,
            "rps": round(self.requests / seconds, 6),
            "error_rate": round(self.errors / self.requests, 6) if self.requests else None,
            "p50_ms": None if p50 is None else round(p50 * 1000, 3),
            "p99_ms": None if p99 is None else round(p99 * 1000, 3),
        }


def _pool(seconds: Iterable[SecondCounts]) -> tuple[float, float] | None:
    """The fleet's (busy threads, threads) over `seconds`: each worker's mean over the
    seconds it wrote in, summed over workers (a worker that flushes every few seconds, or
    skipped one, counts whole); None when no worker wrote."""
    readings: dict[str, list[int]] = {}
    for second in seconds:
        for worker, (busy, threads) in second.pool.items():
            summed = readings.setdefault(worker, [0, 0, 0])
            summed[0] += busy
            summed[1] += threads
            summed[2] += 1
    if not readings:
        return None
    return (
        round(sum(busy / n for busy, _, n in readings.values()), 3),
        round(sum(threads / n for _, threads, n in readings.values()), 3),
    )


def summarize(
    seconds: Mapping[int, SecondCounts], start: int, step: int, points: int, now: float
) -> dict[str, Any]:
    """The `GET /stats` answer for `points` points of `step` seconds from `start`, out of
    the fleet's `seconds` (a second missing from them counts as one nobody wrote in)."""
    times = [start + i * step for i in range(points)]
    totals = {backend: _Stack() for backend in BACKENDS}
    stacks: dict[str, dict[str, list[Any]]] = {backend: {} for backend in BACKENDS}
    shadow: dict[str, list[int]] = {outcome: [] for outcome in OUTCOMES}
    wsgi: dict[str, list[float | None]] = {"busy": [], "threads": []}
    for first in times:
        point = [seconds[s] for s in range(first, first + step) if s in seconds]
        for backend in BACKENDS:
            stack = _Stack()
            for second in point:
                stack.add(backend, second)
            totals[backend].add_up(stack)
            for name, value in stack.figures(step).items():
                stacks[backend].setdefault(name, []).append(value)
        for outcome in OUTCOMES:
            shadow[outcome].append(sum(second.shadowed.get(outcome, 0) for second in point))
        pool = _pool(point)
        wsgi["busy"].append(None if pool is None else pool[0])
        wsgi["threads"].append(None if pool is None else pool[1])
    return {
        "source": "fleet",
        "now": iso(now),
        "step_seconds": step,
        "times": times,
        "stacks": stacks,
        "shadow": shadow,
        "wsgi": wsgi,
        "totals": {backend: totals[backend].figures(points * step) for backend in BACKENDS},
    }


def stats_routes(
    fleet: FleetCounters,
    metrics: GatewayMetrics,
    *,
    cache_seconds: float = CACHE_SECONDS,
) -> list[BaseRoute]:
    """The admin routes that serve the fleet's time series: `GET /stats`, with `minutes`
    (1 to 60, default 5) and `step` (seconds per point, 1 to 600, default `minutes`).
    400 on a bad value, 503 with Retry-After when the fleet's counts cannot be read.
    `metrics` is this worker's own, and not read: the series are the fleet's."""
    clock: Callable[[], float] = fleet.clock
    answers: dict[Query, tuple[float, dict[str, Any]]] = {}
    # One computation at a time: viewers who ask meanwhile get its answer, not a read each.
    lock = asyncio.Lock()

    async def get_stats(request: Request) -> Response:
        try:
            query = Query.parse(request.query_params)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400, headers=_NO_STORE)
        async with lock:
            kept = answers.get(query)
            if kept is not None and clock() - kept[0] < cache_seconds:
                return JSONResponse(kept[1], headers=_NO_STORE)
            now = clock()
            start, points = query.points(fleet.final_before())
            try:
                seconds = await fleet.seconds(start, start + points * query.step)
            except FleetUnavailable as exc:
                log.warning("stats.read_failed", error=str(exc))
                return JSONResponse(
                    {"error": UNAVAILABLE},
                    status_code=503,
                    headers={**_NO_STORE, "Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            body = summarize(seconds, start, query.step, points, now)
            for stale in [q for q, (at, _) in answers.items() if now - at >= cache_seconds]:
                del answers[stale]
            answers[query] = (now, body)
        return JSONResponse(body, headers=_NO_STORE)

    return [Route("/stats", get_stats, methods=["GET"])]
