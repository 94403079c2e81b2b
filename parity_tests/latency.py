"""Latency: the alternating order of repeated runs, each stack's spread, and the FastAPI/Flask
gate.

Pure functions over lists of milliseconds; percentiles are `harness.report.stats`'s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.report.stats import percentile
from parity_tests.cases import Stack


def abba(repeat: int) -> list[tuple[Stack, Stack]]:
    """Which stack goes first in each of `repeat` rounds: Flask first, then FastAPI first,
    alternating (A B, B A, A B, ...), so warm-up and drift weigh on both stacks alike."""
    return [("flask", "fastapi") if i % 2 == 0 else ("fastapi", "flask") for i in range(repeat)]


@dataclass(frozen=True)
class Spread:
    """p50 and p95 of one stack's samples, in milliseconds."""

    count: int
    p50: float | None
    p95: float | None

    @classmethod
    def of(cls, samples: Sequence[float]) -> Spread:
        """The spread of `samples`."""
        return cls(len(samples), percentile(samples, 0.5), percentile(samples, 0.95))


@dataclass(frozen=True)
class Comparison:
    """Both stacks' spreads and the FastAPI/Flask ratio of their p50s."""

    flask: Spread
    fastapi: Spread

    @property
    def ratio(self) -> float | None:
        """FastAPI p50 / Flask p50 (above 1: FastAPI is slower); None without samples."""
        if self.flask.p50 is None or self.fastapi.p50 is None or self.flask.p50 <= 0:
            return None
        return self.fastapi.p50 / self.flask.p50

    @classmethod
    def of(cls, flask: Sequence[float], fastapi: Sequence[float]) -> Comparison:
        """The comparison of two stacks' samples."""
        return cls(Spread.of(flask), Spread.of(fastapi))


def gate(overall: Comparison, max_ratio: float | None) -> str | None:
    """None when FastAPI is fast enough, else a one-line reason. The gate reads the ratio of
    the overall p50s (every sample of every case pooled): per-case ratios of fault cases and
    sub-millisecond requests are too noisy to fail a build on."""
    if max_ratio is None:
        return None
    ratio = overall.ratio
    if ratio is None:
        return "no latency samples to compare"
    if ratio > max_ratio:
        return f"FastAPI/Flask p50 ratio {ratio:.2f} is above the limit {max_ratio:g}"
    return None
