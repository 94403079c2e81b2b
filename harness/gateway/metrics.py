"""What the gateway sees, as Prometheus metrics (one registry per gateway).

The gateway counts in plain dicts and ints, and a custom collector turns them into metric
families when scraped. prometheus_client's own metric objects take a lock on every update
(six a request here), which cost more than the rest of the routing decision; every update
happens on the event loop's thread, as does the scrape, so no lock is needed.

A scrape renders `Counts`: this worker's own, or, when the workers of one server share
their counts (`harness.gateway.workers`), the sum `merge` makes of every worker's.
"""

from __future__ import annotations

import contextlib
import functools
from bisect import bisect_left
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from pydantic import BaseModel
from starlette.types import ASGIApp

from harness.gateway.admission import Admission
from harness.gateway.capture import CaptureStats
from harness.gateway.policy import Rollout
from harness.gateway.workers import FreshScrape, Siblings, join

log = structlog.get_logger("harness.gateway.metrics")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)


class GatewayMetrics:
    """Requests, status classes and latency per backend and route; in-flight requests; the
    WSGI pool's threads, queue, queue waits and shed requests; routing decisions; the
    current percentages; shadow requests by outcome, and their durations."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests: defaultdict[tuple[str, str, str, str], int] = defaultdict(int)
        # (backend, route) -> per-bucket counts (not cumulative), then the sum of seconds.
        self.latency: dict[tuple[str, str], list[float]] = {}
        self.in_flight: defaultdict[str, int] = defaultdict(int)
        self.decisions: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.shed: defaultdict[str, int] = defaultdict(int)
        self.shed_routes: defaultdict[tuple[str, str], int] = defaultdict(int)
        """(backend, route) -> shed requests: the rollout's gates count them as errors of
        the stack that shed, per route."""
        self.abandoned = 0
        self.unminted = 0
        self.capture: CaptureStats | None = None
        """The capture writer's counts, when capturing is on."""
        # Per-bucket counts of queued requests' waits for a thread, then the sum of seconds.
        self.queue_wait = [0.0] * (len(WAIT_BUCKETS) + 2)
        self.admission: Admission | None = None
        """The WSGI pool's admission, read when scraped."""
        self.shadowed: defaultdict[tuple[str, str], int] = defaultdict(int)
        """(route, outcome) -> shadow requests judged (or dropped)."""
        # backend -> per-bucket counts of shadow requests' durations, then the sum.
        self.shadow_latency: dict[str, list[float]] = {}
        self.shadow_in_flight = 0
        self.rollout: Rollout | None = None
        self.workers: Callable[[Counts], Scraped] | None = None
        """What a scrape renders while the server's workers share their counts (`share`):
        given this worker's, the sum over the server's workers. None: this worker's."""
        self.registry.register(_Collector(self))

    def counts(self) -> Counts:
        """A copy of what a scrape renders of this worker (the rollout aside)."""
        admission = self.admission
        capture = self.capture
        return Counts(
            requests=dict(self.requests),
            latency={key: list(value) for key, value in self.latency.items()},
            decisions=dict(self.decisions),
            shed=dict(self.shed),
            shed_routes=dict(self.shed_routes),
            abandoned=self.abandoned,
            unminted=self.unminted,
            queue_wait=list(self.queue_wait),
            shadowed=dict(self.shadowed),
            shadow_latency={key: list(value) for key, value in self.shadow_latency.items()},
            captured=None
            if capture is None
            else {outcome: getattr(capture, outcome) for outcome in _CAPTURE_OUTCOMES},
            in_flight=dict(self.in_flight),
            wsgi_threads=0 if admission is None else admission.threads,
            wsgi_busy=0 if admission is None else admission.busy,
            wsgi_waiting=0 if admission is None else admission.waiting,
            wsgi_service=0.0 if admission is None else admission.service,
            shadow_in_flight=self.shadow_in_flight,
        )

    def set_rollout(self, rollout: Rollout) -> None:
        """The percentages to expose (the default and every per-prefix override)."""
        self.rollout = rollout

    def observe_queue_wait(self, seconds: float) -> None:
        """A queued Flask-bound request got its thread after `seconds`."""
        self.queue_wait[bisect_left(WAIT_BUCKETS, seconds)] += 1
        self.queue_wait[-1] += seconds

    def observe(self, backend: str, route: str, method: str, status: int, seconds: float) -> None:
        """One finished request."""
        self.requests[(backend, method, route, _STATUS_CLASS.get(status // 100, "other"))] += 1
        counts = self.latency.get((backend, route))
        if counts is None:
            counts = self.latency[(backend, route)] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        counts[-1] += seconds

    def observe_shadow(self, backend: str, seconds: float) -> None:
        """One shadow request `backend` answered (or failed) in `seconds`."""
        counts = self.shadow_latency.get(backend)
        if counts is None:
            counts = self.shadow_latency[backend] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        counts[-1] += seconds

    @contextlib.asynccontextmanager
    async def share(self, directory: str | None, admin: ASGIApp) -> AsyncIterator[ASGIApp]:
        """While open, this worker's counts are shared with the other workers of its server
        (`harness.gateway.workers`, `directory` the `GATEWAY_METRICS_DIR` setting), and a
        scrape renders the sum over all of them: yields `admin` wrapped so that a scrape
        first waits for the others' fresh counts. A single process shares nothing, and
        `admin` is yielded as it is."""
        siblings = join(directory, lambda: self.counts().to_json())
        if siblings is None:
            yield admin
            return
        siblings.start()
        self.workers = functools.partial(scrape_workers, siblings)
        try:
            yield FreshScrape(admin, siblings)
        finally:
            self.workers = None
            await siblings.stop()

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


_STATUS_CLASS = {n: f"{n}xx" for n in range(1, 6)}
_CAPTURE_OUTCOMES = ("written", "dropped", "failed")
K = TypeVar("K")


@dataclass
class Counts:
    """One worker's counters and gauges as a scrape renders them, as plain data: what a
    worker writes for its siblings, and what `merge` sums. Histograms are per-bucket
    counts (not cumulative), then the sum of seconds, as `GatewayMetrics` keeps them."""

    requests: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    latency: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    decisions: dict[tuple[str, str], int] = field(default_factory=dict)
    shed: dict[str, int] = field(default_factory=dict)
    shed_routes: dict[tuple[str, str], int] = field(default_factory=dict)
    abandoned: int = 0
    unminted: int = 0
    queue_wait: list[float] = field(default_factory=lambda: [0.0] * (len(WAIT_BUCKETS) + 2))
    shadowed: dict[tuple[str, str], int] = field(default_factory=dict)
    shadow_latency: dict[str, list[float]] = field(default_factory=dict)
    captured: dict[str, int] | None = None
    """outcome -> captured requests; None when this worker does not capture."""
    # Gauges: the worker's state now, which ends with the worker.
    in_flight: dict[str, int] = field(default_factory=dict)
    wsgi_threads: int = 0
    wsgi_busy: int = 0
    wsgi_waiting: int = 0
    wsgi_service: float = 0.0
    shadow_in_flight: int = 0

    def to_json(self) -> dict[str, Any]:
        """As JSON: a label tuple becomes a list, followed by its value."""
        return {
            name: [[*_labels(key), value] for key, value in entry.items()]
            if name in _KEYED
            else entry
            for name, entry in vars(self).items()
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Counts:
        """What `to_json` gave; ValueError (pydantic's) when it is not that shape."""
        fields = _CountsJson.model_validate(data).model_dump()
        for name, labels in _KEYED.items():
            fields[name] = {
                (tuple(row[:labels]) if labels > 1 else row[0]): row[labels] for row in fields[name]
            }
        return cls(**fields)


class _CountsJson(BaseModel):
    """The shape of `Counts.to_json()`, checked before a sibling's snapshot is summed: one
    written by another version must not break the scrape."""

    requests: list[tuple[str, str, str, str, int]]
    latency: list[tuple[str, str, list[float]]]
    decisions: list[tuple[str, str, int]]
    shed: list[tuple[str, int]]
    shed_routes: list[tuple[str, str, int]]
    abandoned: int
    unminted: int
    queue_wait: list[float]
    shadowed: list[tuple[str, str, int]]
    shadow_latency: list[tuple[str, list[float]]]
    captured: dict[str, int] | None
    in_flight: list[tuple[str, int]]
    wsgi_threads: int
    wsgi_busy: int
    wsgi_waiting: int
    wsgi_service: float
    shadow_in_flight: int


_KEYED = {
    "requests": 4,
    "latency": 2,
    "decisions": 2,
    "shed": 1,
    "shed_routes": 2,
    "shadowed": 2,
    "shadow_latency": 1,
    "in_flight": 1,
}
"""The fields keyed by labels, and how many labels a key has."""


def _labels(key: tuple[str, ...] | str) -> tuple[str, ...]:
    return key if isinstance(key, tuple) else (key,)


@dataclass(frozen=True)
class Scraped:
    """What one scrape renders: the counts, and, when the server's workers share theirs,
    how many workers they cover, by state (fresh, stale, exited)."""

    counts: Counts
    workers: dict[str, int] | None = None


def merge(own: Counts, live: Sequence[Counts], exited: Sequence[Counts]) -> Counts:
    """The server's counts: counters and histograms summed over every worker (an exited
    one's too, so totals never go down when a worker is replaced), gauges over the live
    ones (`own` and `live`), except the WSGI service time, a mean, which is averaged."""
    running = [own, *live]
    everyone = [*running, *exited]
    return Counts(
        requests=_sum_keyed(c.requests for c in everyone),
        latency=_sum_buckets(c.latency for c in everyone),
        decisions=_sum_keyed(c.decisions for c in everyone),
        shed=_sum_keyed(c.shed for c in everyone),
        shed_routes=_sum_keyed(c.shed_routes for c in everyone),
        abandoned=sum(c.abandoned for c in everyone),
        unminted=sum(c.unminted for c in everyone),
        queue_wait=_sum_buckets({(): c.queue_wait} for c in everyone)[()],
        shadowed=_sum_keyed(c.shadowed for c in everyone),
        shadow_latency=_sum_buckets(c.shadow_latency for c in everyone),
        captured=_sum_captured([c.captured for c in everyone]),
        in_flight=_sum_keyed(c.in_flight for c in running),
        wsgi_threads=sum(c.wsgi_threads for c in running),
        wsgi_busy=sum(c.wsgi_busy for c in running),
        wsgi_waiting=sum(c.wsgi_waiting for c in running),
        wsgi_service=sum(c.wsgi_service for c in running) / len(running),
        shadow_in_flight=sum(c.shadow_in_flight for c in running),
    )


def scrape_workers(siblings: Siblings, own: Counts) -> Scraped:
    """`own` counts summed with the siblings' snapshots (`merge`), and how many workers
    the sum covers, by state."""
    running: list[Counts] = []
    exited: list[Counts] = []
    stale = 0
    for sibling in siblings.read():
        try:
            counts = Counts.from_json(sibling.counts)
        except ValueError as error:
            log.warning("metrics.unreadable_counts", pid=sibling.worker.pid, error=str(error))
            continue
        if not sibling.running:
            exited.append(counts)
            continue
        running.append(counts)
        if siblings.since is not None and sibling.at < siblings.since:
            stale += 1
    workers = {"fresh": 1 + len(running) - stale, "stale": stale, "exited": len(exited)}
    return Scraped(merge(own, running, exited), workers)


def _sum_keyed(entries: Iterator[dict[K, int]]) -> dict[K, int]:
    total: defaultdict[K, int] = defaultdict(int)
    for entry in entries:
        for key, value in entry.items():
            total[key] += value
    return dict(total)


def _sum_buckets(entries: Iterator[dict[K, list[float]]]) -> dict[K, list[float]]:
    total: dict[K, list[float]] = {}
    for entry in entries:
        for key, counts in entry.items():
            kept = total.get(key)
            if kept is None:
                total[key] = list(counts)
            elif len(kept) == len(counts):  # else another version's buckets: not comparable
                total[key] = [a + b for a, b in zip(kept, counts, strict=True)]
    return total


def _sum_captured(entries: list[dict[str, int] | None]) -> dict[str, int] | None:
    present = [entry for entry in entries if entry is not None]
    return _sum_keyed(iter(present)) if present else None


class _Collector(Collector):
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        own = self.m.counts()
        scraped = Scraped(own) if self.m.workers is None else self.m.workers(own)
        yield from _counted_metrics(scraped.counts, self.m.rollout)
        if scraped.workers is not None:
            yield _labelled_gauge(
                "dualstack_scrape_workers",
                "The server's workers this scrape covers, by state: fresh (counted as of the "
                "scrape, this worker too), stale (running, but its counts were not written in "
                "time: counted as last written), exited (its counters kept).",
                "state",
                {state: scraped.workers.get(state, 0) for state in ("fresh", "stale", "exited")},
            )


def _counted_metrics(m: Counts, rollout: Rollout | None) -> Iterator[Metric]:
    """`m` as metric families, with the percentages of `rollout`: the same on every
    worker, so the scraping worker's own, never summed."""
    requests = CounterMetricFamily(
        "dualstack_requests",
        "Requests proxied, by backend, route template, method and status class.",
        labels=["backend", "method", "route", "status_class"],
    )
    for request_labels, count in sorted(m.requests.items()):
        requests.add_metric(list(request_labels), count)
    yield requests

    latency = HistogramMetricFamily(
        "dualstack_request_duration_seconds",
        "Time from the request reaching the gateway to the end of the response.",
        labels=["backend", "route"],
    )
    for (backend, route), counts in sorted(m.latency.items()):
        latency.add_metric(
            [backend, route], _cumulative(LATENCY_BUCKETS, counts), sum_value=counts[-1]
        )
    yield latency

    yield _labelled_gauge(
        "dualstack_in_flight_requests",
        "Requests being served, by backend.",
        "backend",
        m.in_flight,
    )
    decisions = CounterMetricFamily(
        "dualstack_routing_decisions",
        "Routing decisions, by backend and reason (owner, override, sticky, random).",
        labels=["backend", "reason"],
    )
    for decision_labels, count in sorted(m.decisions.items()):
        decisions.add_metric(list(decision_labels), count)
    yield decisions

    shed = CounterMetricFamily(
        "dualstack_shed_requests",
        "Requests answered 503 because the backend could not take them in time.",
        labels=["backend"],
    )
    for backend, count in sorted(m.shed.items()):
        shed.add_metric([backend], count)
    yield shed

    yield from _admission_metrics(m)
    yield CounterMetricFamily(
        "dualstack_unminted_requests",
        "New conversations routed without a minted key: adding one to the body would have "
        "changed the stack's answer (a body not in UTF-8, or pushed past the size limit).",
        value=m.unminted,
    )
    percent = GaugeMetricFamily(
        "dualstack_fastapi_percent",
        'Share of traffic routed to FastAPI; prefix "" is the default.',
        labels=["prefix"],
    )
    if rollout is not None:
        percent.add_metric([""], rollout.fastapi_percent)
        for prefix, value in sorted(rollout.routes.items()):
            percent.add_metric([prefix], value)
    yield percent
    yield from _shadow_metrics(m, rollout)
    if m.captured is not None:
        captured = CounterMetricFamily(
            "dualstack_captured_requests",
            "Requests captured for replay, by outcome: written, dropped (the writer was "
            "behind: never waited for), failed (could not be written).",
            labels=["outcome"],
        )
        for outcome in _CAPTURE_OUTCOMES:
            captured.add_metric([outcome], m.captured.get(outcome, 0))
        yield captured


def _shadow_metrics(m: Counts, rollout: Rollout | None) -> Iterator[Metric]:
    shadowed = CounterMetricFamily(
        "dualstack_shadow_requests",
        "Shadow requests (copies sent to the stack that did not serve a request), by route "
        "template and outcome: match, additive, breaking (by the rules), error (a side gave "
        "no whole answer), dropped (the shadow side was behind).",
        labels=["route", "outcome"],
    )
    for (route, outcome), count in sorted(m.shadowed.items()):
        shadowed.add_metric([route, outcome], count)
    yield shadowed
    latency = HistogramMetricFamily(
        "dualstack_shadow_duration_seconds",
        "How long shadow requests took, by the backend that served them.",
        labels=["backend"],
    )
    for backend, counts in sorted(m.shadow_latency.items()):
        latency.add_metric([backend], _cumulative(LATENCY_BUCKETS, counts), sum_value=counts[-1])
    yield latency
    yield GaugeMetricFamily(
        "dualstack_shadow_in_flight", "Shadow requests under way.", value=m.shadow_in_flight
    )
    yield GaugeMetricFamily(
        "dualstack_shadow_percent",
        "Share of conversations mirrored to the other stack.",
        value=0.0 if rollout is None else rollout.shadow_percent,
    )


def _admission_metrics(m: Counts) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "dualstack_wsgi_threads", "Threads in the WSGI pool.", value=m.wsgi_threads
    )
    yield GaugeMetricFamily(
        "dualstack_wsgi_threads_busy",
        "WSGI threads held by Flask-bound requests.",
        value=m.wsgi_busy,
    )
    yield GaugeMetricFamily(
        "dualstack_wsgi_queue_length",
        "Flask-bound requests waiting for a thread.",
        value=m.wsgi_waiting,
    )
    yield GaugeMetricFamily(
        "dualstack_wsgi_service_seconds",
        "The running mean of how long a Flask-bound request holds its thread.",
        value=m.wsgi_service,
    )
    wait = HistogramMetricFamily(
        "dualstack_wsgi_queue_wait_seconds",
        "How long queued Flask-bound requests waited for a thread (those that got one).",
    )
    wait.add_metric([], _cumulative(WAIT_BUCKETS, m.queue_wait), sum_value=m.queue_wait[-1])
    yield wait
    yield CounterMetricFamily(
        "dualstack_wsgi_queue_abandoned",
        "Flask-bound requests whose client left while they waited for a thread (never run).",
        value=m.abandoned,
    )


def _cumulative(bounds: tuple[float, ...], counts: list[float]) -> list[tuple[str, float]]:
    """Per-bucket counts (then the sum) as Prometheus's cumulative buckets."""
    buckets: list[tuple[str, float]] = []
    running = 0.0
    for bound, in_bucket in zip((*bounds, float("inf")), counts[:-1], strict=True):
        running += in_bucket
        buckets.append((_bound(bound), running))
    return buckets


def _labelled_gauge(name: str, doc: str, label: str, values: dict[str, int]) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        gauge.add_metric([key], value)
    return gauge


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))
