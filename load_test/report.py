"""The comparison for people and for programs: a terminal table, raw figures as JSON, and a
self-contained HTML page (inline SVG charts, no scripts, nothing fetched), rendered by
`harness.report` from `load_test/templates/index.html.j2`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from harness.report.charts import PALETTE, line_chart
from harness.report.page import render
from load_test.results import Bench, Measurement, comparisons

_COLUMNS = (
    ("target", "<"),
    ("load", ">"),
    ("req/s", ">"),
    ("p50 ms", ">"),
    ("p90 ms", ">"),
    ("p99 ms", ">"),
    ("max ms", ">"),
    ("sent", ">"),
    ("warmup", ">"),
    ("ok", ">"),
    ("status", ">"),
    ("timeout", ">"),
    ("conn", ">"),
    ("cpu c/t/db/ag %", ">"),
    ("note", "<"),
)
# Each emulator is one interpreter, so one core at most (moto also serialises requests):
# near that, it is what limits the run, not the target.
EMULATOR_BUSY = 0.75
_CPU = ("client", "target", "dynamodb", "agent")


def _load(m: Measurement) -> str:
    return f"{m.load:g} users" if m.mode == "closed" else f"{m.load:g}/s"


def _cpu(m: Measurement) -> str:
    def one(name: str) -> str:
        value = m.cpu.get(name)
        return "-" if value is None else f"{value * 100:.0f}"

    return "/".join(one(name) for name in _CPU)


NO_SUCCESS = "NO SUCCESSFUL ANSWERS"


def _note(m: Measurement) -> str:
    notes = []
    if m.summary.ok == 0:
        notes.append(NO_SUCCESS)
    if m.client_bound:
        notes.append("CLIENT-BOUND")
    for role in ("dynamodb", "agent"):
        share = m.cpu.get(role)
        if share is not None and share >= EMULATOR_BUSY:
            notes.append(f"{role.upper()} EMULATOR BUSY ({share * 100:.0f}% CPU)")
    if m.summary.statuses:
        notes.append(" ".join(f"{code}x{n}" for code, n in m.summary.statuses.items()))
    if m.backends:
        notes.append(
            " ".join(
                f"{name}:{m.summary.backends.get(name, 0)} p50 {lat.p50_ms:.0f}"
                for name, lat in m.backends.items()
            )
        )
    return "; ".join(notes)


def rows(measurements: Sequence[Measurement]) -> list[list[str]]:
    """The table's cells, one row per measurement."""
    table = []
    for m in measurements:
        s, lat = m.summary, m.summary.latency
        # Without a successful answer there is no latency to show: not 0 ms.
        percentiles = (lat.p50_ms, lat.p90_ms, lat.p99_ms, lat.max_ms)
        cells = [f"{ms:.0f}" if s.ok else "-" for ms in percentiles]
        table.append(
            [
                m.target,
                _load(m),
                f"{s.rps:.1f}",
                *cells,
                str(m.sent),
                str(m.warmup),
                str(s.ok),
                str(s.errors["status"]),
                str(s.errors["timeout"]),
                str(s.errors["connection"]),
                _cpu(m),
                _note(m),
            ]
        )
    return table


def format_table(bench: Bench) -> str:
    """The comparison as aligned text: the ceiling's rows first, then the targets', then
    the ratios."""
    body = rows([*bench.ceiling, *bench.measurements])
    header = [name for name, _ in _COLUMNS]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        parts = [
            f"{cell:{align}{width}}"
            for cell, (_, align), width in zip(cells, _COLUMNS, widths, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in body]
    out += ["", *comparison_lines(bench.measurements)]
    out.append(f"DynamoDB: {bench.config.get('dynamodb', 'moto (harness emulators)')}")
    out.append(
        "sent: requests the client sent = warmup (answered during the ramp-up, not measured)"
        " + ok + errors by kind\n(status, timeout, conn; requests still in flight when the"
        " window closed are waited for and counted).\n"
        "req/s counts successful answers; percentiles are of successful answers.\n"
        "cpu: share of one core used during the run by the client / the target / the "
        "DynamoDB emulator / the agent emulator;\nan emulator near 100 % (one interpreter) "
        "limits the run itself: BUSY. CLIENT-BOUND: within 80 % of the client's ceiling."
    )
    return "\n".join(out)


def comparison_lines(measurements: Sequence[Measurement]) -> list[str]:
    """The ratios in words."""
    lines = []
    for row in comparisons(list(measurements)):
        load = f"{row['load']:g}"
        if row["kind"] == "fastapi/flask":
            lines.append(
                f"at {load}: {row['numerator']} / {row['denominator']} throughput = {row['ratio']}"
            )
        else:
            lines.append(
                f"at {load}: {row['gateway']} {row['gateway_rps']:.1f} req/s vs its halves "
                f"flask-a2wsgi {row['flask_a2wsgi_rps']:.1f} and fastapi-uvicorn "
                f"{row['fastapi_rps']:.1f} (x{row['over_mean_of_halves']} their mean)"
            )
    return lines


def write_json(bench: Bench, path: Path) -> None:
    """The raw figures as JSON at `path` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bench.to_json(), indent=2, sort_keys=True) + "\n")


def write_html(bench: Bench, directory: Path) -> Path:
    """`index.html` in `directory`: the table and the charts, self-contained."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "index.html"
    path.write_text(render_html(bench), encoding="utf-8")
    return path


def _series(
    measurements: Sequence[Measurement], value: str
) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for m in measurements:
        if value != "rps" and m.summary.ok == 0:
            continue  # no latency without a successful answer
        y = m.summary.rps if value == "rps" else getattr(m.summary.latency, value)
        series.setdefault(m.target, []).append((m.load, y))
    return {name: sorted(points) for name, points in series.items()}


def render_html(bench: Bench) -> str:
    """The report page, from `load_test/templates/index.html.j2`."""
    everything = [*bench.ceiling, *bench.measurements]
    closed = all(m.mode == "closed" for m in everything)
    x_label = "concurrent users" if closed else "arrival rate (req/s)"
    names = list(dict.fromkeys(m.target for m in bench.measurements))
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    ceiling = ", ".join(f"{m.summary.rps:.0f} req/s at {_load(m)}" for m in bench.ceiling)
    # The ceiling is left out of the charts: it is usually so far above the targets that
    # it would flatten them. It is in the table and in the caption.
    charts = [
        line_chart(
            "Throughput (successful req/s)",
            _series(bench.measurements, "rps"),
            x_label=x_label,
            y_label="req/s",
            colors=colors,
        ),
        line_chart(
            "Latency p50 (ms, log scale)",
            _series(bench.measurements, "p50_ms"),
            x_label=x_label,
            y_label="ms",
            log_y=True,
            colors=colors,
        ),
        line_chart(
            "Latency p99 (ms, log scale)",
            _series(bench.measurements, "p99_ms"),
            x_label=x_label,
            y_label="ms",
            log_y=True,
            colors=colors,
        ),
    ]
    context = {
        "bench": bench,
        "columns": [name for name, _ in _COLUMNS],
        "rows": rows(everything),
        "notes": comparison_lines(bench.measurements),
        "ceiling": ceiling or "not measured",
        "charts": charts,
        "config": json.dumps(bench.config, indent=2, sort_keys=True),
        "machine": json.dumps(bench.machine, indent=2, sort_keys=True),
        "no_success": NO_SUCCESS,
    }
    return render("load_test", "index.html.j2", context)
