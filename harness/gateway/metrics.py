"""What the gateway sees, as Prometheus metrics (one registry per gateway).

The gateway counts in plain dicts and ints, and a custom collector turns them into metric
families when scraped. prometheus_client's own metric objects take a lock on every update
(six a request here), which cost more than the rest of the routing decision; every update
happens on the event loop's thread, as does the scrape, so no lock is needed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from harness.gateway.admission import Admission
from harness.gateway.capture import CaptureStats
from harness.gateway.policy import Rollout

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
        self.registry.register(_Collector(self))

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

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


_STATUS_CLASS = {n: f"{n}xx" for n in range(1, 6)}


class _Collector(Collector):
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
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
        if m.rollout is not None:
            percent.add_metric([""], m.rollout.fastapi_percent)
            for prefix, value in sorted(m.rollout.routes.items()):
                percent.add_metric([prefix], value)
        yield percent
        yield from _shadow_metrics(m)
        if m.capture is not None:
            captured = CounterMetricFamily(
                "dualstack_captured_requests",
                "Requests captured for replay, by outcome: written, dropped (the writer was "
                "behind: never waited for), failed (could not be written).",
                labels=["outcome"],
            )
            for outcome in ("written", "dropped", "failed"):
                captured.add_metric([outcome], getattr(m.capture, outcome))
            yield captured


def _shadow_metrics(m: GatewayMetrics) -> Iterator[Metric]:
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
        value=0.0 if m.rollout is None else m.rollout.shadow_percent,
    )


def _admission_metrics(m: GatewayMetrics) -> Iterator[Metric]:
    admission = m.admission
    busy, threads, waiting, service = (
        (0, 0, 0, 0.0)
        if admission is None
        else (admission.busy, admission.threads, admission.waiting, admission.service)
    )
    yield GaugeMetricFamily("dualstack_wsgi_threads", "Threads in the WSGI pool.", value=threads)
    yield GaugeMetricFamily(
        "dualstack_wsgi_threads_busy", "WSGI threads held by Flask-bound requests.", value=busy
    )
    yield GaugeMetricFamily(
        "dualstack_wsgi_queue_length", "Flask-bound requests waiting for a thread.", value=waiting
    )
    yield GaugeMetricFamily(
        "dualstack_wsgi_service_seconds",
        "The running mean of how long a Flask-bound request holds its thread.",
        value=service,
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
