"""The one chart module of the reports: inline SVG, built as an element tree and serialised
by `xml.etree.ElementTree`, which escapes every text and attribute it writes, so a label
such as `<script>` or `"&` is drawn as text and never read as markup.

Three charts, each with its legend at the top, under its title:

- `line_chart`: one line per series over shared x values (the load test: throughput and
  latency against concurrency);
- `box_chart`: one box per group of samples on a log scale (the parity suite: each stack's
  latency distribution), as tall for ten samples as for a million;
- `bar_chart`: one row per `Bar`, a bar to each series' value and a whisker to its upper
  value, on a log scale (the parity suite: the slowest cases, p50 bars and p95 whiskers).

Every chart returns `markupsafe.Markup`, so a template inserts it as it is.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup

from harness.report.stats import percentile

SVG_NAMESPACE = "http://www.w3.org/2000/svg"
PALETTE: tuple[str, ...] = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
)
"""Series colours, in order, for series a caller gives no colour."""

FONT = "system-ui,-apple-system,Segoe UI,sans-serif"
_CHAR_PX = 5.9
"""About how wide one character of the 11 px legend and label text is: enough to lay out
legends and labels without measuring text (there is no layout engine here)."""
_LABEL_CHARS = 42

BOX_FRACTIONS = (0.05, 0.25, 0.5, 0.75, 0.95)
"""The percentiles a box is drawn from: whiskers p5 to p95, box p25 to p75, a line at p50."""


class _Svg:
    """An SVG document under construction: `add` appends an element; attribute names are
    given with `_` for `-` (`text_anchor`), numbers are written with one decimal."""

    def __init__(self, width: float, height: float, title: str) -> None:
        self.root = ET.Element(
            "svg",
            {
                "xmlns": SVG_NAMESPACE,
                "width": _number(width),
                "height": _number(height),
                "viewBox": f"0 0 {_number(width)} {_number(height)}",
                "role": "img",
                "aria-label": title,
                "font-family": FONT,
                "font-size": "11",
            },
        )

    def add(
        self,
        tag: str,
        text: str | None = None,
        parent: ET.Element | None = None,
        **attributes: str | float,
    ) -> ET.Element:
        element = ET.SubElement(
            self.root if parent is None else parent,
            tag,
            {name.rstrip("_").replace("_", "-"): _value(v) for name, v in attributes.items()},
        )
        element.text = text
        return element

    def markup(self) -> Markup:
        # ElementTree escapes &, < and > in text, and quotes too in attributes.
        return Markup(ET.tostring(self.root, encoding="unicode"))  # noqa: S704


def _number(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _value(value: str | float) -> str:
    return value if isinstance(value, str) else _number(value)


def _colors(names: Sequence[str], given: Mapping[str, str] | None) -> dict[str, str]:
    return {
        name: (given or {}).get(name) or PALETTE[index % len(PALETTE)]
        for index, name in enumerate(names)
    }


def _short(text: str, limit: int = _LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class _Legend:
    """Legend entries laid out left to right under the title, wrapping into rows; an entry
    is (swatch "line", "box" or "note", colour, text)."""

    row = 16.0

    def __init__(
        self, entries: Sequence[tuple[str, str, str]], left: float, width: float, top: float = 34
    ) -> None:
        self.left, self.top = left, top
        self.rows: list[list[tuple[float, tuple[str, str, str]]]] = []
        x = width
        for entry in entries:
            size = 26 + len(entry[2]) * _CHAR_PX + 16
            if x + size > width and (x or not self.rows):
                self.rows.append([])
                x = 0.0
            self.rows[-1].append((x, entry))
            x += size

    @property
    def bottom(self) -> float:
        """Where the legend's last row ends."""
        return self.top + self.row * len(self.rows) - 6

    def draw(self, svg: _Svg) -> None:
        for number, row in enumerate(self.rows):
            y = self.top + self.row * number
            for x, (kind, color, text) in row:
                at = self.left + x
                if kind == "line":
                    svg.add(
                        "line", x1=at, y1=y - 4, x2=at + 20, y2=y - 4, stroke=color, stroke_width=2
                    )
                elif kind == "box":
                    svg.add("rect", x=at + 4, y=y - 9, width=12, height=10, fill=color)
                svg.add("text", text, x=at + (0 if kind == "note" else 26), y=y, fill="#444")


