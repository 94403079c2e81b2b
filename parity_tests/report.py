"""What a run found, as a terminal summary, `report.json`, `junit.xml` and a self-contained
`report.html` (inline CSS and SVG: it opens from disk, without a server or the network)."""

from __future__ import annotations

import contextlib
import html
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.diff import NOISE_REASON, SEVERITIES, Difference, Response, summarize
from parity_tests.latency import Comparison, Spread
from parity_tests.runner import HEADERS, Answer, CaseResult, RunReport, render

_BODY_CHARS = 20_000
"""Longest body kept in the reports: enough for any answer of this API, bounded for others."""

COLUMNS: tuple[str, ...] = (*SEVERITIES, "noisy")
"""The counts shown per file and case: each severity, where "noise" is what the rules class
so (volatile fields, header order) and "noisy" what the noise check found varying between two
legacy answers, counted apart: one is known by design, the other measured in this run."""
NOT_JUDGED = "(subset run: not judged)"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def safe(text: str) -> str:
    """`text` with anything UTF-8 cannot encode (a lone surrogate from a JSON answer such as
    `"\\ud800"`) written as a backslash escape, so it can be printed and written anywhere."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _counts(differences: Iterable[Difference]) -> dict[str, int]:
    found = list(differences)
    counts = {str(severity): count for severity, count in summarize(found).items()}
    noisy = sum(d.severity == "noise" and d.reason == NOISE_REASON for d in found)
    counts["noise"] -= noisy
    counts["noisy"] = noisy
    return counts


def _stale(report: RunReport) -> str:
    if report.stale_rules is None:
        return NOT_JUDGED
    return "; ".join(report.stale_rules) or "none"


def _all(result: CaseResult) -> list[Difference]:
    return [d for _, d in result.differences]


# --- terminal -----------------------------------------------------------------------------


def summary(report: RunReport) -> str:
    """The end-of-run summary: failed cases in full, a table per corpus file, latency, stale
    rules and the verdict."""
    lines: list[str] = []
    for result in report.failed:
        lines += [render(result), ""]
    files: dict[str, list[CaseResult]] = {}
    for result in report.results:
        files.setdefault(result.case.file, []).append(result)
    header = f"{'file':<14}{'cases':>6}{'failed':>7}" + "".join(f"{s:>10}" for s in COLUMNS)
    lines += [
        f"parity: flask vs fastapi ({report.target}), {len(report.results)} cases "
        f"in {report.seconds:.1f} s, repeat {report.options.repeat}"
        + (", noise check" if report.options.noise_check else ""),
        header,
    ]
    rows = [*files.items(), ("total", list(report.results))]
    for name, results in rows:
        counts = _counts(d for r in results for d in _all(r))
        failed = sum(r.failed for r in results)
        lines.append(
            f"{name:<14}{len(results):>6}{failed:>7}" + "".join(f"{counts[s]:>10}" for s in COLUMNS)
        )
    if report.options.repeat > 1:
        lines += _slowest(report)
    overall = report.latency
    lines.append(
        f"latency p50/p95 ms: flask {_ms(overall.flask.p50)}/{_ms(overall.flask.p95)}, "
        f"fastapi {_ms(overall.fastapi.p50)}/{_ms(overall.fastapi.p95)}, "
        f"ratio {_ms(overall.ratio)} ({overall.flask.count}+{overall.fastapi.count} samples)"
    )
    if report.options.max_latency_ratio is not None:
        verdict = report.latency_failure or f"within {report.options.max_latency_ratio:g}"
        lines.append(f"latency gate: {verdict}")
    lines.append("stale rules: " + _stale(report))
    failed = len(report.failed)
    if report.exit_code == 0:
        lines.append(f"result: PASS, {len(report.results)} cases, no unexpected difference")
    else:
        lines.append(
            f"result: FAIL, {failed} of {len(report.results)} cases with unexpected differences"
            + (", latency gate failed" if report.latency_failure else "")
        )
    return safe("\n".join(lines))


def _slowest(report: RunReport, count: int = 10) -> list[str]:
    # Every case's spread is in the report files; the terminal shows where FastAPI is
    # slowest relative to Flask.
    rated = [(r.latency.ratio, r) for r in report.results if r.latency.ratio is not None]
    rated.sort(key=lambda pair: -(pair[0] or 0))
    lines = [
        f"{'slowest on fastapi (ms)':<44}{'flask p50/p95':>16}{'fastapi p50/p95':>18}{'ratio':>7}"
    ]
    for ratio, result in rated[:count]:
        flask, fastapi = result.latency.flask, result.latency.fastapi
        lines.append(
            f"{result.case.id[:44]:<44}{_ms(flask.p50) + '/' + _ms(flask.p95):>16}"
            f"{_ms(fastapi.p50) + '/' + _ms(fastapi.p95):>18}{_ms(ratio):>7}"
        )
    return lines


# --- report.json --------------------------------------------------------------------------


def _body_text(reply: Response) -> str:
    text = reply.body.decode("utf-8", errors="backslashreplace")
    return text if len(text) <= _BODY_CHARS else text[:_BODY_CHARS] + "...(cut)"


def _answer(answer: Answer) -> dict[str, Any]:
    if answer.reply is None:
        return {"stack": answer.stack, "error": answer.error}
    reply = answer.reply
    names = {name.lower(): value for name, value in reply.headers.items()}
    return {
        "stack": answer.stack,
        "status": reply.status,
        "headers": {name: names[name] for name in HEADERS if name in names},
        "body": _body_text(reply),
        "elapsed_ms": round(reply.elapsed_ms, 3),
    }


def _difference(step: int, d: Difference) -> dict[str, Any]:
    return {
        "step": step,
        "path": d.path,
        "kind": d.kind,
        "severity": d.severity,
        "legacy": d.legacy,
        "candidate": d.candidate,
        "reason": d.reason,
    }


def _spread(spread: Spread) -> dict[str, Any]:
    return {"count": spread.count, "p50_ms": spread.p50, "p95_ms": spread.p95}


def _latency(comparison: Comparison) -> dict[str, Any]:
    return {
        "flask": _spread(comparison.flask),
        "fastapi": _spread(comparison.fastapi),
        "ratio": comparison.ratio,
    }


def to_json(report: RunReport) -> dict[str, Any]:
    """The whole run as JSON-ready data."""
    cases = []
    for result in report.results:
        case = result.case
        cases.append(
            {
                "id": case.id,
                "file": case.file,
                "name": case.name,
                "description": case.description,
                "failed": result.failed,
                "problems": list(result.problems),
                "severities": _counts(_all(result)),
                "latency": _latency(result.latency),
                "steps": [
                    {
                        "index": step.index,
                        "endpoint": step.endpoint,
                        "legacy": _answer(step.legacy),
                        "candidate": _answer(step.candidate),
                        "noise": list(step.noise),
                        "differences": [_difference(step.index, d) for d in step.differences],
                    }
                    for step in result.steps
                ],
            }
        )
    return {
        "target": report.target,
        "options": {
            "repeat": report.options.repeat,
            "noise_check": report.options.noise_check,
            "max_latency_ratio": report.options.max_latency_ratio,
        },
        "seconds": round(report.seconds, 3),
        "summary": {
            "cases": len(report.results),
            "passed": len(report.results) - len(report.failed),
            "failed": len(report.failed),
            "failed_cases": [r.case.id for r in report.failed],
            "severities": _counts(d for r in report.results for d in _all(r)),
            "latency": _latency(report.latency),
            "latency_gate": report.latency_failure,
            "stale_rules": None if report.stale_rules is None else list(report.stale_rules),
            "stale_rules_judged": report.stale_rules is not None,
            "exit_code": report.exit_code,
        },
        "cases": cases,
    }


# --- junit.xml ----------------------------------------------------------------------------


def to_junit(report: RunReport) -> ET.ElementTree:
    """One testcase per corpus case (classname `parity.<file>`), failures with the diff."""
    suite = ET.Element(
        "testsuite",
        name="parity",
        tests=str(len(report.results)),
        failures=str(len(report.failed)),
        errors="0",
        skipped="0",
        time=f"{report.seconds:.3f}",
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("target", report.target),
        ("latency_ratio", _ms(report.latency.ratio)),
        ("latency_gate", report.latency_failure or "ok"),
        ("stale_rules", _stale(report)),
    ):
        ET.SubElement(properties, "property", name=name, value=value)
    for result in report.results:
        seconds = sum(
            a.reply.elapsed_ms
            for step in result.steps
            for a in (step.legacy, step.candidate)
            if a.reply is not None
        )
        testcase = ET.SubElement(
            suite,
            "testcase",
            classname=f"parity.{result.case.file}",
            name=result.case.name,
            time=f"{seconds / 1000:.3f}",
        )
        if result.failed:
            count = len(result.unexpected)
            message = f"{count} unexpected difference(s), {len(result.problems)} problem(s)"
            failure = ET.SubElement(testcase, "failure", message=message, type="parity")
            failure.text = render(result)
    if report.options.max_latency_ratio is not None:
        # The gate is a verdict of its own: a CI page listing only the cases would show green.
        gate_case = ET.SubElement(
            suite, "testcase", classname="parity.latency", name="latency-gate", time="0.000"
        )
        suite.set("tests", str(len(report.results) + 1))
        if report.latency_failure:
            suite.set("failures", str(len(report.failed) + 1))
            failure = ET.SubElement(
                gate_case, "failure", message=report.latency_failure, type="latency"
            )
            failure.text = f"latency gate: {report.latency_failure}"
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.ElementTree(root)


# --- report.html --------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d1d1f}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right}
.fail{color:#b00020;font-weight:600}.ok{color:#0a7d32}
.breaking{background:#fde2e2}.additive{background:#e6f4ea}.noise{background:#fff4d6}
.expected{background:#e8eefc}.ignored{color:#777}
.side{display:grid;grid-template-columns:1fr 1fr;gap:8px}
pre{background:#f7f7f7;border:1px solid #ddd;padding:6px;overflow:auto;max-height:24em;
white-space:pre-wrap;word-break:break-all;margin:0}
details{margin:.4em 0;border-left:3px solid #ccc;padding-left:8px}
details.failed{border-color:#b00020}summary{cursor:pointer}
"""

