"""The rollout's gates: hand-computed quantiles and p-values, and the verdicts on windows a
rollout really sees (small ones where chance explains a few errors, large ones where it
does not)."""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

import pytest

from harness.gateway.gates import (
    StackWindow,
    binomial_tail,
    breaking_shadow_gate,
    error_rate_gate,
    p99_gate,
    quantile,
)
from harness.gateway.metrics import LATENCY_BUCKETS

SLOTS = len(LATENCY_BUCKETS) + 1


def counts(**at: int) -> tuple[int, ...]:
    """Bucket counts by bucket index: counts(b4=10) is ten requests in (10 ms, 25 ms]."""
    buckets = [0] * SLOTS
    for name, count in at.items():
        buckets[int(name[1:])] = count
    return tuple(buckets)


def histogram(samples: Iterable[float]) -> tuple[int, ...]:
    """Latencies in seconds into buckets, as the gateway's metrics count them."""
    buckets = [0] * SLOTS
    for seconds in samples:
        buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
    return tuple(buckets)


def spread(low: float, high: float, n: int) -> list[float]:
    """`n` latencies evenly from `low` to `high` seconds: a realistic, repeatable window."""
    return [low + (high - low) * i / (n - 1) for i in range(n)]


def comb_tail(k: int, n: int, p: float) -> float:
    """P(X >= k), X ~ Binomial(n, p), by exact integer binomial coefficients."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


# quantile


@pytest.mark.parametrize(
    ("buckets", "q", "expected"),
    [
        # Ten in (10 ms, 25 ms]: the median is halfway through.
        (counts(b4=10), 0.5, 0.0175),
        # The first bucket starts at 0.
        (counts(b0=4), 0.5, 0.0005),
        # Rank 5 of 10 is reached exactly at the first bucket's top: its upper bound.
        (counts(b0=5, b5=5), 0.5, 0.001),
        # Just past it: interpolated inside (25 ms, 50 ms].
        (counts(b0=5, b5=5), 0.6, 0.025 + 0.025 * 1 / 5),
        # In the +Inf bucket: the last finite bound.
        (counts(b3=1, b14=9), 0.99, 30.0),
        (counts(b3=1, b14=9), 0.05, 0.005 + 0.005 * 0.5),
        # 99 fast, 1 slow: the p99 is the fast bucket's top, not the slow one.
        (counts(b2=99, b9=1), 0.99, 0.005),
        (counts(b2=99, b9=1), 1.0, 1.0),
        # q 0: the first non-empty bucket's lower bound.
        (counts(b6=3), 0.0, 0.05),
    ],
)
def test_quantile_interpolates_as_prometheus_does(
    buckets: tuple[int, ...], q: float, expected: float
) -> None:
    assert quantile(buckets, q) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("buckets", [(), counts()])
def test_quantile_of_nothing_is_none(buckets: tuple[int, ...]) -> None:
    assert quantile(buckets, 0.99) is None


@pytest.mark.parametrize(
    ("buckets", "q"),
    [(counts(b1=1), 1.5), (counts(b1=1), -0.1), ((1,) * (SLOTS - 1), 0.5), ((-1,) * SLOTS, 0.5)],
)
def test_quantile_refuses_bad_input(buckets: tuple[int, ...], q: float) -> None:
    with pytest.raises(ValueError):
        quantile(buckets, q)


# binomial_tail


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [(0, 20, 0.01), (1, 20, 0.01), (2, 20, 0.01), (3, 100, 0.01), (40, 100, 0.3), (25, 100, 0.3)],
)
def test_binomial_tail_matches_exact_summation(k: int, n: int, p: float) -> None:
    # (25, 100, 0.3) sums the complement below the mean, (40, 100, 0.3) the tail above it.
    assert binomial_tail(k, n, p) == pytest.approx(comb_tail(k, n, p), rel=1e-9, abs=1e-15)


def test_binomial_tail_keeps_tiny_p_values_and_large_windows() -> None:
    # 50 of 50 over a 1 % rate: 1e-100, which 1 - (a sum near 1) would turn into 0.
    assert binomial_tail(50, 50, 0.01) == pytest.approx(1e-100, rel=1e-9)
    # A million requests: mean 10 000, standard deviation 99.5; one deviation either side.
    assert binomial_tail(10_100, 1_000_000, 0.01) == pytest.approx(0.1587, abs=0.005)
    assert binomial_tail(9_900, 1_000_000, 0.01) == pytest.approx(0.8437, abs=0.005)


# error_rate_gate


def test_error_gate_fails_a_large_significant_increase() -> None:
    result = error_rate_gate(
        StackWindow(58, 0), StackWindow(60, 12), max_increase=0.01, confidence=0.95
    )
    assert (result.passed, result.over_threshold, result.significant) == (False, True, True)
    assert result.reason == (
        "FastAPI 5xx 20.0 % (12/60) vs Flask 0.0 % (0/58): +20.0 points > 1.0 allowed "
        "(p=0.0004 < 0.05): failed"
    )


def test_error_gate_p_value_is_the_agresti_caffo_z_test() -> None:
    result = error_rate_gate(
        StackWindow(58, 0), StackWindow(60, 12), max_increase=0.01, confidence=0.95
    )
    fastapi, flask = 13 / 62, 1 / 60
    z = (fastapi - flask - 0.01) / math.sqrt(
        fastapi * (1 - fastapi) / 62 + flask * (1 - flask) / 60
    )
    assert result.p_value == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)), abs=1e-6)
    assert result.p_value == pytest.approx(0.000373360, abs=1e-6)
    assert result.measured == {
        "flask_error_rate": 0.0,
        "fastapi_error_rate": 0.2,
        "increase": 0.2,
        "z": pytest.approx(z),
        "flask_requests": 58,
        "fastapi_requests": 60,
        "flask_errors": 0,
        "fastapi_errors": 12,
    }


def test_error_gate_passes_two_errors_in_twenty_as_chance() -> None:
    result = error_rate_gate(
        StackWindow(20, 0), StackWindow(20, 2), max_increase=0.01, confidence=0.95
    )
    assert (result.passed, result.over_threshold, result.significant) == (True, True, False)
    assert result.p_value is not None and result.p_value > 0.05
    assert result.reason.endswith("> 1.0 allowed but may be chance (p=0.1722 >= 0.05): passed")


def test_error_gate_passes_equal_rates() -> None:
    result = error_rate_gate(
        StackWindow(100, 5), StackWindow(100, 5), max_increase=0.01, confidence=0.95
    )
    assert (result.passed, result.over_threshold, result.significant) == (True, False, False)
    assert result.measured["increase"] == 0.0
    assert result.p_value is not None and result.p_value > 0.5


def test_error_gate_passes_a_real_increase_under_the_threshold() -> None:
    flask, fastapi = StackWindow(10_000, 100), StackWindow(10_000, 150)
    result = error_rate_gate(flask, fastapi, max_increase=0.01, confidence=0.95)
    assert (result.passed, result.over_threshold) == (True, False)
    # The half point is real (significant against no increase at all): only the threshold
    # lets it through.
    strict = error_rate_gate(flask, fastapi, max_increase=0.0, confidence=0.95)
    assert (strict.passed, strict.over_threshold, strict.significant) == (False, True, True)


def test_error_gate_higher_confidence_needs_more_evidence() -> None:
    flask, fastapi = StackWindow(60, 0), StackWindow(60, 6)  # p = 0.0224
    verdicts = [
        error_rate_gate(flask, fastapi, max_increase=0.01, confidence=confidence).passed
        for confidence in (0.9, 0.95, 0.97, 0.99, 0.999)
    ]
    assert verdicts == [False, False, False, True, True]


@pytest.mark.parametrize(
    ("flask", "fastapi", "idle"),
    [
        (StackWindow(0, 0), StackWindow(20, 20), "Flask"),
        (StackWindow(20, 0), StackWindow(0, 0), "FastAPI"),
        (StackWindow(0, 0), StackWindow(0, 0), "Flask and FastAPI"),
    ],
)
def test_error_gate_makes_no_test_without_requests(
    flask: StackWindow, fastapi: StackWindow, idle: str
) -> None:
    result = error_rate_gate(flask, fastapi, max_increase=0.01, confidence=0.95)
    assert (result.passed, result.over_threshold, result.significant) == (True, False, False)
    assert result.p_value is None
    assert result.reason == f"no test: {idle} served no requests: passed"


# p99_gate


def test_p99_gate_fails_fastapi_300_ms_slower() -> None:
    flask = StackWindow(50, 0, histogram(spread(0.006, 0.012, 50)))
    fastapi = StackWindow(50, 0, histogram(spread(0.306, 0.312, 50)))
    result = p99_gate(flask, fastapi, max_ratio=1.5, floor_ms=50, confidence=0.95)
    assert (result.passed, result.over_threshold, result.significant) == (False, True, True)
    # Flask: 33 in (5, 10] ms, 17 in (10, 25] ms; rank 49.5 is 16.5/17 through the second.
    flask_p99 = 10 + 15 * 16.5 / 17
    assert result.measured == {
        "flask_p99_ms": pytest.approx(flask_p99),
        "fastapi_p99_ms": pytest.approx(250 + 250 * 49.5 / 50),
        "allowed_ms": 50.0,
        "ratio": pytest.approx((250 + 250 * 49.5 / 50) / flask_p99),
        "test_bound_ms": 50.0,
        "fastapi_over": 50,
        "fastapi_observations": 50,
        "flask_observations": 50,
    }
    assert result.p_value == pytest.approx(0.01**50, rel=1e-9)


def test_p99_gate_floor_spares_a_2_ms_difference() -> None:
    flask = StackWindow(200, 0, histogram(spread(0.0006, 0.001, 200)))
    fastapi = StackWindow(200, 0, histogram(spread(0.0026, 0.003, 200)))
    result = p99_gate(flask, fastapi, max_ratio=1.5, floor_ms=50, confidence=0.95)
    assert (result.passed, result.over_threshold) == (True, False)
    assert result.measured["allowed_ms"] == 50.0
    # Without the floor, three times a 1 ms p99 is over 1.5 times, and every request says so.
    bare = p99_gate(flask, fastapi, max_ratio=1.5, floor_ms=0, confidence=0.95)
    assert (bare.passed, bare.over_threshold, bare.significant) == (False, True, True)
    assert bare.measured["test_bound_ms"] == 2.5


def test_p99_gate_one_slow_request_in_200_is_not_significant() -> None:
    flask = StackWindow(200, 0, histogram(spread(0.008, 0.012, 200)))
    fastapi = StackWindow(200, 0, histogram([*spread(0.008, 0.012, 199), 2.0]))
    result = p99_gate(flask, fastapi, max_ratio=1.5, floor_ms=0, confidence=0.95)
    assert (result.passed, result.significant) == (True, False)
    assert result.measured["fastapi_over"] == 1
    assert result.p_value == pytest.approx(1 - 0.99**200)


def test_p99_gate_passes_three_slow_in_100_over_the_threshold_as_chance() -> None:
    flask = StackWindow(100, 0, counts(b3=100))  # p99 9.95 ms
    fastapi = StackWindow(100, 0, counts(b3=97, b9=3))  # p99 2/3 through (500 ms, 1 s]
    result = p99_gate(flask, fastapi, max_ratio=1.5, floor_ms=0, confidence=0.95)
    assert (result.passed, result.over_threshold, result.significant) == (True, True, False)
    assert result.measured["test_bound_ms"] == 25.0  # the bound above 1.5 x 9.95 ms
    assert result.p_value == pytest.approx(comb_tail(3, 100, 0.01), rel=1e-9)
    assert result.reason == (
        "Flask p99 10.0 ms, 3/100 FastAPI requests slower than 25 ms: FastAPI p99 833.3 ms "
        "> 14.9 ms allowed (max of 1.5 x Flask, floor 0 ms) but may be chance "
        "(p=0.0794 >= 0.05): passed"
    )


def test_p99_gate_p_value_is_the_exact_binomial_tail() -> None:
    flask = StackWindow(20, 0, counts(b3=20))
    fastapi = StackWindow(20, 0, counts(b3=18, b8=2))  # 2 of 20 over the 25 ms bound
    result = p99_gate(flask, fastapi, max_ratio=1.5, floor_ms=0, confidence=0.95)
    expected = 1 - sum(math.comb(20, i) * 0.01**i * 0.99 ** (20 - i) for i in range(2))
    assert result.p_value == pytest.approx(expected, rel=1e-9)
    assert result.significant is (expected < 0.05)


def test_p99_gate_counts_only_requests_slower_than_the_test_bound() -> None:
    flask = StackWindow(100, 0, counts(b3=100))  # p99 9.95 ms: allowed 14.9 ms, bound 25 ms
    # 49 take exactly 25 ms (in the bound's own bucket, so not slower), one takes 30 ms.
    fastapi = StackWindow(100, 0, histogram([0.009] * 50 + [0.025] * 49 + [0.03]))
    result = p99_gate(flask, fastapi, max_ratio=1.5, floor_ms=0, confidence=0.95)
    assert (result.measured["test_bound_ms"], result.measured["fastapi_over"]) == (25.0, 1)
    assert result.p_value == pytest.approx(1 - 0.99**100)
    assert (result.passed, result.over_threshold, result.significant) == (True, True, False)


def test_p99_gate_cannot_test_an_allowance_past_the_last_bound() -> None:
    flask = StackWindow(10, 0, counts(b13=10))  # p99 29.8 s, so 2 x is past 30 s
    fastapi = StackWindow(10, 0, counts(b14=10))  # p99 reads 30 s: the last finite bound
    result = p99_gate(flask, fastapi, max_ratio=2, floor_ms=0, confidence=0.95)
    assert (result.passed, result.significant, result.p_value) == (True, False, None)
    assert "untestable" in result.reason


@pytest.mark.parametrize(
    ("flask", "fastapi", "idle"),
    [
        (StackWindow(5, 0), StackWindow(5, 0, counts(b3=5)), "Flask"),
        (StackWindow(5, 0, counts(b3=5)), StackWindow(5, 0, counts()), "FastAPI"),
    ],
)
def test_p99_gate_makes_no_test_without_observations(
    flask: StackWindow, fastapi: StackWindow, idle: str
) -> None:
    result = p99_gate(flask, fastapi, max_ratio=1.5, floor_ms=50, confidence=0.95)
    assert (result.passed, result.p_value) == (True, None)
    assert result.reason == f"no test: no latency observations from {idle}: passed"


# breaking_shadow_gate


@pytest.mark.parametrize(
    ("breaking", "compared", "max_rate", "verdict", "p_value"),
    [
        (10, 100, 0.01, (False, True, True), comb_tail(10, 100, 0.01)),
        (3, 100, 0.01, (True, True, False), comb_tail(3, 100, 0.01)),  # 0.0794
        (1, 100, 0.01, (True, False, False), comb_tail(1, 100, 0.01)),
        (0, 100, 0.01, (True, False, False), 1.0),
        (1, 1000, 0.0, (False, True, True), 0.0),
        (0, 1000, 0.0, (True, False, False), 1.0),
    ],
)
def test_breaking_gate(
    breaking: int,
    compared: int,
    max_rate: float,
    verdict: tuple[bool, bool, bool],
    p_value: float,
) -> None:
    result = breaking_shadow_gate(breaking, compared, max_rate=max_rate, confidence=0.95)
    assert (result.passed, result.over_threshold, result.significant) == verdict
    assert result.p_value == pytest.approx(p_value, rel=1e-9)


def test_breaking_gate_makes_no_test_without_comparisons() -> None:
    result = breaking_shadow_gate(0, 0, max_rate=0.0, confidence=0.95)
    assert (result.passed, result.p_value, result.reason) == (
        True,
        None,
        "no shadow comparisons: passed",
    )


# to_json


def test_to_json_carries_the_whole_verdict_and_survives_json() -> None:
    result = breaking_shadow_gate(10, 100, max_rate=0.01, confidence=0.95)
    document = result.to_json()
    expected: dict[str, Any] = {
        "name": "breaking_shadow",
        "passed": False,
        "over_threshold": True,
        "significant": True,
        "p_value": float(f"{comb_tail(10, 100, 0.01):.6g}"),
        "measured": {"breaking_rate": 0.1, "breaking": 10, "compared": 100},
        "thresholds": {"max_breaking_rate": 0.01, "confidence": 0.95},
        "reason": "Breaking shadow differences 10.0 % (10/100) > 1.0 % allowed "
        "(p=7.6e-08 < 0.05): failed",
    }
    assert document == expected
    assert json.loads(json.dumps(document)) == expected


def test_to_json_rounds_to_six_significant_digits() -> None:
    flask = StackWindow(50, 0, histogram(spread(0.006, 0.012, 50)))
    fastapi = StackWindow(50, 0, histogram(spread(0.306, 0.312, 50)))
    document = p99_gate(flask, fastapi, max_ratio=1.5, floor_ms=50, confidence=0.95).to_json()
    assert document["measured"]["flask_p99_ms"] == 24.5588  # 10 + 15 x 16.5 / 17 = 24.55882...
    assert document["measured"]["ratio"] == 20.2575  # 497.5 / 24.55882... = 20.25748...
    json.dumps(document, allow_nan=False)


# argument checks


@pytest.mark.parametrize(
    "call",
    [
        lambda: StackWindow(-1, 0),
        lambda: StackWindow(5, -1),
        lambda: StackWindow(5, 6),
        lambda: StackWindow(5, 0, (1, 2, 3)),
        lambda: StackWindow(5, 0, (-1,) + (0,) * (SLOTS - 1)),
        lambda: error_rate_gate(
            StackWindow(1, 0), StackWindow(1, 0), max_increase=0.01, confidence=0.5
        ),
        lambda: error_rate_gate(
            StackWindow(1, 0), StackWindow(1, 0), max_increase=0.01, confidence=1.0
        ),
        lambda: error_rate_gate(
            StackWindow(1, 0), StackWindow(1, 0), max_increase=-0.01, confidence=0.95
        ),
        lambda: p99_gate(
            StackWindow(1, 0), StackWindow(1, 0), max_ratio=-1, floor_ms=50, confidence=0.95
        ),
        lambda: p99_gate(
            StackWindow(1, 0), StackWindow(1, 0), max_ratio=1.5, floor_ms=-1, confidence=0.95
        ),
        lambda: breaking_shadow_gate(-1, 10, max_rate=0.01, confidence=0.95),
        lambda: breaking_shadow_gate(11, 10, max_rate=0.01, confidence=0.95),
        lambda: breaking_shadow_gate(1, 10, max_rate=-0.01, confidence=0.95),
        lambda: breaking_shadow_gate(1, 10, max_rate=0.01, confidence=0.4),
    ],
)
def test_bad_arguments_are_refused(call: Any) -> None:
    with pytest.raises(ValueError):
        call()
