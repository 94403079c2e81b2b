"""The soak for programs and for people: `soak.json` (every reading, every figure) and
`index.html` (the verdict, the curves, the rollout changes, the unexpected answers), a
self-contained page rendered by `harness.report` from `load_test/templates/soak.html.j2`.

The charts are `harness.report.charts.line_chart`s, which label every x value: past
`CHART_POINTS` readings, consecutive ones are merged for the charts (`soak.coarsen`: the
highest memory and descriptor count of each group, the counts added up), while the table
under them and the JSON keep every reading.
"""

from __future__ import annotations

import json
from pathlib import Path

from markupsafe import Markup

from harness.report.charts import line_chart
from harness.report.page import render
from load_test.soak import Reading, SoakResult, coarsen, summary_lines

CHART_POINTS = 30
JSON_NAME = "soak.json"
HTML_NAME = "index.html"


def write_json(result: SoakResult, directory: Path) -> Path:
    """`soak.json` in `directory` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / JSON_NAME
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return path


def write_html(result: SoakResult, directory: Path) -> Path:
    """`index.html` in `directory` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / HTML_NAME
    path.write_text(render_html(result), encoding="utf-8")
    return path


Points = list[tuple[float, float]]


def _x(reading: Reading, interval_s: float) -> float:
    # Whole seconds unless readings come faster than that (the tests' short soaks).
    return float(round(reading.t_s)) if interval_s >= 2 else round(reading.t_s, 1)


def charts(result: SoakResult) -> list[Markup]:
    """The curves: memory, descriptors (each with its limit after the warm-up), answers
    per second by verdict, latency, sheds, each party's CPU, the FastAPI percentage."""
    plan, judgement = result.plan, result.judgement
    points = coarsen(result.readings, result.samples, CHART_POINTS)
    xs = [_x(r, plan.interval_s) for r in points]
    after_warmup = [x for x, r in zip(xs, points, strict=True) if r.t_s >= plan.warmup]

    def series(values: list[float | None]) -> Points:
        return [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]

    def rate(count: int, r: Reading) -> float | None:
        return count / r.span_s if r.span_s > 0 else None

    mb: dict[str, Points] = {
        "RSS": series([None if r.rss_bytes is None else r.rss_bytes / 2**20 for r in points])
    }
    fds: dict[str, Points] = {
        "all": series([r.fds for r in points]),
        "open TCP connections": series([r.connections for r in points]),
        "all but open connections (judged)": series([r.held for r in points]),
        "CLOSE_WAIT": series([r.close_wait for r in points]),
    }
    if judgement.rss is not None and judgement.fds is not None:
        top = judgement.rss.baseline * (1 + plan.limits.rss_growth) / 2**20
        mb[f"limit (+{plan.limits.rss_growth:.0%} over the baseline)"] = [
            (x, top) for x in after_warmup
        ]
        fds[f"limit (judged baseline + {plan.limits.fd_slack})"] = [
            (x, judgement.fds.baseline + plan.limits.fd_slack) for x in after_warmup
        ]
    x_label = f"seconds since the load started (warm-up: the first {plan.warmup:g} s)"
    return [
        line_chart("Gateway resident memory (MB)", mb, x_label=x_label, y_label="MB"),
        line_chart("Gateway file descriptors", fds, x_label=x_label, y_label="fds"),
        line_chart(
            "Answers per second",
            {
                "ok": series([rate(r.ok, r) for r in points]),
                "injected faults, answered as the contract says": series(
                    [rate(r.faults, r) for r in points]
                ),
                "unexpected errors": series([rate(r.errors, r) for r in points]),
            },
            x_label=x_label,
            y_label="answers/s",
        ),
        line_chart(
            "Latency of successful answers (ms, log scale)",
            {"p50": series([r.p50_ms for r in points]), "p99": series([r.p99_ms for r in points])},
            x_label=x_label,
            y_label="ms",
            log_y=True,
        ),
        line_chart(
            "Requests shed by the gateway",
            {"sheds": series([None if r.sheds is None else float(r.sheds) for r in points])},
            x_label=x_label,
            y_label="requests",
        ),
        line_chart(
            "CPU (share of one core)",
            {
                name: series([r.cpu.get(name) for r in points])
                for name in dict.fromkeys(name for r in points for name in r.cpu)
            },
            x_label=x_label,
            y_label="cores",
        ),
        line_chart(
            "Share of conversations routed to FastAPI (%)",
            {"FastAPI %": series([r.percent for r in points])},
            x_label=x_label,
            y_label="%",
        ),
    ]


def render_html(result: SoakResult) -> str:
    """The report page."""
    data = result.to_json()
    context = {
        "result": result,
        "passed": result.judgement.passed,
        "lines": summary_lines(result),
        "charts": charts(result),
        "readings": result.readings,
        "rollouts": result.rollouts,
        "examples": result.ledger.examples,
        "errors": result.ledger.errors.most_common(),
        "merged": len(result.readings) > CHART_POINTS,
        "config": json.dumps(data["config"], indent=2),
        "machine": json.dumps(data["machine"], indent=2),
    }
    return render("load_test", "soak.html.j2", context)
