"""Comparisons, flags and the renderings, from hand-made measurements."""

from __future__ import annotations

import json
import re
from pathlib import Path
from xml.etree import ElementTree

from load_test.report import format_table, render_html, write_html, write_json
from load_test.results import Bench, Measurement, comparisons, flag_client_bound
from load_test.stats import Latency, Summary


def _m(target: str, load: float, rps: float, **extra: object) -> Measurement:
    summary = Summary(
        measured=int(rps * 10) + 2,
        ok=int(rps * 10),
        errors={"status": 2, "timeout": 0, "connection": 0},
        statuses={503: 2},
        elapsed_s=10.0,
        rps=rps,
        latency=Latency(100.0 + load, 150.0 + load, 300.0 + load, 400.0 + load, 120.0),
    )
    counts: dict[str, object] = {"sent": summary.measured + 3, "warmup": 3}
    return Measurement(target, f"{target} description", "closed", load, summary, **(counts | extra))  # type: ignore[arg-type]


MEASUREMENTS = [
    _m("flask-gunicorn-sync", 64, 20.0),
    _m("flask-gunicorn-threads", 64, 40.0),
    _m("flask-a2wsgi", 64, 45.0),
    _m("fastapi-uvicorn", 64, 90.0),
    _m("gateway-50", 64, 60.0),
    _m("fastapi-uvicorn", 256, 100.0),
    _m("flask-gunicorn-sync", 256, 25.0),
]
SVG = "{http://www.w3.org/2000/svg}"
CEILING = [_m("client-ceiling", 64, 1000.0), _m("client-ceiling", 256, 110.0)]


def test_comparisons_pair_fastapi_with_each_flask_and_the_gateway_with_its_halves() -> None:
    assert comparisons(MEASUREMENTS) == [
        {"load": 64, "kind": "fastapi/flask", "numerator": "fastapi-uvicorn",
         "denominator": "flask-gunicorn-sync", "ratio": 4.5},
        {"load": 64, "kind": "fastapi/flask", "numerator": "fastapi-uvicorn",
         "denominator": "flask-gunicorn-threads", "ratio": 2.25},
        {"load": 64, "kind": "gateway/halves", "gateway": "gateway-50", "gateway_rps": 60.0,
         "flask_a2wsgi_rps": 45.0, "fastapi_rps": 90.0, "over_mean_of_halves": 0.89},
        {"load": 256, "kind": "fastapi/flask", "numerator": "fastapi-uvicorn",
         "denominator": "flask-gunicorn-sync", "ratio": 4.0},
    ]  # fmt: skip


def test_targets_near_the_ceiling_at_their_load_are_flagged() -> None:
    flagged = {(m.target, m.load): m.client_bound for m in flag_client_bound(MEASUREMENTS, CEILING)}
    assert [key for key, bound in flagged.items() if bound] == [("fastapi-uvicorn", 256)]
    assert flag_client_bound(MEASUREMENTS, []) == MEASUREMENTS


def _bench() -> Bench:
    cpu = {"client": 0.05, "target": 0.9, "dynamodb": 0.8, "agent": 0.1}
    return Bench(
        config={"agent_latency_ms": 200},
        machine={"cores": 2},
        ceiling=CEILING,
        measurements=[*flag_client_bound(MEASUREMENTS, CEILING), _m("x", 64, 1.0, cpu=cpu)],
        wall_s=12.0,
    )


