"""The comparison for people and for programs: a terminal table, raw figures as JSON, and a
self-contained HTML page (inline SVG charts, no scripts, nothing fetched)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path

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
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")


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
    path.write_text(render_html(bench))
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


def line_chart(
    title: str,
    series: dict[str, list[tuple[float, float]]],
    *,
    x_label: str,
    y_label: str,
    log_y: bool = False,
    colors: dict[str, str] | None = None,
) -> str:
    """An inline SVG line chart, one line (and legend entry) per series."""
    width, height, left, right, top, bottom = 720, 360, 70, 200, 30, 45
    points = [p for values in series.values() for p in values]
    if not points:
        return f"<p>{html.escape(title)}: no data</p>"
    xs = sorted({x for x, _ in points})
    if log_y:
        positive = [y for _, y in points if y > 0] or [1.0]
        y_low = 10.0 ** math.floor(math.log10(min(positive)))
        y_high = max(10.0 ** math.ceil(math.log10(max(positive))), y_low * 10)
    else:
        y_low, y_high = 0.0, _nice(max(y for _, y in points))
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        if len(xs) == 1:
            return left + plot_w / 2
        return left + plot_w * xs.index(x) / (len(xs) - 1)

    def sy(y: float) -> float:
        if log_y:
            y = max(y, y_low)
            share = (math.log10(y) - math.log10(y_low)) / max(
                math.log10(y_high) - math.log10(y_low), 1e-9
            )
        else:
            share = y / y_high if y_high else 0.0
        return top + plot_h * (1 - share)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="18" font-weight="bold">{html.escape(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#333"/>',
    ]
    ticks = (
        [10**e for e in range(round(math.log10(y_low)), round(math.log10(y_high)) + 1)]
        if log_y
        else [y_high * i / 4 for i in range(5)]
    )
    for tick in ticks:
        y = sy(tick)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
            f"{tick:g}</text>"
        )
    for x in xs:
        parts.append(
            f'<text x="{sx(x):.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
            f'font-size="11">{x:g}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle" font-size="12">'
        f"{html.escape(x_label)}</text>"
        f'<text x="14" y="{top + plot_h / 2}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + plot_h / 2})">{html.escape(y_label)}</text>'
    )
    for i, (name, values) in enumerate(series.items()):
        color = (colors or {}).get(name) or _PALETTE[i % len(_PALETTE)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        for x, y in values:
            parts.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}">'
                f"<title>{html.escape(name)} at {x:g}: {y:g}</title></circle>"
            )
        legend_y = top + 16 * i + 8
        parts.append(
            f'<line x1="{width - right + 12}" y1="{legend_y}" x2="{width - right + 32}" '
            f'y2="{legend_y}" stroke="{color}" stroke-width="2"/>'
            f'<text x="{width - right + 38}" y="{legend_y + 4}" font-size="11">'
            f"{html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _nice(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0):
        if value <= step * magnitude:
            return step * magnitude
    return 10.0 * magnitude


def render_html(bench: Bench) -> str:
    """The report page."""
    everything = [*bench.ceiling, *bench.measurements]
    closed = all(m.mode == "closed" for m in everything)
    x_label = "concurrent users" if closed else "arrival rate (req/s)"
    names = list(dict.fromkeys(m.target for m in bench.measurements))
    colors = {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(names)}
    ceiling = ", ".join(f"{m.summary.rps:.0f} req/s at {_load(m)}" for m in bench.ceiling)
    header = "".join(f"<th>{html.escape(name)}</th>" for name, _ in _COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in rows(everything)
    )
    config = html.escape(json.dumps(bench.config, indent=2, sort_keys=True))
    machine = html.escape(json.dumps(bench.machine, indent=2, sort_keys=True))
    notes = "".join(
        f"<li>{html.escape(line)}</li>" for line in comparison_lines(bench.measurements)
    )
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
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dualstack load test</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th:first-child, td:first-child, td:last-child {{ text-align: left; }}
svg {{ display: block; margin: 1.5em 0; font-family: system-ui, sans-serif; }}
pre {{ background: #f6f6f6; padding: 1em; font-size: 12px; }}
</style></head>
<body>
<h1>dualstack load test</h1>
<p>Wall time {bench.wall_s:.0f} s. sent: the requests the client sent, each one answered
during the ramp-up (warmup, not measured), ok, or an error by kind; requests in flight when
the window closed were waited for. req/s counts successful answers; percentiles are of
successful answers ({NO_SUCCESS} where there were none). A target within 80 % of the client's own
ceiling is marked CLIENT-BOUND: its figure says more about the client than about it.</p>
<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>
<ul>{notes}</ul>
<p>The client's own ceiling (against a server that answers at once):
{html.escape(ceiling or "not measured")}.</p>
{"".join(charts)}
<h2>Settings</h2><pre>{config}</pre>
<h2>Machine</h2><pre>{machine}</pre>
</body></html>
"""
