"""CloudWatch custom metrics, as the migration guide's `MetricsService` and metrics middleware
send them, kept off the request path.

A request only appends an observation to a bounded in-memory `MetricsBuffer` (past its
bound the observation is dropped and counted); `MetricsPublisher` sends what was kept with
`PutMetricData`, from a background task every `METRICS_FLUSH_SECONDS` and once at shutdown.
Observations of one metric, dimensions and minute leave as one datum (`Values`/`Counts`, as
CloudWatch aggregates them anyway), at most `MAX_DATUMS` datums a call. A failed flush is
logged and its data dropped: metrics never fail or slow a request, nor the shutdown beyond
`METRICS_TIMEOUT_SECONDS`.

Shadow requests (the gateway's copies) record nothing: the primary's request was counted.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from starlette.routing import Mount, Route, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_app.middleware import shadow_of

log = structlog.get_logger("fastapi_app.metrics")

MAX_DATUMS = 1000
"""PutMetricData's limit: metric datums per call."""
MAX_VALUES = 150
"""PutMetricData's limit: distinct values in one datum's `Values`."""
UNMATCHED_ROUTE = "unmatched"
"""The `Route` of a request no route matched (its raw path would make one metric per URL)."""
FLUSH_TASK_NAME = "fastapi_app.metrics.flush"

Dimensions = tuple[tuple[str, str], ...]
Observation = tuple[str, str, float, Dimensions, float]
"""(metric name, unit, value, dimensions, epoch seconds)."""


