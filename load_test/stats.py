"""Figures from samples, purely: requests/s, latency percentiles, errors by kind.

A sample is one request's outcome. Latency percentiles are taken over the successful
requests only (a shed 503 answered in a millisecond must not make a stack look fast);
errors are counted apart, by kind and by status. Percentiles are `harness.report.stats`'s,
as in the parity suite's reports.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from harness.report.stats import percentile

Kind = Literal["ok", "status", "timeout", "connection"]
ERROR_KINDS: tuple[Kind, ...] = ("status", "timeout", "connection")


@dataclass(frozen=True, slots=True)
class Sample:
    """One request: when it started (seconds from the run's start; the intended send time
    in open-loop runs), how long it took, how it ended, its HTTP status (0 without an
    answer) and the backend that answered (the `X-Dualstack-Backend` header, else "")."""

    start_s: float
    latency_s: float
    kind: Kind
    status: int = 0
    backend: str = ""


@dataclass(frozen=True)
class Latency:
    """Percentiles of a set of latencies, in milliseconds (all 0.0 when the set is empty)."""

    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    mean_ms: float = 0.0


@dataclass(frozen=True)
class Summary:
    """What one run measured: `measured` samples, of which `ok` succeeded and the others
    are errors by kind (so `measured == ok + sum(errors.values())` by construction; the
    requests the client sent are counted apart, by the engine)."""

    measured: int
    ok: int
    errors: dict[str, int]
    statuses: dict[int, int]
    elapsed_s: float
    rps: float
    latency: Latency
    backends: dict[str, int] = field(default_factory=dict)


def latency(latencies_s: Iterable[float]) -> Latency:
    """p50/p90/p99/max/mean of latencies given in seconds, in milliseconds."""
    ordered = sorted(latencies_s)  # once: `percentile` sorts again, in linear time
    if not ordered:
        return Latency()

    def ms(fraction: float) -> float:
        seconds = percentile(ordered, fraction)
        return 0.0 if seconds is None else round(seconds * 1000, 3)

    return Latency(
        p50_ms=ms(0.5),
        p90_ms=ms(0.9),
        p99_ms=ms(0.99),
        max_ms=ms(1.0),
        mean_ms=round(sum(ordered) / len(ordered) * 1000, 3),
    )


def summarize(samples: Sequence[Sample], elapsed_s: float) -> Summary:
    """The figures of `samples` measured over `elapsed_s` seconds; `rps` counts successful
    requests only."""
    kinds = Counter(sample.kind for sample in samples)
    ok = kinds["ok"]
    statuses = Counter(s.status for s in samples if s.kind == "status")
    backends = Counter(s.backend for s in samples if s.backend)
    return Summary(
        measured=len(samples),
        ok=ok,
        errors={kind: kinds[kind] for kind in ERROR_KINDS},
        statuses=dict(sorted(statuses.items())),
        elapsed_s=round(elapsed_s, 3),
        rps=round(ok / elapsed_s, 2) if elapsed_s > 0 else 0.0,
        latency=latency(s.latency_s for s in samples if s.kind == "ok"),
        backends=dict(sorted(backends.items())),
    )


def by_backend(samples: Sequence[Sample]) -> dict[str, Latency]:
    """Latency of the successful requests each backend answered (samples with no backend
    are left out): the gateway's two halves, told apart by its response header."""
    groups: dict[str, list[float]] = {}
    for sample in samples:
        if sample.backend and sample.kind == "ok":
            groups.setdefault(sample.backend, []).append(sample.latency_s)
    return {name: latency(values) for name, values in sorted(groups.items())}


def classify(status: int) -> Kind:
    """An answered request is ok with a 1xx-3xx status, a status error otherwise."""
    return "ok" if 100 <= status < 400 else "status"


def ratio(numerator: float, denominator: float) -> float | None:
    """`numerator / denominator` rounded to two places; None when the denominator is 0."""
    return round(numerator / denominator, 2) if denominator > 0 else None


def client_bound(rps: float, ceiling_rps: float, fraction: float = 0.8) -> bool:
    """Whether a target's throughput is close enough to the client's own ceiling that the
    client, not the server, may be what limits it."""
    return ceiling_rps > 0 and rps >= fraction * ceiling_rps