_COLORS = {"flask": "#3b6fb6", "fastapi": "#e07b00"}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _pre_answer(answer: Answer) -> str:
    data = _answer(answer)
    if answer.reply is None:
        return f"<pre>{_e(answer.stack)}: no answer\n{_e(answer.error)}</pre>"
    lines = [f"{answer.stack}: HTTP {data['status']}  ({data['elapsed_ms']} ms)"]
    lines += [f"{name}: {value}" for name, value in data["headers"].items()]
    body = data["body"]
    with contextlib.suppress(ValueError):  # not JSON: shown as it came
        body = json.dumps(json.loads(answer.reply.body), indent=2, ensure_ascii=False)
    lines += ["", body[:_BODY_CHARS]]
    return f"<pre>{_e(chr(10).join(lines))}</pre>"


def _value(value: Any, kind: str, side: str) -> str:
    absent = (side == "candidate" and kind in ("missing", "header_missing")) or (
        side == "legacy" and kind in ("added", "header_added")
    )
    if absent:
        return "<i>absent</i>"
    text = json.dumps(value, ensure_ascii=False)
    return _e(text if len(text) <= 200 else text[:197] + "...")


def _case_html(result: CaseResult) -> str:
    shown = [(i, d) for i, d in result.differences if d.severity != "ignored"]
    state = "failed" if result.failed else "passed"
    parts = [
        f'<details class="{state}" id="{_e(result.case.id)}"{" open" if result.failed else ""}>',
        f"<summary><b>{_e(result.case.id)}</b> "
        f'<span class="{"fail" if result.failed else "ok"}">{state}</span> '
        f"{len(shown)} difference(s) {_e(result.case.description)}</summary>",
    ]
    if result.problems:
        parts.append("<ul>" + "".join(f"<li>{_e(p)}</li>" for p in result.problems) + "</ul>")
    if shown:
        parts.append(
            "<table><tr><th>step</th><th>severity</th><th>kind</th><th>path</th>"
            "<th>legacy (flask)</th><th>candidate</th><th>reason</th></tr>"
        )
        for number, d in shown:
            parts.append(
                f'<tr class="{d.severity}"><td>{number}</td><td>{d.severity}</td><td>{d.kind}</td>'
                f"<td><code>{_e(d.path)}</code></td><td>{_value(d.legacy, d.kind, 'legacy')}</td>"
                f"<td>{_value(d.candidate, d.kind, 'candidate')}</td><td>{_e(d.reason)}</td></tr>"
            )
        parts.append("</table>")
    for step in result.steps:
        if not any(d.severity != "ignored" for d in step.differences) and not result.problems:
            continue
        parts.append(
            f"<p>step {step.index}: <code>{_e(step.endpoint)}</code>"
            + (f" noise: {_e(', '.join(step.noise))}" if step.noise else "")
            + "</p>"
        )
        parts.append(
            f'<div class="side">{_pre_answer(step.legacy)}{_pre_answer(step.candidate)}</div>'
        )
    parts.append("</details>")
    return "\n".join(parts)


