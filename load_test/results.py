"""What a comparison measured, as data: one `Measurement` per target and load, and the
comparisons drawn from them (pure)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from load_test.stats import Latency, Summary, client_bound, ratio

FLASK_GUNICORN = ("flask-gunicorn-sync", "flask-gunicorn-threads")
FASTAPI = "fastapi-uvicorn"
FLASK_A2WSGI = "flask-a2wsgi"


@dataclass(frozen=True)
class Measurement:
    """One target under one load. `load` is the number of users (closed loop) or the
    arrival rate (open loop); `sent` the requests the client sent, counted as they were
    sent: the measured ones (`summary`) and those answered during the ramp-up (`warmup`);
    `cpu` is each party's CPU use during the run as a share of one core (client, target,
    emulators; None where unknown)."""

    target: str
    describe: str
    mode: str
    load: float
    summary: Summary
    backends: dict[str, Latency] = field(default_factory=dict)
    sent: int = 0
    warmup: int = 0
    cpu: dict[str, float | None] = field(default_factory=dict)
    client_bound: bool = False


@dataclass(frozen=True)
class Bench:
    """A whole comparison: its settings, the client's ceiling, the targets' figures."""

    config: dict[str, Any]
    machine: dict[str, Any]
    ceiling: list[Measurement]
    measurements: list[Measurement]
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """Everything, JSON-ready, with the comparisons."""
        return {
            **dataclasses.asdict(self),
            "comparisons": comparisons(self.measurements),
        }


def flag_client_bound(
    measurements: list[Measurement], ceiling: list[Measurement], fraction: float = 0.8
) -> list[Measurement]:
    """The measurements, each flagged when its throughput comes within `fraction` of the
    client's ceiling at the same load (or at the nearest measured load)."""
    if not ceiling:
        return measurements
    flagged = []
    for m in measurements:
        nearest = min(ceiling, key=lambda c: (c.mode != m.mode, abs(c.load - m.load)))
        bound = client_bound(m.summary.rps, nearest.summary.rps, fraction)
        flagged.append(dataclasses.replace(m, client_bound=bound))
    return flagged


def _rps(measurements: list[Measurement], target: str, load: float) -> float | None:
    for m in measurements:
        if m.target == target and m.load == load:
            return m.summary.rps
    return None


def comparisons(measurements: list[Measurement]) -> list[dict[str, Any]]:
    """Per load: FastAPI's throughput over each Flask-on-gunicorn target's, and each
    gateway's against its two halves (Flask through a2wsgi, FastAPI on uvicorn)."""
    rows: list[dict[str, Any]] = []
    loads = sorted({m.load for m in measurements})
    gateways = sorted({m.target for m in measurements if m.target.startswith("gateway-")})
    for load in loads:
        fastapi = _rps(measurements, FASTAPI, load)
        for flask in FLASK_GUNICORN:
            flask_rps = _rps(measurements, flask, load)
            if fastapi is not None and flask_rps is not None:
                rows.append(
                    {
                        "load": load,
                        "kind": "fastapi/flask",
                        "numerator": FASTAPI,
                        "denominator": flask,
                        "ratio": ratio(fastapi, flask_rps),
                    }
                )
        a2wsgi = _rps(measurements, FLASK_A2WSGI, load)
        for gateway in gateways:
            gateway_rps = _rps(measurements, gateway, load)
            if gateway_rps is None or fastapi is None or a2wsgi is None:
                continue
            rows.append(
                {
                    "load": load,
                    "kind": "gateway/halves",
                    "gateway": gateway,
                    "gateway_rps": gateway_rps,
                    "flask_a2wsgi_rps": a2wsgi,
                    "fastapi_rps": fastapi,
                    "over_mean_of_halves": ratio(gateway_rps, (a2wsgi + fastapi) / 2),
                }
            )
    return rows
