"""The figures, purely: latencies, summaries, classification, ratios. The percentile itself
is `harness.report.stats`'s, tested in tests/harness/report/test_stats.py."""

from __future__ import annotations

import pytest

from load_test.stats import (
    Latency,
    Sample,
    Summary,
    by_backend,
    classify,
    client_bound,
    latency,
    ratio,
    summarize,
)


@pytest.mark.parametrize(
    ("latencies", "expected"),
    [
        ([], Latency()),
        ([0.25], Latency(250.0, 250.0, 250.0, 250.0, 250.0)),
        # Interpolated between the closest ranks, as every report of the project does.
        ([0.003, 0.001, 0.002, 0.004], Latency(2.5, 3.7, 3.97, 4.0, 2.5)),
        ([n / 1000 for n in range(100, 0, -1)], Latency(50.5, 90.1, 99.01, 100.0, 50.5)),
    ],
)
def test_latency_in_milliseconds_whatever_the_order(
    latencies: list[float], expected: Latency
) -> None:
    assert latency(latencies) == expected


def test_summary_counts_each_kind_once_and_times_only_successes() -> None:
    samples = [
        Sample(0.0, 0.010, "ok", 200, "flask"),
        Sample(0.1, 0.030, "ok", 200, "fastapi"),
        Sample(0.2, 0.020, "ok", 201, "fastapi"),
        Sample(0.3, 0.001, "status", 503, "flask"),
        Sample(0.4, 0.002, "status", 503, ""),
        Sample(0.5, 0.002, "status", 404, "fastapi"),
        Sample(0.6, 5.000, "timeout"),
        Sample(0.7, 0.001, "connection"),
    ]
    assert summarize(samples, elapsed_s=2.0) == Summary(
        measured=8,
        ok=3,
        errors={"status": 3, "timeout": 1, "connection": 1},
        statuses={404: 1, 503: 2},
        elapsed_s=2.0,
        rps=1.5,
        latency=Latency(20.0, 28.0, 29.8, 30.0, 20.0),
        backends={"fastapi": 3, "flask": 2},
    )


def test_summary_of_nothing() -> None:
    assert summarize([], elapsed_s=0.0) == Summary(
        measured=0,
        ok=0,
        errors={"status": 0, "timeout": 0, "connection": 0},
        statuses={},
        elapsed_s=0.0,
        rps=0.0,
        latency=Latency(),
        backends={},
    )


def test_latency_by_backend_leaves_out_errors_and_unlabelled() -> None:
    samples = [
        Sample(0, 0.010, "ok", 200, "flask"),
        Sample(0, 0.030, "ok", 200, "flask"),
        Sample(0, 0.005, "ok", 200, "fastapi"),
        Sample(0, 0.001, "status", 503, "flask"),
        Sample(0, 0.100, "ok", 200, ""),
    ]
    assert by_backend(samples) == {
        "fastapi": Latency(5.0, 5.0, 5.0, 5.0, 5.0),
        "flask": Latency(20.0, 28.0, 29.8, 30.0, 20.0),
    }


@pytest.mark.parametrize(
    ("status", "kind"),
    [(200, "ok"), (204, "ok"), (302, "ok"), (399, "ok"), (400, "status"), (404, "status"),
     (429, "status"), (503, "status"), (504, "status"), (99, "status")],
)  # fmt: skip
def test_classify(status: int, kind: str) -> None:
    assert classify(status) == kind


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [(10.0, 5.0, 2.0), (1.0, 3.0, 0.33), (0.0, 4.0, 0.0), (1.0, 0.0, None)],
)
def test_ratio(numerator: float, denominator: float, expected: float | None) -> None:
    assert ratio(numerator, denominator) == expected


@pytest.mark.parametrize(
    ("rps", "ceiling", "bound"),
    [(85.0, 100.0, True), (80.0, 100.0, True), (79.9, 100.0, False), (50.0, 0.0, False)],
)
def test_client_bound(rps: float, ceiling: float, bound: bool) -> None:
    assert client_bound(rps, ceiling) is bound
