"""What the gateway sees, as Prometheus metrics (one registry per gateway)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from harness.policy import Rollout

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class GatewayMetrics:
    """Requests, status classes and latency per backend and route; in-flight requests; WSGI
    pool use and shed requests; routing decisions; the current percentages."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._children: dict[tuple[str, str, str, int], tuple[Counter, Histogram]] = {}
        self._decided: dict[tuple[str, str], Counter] = {}
        self._in_flight: dict[str, Gauge] = {}
        r = self.registry
        self.requests = Counter(
            "dualstack_requests",
            "Requests proxied, by backend, route template, method and status class.",
            ["backend", "route", "method", "status_class"],
            registry=r,
        )
        self.latency = Histogram(
            "dualstack_request_duration_seconds",
            "Time from the request reaching the gateway to the end of the response.",
            ["backend", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "dualstack_in_flight_requests",
            "Requests being served, by backend.",
            ["backend"],
            registry=r,
        )
        self.decisions = Counter(
            "dualstack_routing_decisions",
            "Routing decisions, by backend and reason (owner, override, sticky, random).",
            ["backend", "reason"],
            registry=r,
        )
        self.pool_in_use = Gauge(
            "dualstack_wsgi_pool_in_use",
            "Flask-bound requests running or queued for a WSGI thread.",
            registry=r,
        )
        self.pool_capacity = Gauge(
            "dualstack_wsgi_pool_capacity",
            "WSGI threads plus the bounded queue in front of them.",
            registry=r,
        )
        self.shed = Counter(
            "dualstack_shed_requests",
            "Requests answered 503 at once because the backend was saturated.",
            ["backend"],
            registry=r,
        )
        self.percent = Gauge(
            "dualstack_fastapi_percent",
            'Share of traffic routed to FastAPI; prefix "" is the default.',
            ["prefix"],
            registry=r,
        )

    def set_rollout(self, rollout: Rollout) -> None:
        """Percent gauges for the default and every per-prefix override (removed ones vanish)."""
        self.percent.clear()
        self.percent.labels(prefix="").set(rollout.fastapi_percent)
        for prefix, value in rollout.routes.items():
            self.percent.labels(prefix=prefix).set(value)

    def observe(self, backend: str, route: str, method: str, status: int, seconds: float) -> None:
        """One finished request."""
        key = (backend, route, method, status // 100)
        children = self._children.get(key)
        if children is None:
            # labels() takes a lock and builds a key on every call: resolve each label set
            # once (route is a template, so the set stays small).
            children = (
                self.requests.labels(backend, route, method, f"{status // 100}xx"),
                self.latency.labels(backend, route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def decided(self, backend: str, reason: str) -> None:
        """One routing decision."""
        child = self._decided.get((backend, reason))
        if child is None:
            child = self._decided[(backend, reason)] = self.decisions.labels(backend, reason)
        child.inc()

    def in_flight_of(self, backend: str) -> Gauge:
        """The in-flight gauge of one backend."""
        child = self._in_flight.get(backend)
        if child is None:
            child = self._in_flight[backend] = self.in_flight.labels(backend)
        return child

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
