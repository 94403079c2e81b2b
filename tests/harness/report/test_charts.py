"""The charts: well-formed SVG (parsed back with ElementTree), one series, box or bar per
input as promised, every text escaped, and sizes that do not grow with the data."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from markupsafe import Markup

from harness.report.charts import Bar, bar_chart, box_chart, line_chart

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("&")</script>'


def _svg(markup: str) -> ET.Element:
    tree = ET.fromstring(markup)
    assert tree.tag == f"{SVG}svg"
    return tree


def _texts(tree: ET.Element) -> list[str]:
    return [node.text or "" for node in tree.iter(f"{SVG}text")]


def _tooltips(tree: ET.Element) -> list[str]:
    return [node.text or "" for node in tree.iter(f"{SVG}title")]


def _height(markup: str) -> float:
    return float(_svg(markup).get("height", "nan"))


# --- line_chart ---------------------------------------------------------------------------


@pytest.mark.parametrize("log_y", [False, True])
def test_a_line_chart_has_one_polyline_per_series_and_one_dot_per_point(log_y: bool) -> None:
    series = {
        "a": [(256, 1000.0), (64, 10.0), (1024, 20.0)],
        "b": [(64, 5.0)],
        "c": [(64, 1.0), (1024, 2.0)],
    }
    chart = line_chart("t", series, x_label="users", y_label="ms", log_y=log_y)
    assert isinstance(chart, Markup)
    tree = _svg(chart)
    lines = tree.findall(f"{SVG}polyline")
    assert [len(line.get("points", "").split()) for line in lines] == [3, 1, 2]
    # Drawn in x order whatever the order given: the points' x coordinates rise.
    xs = [float(pair.split(",")[0]) for pair in lines[0].get("points", "").split()]
    assert xs == sorted(xs) and len(set(xs)) == 3
    assert len(tree.findall(f"{SVG}circle")) == 6
    assert {"a", "b", "c", "t", "users", "ms"} <= set(_texts(tree))
    assert "a at 256: 1000" in _tooltips(tree)


def test_a_line_chart_colours_series_as_asked_and_from_the_palette_otherwise() -> None:
    chart = line_chart("t", {"a": [(1, 1.0)], "b": [(1, 2.0)]}, x_label="", y_label="",
                       colors={"b": "#123456"})  # fmt: skip
    strokes = [line.get("stroke") for line in _svg(chart).findall(f"{SVG}polyline")]
    assert strokes == ["#1f77b4", "#123456"]


def test_a_log_chart_draws_zero_at_its_floor_and_a_linear_one_starts_at_zero() -> None:
    log = _svg(line_chart("z", {"a": [(1, 0.0), (2, 10.0)]}, x_label="", y_label="", log_y=True))
    assert len(log.findall(f"{SVG}circle")) == 2
    linear = _svg(line_chart("z", {"a": [(1, 0.0), (2, 30.0)]}, x_label="", y_label=""))
    ticks = [t for t in _texts(linear) if t.replace(".", "").isdigit()]
    assert ticks[:5] == ["0", "12.5", "25", "37.5", "50"]  # 30 rounded up to a nice 50


def test_without_points_a_chart_says_so() -> None:
    for chart in (
        line_chart("empty", {}, x_label="x", y_label="y"),
        line_chart("empty", {"a": []}, x_label="x", y_label="y"),
        box_chart("empty", {"flask": []}),
        bar_chart("empty", [], series=["flask"]),
    ):
        tree = _svg(chart)
        assert _texts(tree) == ["empty", "no data"]


# --- box_chart ----------------------------------------------------------------------------


def test_a_box_chart_draws_a_box_per_group_from_its_percentiles() -> None:
    samples = [float(n) for n in range(1, 101)]
    tree = _svg(box_chart("latency", {"flask": samples, "fastapi": [2.0, 4.0]}))
    groups = tree.findall(f"{SVG}g")
    assert len(groups) == 2
    boxes = [group.findall(f"{SVG}rect") for group in groups]
    assert [len(found) for found in boxes] == [1, 1]
    # The legend comes first, then the groups' rows: flask above fastapi.
    assert _texts(tree)[1:3] == ["flask", "fastapi"]
    flask = _tooltips(tree)[0]
    assert flask == (
        "flask: 100 samples; min 1.00, p5 5.95, p25 25.75, p50 50.50, p75 75.25, "
        "p95 95.05, max 100.00 ms"
    )
    assert "p50 50.50  p95 95.05 ms" in _texts(tree)


def test_a_box_chart_is_as_tall_for_ten_samples_as_for_ten_thousand() -> None:
    few = box_chart("t", {"flask": [1.0] * 10, "fastapi": [2.0] * 10})
    many = box_chart("t", {"flask": [1.0 + n % 97 for n in range(10_000)], "fastapi": [2.0]})
    assert _height(few) == _height(many)
    # A group more is a row more.
    three = box_chart("t", {"flask": [1.0], "fastapi": [2.0], "gateway": [3.0]})
    assert _height(three) > _height(few)


def test_a_group_without_samples_gets_a_row_saying_so() -> None:
    tree = _svg(box_chart("t", {"flask": [1.0, 2.0], "fastapi": []}))
    assert len(tree.findall(f"{SVG}g")) == 1
    assert "no samples" in _texts(tree)


# --- bar_chart ----------------------------------------------------------------------------


def test_a_bar_chart_draws_a_bar_per_value_and_a_whisker_per_larger_upper() -> None:
    bars = [
        Bar("one", {"flask": (10.0, 20.0), "fastapi": (5.0, 5.0)}, href="#one"),
        Bar("two", {"flask": (1.0, None), "fastapi": (None, None)}),
    ]
    tree = _svg(bar_chart("slow", bars, series=["flask", "fastapi"],
                          legend={"flask": "flask p50"}))  # fmt: skip
    legend_swatches = 2
    assert len(tree.findall(f".//{SVG}rect")) == legend_swatches + 3
    assert [a.get("href") for a in tree.iter(f"{SVG}a")] == ["#one"]
    tooltips = _tooltips(tree)
    assert "one: flask p50 10.00 / 20.00 ms" in tooltips
    assert "one: fastapi 5.00 / 5.00 ms" in tooltips
    assert "two: flask p50 1.00 ms" in tooltips
    # One whisker: the other bars reach their upper value already, or have none.
    whiskers = [
        line
        for line in tree.iter(f"{SVG}line")
        if line.get("y1") == line.get("y2") and line.get("stroke") != "#e3e3e3"
    ]
    assert len(whiskers) == 1


def test_a_bar_chart_grows_with_its_bars_only() -> None:
    def chart(count: int) -> str:
        bars = [Bar(f"case {n}", {"a": (float(n + 1), float(n + 2))}) for n in range(count)]
        return bar_chart("t", bars, series=["a"])

    assert _height(chart(10)) == _height(chart(10))
    assert _height(chart(11)) > _height(chart(10))


def test_a_long_label_is_shortened_and_whole_in_its_tooltip() -> None:
    label = "sessions/" + "x" * 80
    tree = _svg(bar_chart("t", [Bar(label, {"a": (1.0, 2.0)})], series=["a"]))
    shown = [t for t in _texts(tree) if t.startswith("sessions/")]
    assert len(shown) == 1 and len(shown[0]) == 42 and shown[0].endswith("\u2026")
    assert label in _tooltips(tree)


# --- escaping -----------------------------------------------------------------------------


def test_every_text_a_chart_writes_is_escaped() -> None:
    charts = [
        line_chart(HOSTILE, {HOSTILE: [(1, 1.0), (2, 2.0)]}, x_label=HOSTILE, y_label=HOSTILE),
        box_chart(HOSTILE, {HOSTILE: [1.0, 2.0]}, unit=HOSTILE),
        bar_chart(HOSTILE, [Bar(HOSTILE, {HOSTILE: (1.0, 2.0)}, href='#"&<')],
                  series=[HOSTILE], unit=HOSTILE),
    ]  # fmt: skip
    for chart in charts:
        assert "<script" not in chart and "&lt;script&gt;" in chart
        tree = _svg(chart)  # parses: nothing broke out of a text or an attribute
        assert HOSTILE in _texts(tree)
        assert tree.get("aria-label") == HOSTILE
    link = next(_svg(charts[2]).iter(f"{SVG}a"))
    assert link.get("href") == '#"&<'
