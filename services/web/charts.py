"""Charts as inline SVG, rendered on the server.

No chart library and no script: the pages carry a strict Content-Security-Policy and
bank networks have no CDN. Colours come from classes styled in app.css (a `style`
attribute would be blocked by the CSP), and every chart has a <title> and a <desc>
so a screen reader gets the numbers too.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

_ids = itertools.count(1)

LABEL_WIDTH = 190
VALUE_WIDTH = 110
BAR_HEIGHT = 22
BAR_GAP = 8


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    marker: float | None = None  # e.g. the policy threshold for this metric
    series: int = 0  # colour class
    note: str = ""  # printed after the value, e.g. a count


def format_value(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if unit == "%":
        return f"{value:.1f}%"
    if unit == "$":
        return f"${value:.6f}" if abs(value) < 0.01 else f"${value:,.4f}"
    if unit == "ms":
        return f"{value:,.0f} ms"
    if float(value).is_integer():
        return f"{int(value):,}{(' ' + unit) if unit else ''}"
    return f"{value:.3f}{(' ' + unit) if unit else ''}"


def _svg_open(width: int, height: int, title: str, desc: str, css: str) -> tuple[str, str]:
    n = next(_ids)
    tid, did = f"chart-{n}-title", f"chart-{n}-desc"
    head = (f'<svg class="chart {css}" role="img" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" aria-labelledby="{tid}" aria-describedby="{did}" xmlns="http://www.w3.org/2000/svg">'
            f'<title id="{tid}">{escape(title)}</title><desc id="{did}">{escape(desc)}</desc>')
    return head, "</svg>"


def _nice_max(value: float) -> float:
    """Round the axis maximum up to 1, 2 or 5 times a power of ten."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        candidate = step * 10 ** exponent
        if candidate >= value:
            return float(candidate)
    return float(10 ** (exponent + 1))


def bar_chart(bars: Sequence[Bar], *, title: str, unit: str = "", max_value: float | None = None,
              width: int = 600) -> Markup:
    """Horizontal bars with the value printed at the end; optional threshold markers."""
    if not bars:
        return empty_chart(title)
    top = max_value if max_value is not None else _nice_max(
        max([b.value for b in bars] + [b.marker or 0 for b in bars]))
    plot = width - LABEL_WIDTH - VALUE_WIDTH
    height = len(bars) * (BAR_HEIGHT + BAR_GAP) + BAR_GAP
    desc = "; ".join(f"{b.label}: {format_value(b.value, unit)}" + (f" ({b.note})" if b.note else "")
                     + (f" (threshold {format_value(b.marker, unit)})" if b.marker is not None else "")
                     for b in bars)
    head, tail = _svg_open(width, height, title, desc, "bar-chart")
    parts = [head]
    for i, b in enumerate(bars):
        y = BAR_GAP + i * (BAR_HEIGHT + BAR_GAP)
        length = 0.0 if top <= 0 else max(0.0, min(1.0, b.value / top)) * plot
        parts.append(f'<text class="label" x="{LABEL_WIDTH - 8}" y="{y + BAR_HEIGHT * 0.7:.1f}" '
                     f'text-anchor="end">{escape(_clip(b.label, 30))}</text>')
        parts.append(f'<rect class="track" x="{LABEL_WIDTH}" y="{y}" width="{plot}" height="{BAR_HEIGHT}"/>')
        parts.append(f'<rect class="bar series-{b.series % 6}" x="{LABEL_WIDTH}" y="{y}" width="{length:.1f}" '
                     f'height="{BAR_HEIGHT}"/>')
        if b.marker is not None and top > 0:
            mx = LABEL_WIDTH + max(0.0, min(1.0, b.marker / top)) * plot
            parts.append(f'<line class="marker" x1="{mx:.1f}" x2="{mx:.1f}" y1="{y - 3}" '
                         f'y2="{y + BAR_HEIGHT + 3}"/>')
        parts.append(f'<text class="value" x="{LABEL_WIDTH + plot + 6}" y="{y + BAR_HEIGHT * 0.7:.1f}">'
                     f'{escape(format_value(b.value, unit))}{escape(" · " + b.note if b.note else "")}</text>')
    parts.append(tail)
    return Markup("".join(parts))


def grouped_bar_chart(groups: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], *, title: str,
                      unit: str = "", width: int = 600) -> Markup:
    """One row of bars per group, one bar per series, with a legend."""
    bars: list[Bar] = []
    if not groups or not series:
        return empty_chart(title)
    for g, group in enumerate(groups):
        for s, (name, values) in enumerate(series):
            bars.append(Bar(f"{group} · {name}" if len(groups) > 1 else name, values[g], series=s))
    chart = bar_chart(bars, title=title, unit=unit, width=width)
    return chart + legend([name for name, _ in series])


