"""The FastAPI stack's CloudWatch metrics: recorded per request off the request path, sent by
the lifespan's flush to the local CloudWatch (moto), never for shadow requests, nothing at
all with an empty namespace, and a CloudWatch that fails costs the requests nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import structlog

from fastapi_app import create_app
from fastapi_app.metrics import (
    FLUSH_TASK_NAME,
    MAX_DATUMS,
    MetricsBuffer,
    MetricsMiddleware,
    MetricsPublisher,
    metric_data,
)
from harness.local.emulators import LocalEmulators
from harness.local.processes import free_port
from harness.local.servers import ASGIServer, environment
from shared import contract
from shared.settings import Settings

Metric = tuple[str, frozenset[tuple[str, str]]]


def _namespace() -> str:
    # moto's backends are process-wide: every test reads a namespace of its own.
    return f"Test/{uuid.uuid4().hex[:12]}"


def _listed(emulators: LocalEmulators, namespace: str) -> set[Metric]:
    client = emulators.cloudwatch.client()
    try:
        pages = client.get_paginator("list_metrics").paginate(Namespace=namespace)
        return {
            (m["MetricName"], frozenset((d["Name"], d["Value"]) for d in m.get("Dimensions", [])))
            for page in pages
            for m in page["Metrics"]
        }
    finally:
        client.close()


def _request(method: str, route: str, status: int) -> set[Metric]:
    dims = frozenset({("Method", method), ("Route", route), ("StatusCode", str(status))})
    return {("RequestCount", dims), ("RequestDuration", dims)}


@contextmanager
def _serve(
    emulators: LocalEmulators, settings: Settings, env: dict[str, str] | None = None
) -> Iterator[tuple[httpx.Client, Any]]:
    """The FastAPI stack on loopback; leaving the block stops it (the shutdown flush runs)."""
    app = create_app(settings)
    with (
        environment({**emulators.env(), **(env or {})}),
        ASGIServer(app) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        yield client, app


def test_requests_and_chat_turns_reach_cloudwatch_at_shutdown(
    emulators: LocalEmulators, make_settings: Callable[..., Settings]
) -> None:
    namespace = _namespace()
    settings = make_settings(metrics_namespace=namespace, metrics_flush_seconds=1e9)
    with _serve(emulators, settings) as (client, app):
        first = client.post("/api/v1/chat", json={"message": "hello", "user_id": "u-1"})
        session = first.json()["session_id"]
        again = {"message": "again", "session_id": session, "user_id": "u-1"}
        second = client.post("/api/v1/chat", json=again)
        assert (first.status_code, second.status_code) == (200, 200)
        invalid = client.post("/api/v1/chat", json={"message": ""})
        assert invalid.status_code == 400
        assert client.get(f"/api/v1/chat/sessions/{session}").status_code == 404  # not u-1
        assert client.head("/health").status_code == 200
        assert client.get("/nowhere").status_code == 404
        assert client.get("/docs/assets/favicon.png").status_code == 200
        # Kept, not sent: the requests never wait on CloudWatch.
        assert _listed(emulators, namespace) == set()
        publisher: MetricsPublisher = app.state.metrics_publisher
        assert publisher.flushes == 0
    assert publisher.flushes == 1
    assert _listed(emulators, namespace) == {
        ("ChatRequest", frozenset({("Status", "Success")})),
        ("ChatRequest", frozenset({("Status", "Error")})),
        ("ProcessingTime", frozenset()),
        *_request("POST", "/api/v1/chat", 200),
        *_request("POST", "/api/v1/chat", 400),
        *_request("GET", "/api/v1/chat/sessions/{session_id}", 404),
        *_request("HEAD", "/health", 200),
        *_request("GET", "unmatched", 404),
        *_request("GET", "/docs/assets/{path}", 200),
    }
    cloudwatch = emulators.cloudwatch.client()
    try:
        now = time.time()
        points = cloudwatch.get_metric_statistics(
            Namespace=namespace,
            MetricName="ChatRequest",
            Dimensions=[{"Name": "Status", "Value": "Success"}],
            StartTime=now - 600,
            EndTime=now + 600,
            Period=60,
            Statistics=["Sum"],
        )["Datapoints"]
    finally:
        cloudwatch.close()
    assert sum(point["Sum"] for point in points) == 2


def test_a_short_interval_flushes_while_serving(
    emulators: LocalEmulators, make_settings: Callable[..., Settings]
) -> None:
    namespace = _namespace()
    settings = make_settings(metrics_namespace=namespace, metrics_flush_seconds=0.05)
    with _serve(emulators, settings) as (client, _):
        assert client.get("/health").status_code == 200
        deadline = time.monotonic() + 10
        while not (listed := _listed(emulators, namespace)) and time.monotonic() < deadline:
            time.sleep(0.05)  # polled: the flush task gives no signal across threads
        assert listed == _request("GET", "/health", 200)


def test_shadow_requests_record_nothing(
    emulators: LocalEmulators, make_settings: Callable[..., Settings]
) -> None:
    namespace = _namespace()
    settings = make_settings(metrics_namespace=namespace, trust_shadow_header=True)
    shadow = {contract.SHADOW_HEADER: "primary-request-1"}
    with _serve(emulators, settings) as (client, _):
        turn = client.post("/api/v1/chat", json={"message": "mirrored"}, headers=shadow)
        assert turn.status_code == 200
        assert client.get("/health", headers=shadow).status_code == 200
        assert client.get("/health").status_code == 200  # the one request of its own
    assert _listed(emulators, namespace) == _request("GET", "/health", 200)


def _flush_tasks() -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == FLUSH_TASK_NAME]


@pytest.mark.parametrize("namespace", ["", "Test/with-metrics"])
def test_an_empty_namespace_turns_metrics_off(
    emulators: LocalEmulators, make_settings: Callable[..., Settings], namespace: str
) -> None:
    app = create_app(make_settings(metrics_namespace=namespace))
    on = bool(namespace)
    assert any(m.cls is MetricsMiddleware for m in app.user_middleware) is on

    async def lifespan() -> tuple[int, bool]:
        async with app.router.lifespan_context(app):
            return len(_flush_tasks()), app.state.services.metrics is not None

    with environment(emulators.env()):
        assert asyncio.run(lifespan()) == (int(on), on)


def test_a_failing_cloudwatch_is_logged_and_costs_the_requests_nothing(
    emulators: LocalEmulators, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(metrics_namespace=_namespace(), metrics_flush_seconds=1e9)
    down = {"AWS_ENDPOINT_URL_CLOUDWATCH": f"http://127.0.0.1:{free_port()}"}
    app = create_app(settings)
    with (
        structlog.testing.capture_logs() as logs,
        environment({**emulators.env(), **down}),
        ASGIServer(app) as server,
    ):
        turn = httpx.post(f"{server.url}/api/v1/chat", json={"message": "hi"}, timeout=10)
        assert turn.status_code == 200
    failed = [line for line in logs if line["event"] == "metrics.flush_failed"]
    assert len(failed) == 1
    assert failed[0]["observations"] == 4  # ChatRequest, ProcessingTime, RequestCount, -Duration
    assert "EndpointConnectionError" in failed[0]["error"]
    assert app.state.metrics_publisher.flushes == 1


def test_a_full_buffer_drops_and_counts() -> None:
    buffer = MetricsBuffer(capacity=3)
    for value in range(5):
        buffer.record("RequestCount", float(value), "Count")
    assert len(buffer) == 3
    assert buffer.dropped == 2
    kept, dropped = buffer.take()
    assert ([item[2] for item in kept], dropped) == ([0.0, 1.0, 2.0], 2)
    assert (len(buffer), buffer.dropped) == (0, 0)


class RecordingCloudWatch:
    """The one method the publisher calls, recording each call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def put_metric_data(self, **request: Any) -> dict[str, Any]:
        self.calls.append(request)
        return {}


