"""What a run found, as a terminal summary, `report.json`, `junit.xml` and a self-contained
`report.html` (inline CSS and SVG: it opens from disk, without a server or the network).

The page is rendered by `harness.report` from `parity_tests/templates/report.html.j2`: it
opens with the verdict and the failing cases, then the latency in two charts of a fixed
size, then every case that differs (failures first), then a table of all the cases."""

from __future__ import annotations

import contextlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup

from harness.diff import (
    NOISE_REASON,
    SEVERITIES,
    Difference,
    Response,
    is_unexpected,
    summarize,
)
from harness.report import charts, page
from harness.report.page import plural
from parity_tests.cases import STACKS
from parity_tests.latency import Comparison, Spread
from parity_tests.runner import HEADERS, CaseResult, Outcome, RunReport, render

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
    header = f"{'file':<14}{'cases':>6}{'failed':>7}" + "".join(f"{s:>10}" for s in COLUMNS)
    lines += [
        f"parity: flask vs fastapi ({report.target}), {len(report.results)} cases "
        f"in {report.seconds:.1f} s, repeat {report.options.repeat}"
        + (", noise check" if report.options.noise_check else ""),
        header,
    ]
    for name, cases, failed, counts in _files(report.results):
        lines.append(
            f"{name:<14}{cases:>6}{failed:>7}" + "".join(f"{counts[s]:>10}" for s in COLUMNS)
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


def _body_text(response: Response) -> str:
    text = response.body.decode("utf-8", errors="backslashreplace")
    return text if len(text) <= _BODY_CHARS else text[:_BODY_CHARS] + "...(cut)"


def _outcome(outcome: Outcome) -> dict[str, Any]:
    if outcome.response is None:
        return {"stack": outcome.stack, "error": outcome.error}
    response = outcome.response
    names = {name.lower(): value for name, value in response.headers.items()}
    return {
        "stack": outcome.stack,
        "status": response.status,
        "headers": {name: names[name] for name in HEADERS if name in names},
        "body": _body_text(response),
        "elapsed_ms": round(response.elapsed_ms, 3),
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
                        "legacy": _outcome(step.legacy),
                        "candidate": _outcome(step.candidate),
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
            outcome.response.elapsed_ms
            for step in result.steps
            for outcome in (step.legacy, step.candidate)
            if outcome.response is not None
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

STACK_COLORS: dict[str, str] = {"flask": "#3b6fb6", "fastapi": "#e07b00"}
SLOWEST = 10
"""How many cases the slowest-cases chart shows: the chart keeps one size however many
cases ran; the table at the end has every case's figures."""
_HEADLINES = 3
"""How many problems and unexpected differences a failing case lists at the top."""


def verdict(result: CaseResult) -> str:
    """A case's result in words. A failure names its unexpected differences and problems;
    a pass says which accepted differences it has, by severity, so a case whose answers
    differ only as the rules allow never reads like a failure:
    "passed — 4 accepted differences (2 additive, 2 expected)"."""
    accepted = [d for d in _all(result) if not is_unexpected(d)]
    counts = _counts(accepted)
    kinds = ", ".join(f"{counts[column]} {column}" for column in COLUMNS if counts[column])
    if result.failed:
        parts = []
        if result.unexpected:
            parts.append(plural(len(result.unexpected), "unexpected difference"))
        if result.problems:
            parts.append(plural(len(result.problems), "problem"))
        also = f" (and {plural(len(accepted), 'accepted difference')}: {kinds})" if kinds else ""
        return "failed — " + ", ".join(parts) + also
    if accepted:
        return f"passed — {plural(len(accepted), 'accepted difference')} ({kinds})"
    return "passed — identical answers"


def _brief(value: Any, kind: str, side: str, limit: int) -> str | None:
    # None: the side has nothing there (a missing field is not a JSON null).
    absent = (side == "candidate" and kind in ("missing", "header_missing")) or (
        side == "legacy" and kind in ("added", "header_added")
    )
    if absent:
        return None
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _headlines(result: CaseResult) -> list[str]:
    lines = list(result.problems)
    for number, d in result.unexpected:
        legacy = _brief(d.legacy, d.kind, "legacy", 60) or "(absent)"
        candidate = _brief(d.candidate, d.kind, "candidate", 60) or "(absent)"
        lines.append(f"step {number}: {d.kind} at {d.path}: {legacy} → {candidate}")
    if len(lines) > _HEADLINES:
        return [*lines[:_HEADLINES], f"… and {len(lines) - _HEADLINES} more"]
    return lines


@dataclass(frozen=True)
class _Row:
    """One difference as the page shows it; None where a side has nothing."""

    step: int
    severity: str
    kind: str
    path: str
    legacy: str | None
    candidate: str | None
    reason: str


@dataclass(frozen=True)
class _Step:
    """One step's two answers, written out side by side."""

    index: int
    endpoint: str
    noise: tuple[str, ...]
    legacy: str
    candidate: str


@dataclass(frozen=True)
class _Case:
    """A case as the page shows it."""

    id: str
    description: str
    failed: bool
    verdict: str
    headlines: list[str]
    problems: tuple[str, ...]
    rows: list[_Row]
    steps: list[_Step]
    counts: dict[str, int]
    latency: list[str]
    detailed: bool
    """Whether the page has a block of details for this case."""
    anchor: str
    """Where a link to this case goes: its details, else its row of the table."""


def _written(outcome: Outcome) -> str:
    if outcome.response is None:
        return f"{outcome.stack}: no answer\n{outcome.error}"
    data = _outcome(outcome)
    lines = [f"{outcome.stack}: HTTP {data['status']}  ({data['elapsed_ms']} ms)"]
    lines += [f"{name}: {value}" for name, value in data["headers"].items()]
    body = data["body"]
    with contextlib.suppress(ValueError):  # not JSON: shown as it came
        body = json.dumps(json.loads(outcome.response.body), indent=2, ensure_ascii=False)
    return "\n".join([*lines, "", body[:_BODY_CHARS]])


def _detailed(result: CaseResult) -> bool:
    return bool(result.problems) or any(d.severity != "ignored" for d in _all(result))


def _anchor(result: CaseResult) -> str:
    return result.case.id if _detailed(result) else "row-" + result.case.id


def _case(result: CaseResult) -> _Case:
    rows = [
        _Row(
            number,
            d.severity,
            d.kind,
            d.path,
            _brief(d.legacy, d.kind, "legacy", 200),
            _brief(d.candidate, d.kind, "candidate", 200),
            d.reason,
        )
        # The unexpected first: they are why a case failed.
        for number, d in sorted(result.differences, key=lambda pair: not is_unexpected(pair[1]))
        if d.severity != "ignored"
    ]
    steps = [
        _Step(
            step.index, step.endpoint, step.noise, _written(step.legacy), _written(step.candidate)
        )
        for step in result.steps
        if result.problems or any(d.severity != "ignored" for d in step.differences)
    ]
    latency = result.latency
    figures = (
        latency.flask.p50,
        latency.flask.p95,
        latency.fastapi.p50,
        latency.fastapi.p95,
        latency.ratio,
    )
    return _Case(
        id=result.case.id,
        description=result.case.description,
        failed=result.failed,
        verdict=verdict(result),
        headlines=_headlines(result) if result.failed else [],
        problems=result.problems,
        rows=rows,
        steps=steps,
        counts=_counts(_all(result)),
        latency=[_ms(value) for value in figures],
        detailed=_detailed(result),
        anchor=_anchor(result),
    )


def _files(results: Sequence[CaseResult]) -> list[tuple[str, int, int, dict[str, int]]]:
    # Per corpus file, then the total: name, cases, failed, counts per column.
    files: dict[str, list[CaseResult]] = {}
    for result in results:
        files.setdefault(result.case.file, []).append(result)
    rows = [*files.items(), ("total", list(results))]
    return [
        (
            name,
            len(group),
            sum(r.failed for r in group),
            _counts(d for r in group for d in _all(r)),
        )
        for name, group in rows
    ]


def latency_charts(report: RunReport) -> list[Markup]:
    """The latency section's two SVG charts, each of one size whatever the number of cases:
    every sample's distribution per stack (a box each), and the `SLOWEST` cases by the
    slower stack's p50 (a p50 bar and a p95 whisker per stack)."""
    samples: dict[str, list[float]] = {
        stack: [s for r in report.results for s in r.samples.get(stack, ())] for stack in STACKS
    }
    distribution = charts.box_chart(
        f"Every request's latency per stack ({plural(len(report.results), 'case')})",
        samples,
        colors=STACK_COLORS,
    )

    def slowness(result: CaseResult) -> float:
        found = [s.p50 for s in (result.latency.flask, result.latency.fastapi) if s.p50]
        return max(found, default=0.0)

    timed = [result for result in report.results if slowness(result) > 0]
    slowest = sorted(timed, key=slowness, reverse=True)[:SLOWEST]
    bars = [
        charts.Bar(
            result.case.id,
            {
                "flask": (result.latency.flask.p50, result.latency.flask.p95),
                "fastapi": (result.latency.fastapi.p50, result.latency.fastapi.p95),
            },
            href="#" + _anchor(result),
        )
        for result in slowest
    ]
    ranked = charts.bar_chart(
        f"The {plural(len(bars), 'slowest case')}",
        bars,
        series=list(STACK_COLORS),
        legend={stack: f"{stack} p50 (whisker: p95)" for stack in STACK_COLORS},
        colors=STACK_COLORS,
    )
    return [distribution, ranked]


def to_html(report: RunReport) -> str:
    """The whole run as one self-contained HTML page: the verdict and the failing cases
    first, then the latency charts, the differences case by case, and every case's row."""
    cases = [_case(result) for result in report.results]
    overall = report.latency
    gate = "not set"
    if report.options.max_latency_ratio is not None:
        gate = report.latency_failure or f"within {report.options.max_latency_ratio:g}"
    context = {
        "report": report,
        "passed": report.exit_code == 0,
        "columns": COLUMNS,
        "files": _files(report.results),
        "failing": [case for case in cases if case.failed],
        "accepted": [case for case in cases if not case.failed and case.detailed],
        "with_accepted": sum(not case.failed and any(case.counts.values()) for case in cases),
        "cases": cases,
        "overall": {
            "flask_p50": _ms(overall.flask.p50),
            "flask_p95": _ms(overall.flask.p95),
            "fastapi_p50": _ms(overall.fastapi.p50),
            "fastapi_p95": _ms(overall.fastapi.p95),
            "ratio": _ms(overall.ratio),
            "samples": overall.flask.count + overall.fastapi.count,
        },
        "gate": gate,
        "gate_failed": report.latency_failure is not None,
        "charts": latency_charts(report),
        "stale": None if report.stale_rules is None else list(report.stale_rules),
        "not_judged": NOT_JUDGED,
    }
    return page.render("parity_tests", "report.html.j2", context)


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