def _x(ms: float, width: float, top: float) -> float:
    # Log scale: the fault cases take seconds, most requests a millisecond or two.
    return width * math.log10(1 + ms * 10) / math.log10(1 + top * 10)


def latency_svg(report: RunReport) -> str:
    """A horizontal bar chart, one row per case plus the overall row: p50 bars per stack
    and a whisker to p95, on a log scale."""
    rows: list[tuple[str, Comparison]] = [("overall", report.latency)]
    rows += [(r.case.id, r.latency) for r in report.results]
    values = [
        v for _, c in rows for s in (c.flask, c.fastapi) for v in (s.p50, s.p95) if v is not None
    ]
    top = max(values, default=1.0) or 1.0
    label, width, row = 260, 520, 22
    height = row * len(rows) + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label + width + 80}" '
        f'height="{height}" font-size="11" font-family="system-ui,sans-serif">'
    ]
    for tick in (0.1, 1, 10, 100, 1000, 10000):
        if tick > top * 1.01:
            break
        x = label + _x(tick, width, top)
        out.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 30}" stroke="#ddd"/>'
            f'<text x="{x:.1f}" y="{height - 18}" text-anchor="middle">{tick:g} ms</text>'
        )
    for index, (name, comparison) in enumerate(rows):
        y = index * row + 4
        out.append(f'<text x="{label - 6}" y="{y + 13}" text-anchor="end">{_e(name[:40])}</text>')
        for offset, stack in ((0, "flask"), (9, "fastapi")):
            spread = comparison.flask if stack == "flask" else comparison.fastapi
            if spread.p50 is None:
                continue
            w = _x(spread.p50, width, top)
            color = _COLORS[stack]
            out.append(
                f'<rect x="{label}" y="{y + offset}" width="{w:.1f}" height="8" fill="{color}">'
                f"<title>{_e(name)} {stack} p50 {spread.p50:.2f} ms, "
                f"p95 {_ms(spread.p95)} ms</title></rect>"
            )
            if spread.p95 is not None:
                x95 = label + _x(spread.p95, width, top)
                out.append(
                    f'<line x1="{label + w:.1f}" y1="{y + offset + 4}" x2="{x95:.1f}" '
                    f'y2="{y + offset + 4}" stroke="{color}"/>'
                )
    legend_y = height - 6
    out.append(
        f'<rect x="{label}" y="{legend_y - 8}" width="10" height="8" fill="{_COLORS["flask"]}"/>'
        f'<text x="{label + 14}" y="{legend_y}">flask p50 (line: p95)</text>'
        f'<rect x="{label + 160}" y="{legend_y - 8}" width="10" height="8" '
        f'fill="{_COLORS["fastapi"]}"/>'
        f'<text x="{label + 174}" y="{legend_y}">fastapi p50 (line: p95)</text>'
    )
    out.append("</svg>")
    return "\n".join(out)