@dataclass(frozen=True)
class _LogScale:
    """Positions on a log10 axis from `low` to `high` (powers of ten around the values)."""

    low: float
    high: float
    start: float
    length: float

    @classmethod
    def around(cls, values: Sequence[float], start: float, length: float) -> _LogScale:
        positive = [v for v in values if v > 0] or [1.0]
        low = 10.0 ** math.floor(math.log10(min(positive)))
        high = max(10.0 ** math.ceil(math.log10(max(positive))), low * 10)
        return cls(low, high, start, length)

    def __call__(self, value: float) -> float:
        value = min(max(value, self.low), self.high)
        share = math.log10(value / self.low) / math.log10(self.high / self.low)
        return self.start + self.length * share

    @property
    def ticks(self) -> list[float]:
        """Every power of ten from `low` to `high`."""
        first, last = round(math.log10(self.low)), round(math.log10(self.high))
        return [10.0**exponent for exponent in range(first, last + 1)]


def _nice(value: float) -> float:
    # The smallest of 1, 2, 2.5, 5 times a power of ten at or above `value`.
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0):
        if value <= step * magnitude:
            return step * magnitude
    return 10.0 * magnitude


def _no_data(title: str, width: float) -> Markup:
    svg = _Svg(width, 44, title)
    svg.add("text", title, x=10, y=18, font_weight="bold", font_size=13)
    svg.add("text", "no data", x=10, y=36, fill="#666")
    return svg.markup()


def line_chart(
    title: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    x_label: str,
    y_label: str,
    log_y: bool = False,
    colors: Mapping[str, str] | None = None,
    width: float = 760,
) -> Markup:
    """An SVG line chart: one polyline and one legend entry per series, a dot with a
    tooltip per point. The x values of all series are spread evenly in ascending order (the
    loads measured, not a continuous scale); y is linear from 0, or log10 with `log_y`
    (values at or below 0 are drawn at the axis floor). Without a point: a "no data" chart."""
    points = [point for values in series.values() for point in values]
    if not points:
        return _no_data(title, width)
    palette = _colors(list(series), colors)
    left, right, plot_h, bottom = 70.0, 20.0, 260.0, 46.0
    legend = _Legend([("line", palette[n], n) for n in series], 10, width - 10 - right)
    top = legend.bottom + 14
    height = top + plot_h + bottom
    plot_w = width - left - right
    xs = sorted({x for x, _ in points})
    ys = [y for _, y in points]

    def sx(x: float) -> float:
        if len(xs) == 1:
            return left + plot_w / 2
        return left + plot_w * xs.index(x) / (len(xs) - 1)

    if log_y:
        scale = _LogScale.around(ys, 0, plot_h)
        ticks = scale.ticks

        def sy(y: float) -> float:
            return top + plot_h - scale(y)
    else:
        y_high = _nice(max(ys))
        ticks = [y_high * i / 4 for i in range(5)]

        def sy(y: float) -> float:
            return top + plot_h * (1 - (y / y_high if y_high else 0.0))

    svg = _Svg(width, height, title)
    svg.add("text", title, x=10, y=18, font_weight="bold", font_size=13)
    legend.draw(svg)
    for tick in ticks:
        y = sy(tick)
        svg.add("line", x1=left, y1=y, x2=left + plot_w, y2=y, stroke="#e3e3e3")
        svg.add("text", f"{tick:g}", x=left - 6, y=y + 4, text_anchor="end")
    svg.add("line", x1=left, y1=top + plot_h, x2=left + plot_w, y2=top + plot_h, stroke="#333")
    svg.add("line", x1=left, y1=top, x2=left, y2=top + plot_h, stroke="#333")
    for x in xs:
        svg.add("text", f"{x:g}", x=sx(x), y=top + plot_h + 16, text_anchor="middle")
    svg.add("text", x_label, x=left + plot_w / 2, y=height - 8, text_anchor="middle", font_size=12)
    middle = top + plot_h / 2
    svg.add(
        "text",
        y_label,
        x=16,
        y=middle,
        text_anchor="middle",
        font_size=12,
        transform=f"rotate(-90 16 {_number(middle)})",
    )
    for name, values in series.items():
        color = palette[name]
        ordered = sorted(values)
        path = " ".join(f"{_number(sx(x))},{_number(sy(y))}" for x, y in ordered)
        svg.add("polyline", fill="none", stroke=color, stroke_width=2, points=path)
        for x, y in ordered:
            dot = svg.add("circle", cx=sx(x), cy=sy(y), r=3, fill=color)
            svg.add("title", f"{name} at {x:g}: {y:g}", parent=dot)
    return svg.markup()


