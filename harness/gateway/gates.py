"""The rollout's gates, as pure functions: does FastAPI do worse than Flask over one interval?

A progressive rollout checks FastAPI against Flask at every step, on the traffic each served
over the same interval. A gate fails only when the difference is both over its threshold and
unlikely to be chance at the plan's `confidence`: a window of sixty requests with two errors
in it says little, and neither a rollback of a good release nor the promotion of a bad one
should hang on it. Each gate is a one-sided test whose null hypothesis is "FastAPI is within
the threshold"; its p-value is the chance of a difference at least this large if it were.

Nothing here does I/O, reads a clock or draws randomness: the controller gathers the counts
and acts on the `GateResult`s, so a verdict can be recomputed from the history it records.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from harness.gateway.metrics import LATENCY_BUCKETS

Measured = dict[str, float | int | None]

_P99_TAIL = 0.01
"""The share of requests slower than the p99, by its definition: the p99 test's null rate."""


@dataclass(frozen=True)
class StackWindow:
    """One stack's traffic over a check's interval.

    `errors` counts 5xx answers plus the requests the gateway shed, since a shed request is a
    failure the user sees. `buckets` are latency counts per bucket of `LATENCY_BUCKETS` plus
    the +Inf one, not cumulative; `()` when no latency was measured.
    """

    requests: int
    errors: int
    buckets: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check_count("requests", self.requests)
        _check_count("errors", self.errors)
        if self.errors > self.requests:
            raise ValueError(f"errors ({self.errors}) exceed requests ({self.requests})")
        _check_buckets(self.buckets)


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict, with everything it was decided on, for the rollout's history."""

    name: str
    """`error_rate`, `p99_latency` or `breaking_shadow`."""
    passed: bool
    """False only when `over_threshold` and `significant`."""
    over_threshold: bool
    significant: bool
    """The excess is unlikely to be chance at `confidence`."""
    p_value: float | None
    """One-sided; None when no test could be made."""
    measured: Measured
    thresholds: dict[str, float]
    reason: str
    """One line for a person reading the history: the values, the threshold, the verdict."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; floats to 6 significant digits, which is more than any count
        or rate here is known to, and keeps the history readable."""
        return {
            "name": self.name,
            "passed": self.passed,
            "over_threshold": self.over_threshold,
            "significant": self.significant,
            "p_value": _round(self.p_value),
            "measured": {key: _round(value) for key, value in self.measured.items()},
            "thresholds": {key: _round(value) for key, value in self.thresholds.items()},
            "reason": self.reason,
        }


def quantile(buckets: Sequence[int], q: float) -> float | None:
    """The `q` quantile (0 to 1) in seconds of latency counts per bucket of `LATENCY_BUCKETS`
    (plus +Inf, not cumulative); None when there are no observations.

    Prometheus' `histogram_quantile` rule, so a gate and a dashboard agree on "p99": the
    bucket holding the rank, linear interpolation inside it (the first bucket starts at 0);
    in the +Inf bucket, the last finite bound. For q == 0 the first non-empty bucket's lower
    bound, where the plain rule could pick an empty first bucket and divide 0 by 0.
    Not `harness.report.stats`' percentile: that one reads samples, a histogram has counts.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be within 0 and 1, not {q!r}")
    _check_buckets(tuple(buckets))
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    index, below = _bucket_of(buckets, rank)
    if index == len(LATENCY_BUCKETS):
        return float(LATENCY_BUCKETS[-1])
    start = 0.0 if index == 0 else float(LATENCY_BUCKETS[index - 1])
    end = float(LATENCY_BUCKETS[index])
    return start + (end - start) * (rank - below) / buckets[index]


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exact up to floating point.

    Terms come from `lgamma`, since `comb(n, i) * p**i` overflows for a day's traffic. Below
    the mean the complement (1 - P(X < k)) is summed, a short sum; above it the tail itself,
    since a tiny p-value read as 1 minus a sum near 1 is mostly rounding error.
    """
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    if k <= n * p:
        below = math.fsum(_binomial_pmf(i, n, p) for i in range(k))
        return min(1.0, max(0.0, 1.0 - below))
    tail = 0.0
    for i in range(k, n + 1):
        term = _binomial_pmf(i, n, p)
        tail += term
        # From the mode on every term is smaller than the last: the rest cannot matter.
        if term <= tail * 1e-17:
            break
    return min(1.0, tail)


