"""Line charts drawn on the server as SVG: no charting library, nothing to load, works offline.

Server-side SVG was chosen over a vendored JavaScript library because the data is already
on the server, each chart is a few dozen points, and the page then needs no script to show
it (the overview's small script only swaps in a fresh fragment). Every text is escaped;
numbers are formatted here, so nothing a job carries reaches the markup unescaped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH = 560
HEIGHT = 180
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 10, 12, 34


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value))) / 10 if value >= 1 else 1.0
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return value


def _number(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value / 1000:.3g} s" if value >= 1000 else f"{value:.3g} ms"
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.2g}"


def _clock(moment: float, span_seconds: float) -> str:
    fmt = "%H:%M" if span_seconds <= 86400 else "%d %b"
    return time.strftime(fmt, time.gmtime(moment))


def line_chart(
    title: str,
    xs: Sequence[float],
    lines: Sequence[tuple[str, str, Sequence[float]]],
    *,
    unit: str = "",
    chart_id: str = "",
) -> Markup:
    """A chart of ``lines`` ((label, css class, values per x)) over the times ``xs`` (UTC seconds).

    Each point is a ``circle`` with its value in ``data-value`` (and a tooltip), so tests and
    people can read the numbers back.
    """
    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = HEIGHT - _TOP - _BOTTOM
    top = _nice_max(max((v for _, _, values in lines for v in values), default=0.0))
    n = max(len(xs), 1)
    span = (xs[-1] - xs[0]) if len(xs) > 1 else 60.0

    def x_at(i: int) -> float:
        return _LEFT + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y_at(v: float) -> float:
        return _TOP + plot_h - plot_h * (v / top)

    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for k in range(5):
        value = top * k / 4
        y = y_at(value)
        parts.append(f'<line class="grid" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(_number(value, unit))}</text>"
        )
    if xs:
        for i in sorted({0, (n - 1) // 2, n - 1}):
            anchor = "start" if i == 0 and n > 1 else "end" if i == n - 1 and n > 1 else "middle"
            parts.append(
                f'<text class="tick" x="{x_at(i):.1f}" y="{HEIGHT - _BOTTOM + 16}" text-anchor="{anchor}">'
                f"{escape(_clock(xs[i], span))}</text>"
            )
    for label, css, values in lines:
        coords = " ".join(f"{x_at(i):.1f},{y_at(v):.1f}" for i, v in enumerate(values))
        parts.append(f'<g class="series {escape(css)}" data-label="{escape(label)}">')
        parts.append(f'<polyline points="{coords}"/>')
        for i, v in enumerate(values):
            if v:
                stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(xs[i]))
                parts.append(
                    f'<circle cx="{x_at(i):.1f}" cy="{y_at(v):.1f}" r="2.5" data-value="{v:g}">'
                    f"<title>{escape(label)} {escape(_number(v, unit))} at {stamp}</title></circle>"
                )
        parts.append("</g>")
    x = _LEFT
    for label, css, _ in lines:
        parts.append(f'<rect class="swatch {escape(css)}" x="{x}" y="{HEIGHT - 12}" width="10" height="10"/>')
        parts.append(f'<text class="legend" x="{x + 14}" y="{HEIGHT - 3}">{escape(label)}</text>')
        x += 24 + 7 * len(label)
    parts.append("</svg>")
    return Markup("".join(parts))


def sparkbar(parts: Sequence[tuple[str, int]], width: int = 160, height: int = 10) -> Markup:
    """A one-line stacked bar of (css class, count), e.g. a collapsed group's states."""
    total = sum(c for _, c in parts) or 1
    out = [f'<svg class="sparkbar" viewBox="0 0 {width} {height}" width="{width}" height="{height}">']
    x = 0.0
    for css, count in parts:
        w = width * count / total
        if w > 0:
            out.append(f'<rect class="{escape(css)}" x="{x:.1f}" y="0" width="{w:.1f}" height="{height}"/>')
        x += w
    out.append("</svg>")
    return Markup("".join(out))


def sparkline(
    lines: Sequence[tuple[str, str, Sequence[float]]], width: int = 180, height: int = 28
) -> Markup:
    """A small chart without axes: one polyline per (label, css class, values) that has any, sharing one
    scale; a grey baseline when none has."""
    top = max((v for _, _, values in lines for v in values), default=0.0) or 1.0
    out = [f'<svg class="sparkline" viewBox="0 0 {width} {height}" width="{width}" height="{height}">']
    drawn = 0
    for label, css, values in lines:
        total = sum(values)
        if not total:  # a flat zero line in a colour would read as a count (red as failures)
            continue
        n = max(len(values) - 1, 1)
        coords = " ".join(
            f"{width * i / n:.1f},{height - 2 - (height - 4) * v / top:.1f}" for i, v in enumerate(values)
        )
        out.append(
            f'<polyline class="{escape(css)}" points="{coords}" data-total="{total:g}">'
            f"<title>{escape(label)}: {total:,.0f}</title></polyline>"
        )
        drawn += 1
    if not drawn:
        out.append(
            f'<polyline class="none" points="0,{height - 2} {width},{height - 2}" data-total="0">'
            "<title>nothing ran</title></polyline>"
        )
    out.append("</svg>")
    return Markup("".join(out))