def legend(names: Sequence[str]) -> Markup:
    items = "".join(f'<li><span class="swatch series-{i % 6}" aria-hidden="true"></span>{escape(n)}</li>'
                    for i, n in enumerate(names))
    return Markup(f'<ul class="legend">{items}</ul>')


def line_chart(x_labels: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], *, title: str,
               unit: str = "", width: int = 600, height: int = 220, max_value: float | None = None) -> Markup:
    """Lines over a shared x axis (e.g. days); None leaves a gap."""
    points_exist = any(v is not None for _, values in series for v in values)
    if not x_labels or not points_exist:
        return empty_chart(title)
    left, right, top_pad, bottom = 64, 16, 12, 40
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    top = max_value if max_value is not None else _nice_max(
        max(v for _, values in series for v in values if v is not None))
    n = len(x_labels)

    def x(i: int) -> float:
        return left + (plot_w / 2 if n == 1 else i * plot_w / (n - 1))

    def y(v: float) -> float:
        return top_pad + plot_h - (0.0 if top <= 0 else min(1.0, v / top)) * plot_h

    desc = "; ".join(f"{name}: " + ", ".join(f"{lbl} {format_value(v, unit)}" for lbl, v in zip(x_labels, values))
                     for name, values in series)
    head, tail = _svg_open(width, height, title, desc, "line-chart")
    parts = [head]
    for frac in (0.0, 0.5, 1.0):
        gy = top_pad + plot_h - frac * plot_h
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{gy:.1f}" y2="{gy:.1f}"/>')
        parts.append(f'<text class="axis" x="{left - 6}" y="{gy + 4:.1f}" text-anchor="end">'
                     f'{escape(format_value(top * frac, unit))}</text>')
    step = max(1, math.ceil(n / 8))  # at most ~8 x labels stay readable
    for i in range(0, n, step):
        parts.append(f'<text class="axis" x="{x(i):.1f}" y="{height - bottom + 18}" text-anchor="middle">'
                     f'{escape(x_labels[i])}</text>')
    for s, (_, values) in enumerate(series):
        segment: list[str] = []
        for i, v in enumerate(values):
            if v is None:
                if len(segment) > 1:
                    parts.append(f'<polyline class="line series-{s % 6}" points="{" ".join(segment)}"/>')
                segment = []
                continue
            segment.append(f"{x(i):.1f},{y(v):.1f}")
            parts.append(f'<circle class="dot series-{s % 6}" cx="{x(i):.1f}" cy="{y(v):.1f}" r="3"/>')
        if len(segment) > 1:
            parts.append(f'<polyline class="line series-{s % 6}" points="{" ".join(segment)}"/>')
    parts.append(tail)
    return Markup("".join(parts)) + legend([name for name, _ in series])


def histogram(values: Sequence[float], *, title: str, unit: str = "", bins: int = 10, width: int = 600,
              height: int = 200) -> Markup:
    """Counts of values in equal-width bins."""
    if not values:
        return empty_chart(title)
    lo, hi = min(values), max(values)
    if hi == lo:
        hi = lo + 1.0
    size = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / size))] += 1
    left, bottom, top_pad = 40, 36, 10
    plot_w, plot_h = width - left - 10, height - bottom - top_pad
    top = max(counts)
    bar_w = plot_w / bins
    desc = "; ".join(f"{format_value(lo + i * size, unit)}–{format_value(lo + (i + 1) * size, unit)}: {c}"
                     for i, c in enumerate(counts))
    head, tail = _svg_open(width, height, title, desc, "histogram")
    parts = [head, f'<text class="axis" x="{left - 6}" y="{top_pad + 10}" text-anchor="end">{top}</text>',
             f'<text class="axis" x="{left - 6}" y="{top_pad + plot_h}" text-anchor="end">0</text>']
    for i, c in enumerate(counts):
        h = 0 if top == 0 else c / top * plot_h
        parts.append(f'<rect class="bar series-0" x="{left + i * bar_w + 1:.1f}" y="{top_pad + plot_h - h:.1f}" '
                     f'width="{max(bar_w - 2, 1):.1f}" height="{h:.1f}"/>')
    for i in (0, bins // 2, bins):
        parts.append(f'<text class="axis" x="{left + i * bar_w:.1f}" y="{height - bottom + 16}" '
                     f'text-anchor="middle">{escape(format_value(lo + i * size, unit))}</text>')
    parts.append(tail)
    return Markup("".join(parts))


def empty_chart(title: str) -> Markup:
    return Markup(f'<p class="chart-empty" role="note">{escape(title)}: no data in this range.</p>')


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