def error_rate_gate(
    flask: StackWindow, fastapi: StackWindow, *, max_increase: float, confidence: float
) -> GateResult:
    """Fails when FastAPI's error rate exceeds Flask's by more than `max_increase` (a
    fraction: 0.01 is one point), significantly at `confidence`.

    H0: p_fastapi - p_flask <= max_increase, tested one-sided with a z statistic on the
    Agresti-Caffo estimate (one error and one success added to each stack, p~ = (x+1)/(n+2)),
    which keeps its standard error above zero for a clean window and its coverage close to
    nominal in windows of a few dozen requests, where the plain Wald test is too eager.
    No test when either stack served nothing.
    """
    alpha = _alpha(confidence)
    _check_threshold("max_increase", max_increase)
    thresholds = {"max_error_rate_increase": max_increase, "confidence": confidence}
    flask_rate = _rate(flask.errors, flask.requests)
    fastapi_rate = _rate(fastapi.errors, fastapi.requests)
    measured: Measured = {
        "flask_error_rate": flask_rate,
        "fastapi_error_rate": fastapi_rate,
        "increase": None,
        "z": None,
        "flask_requests": flask.requests,
        "fastapi_requests": fastapi.requests,
        "flask_errors": flask.errors,
        "fastapi_errors": fastapi.errors,
    }
    if flask_rate is None or fastapi_rate is None:
        idle = " and ".join(
            name for name, window in (("Flask", flask), ("FastAPI", fastapi)) if not window.requests
        )
        return _untested("error_rate", measured, thresholds, f"no test: {idle} served no requests")
    increase = fastapi_rate - flask_rate
    z = _agresti_caffo_z(flask, fastapi, max_increase)
    # cdf(-z) is 1 - Phi(z) without the cancellation that turns a small p into 0.
    p_value = NormalDist().cdf(-z)
    over = increase > max_increase
    measured.update(increase=increase, z=z)
    facts = (
        f"FastAPI 5xx {_percent(fastapi_rate)} ({fastapi.errors}/{fastapi.requests}) vs Flask "
        f"{_percent(flask_rate)} ({flask.errors}/{flask.requests}): {increase * 100:+.1f} points"
    )
    limit = f"{max_increase * 100:.1f} allowed"
    return _verdict("error_rate", over, p_value, alpha, measured, thresholds, facts, limit)