def _axis(svg: _Svg, scale: _LogScale, top: float, bottom: float, unit: str) -> None:
    for tick in scale.ticks:
        x = scale(tick)
        svg.add("line", x1=x, y1=top, x2=x, y2=bottom, stroke="#e3e3e3")
        svg.add("text", f"{tick:g} {unit}", x=x, y=bottom + 14, text_anchor="middle")


def _frame(
    title: str,
    width: float,
    items: list[tuple[str, str, str]],
    margins: tuple[float, float],
    height: float,
    values: Sequence[float],
    unit: str,
) -> tuple[_Svg, _LogScale, float]:
    """A row chart's frame: the title, the legend of `items` at the top, a log scale over
    `values` between the `(left, right)` margins and its axis, around `height` pixels of
    rows; the picture, the scale and where the first row starts."""
    left, right = margins
    legend = _Legend(items, left, width - left - right)
    top = legend.bottom + 12
    bottom = top + height
    scale = _LogScale.around(values, left, width - left - right)
    svg = _Svg(width, bottom + 24, title)
    svg.add("text", title, x=10, y=18, font_weight="bold", font_size=13)
    legend.draw(svg)
    _axis(svg, scale, top, bottom, unit)
    return svg, scale, top


def box_chart(
    title: str,
    groups: Mapping[str, Sequence[float]],
    *,
    unit: str = "ms",
    colors: Mapping[str, str] | None = None,
    width: float = 760,
) -> Markup:
    """An SVG box plot on a log10 scale, one row per group of samples: whiskers from p5 to
    p95, a box from p25 to p75, a line at p50, dots at the minimum and maximum, and the p50
    and p95 written at the end of the row. Its height depends on the number of groups only,
    never on the number of samples. Groups without samples get a row saying so."""
    stats = {name: _five(samples) for name, samples in groups.items()}
    values = [v for numbers in stats.values() if numbers for v in (*numbers[0], *numbers[1])]
    if not values:
        return _no_data(title, width)
    palette = _colors(list(groups), colors)
    label_w = max(len(name) for name in groups) * _CHAR_PX + 16
    left, right, row = label_w, 150.0, 30.0
    note = "whiskers p5\u2013p95, box p25\u2013p75, line p50, dots min and max"
    items = [("box", palette[name], name) for name in groups] + [("note", "", note)]
    svg, scale, top = _frame(title, width, items, (left, right), row * len(groups), values, unit)
    for index, (name, numbers) in enumerate(stats.items()):
        middle = top + row * index + row / 2
        svg.add("text", name, x=left - 8, y=middle + 4, text_anchor="end")
        if not numbers:
            svg.add("text", "no samples", x=left + 6, y=middle + 4, fill="#666")
            continue
        (p5, p25, p50, p75, p95), (low, high), count = numbers
        color = palette[name]
        group = svg.add("g")
        svg.add(
            "title",
            f"{name}: {count} samples; min {low:.2f}, p5 {p5:.2f}, p25 {p25:.2f}, "
            f"p50 {p50:.2f}, p75 {p75:.2f}, p95 {p95:.2f}, max {high:.2f} {unit}",
            parent=group,
        )
        svg.add(
            "line",
            parent=group,
            x1=scale(p5),
            y1=middle,
            x2=scale(p95),
            y2=middle,
            stroke=color,
            stroke_width=1.5,
        )
        for end in (p5, p95):
            svg.add(
                "line",
                parent=group,
                x1=scale(end),
                y1=middle - 6,
                x2=scale(end),
                y2=middle + 6,
                stroke=color,
                stroke_width=1.5,
            )
        svg.add(
            "rect",
            parent=group,
            x=scale(p25),
            y=middle - 9,
            width=max(scale(p75) - scale(p25), 1.5),
            height=18,
            fill=color,
            fill_opacity=0.35,
            stroke=color,
        )
        svg.add(
            "line",
            parent=group,
            x1=scale(p50),
            y1=middle - 9,
            x2=scale(p50),
            y2=middle + 9,
            stroke=color,
            stroke_width=3,
        )
        for end in (low, high):
            svg.add("circle", parent=group, cx=scale(end), cy=middle, r=2.5, fill=color)
        svg.add("text", f"p50 {p50:.2f}  p95 {p95:.2f} {unit}", x=width - right + 10, y=middle + 4)
    return svg.markup()