def to_html(report: RunReport) -> str:
    """The whole run as one HTML page: summary, every case, side-by-side diffs, chart."""
    data = to_json(report)["summary"]
    overall = report.latency
    verdict = (
        '<span class="ok">PASS</span>'
        if report.exit_code == 0
        else '<span class="fail">FAIL</span>'
    )
    severity_cells = "".join(f"<td class='n'>{data['severities'][s]}</td>" for s in COLUMNS)
    rows = []
    for result in report.results:
        counts = _counts(_all(result))
        latency = result.latency
        state = '<span class="fail">failed</span>' if result.failed else "ok"
        rows.append(
            f'<tr><td><a href="#{_e(result.case.id)}">{_e(result.case.id)}</a></td>'
            f"<td>{state}</td>"
            + "".join(f"<td class='n'>{counts[s]}</td>" for s in COLUMNS)
            + "".join(
                f"<td class='n'>{_ms(value)}</td>"
                for value in (
                    latency.flask.p50,
                    latency.flask.p95,
                    latency.fastapi.p50,
                    latency.fastapi.p95,
                    latency.ratio,
                )
            )
            + "</tr>"
        )
    differing = [
        r for r in report.results if r.problems or any(d.severity != "ignored" for d in _all(r))
    ]
    head = "".join(f"<th>{s}</th>" for s in COLUMNS)
    if report.stale_rules is None:
        stale = f"<li>{NOT_JUDGED}</li>"
    else:
        stale = "".join(f"<li>{_e(rule)}</li>" for rule in report.stale_rules) or "<li>none</li>"
    gate = _e(report.latency_failure or "ok") if report.options.max_latency_ratio else "not set"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Parity report</title>