class MetricsBuffer:
    """Observations waiting for the next flush, at most `capacity`; `record` never blocks,
    raises or sends anything."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.dropped = 0
        """Observations refused since the last `take`, for want of room."""
        self._items: list[Observation] = []

    def __len__(self) -> int:
        return len(self._items)

    def record(self, name: str, value: float, unit: str, dimensions: Dimensions = ()) -> None:
        """Keep one observation, or count it dropped when the buffer is full."""
        if len(self._items) >= self.capacity:
            self.dropped += 1
            return
        self._items.append((name, unit, value, dimensions, time.time()))

    def take(self) -> tuple[list[Observation], int]:
        """Everything kept, and how many were dropped, since the last call; both reset."""
        items, dropped = self._items, self.dropped
        self._items, self.dropped = [], 0
        return items, dropped


def metric_data(observations: Iterable[Observation]) -> list[dict[str, Any]]:
    """`PutMetricData` datums for `observations`: one per metric, unit, dimensions and
    minute, its values and how often each was seen (at most `MAX_VALUES` values a datum)."""
    groups: dict[tuple[str, str, Dimensions, int], dict[float, int]] = {}
    for name, unit, value, dimensions, at in observations:
        counts = groups.setdefault((name, unit, dimensions, int(at // 60)), {})
        counts[value] = counts.get(value, 0) + 1
    data: list[dict[str, Any]] = []
    for (name, unit, dimensions, minute), counts in groups.items():
        pairs = list(counts.items())
        for start in range(0, len(pairs), MAX_VALUES):
            chunk = pairs[start : start + MAX_VALUES]
            data.append(
                {
                    "MetricName": name,
                    "Unit": unit,
                    "Dimensions": [{"Name": n, "Value": v} for n, v in dimensions],
                    "Timestamp": datetime.fromtimestamp(minute * 60, UTC),
                    "Values": [value for value, _ in chunk],
                    "Counts": [float(count) for _, count in chunk],
                }
            )
    return data


def batches(data: Sequence[dict[str, Any]], size: int = MAX_DATUMS) -> list[Sequence[Any]]:
    """`data` in runs of at most `size`, in order."""
    return [data[start : start + size] for start in range(0, len(data), size)]


class MetricsPublisher:
    """Sends a `MetricsBuffer`'s observations to CloudWatch under `namespace` through an
    aioboto3 CloudWatch client; `run` flushes periodically, `stop` ends it and flushes."""

    def __init__(
        self, client: Any, namespace: str, buffer: MetricsBuffer, *, timeout: float
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.buffer = buffer
        self.timeout = timeout
        self.flushes = 0
        """Flushes finished (sent, failed or with nothing to send)."""

    async def flush(self) -> int:
        """Send everything buffered; returns the datums CloudWatch accepted. Never raises
        (but for cancellation): a failure is logged and the rest of the flush dropped."""
        observations, dropped = self.buffer.take()
        if dropped:
            log.warning("metrics.dropped", dropped=dropped, capacity=self.buffer.capacity)
        sent = 0
        try:
            data = metric_data(observations)
            async with asyncio.timeout(self.timeout):
                for batch in batches(data):
                    await self.client.put_metric_data(Namespace=self.namespace, MetricData=batch)
                    sent += len(batch)
        except Exception as exc:
            log.warning(
                "metrics.flush_failed",
                namespace=self.namespace,
                error=repr(exc),
                datums_sent=sent,
                observations=len(observations),
            )
        finally:
            self.flushes += 1
        return sent

    async def run(self, interval: float) -> None:
        """Flush every `interval` seconds until cancelled."""
        while True:  # asyncio and uvloop clamp a long timer themselves
            await asyncio.sleep(interval)
            await self.flush()

    def start(self, interval: float) -> asyncio.Task[None]:
        """The periodic flush, as a task of the running loop."""
        return asyncio.create_task(self.run(interval), name=FLUSH_TASK_NAME)

    async def stop(self, task: asyncio.Task[None]) -> None:
        """End the periodic flush (`task`), then flush what is left."""
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            # Ours, or the one that is stopping this coroutine: propagate only the latter.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        await self.flush()


class RouteTemplates:
    """The templates of an app's routes (`/api/v1/chat/sessions/{session_id}`, a mount's
    `/docs/assets/{path}`), found for a request's path: the documented operations (full
    paths, router prefixes included) then the app's own routes and mounts. Read from the
    app once, on first use."""

    def __init__(self) -> None:
        self._table: list[tuple[re.Pattern[str], str]] | None = None

    def find(self, scope: Scope) -> str:
        """The template of the route whose path matches the request's, `UNMATCHED_ROUTE`
        when none does (its raw path would make one metric per URL). Called before the app
        runs: a mount changes the scope's paths."""
        table = self._table
        if table is None:
            table = self._table = self._read(scope["app"])
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        for regex, template in table:
            if regex.match(path):
                return template
        return UNMATCHED_ROUTE

    @staticmethod
    def _read(app: Any) -> list[tuple[re.Pattern[str], str]]:
        documented = list(app.openapi().get("paths", {})) if hasattr(app, "openapi") else []
        table = [(compile_path(path)[0], path) for path in documented]
        for route in getattr(app, "routes", ()):
            if isinstance(route, Route | Mount) and route.path_format not in documented:
                table.append((route.path_regex, route.path_format))
        return table


class MetricsMiddleware:
    """`RequestCount` (Count) and `RequestDuration` (Milliseconds) of every request but a
    shadow's, with dimensions `Method`, `Route` (the route template) and `StatusCode`,
    appended to `buffer`."""

    def __init__(self, app: ASGIApp, buffer: MetricsBuffer, trust_shadow_header: bool) -> None:
        self.app = app
        self.buffer = buffer
        self.trust_shadow_header = trust_shadow_header
        self.routes = RouteTemplates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or shadow_of(scope, self.trust_shadow_header):
            await self.app(scope, receive, send)
            return
        method, route = scope["method"], self.routes.find(scope)
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            # Rounded: equal values leave as one (`metric_data`), and 0.1 ms is plenty.
            elapsed = round((time.perf_counter() - started) * 1000, 1)
            dimensions = (("Method", method), ("Route", route), ("StatusCode", str(status)))
            self.buffer.record("RequestCount", 1.0, "Count", dimensions)
            self.buffer.record("RequestDuration", elapsed, "Milliseconds", dimensions)
