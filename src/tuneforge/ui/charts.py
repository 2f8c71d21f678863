"""Line charts as inline SVG, drawn on the server: no JavaScript library, nothing fetched.

A chart is plain markup, so it renders instantly, prints, survives "save page as", and a test
can check its data (each series is one <polyline> with `data-series` and `data-points`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
MAX_POINTS = 1500
"""Longer series are thinned (evenly, keeping the last point): a browser draws 1500 points per
line instantly, and a 640-pixel chart cannot show more."""


@dataclass
class Series:
    label: str
    points: Sequence[tuple[float, float]]
    color: str | None = None
    dashed: bool = False
    markers: bool = False


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (steps of 1, 2 or 5 x 10^k)."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = start
    while value <= hi + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value += step
    return ticks


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.0e}".replace("e-0", "e-").replace("e+0", "e")
    return f"{value:.4g}"


def _thin(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return list(points)
    stride = len(points) / (MAX_POINTS - 1)
    kept = [points[int(i * stride)] for i in range(MAX_POINTS - 1)]
    return [*kept, points[-1]]


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 640,
    height: int = 260,
    chart_id: str | None = None,
) -> Markup:
    """An SVG line chart of `series`; a short note instead when no series has a finite point."""
    esc = html.escape
    drawn = [
        Series(
            s.label,
            _thin([(x, y) for x, y in s.points if math.isfinite(x) and math.isfinite(y)]),
            s.color or PALETTE[i % len(PALETTE)],
            s.dashed,
            s.markers,
        )
        for i, s in enumerate(series)
    ]
    drawn = [s for s in drawn if s.points]
    ident = f' id="{esc(chart_id)}"' if chart_id else ""
    if not drawn:
        return Markup(f'<p class="empty"{ident}>{esc(title)}: nothing logged yet.</p>')
    xs = [x for s in drawn for x, _ in s.points]
    ys = [y for s in drawn for _, y in s.points]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(ys), max(ys)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    if y_hi == y_lo:
        pad = abs(y_lo) * 0.1 or 1.0
        y_lo, y_hi = y_lo - pad, y_hi + pad
    else:
        pad = (y_hi - y_lo) * 0.05
        y_lo, y_hi = y_lo - pad, y_hi + pad

    left, right, top, bottom = 62, 12, 28, 38
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    def py(y: float) -> float:
        return top + (1 - (y - y_lo) / (y_hi - y_lo)) * plot_h

    parts = [
        f'<svg class="chart"{ident} role="img" aria-label="{esc(title)}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{esc(title)}</title>",
        f'<text class="chart-title" x="{left}" y="16">{esc(title)}</text>',
    ]
    for tick in nice_ticks(y_lo, y_hi):
        y = py(tick)
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(tick)}</text>'
        )
    for tick in nice_ticks(x_lo, x_hi, 6):
        x = px(tick)
        parts.append(
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}"/>'
            f'<text class="tick" x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{_fmt(tick)}</text>'
        )
    parts.append(
        f'<rect class="frame" x="{left}" y="{top}" width="{plot_w}" height="{plot_h}"/>'
        f'<text class="axis" x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">{esc(x_label)}</text>'
        f'<text class="axis" transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{esc(y_label)}</text>'
    )
    for s in drawn:
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in s.points)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        parts.append(
            f'<polyline class="series" data-series="{esc(s.label)}" data-points="{len(s.points)}" '
            f'fill="none" stroke="{s.color}" stroke-width="1.8"{dash} points="{coords}">'
            f"<title>{esc(s.label)}</title></polyline>"
        )
        if s.markers or len(s.points) <= 30:
            for x, y in s.points:
                parts.append(
                    f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.8" fill="{s.color}">'
                    f"<title>{esc(s.label)} at {_fmt(x)}: {y:.5g}</title></circle>"
                )
    if len(drawn) > 1 or drawn[0].label:
        legend_x = width - right - 8
        # A translucent backing keeps the labels readable where they cross a line.
        longest = max(len(s.label) for s in drawn)
        box_w = min(plot_w, 34 + 6.2 * longest)
        parts.append(
            f'<rect class="legend-box" x="{legend_x - box_w:.1f}" y="{top + 3}" '
            f'width="{box_w:.1f}" height="{15 * len(drawn) + 4}" fill="#fff" fill-opacity="0.8"/>'
        )
        for i, s in enumerate(drawn):
            y = top + 14 + 15 * i
            dash = ' stroke-dasharray="6 4"' if s.dashed else ""
            parts.append(
                f'<line x1="{legend_x - 22}" x2="{legend_x - 4}" y1="{y - 4}" y2="{y - 4}" '
                f'stroke="{s.color}" stroke-width="2"{dash}/>'
                f'<text class="legend" x="{legend_x - 26}" y="{y}" text-anchor="end">{esc(s.label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))