<style>{_CSS}</style></head><body>
<h1>Parity: flask vs fastapi {verdict}</h1>
<p>Target: {_e(report.target)}. {data["cases"]} cases, {data["failed"]} failed, in
{report.seconds:.1f} s; repeat {report.options.repeat}; noise check
{"on" if report.options.noise_check else "off"}.</p>
<table><tr>{head}</tr><tr>{severity_cells}</tr></table>
<p>Latency (ms, every sample pooled): flask p50 {_ms(overall.flask.p50)} p95
{_ms(overall.flask.p95)}; fastapi p50 {_ms(overall.fastapi.p50)} p95
{_ms(overall.fastapi.p95)}; FastAPI/Flask p50 ratio {_ms(overall.ratio)}; gate: {gate}.</p>
<h2>Stale rules</h2><ul>{stale}</ul>
<h2>Latency per case</h2>
{latency_svg(report)}
<h2>Cases</h2>
<table><tr><th>case</th><th>result</th>{head}<th>flask p50 ms</th><th>flask p95</th>
<th>fastapi p50</th><th>fastapi p95</th><th>ratio</th></tr>
{"".join(rows)}</table>
<h2>Differences ({len(differing)} cases)</h2>
{"".join(_case_html(r) for r in differing)}
</body></html>
"""


def write(report: RunReport, directory: str | Path) -> list[Path]:
    """Write report.json, junit.xml and report.html into `directory` (made if missing)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "report.json", folder / "junit.xml", folder / "report.html"]
    # ASCII JSON: a lone surrogate in an answer stays a valid `\\ud800` escape.
    paths[0].write_text(
        json.dumps(to_json(report), indent=2, ensure_ascii=True, default=str) + "\n",
        encoding="utf-8",
    )
    root = to_junit(report).getroot()
    assert root is not None
    xml = ET.tostring(root, encoding="unicode")
    paths[1].write_text(
        "<?xml version='1.0' encoding='utf-8'?>\n" + xml + "\n",
        encoding="utf-8",
        errors="backslashreplace",
    )
    paths[2].write_text(to_html(report), encoding="utf-8", errors="backslashreplace")
    return paths
