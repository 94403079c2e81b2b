"""The gateway's metrics, read back through prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from harness.gateway.admission import Admission
from harness.gateway.metrics import GatewayMetrics
from harness.gateway.policy import Rollout


def _samples(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_requests_latency_and_state_are_exposed() -> None:
    metrics = GatewayMetrics()
    for seconds in (0.0005, 0.003, 0.003, 0.2, 45.0):
        metrics.observe("fastapi", "/health", "GET", 200, seconds)
    metrics.observe("flask", "/api/v1/chat", "POST", 503, 0.01)
    metrics.decisions[("fastapi", "sticky")] += 2
    metrics.shed["flask"] += 1
    metrics.in_flight["flask"] += 1
    admission = Admission(8, 2.0)
    for _ in range(3):
        assert admission.try_start()
    admission.finish(0.5)  # the running mean moves a tenth of the way
    metrics.admission = admission
    for seconds in (0.003, 0.3, 0.3):
        metrics.observe_queue_wait(seconds)
    metrics.abandoned += 2
    metrics.set_rollout(Rollout(25, {"/api/v1/chat": 60}))
    samples = _samples(metrics)

    def get(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    health = {"backend": "fastapi", "route": "/health"}
    assert get("dualstack_requests_total", **health, method="GET", status_class="2xx") == 5
    assert (
        get(
            "dualstack_requests_total",
            backend="flask",
            route="/api/v1/chat",
            method="POST",
            status_class="5xx",
        )
        == 1
    )
    cumulative = {
        le: get("dualstack_request_duration_seconds_bucket", **health, le=le)
        for le in ("0.001", "0.005", "0.25", "30.0", "+Inf")
    }
    assert cumulative == {"0.001": 1, "0.005": 3, "0.25": 4, "30.0": 4, "+Inf": 5}
    assert get("dualstack_request_duration_seconds_count", **health) == 5
    assert abs(get("dualstack_request_duration_seconds_sum", **health) - 45.2065) < 1e-9
    assert get("dualstack_routing_decisions_total", backend="fastapi", reason="sticky") == 2
    assert get("dualstack_shed_requests_total", backend="flask") == 1
    assert get("dualstack_in_flight_requests", backend="flask") == 1
    assert (get("dualstack_wsgi_threads"), get("dualstack_wsgi_threads_busy")) == (8, 2)
    assert get("dualstack_wsgi_queue_length") == 0
    assert abs(get("dualstack_wsgi_service_seconds") - 0.05) < 1e-12
    waits = {
        le: get("dualstack_wsgi_queue_wait_seconds_bucket", le=le)
        for le in ("0.001", "0.005", "0.25", "0.5", "+Inf")
    }
    assert waits == {"0.001": 0, "0.005": 1, "0.25": 1, "0.5": 3, "+Inf": 3}
    assert abs(get("dualstack_wsgi_queue_wait_seconds_sum") - 0.603) < 1e-12
    assert get("dualstack_wsgi_queue_abandoned_total") == 2
    assert (
        get("dualstack_fastapi_percent", prefix=""),
        get("dualstack_fastapi_percent", prefix="/api/v1/chat"),
    ) == (25, 60)


def test_a_removed_route_percentage_disappears() -> None:
    metrics = GatewayMetrics()
    metrics.set_rollout(Rollout(10, {"/a": 50}))
    metrics.set_rollout(Rollout(10))
    names = {labels for name, labels in _samples(metrics) if name == "dualstack_fastapi_percent"}
    assert names == {(("prefix", ""),)}