def p99_gate(
    flask: StackWindow,
    fastapi: StackWindow,
    *,
    max_ratio: float,
    floor_ms: float,
    confidence: float,
) -> GateResult:
    """Fails when FastAPI's p99 is over `max(max_ratio * Flask's p99, floor_ms)`,
    significantly at `confidence`.

    The test: b is the smallest bucket bound at or above the allowance. If FastAPI's true p99
    were within the allowance, at most 1 % of its requests would be slower than b, so the
    p-value is P(X >= k) for X ~ Binomial(n, 0.01), with k the requests slower than b and n
    all its latency observations. An allowance beyond the last finite bound cannot be tested.

    Flask's p99 is taken as known: its own sampling error is not in the test. That is
    acceptable because the floor keeps a noisy, small Flask p99 from making the allowance
    tight (FastAPI is never held to less than `floor_ms`), and early in a rollout, when the
    gate matters most, Flask serves most of the traffic, so its p99 is the well-measured one.
    No test when either stack has no latency observations: there is nothing to compare.
    """
    alpha = _alpha(confidence)
    _check_threshold("max_ratio", max_ratio)
    _check_threshold("floor_ms", floor_ms)
    thresholds = {"max_p99_ratio": max_ratio, "p99_floor_ms": floor_ms, "confidence": confidence}
    flask_p99 = quantile(flask.buckets, 0.99) if flask.buckets else None
    fastapi_p99 = quantile(fastapi.buckets, 0.99) if fastapi.buckets else None
    measured: Measured = {
        "flask_p99_ms": _ms(flask_p99),
        "fastapi_p99_ms": _ms(fastapi_p99),
        "allowed_ms": None,
        "ratio": fastapi_p99 / flask_p99 if fastapi_p99 is not None and flask_p99 else None,
        "test_bound_ms": None,
        "fastapi_over": None,
        "fastapi_observations": sum(fastapi.buckets),
        "flask_observations": sum(flask.buckets),
    }
    if flask_p99 is None or fastapi_p99 is None:
        idle = " and ".join(
            name for name, p99 in (("Flask", flask_p99), ("FastAPI", fastapi_p99)) if p99 is None
        )
        reason = f"no test: no latency observations from {idle}"
        return _untested("p99_latency", measured, thresholds, reason)
    allowed = max(max_ratio * flask_p99, floor_ms / 1000)
    over = fastapi_p99 > allowed
    measured["allowed_ms"] = allowed * 1000
    limit = f"{allowed * 1000:.1f} ms allowed (max of {max_ratio:g} x Flask, floor {floor_ms:g} ms)"
    bound = _test_bound(allowed)
    if bound is None:
        sign = ">" if over else "<="
        reason = (
            f"FastAPI p99 {fastapi_p99 * 1000:.1f} ms vs Flask {flask_p99 * 1000:.1f} ms: "
            f"{sign} {limit}, beyond the last bucket bound so untestable: passed"
        )
        return GateResult("p99_latency", True, over, False, None, measured, thresholds, reason)
    slower = sum(fastapi.buckets[bound + 1 :])
    observations = sum(fastapi.buckets)
    p_value = binomial_tail(slower, observations, _P99_TAIL)
    bound_ms = LATENCY_BUCKETS[bound] * 1000
    measured.update(test_bound_ms=bound_ms, fastapi_over=slower)
    facts = (
        f"Flask p99 {flask_p99 * 1000:.1f} ms, {slower}/{observations} FastAPI requests slower "
        f"than {bound_ms:g} ms: FastAPI p99 {fastapi_p99 * 1000:.1f} ms"
    )
    return _verdict("p99_latency", over, p_value, alpha, measured, thresholds, facts, limit)


def breaking_shadow_gate(
    breaking: int, compared: int, *, max_rate: float, confidence: float
) -> GateResult:
    """Fails when more than `max_rate` of the shadow comparisons found a breaking difference,
    significantly at `confidence`.

    H0: the true breaking rate is at most `max_rate`; the p-value is the exact
    P(X >= breaking) for X ~ Binomial(compared, max_rate). With `max_rate` 0 a single
    breaking difference refutes H0 outright (p = 0). No test without comparisons.
    """
    alpha = _alpha(confidence)
    _check_count("breaking", breaking)
    _check_count("compared", compared)
    if breaking > compared:
        raise ValueError(f"breaking ({breaking}) exceeds compared ({compared})")
    _check_threshold("max_rate", max_rate)
    if max_rate > 1:
        raise ValueError(f"max_rate must be at most 1, not {max_rate!r}")
    thresholds = {"max_breaking_rate": max_rate, "confidence": confidence}
    rate = _rate(breaking, compared)
    measured: Measured = {"breaking_rate": rate, "breaking": breaking, "compared": compared}
    if rate is None:
        return _untested("breaking_shadow", measured, thresholds, "no shadow comparisons")
    p_value = binomial_tail(breaking, compared, max_rate)
    facts = f"Breaking shadow differences {_percent(rate)} ({breaking}/{compared})"
    limit = f"{_percent(max_rate)} allowed"
    over = rate > max_rate
    return _verdict("breaking_shadow", over, p_value, alpha, measured, thresholds, facts, limit)