def test_a_flush_sends_batches_within_the_api_limits_and_logs_drops() -> None:
    buffer = MetricsBuffer(capacity=2600)
    for index in range(2601):  # distinct metrics: one datum each, one dropped
        buffer.record(f"M{index}", 1.0, "Count")
    cloudwatch = RecordingCloudWatch()
    publisher = MetricsPublisher(cloudwatch, "Test/Batches", buffer, timeout=5)
    with structlog.testing.capture_logs() as logs:
        sent = asyncio.run(publisher.flush())
    assert sent == 2600
    assert [len(call["MetricData"]) for call in cloudwatch.calls] == [MAX_DATUMS, MAX_DATUMS, 600]
    assert {call["Namespace"] for call in cloudwatch.calls} == {"Test/Batches"}
    assert [(line["event"], line.get("dropped")) for line in logs] == [("metrics.dropped", 1)]


def test_observations_of_one_metric_and_minute_leave_as_one_datum() -> None:
    minute = 1_700_000_040.0  # a minute's start
    dims = (("Method", "GET"),)
    observations = [
        *[("RequestDuration", "Milliseconds", 2.0, dims, minute + 1) for _ in range(3)],
        ("RequestDuration", "Milliseconds", 5.0, dims, minute + 59),
        ("RequestDuration", "Milliseconds", 5.0, dims, minute + 60),  # the next minute
        *[("Many", "Count", float(v), (), minute) for v in range(151)],
    ]
    data = metric_data(observations)
    shown = [
        (d["MetricName"], d["Timestamp"].timestamp(), d["Values"][:2], d["Counts"][:2])
        for d in data
    ]
    assert shown == [
        ("RequestDuration", minute, [2.0, 5.0], [3.0, 1.0]),
        ("RequestDuration", minute + 60, [5.0], [1.0]),
        ("Many", minute, [0.0, 1.0], [1.0, 1.0]),
        ("Many", minute, [150.0], [1.0]),  # at most 150 values a datum
    ]
    assert [len(d["Values"]) for d in data] == [2, 1, 150, 1]
    assert data[0]["Dimensions"] == [{"Name": "Method", "Value": "GET"}]
