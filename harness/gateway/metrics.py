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

from harness.gateway.policy import Rollout

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class GatewayMetrics:
    """Requests, status classes and latency per backend and route; in-flight requests; WSGI
    pool use and shed requests; routing decisions; the current percentages."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests: defaultdict[tuple[str, str, str, str], int] = defaultdict(int)
        # (backend, route) -> per-bucket counts (not cumulative), then the sum of seconds.
        self.latency: dict[tuple[str, str], list[float]] = {}
        self.in_flight: defaultdict[str, int] = defaultdict(int)
        self.decisions: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.shed: defaultdict[str, int] = defaultdict(int)
        self.pool_in_use = 0
        self.pool_capacity = 0
        self.rollout: Rollout | None = None
        self.registry.register(_Collector(self))

    def set_rollout(self, rollout: Rollout) -> None:
        """The percentages to expose (the default and every per-prefix override)."""
        self.rollout = rollout

    def set_pool_in_use(self, count: int) -> None:
        self.pool_in_use = count

    def observe(self, backend: str, route: str, method: str, status: int, seconds: float) -> None:
        """One finished request."""
        self.requests[(backend, method, route, _STATUS_CLASS.get(status // 100, "other"))] += 1
        counts = self.latency.get((backend, route))
        if counts is None:
            counts = self.latency[(backend, route)] = [0.0] * (len(LATENCY_BUCKETS) + 2)
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
            buckets: list[tuple[str, float]] = []
            running = 0.0
            for bound, in_bucket in zip((*LATENCY_BUCKETS, float("inf")), counts[:-1], strict=True):
                running += in_bucket
                buckets.append((_bound(bound), running))
            latency.add_metric([backend, route], buckets, sum_value=counts[-1])
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
            "Requests answered 503 at once because the backend was saturated.",
            labels=["backend"],
        )
        for backend, count in sorted(m.shed.items()):
            shed.add_metric([backend], count)
        yield shed

        yield GaugeMetricFamily(
            "dualstack_wsgi_pool_in_use",
            "Flask-bound requests running or queued for a WSGI thread.",
            value=m.pool_in_use,
        )
        yield GaugeMetricFamily(
            "dualstack_wsgi_pool_capacity",
            "WSGI threads plus the bounded queue in front of them.",
            value=m.pool_capacity,
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


def _labelled_gauge(name: str, doc: str, label: str, values: dict[str, int]) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        gauge.add_metric([key], value)
    return gauge


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))