def _verdict(
    name: str,
    over: bool,
    p_value: float,
    alpha: float,
    measured: Measured,
    thresholds: dict[str, float],
    facts: str,
    limit: str,
) -> GateResult:
    """The result of a test that was made, and its one-line reason: `facts`, then how they
    stand against `limit` and whether chance explains them."""
    significant = p_value < alpha
    passed = not (over and significant)
    p_text, alpha_text = _p(p_value), f"{round(alpha, 6):g}"
    if not over:
        judged = f"<= {limit} (p={p_text})"
    elif significant:
        judged = f"> {limit} (p={p_text} < {alpha_text})"
    else:
        judged = f"> {limit} but may be chance (p={p_text} >= {alpha_text})"
    reason = f"{facts} {judged}: {'passed' if passed else 'failed'}"
    return GateResult(name, passed, over, significant, p_value, measured, thresholds, reason)


def _untested(
    name: str, measured: Measured, thresholds: dict[str, float], reason: str
) -> GateResult:
    """A gate with nothing to test passes: an idle stack is no evidence against FastAPI."""
    return GateResult(name, True, False, False, None, measured, thresholds, f"{reason}: passed")


def _agresti_caffo_z(flask: StackWindow, fastapi: StackWindow, max_increase: float) -> float:
    """The z statistic of the adjusted difference in error rates against `max_increase`."""
    flask_n, fastapi_n = flask.requests + 2, fastapi.requests + 2
    flask_p = (flask.errors + 1) / flask_n
    fastapi_p = (fastapi.errors + 1) / fastapi_n
    error = math.sqrt(flask_p * (1 - flask_p) / flask_n + fastapi_p * (1 - fastapi_p) / fastapi_n)
    return (fastapi_p - flask_p - max_increase) / error


def _bucket_of(buckets: Sequence[int], rank: float) -> tuple[int, int]:
    """The first non-empty bucket whose cumulative count reaches `rank`, and the count of
    the buckets before it; `rank` is at most the total, so the last non-empty one does."""
    below = 0
    for index, count in enumerate(buckets):
        if count > 0 and below + count >= rank:
            return index, below
        below += count
    raise ValueError(f"rank {rank!r} is beyond the {below} observations")


def _binomial_pmf(i: int, n: int, p: float) -> float:
    log_comb = math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
    return math.exp(log_comb + i * math.log(p) + (n - i) * math.log1p(-p))


def _test_bound(allowed: float) -> int | None:
    """The index of the smallest bucket bound at or above `allowed` seconds; None past the
    last finite bound."""
    index = bisect_left(LATENCY_BUCKETS, allowed)
    return index if index < len(LATENCY_BUCKETS) else None


def _alpha(confidence: float) -> float:
    """1 - confidence; a confidence of 0.5 or less would call a coin toss significant."""
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be within 0.5 and 1 (both excluded), not {confidence!r}")
    return 1.0 - confidence


def _check_count(name: str, value: int) -> None:
    if value < 0:
        raise ValueError(f"{name} must not be negative, not {value!r}")


def _check_threshold(name: str, value: float) -> None:
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"{name} must not be negative, not {value!r}")


def _check_buckets(buckets: tuple[int, ...]) -> None:
    if buckets and len(buckets) != len(LATENCY_BUCKETS) + 1:
        raise ValueError(
            f"latency buckets must be {len(LATENCY_BUCKETS) + 1} counts (LATENCY_BUCKETS and "
            f"+Inf), not {len(buckets)}"
        )
    if any(count < 0 for count in buckets):
        raise ValueError(f"latency bucket counts must not be negative: {buckets!r}")


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.1f} %"


def _p(p_value: float) -> str:
    """Four decimals, or two significant digits below 0.0001 so a tiny p never reads 0."""
    if p_value == 0:
        return "0"
    return f"{p_value:.4f}" if p_value >= 1e-4 else f"{p_value:.1e}"


def _round(value: float | int | None) -> float | int | None:
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value