def _five(samples: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, float], int] | None:
    ordered = sorted(samples)
    if not ordered:
        return None
    found = [percentile(ordered, fraction) for fraction in BOX_FRACTIONS]
    return tuple(v for v in found if v is not None), (ordered[0], ordered[-1]), len(ordered)


@dataclass(frozen=True)
class Bar:
    """One row of a `bar_chart`: its label, per series a (value, upper) pair (a bar to the
    value, a whisker on to the upper one; None where there is none) and an optional link
    (such as `#case-id`) the label points to."""

    label: str
    values: Mapping[str, tuple[float | None, float | None]]
    href: str | None = None


def bar_chart(
    title: str,
    bars: Sequence[Bar],
    *,
    series: Sequence[str],
    unit: str = "ms",
    legend: Mapping[str, str] | None = None,
    colors: Mapping[str, str] | None = None,
    width: float = 760,
) -> Markup:
    """An SVG bar chart on a log10 scale, one row per `Bar` and within it one thin bar per
    series (in `series` order) with a whisker to its upper value. `legend` words a series'
    legend entry (its name by default). The height grows with `len(bars)` only: callers
    choose how many rows to show."""
    values = [
        v
        for bar in bars
        for name in series
        for v in bar.values.get(name, (None, None))
        if v is not None
    ]
    if not values:
        return _no_data(title, width)
    palette = _colors(series, colors)
    label_w = min(max(len(bar.label) for bar in bars), _LABEL_CHARS) * _CHAR_PX + 16
    left, right = label_w, 30.0
    thickness, gap = 7.0, 8.0
    row = thickness * len(series) + gap
    words = legend or {}
    items = [("box", palette[name], words.get(name, name)) for name in series]
    svg, scale, top = _frame(title, width, items, (left, right), row * len(bars), values, unit)
    for index, bar in enumerate(bars):
        y = top + row * index + gap / 2
        holder = svg.root if bar.href is None else svg.add("a", href=bar.href)
        label = svg.add(
            "text", _short(bar.label), parent=holder, x=left - 8, y=y + row / 2, text_anchor="end"
        )
        svg.add("title", bar.label, parent=label)
        for number, name in enumerate(series):
            value, upper = bar.values.get(name, (None, None))
            if value is None:
                continue
            color, at = palette[name], y + thickness * number
            rect = svg.add(
                "rect",
                x=left,
                y=at,
                width=max(scale(value) - left, 1),
                height=thickness - 1,
                fill=color,
            )
            tip = f"{bar.label}: {words.get(name, name)} {value:.2f}"
            svg.add(
                "title",
                tip + ("" if upper is None else f" / {upper:.2f}") + f" {unit}",
                parent=rect,
            )
            if upper is not None and upper > value:
                middle = at + (thickness - 1) / 2
                svg.add(
                    "line", x1=scale(value), y1=middle, x2=scale(upper), y2=middle, stroke=color
                )
    return svg.markup()