def test_the_table_has_a_row_per_run_with_notes_and_the_ratios() -> None:
    lines = format_table(_bench()).splitlines()
    rows = [line.split() for line in lines[2:12]]
    assert [(r[0], r[1], r[3]) for r in rows] == [
        ("client-ceiling", "64", "1000.0"),
        ("client-ceiling", "256", "110.0"),
        ("flask-gunicorn-sync", "64", "20.0"),
        ("flask-gunicorn-threads", "64", "40.0"),
        ("flask-a2wsgi", "64", "45.0"),
        ("fastapi-uvicorn", "64", "90.0"),
        ("gateway-50", "64", "60.0"),
        ("fastapi-uvicorn", "256", "100.0"),
        ("flask-gunicorn-sync", "256", "25.0"),
        ("x", "64", "1.0"),
    ]
    # p50..max, then sent = warmup + ok + status + timeout + conn
    assert rows[2][4:14] == ["164", "214", "364", "464", "205", "3", "200", "2", "0", "0"]
    assert "CLIENT-BOUND" in lines[9] and "CLIENT-BOUND" not in lines[7]
    assert "5/90/80/10" in lines[11] and "DYNAMODB EMULATOR BUSY (80% CPU)" in lines[11]
    assert "-/-/-/-" in lines[2] and "BUSY" not in lines[2]
    assert "503x2" in lines[2]
    text = "\n".join(lines)
    assert "at 64: fastapi-uvicorn / flask-gunicorn-threads throughput = 2.25" in text
    assert "at 64: gateway-50 60.0 req/s vs its halves" in text


def test_a_run_without_a_successful_answer_shows_no_latency_and_says_so() -> None:
    summary = Summary(
        measured=40,
        ok=0,
        errors={"status": 0, "timeout": 40, "connection": 0},
        statuses={},
        elapsed_s=1.0,
        rps=0.0,
        latency=Latency(),
    )
    hung = Measurement("hung", "given", "closed", 8, summary, sent=48, warmup=8)
    bench = Bench(config={}, machine={}, ceiling=[], measurements=[hung])
    row = format_table(bench).splitlines()[2].split()
    assert row[:14] == ["hung", "8", "users", "0.0", "-", "-", "-", "-", "48", "8", "0", "0",
                        "40", "0"]  # fmt: skip
    assert "NO SUCCESSFUL ANSWERS" in format_table(bench).splitlines()[2]
    assert "NO SUCCESSFUL ANSWERS" in render_html(bench)


def test_the_html_page_is_self_contained_with_its_charts(tmp_path: Path) -> None:
    page = write_html(_bench(), tmp_path).read_text()
    charts = re.findall(r"<svg.*?</svg>", page, re.DOTALL)
    assert len(charts) == 3
    for chart in charts:  # well-formed XML, one line per target (the ceiling is not drawn)
        assert len(ElementTree.fromstring(chart).findall(f"{SVG}polyline")) == 6
    assert "<script" not in page and "<link" not in page
    assert re.findall(r"(?:src|href)=", page) == []
    assert set(re.findall(r"https?://[^\s\"']+", page)) == {"http://www.w3.org/2000/svg"}
    assert "gateway-50" in page and "CLIENT-BOUND" in page


def test_names_and_settings_are_escaped_in_the_page() -> None:
    hostile = '<script>alert("&")</script>'
    bench = Bench(
        config={"note": hostile},
        machine={},
        ceiling=[],
        measurements=[_m(hostile, 64, 10.0), _m("plain", 64, 5.0)],
    )
    page = render_html(bench)
    assert "<script" not in page
    # In the table, the notes, the charts' legends and tooltips, and the settings.
    assert page.count("&lt;script&gt;") >= 4
    for chart in re.findall(r"<svg.*?</svg>", page, re.DOTALL):
        tree = ElementTree.fromstring(chart)
        texts = ["".join(t.itertext()) for t in tree.iter(f"{SVG}text")]
        assert hostile in texts  # drawn as the text it is


def test_json_round_trips_the_figures(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "results.json"
    write_json(_bench(), path)
    data = json.loads(path.read_text())
    assert [m["target"] for m in data["ceiling"]] == ["client-ceiling", "client-ceiling"]
    assert data["measurements"][0]["summary"]["latency"]["p99_ms"] == 364.0
    assert data["measurements"][0]["summary"]["statuses"] == {"503": 2}
    assert len(data["comparisons"]) == 4
