"""Small inline-SVG charts for the audit report: pure functions, data in, markup out.

No script, no external font or stylesheet: every chart is a self-contained <svg> element
whose colours come from the palette below, with <title> tooltips for the details.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

from tools.forensics.times import chart_label

# Colour-blind-safe (Okabe-Ito).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
WIDTH = 860
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 20, 20, 40


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'aria-label="{escape(label)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">' + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: str, *, anchor: str = "start", size: int = 11) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
        f'font-family="sans-serif">{escape(text)}</text>'
    )


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _empty(label: str, message: str, height: int = 80) -> str:
    return _svg(WIDTH, height, [_text(WIDTH / 2, height / 2, message, anchor="middle")], label)


def _x_axis(t0: float, t1: float, x: Callable[[float], float], y: float) -> list[str]:
    parts = [
        f'<line x1="{MARGIN_LEFT}" y1="{y}" x2="{WIDTH - MARGIN_RIGHT}" y2="{y}" stroke="#444"/>'
    ]
    span = t1 - t0
    for tick in nice_ticks(t0, t1, 6):
        px = x(tick)
        parts.append(f'<line x1="{px:.1f}" y1="{y}" x2="{px:.1f}" y2="{y + 4}" stroke="#444"/>')
        parts.append(_text(px, y + 16, chart_label(tick, span), anchor="middle", size=10))
    return parts


def timeline(
    lanes: Sequence[str],
    bars: Sequence[tuple[int, float, float, str, str]],
    t0: float,
    t1: float,
    colours: dict[str, str],
    label: str,
) -> str:
    """Horizontal bars on a time axis: (lane index, start, end, colour key, tooltip)."""
    if not bars:
        return _empty(label, "no reconciliation runs in this period")
    if t1 <= t0:
        t1 = t0 + 1
    lane_height = 26
    height = MARGIN_TOP + lane_height * len(lanes) + MARGIN_BOTTOM
    plot = WIDTH - MARGIN_LEFT - MARGIN_RIGHT

    def x(t: float) -> float:
        return MARGIN_LEFT + (t - t0) / (t1 - t0) * plot

    body = []
    for i, lane in enumerate(lanes):
        body.append(_text(MARGIN_LEFT - 6, MARGIN_TOP + lane_height * i + 17, lane, anchor="end"))
    for lane, start, end, key, tip in bars:
        left = x(start)
        width = max(x(end) - left, 2.0)
        top = MARGIN_TOP + lane_height * lane + 4
        body.append(
            f'<rect class="bar" x="{left:.1f}" y="{top}" width="{width:.1f}" '
            f'height="{lane_height - 8}" fill="{colours.get(key, "#888")}" rx="2">'
            f"<title>{escape(tip)}</title></rect>"
        )
    body += _x_axis(t0, t1, x, MARGIN_TOP + lane_height * len(lanes) + 2)
    body += _legend(colours, height - 8)
    return _svg(WIDTH, height + 14, body, label)


def _legend(colours: dict[str, str], y: float) -> list[str]:
    parts = []
    x = MARGIN_LEFT
    for key, colour in colours.items():
        parts.append(f'<rect x="{x}" y="{y + 6}" width="10" height="10" fill="{colour}"/>')
        parts.append(_text(x + 14, y + 15, key, size=10))
        x += 24 + 7 * len(key)
    return parts


def step_lines(
    series: dict[str, list[tuple[float, int]]],
    t0: float,
    t1: float,
    label: str,
    empty: str = "no drift in this period",
) -> str:
    """One step line per series of (time, value) points, values held until the next."""
    if not any(series.values()):
        return _empty(label, empty)
    if t1 <= t0:
        t1 = t0 + 1
    height = 260
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = height - MARGIN_TOP - MARGIN_BOTTOM
    top = max((v for points in series.values() for _, v in points), default=1) or 1

    def x(t: float) -> float:
        return MARGIN_LEFT + (t - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return MARGIN_TOP + plot_h - v / top * plot_h

    body = []
    for tick in nice_ticks(0, top, 4):
        if tick != int(tick):
            continue
        py = y(tick)
        body.append(
            f'<line x1="{MARGIN_LEFT}" y1="{py:.1f}" x2="{WIDTH - MARGIN_RIGHT}" y2="{py:.1f}" '
            'stroke="#ddd"/>'
        )
        body.append(_text(MARGIN_LEFT - 6, py + 4, str(int(tick)), anchor="end", size=10))
    colours = {}
    for i, (name, points) in enumerate(sorted(series.items())):
        colour = PALETTE[i % len(PALETTE)]
        colours[name] = colour
        path = []
        last = 0
        px = x(t0)
        path.append(f"M{px:.1f},{y(0):.1f}")
        for t, v in points:
            px = x(t)
            path.append(f"L{px:.1f},{y(last):.1f}L{px:.1f},{y(v):.1f}")
            last = v
        path.append(f"L{x(t1):.1f},{y(last):.1f}")
        body.append(
            f'<path class="series" d="{"".join(path)}" fill="none" stroke="{colour}" '
            f'stroke-width="2"><title>{escape(name)}</title></path>'
        )
    body += _x_axis(t0, t1, x, MARGIN_TOP + plot_h)
    body += _legend(colours, height - 8)
    return _svg(WIDTH, height + 14, body, label)


def stacked_bars(rows: dict[str, dict[str, int]], colours: dict[str, str], label: str) -> str:
    """Horizontal stacked bars: row label -> {segment key: count}."""
    if not rows:
        return _empty(label, "no commands in this period")
    bar_h = 22
    left = 230
    height = MARGIN_TOP + bar_h * len(rows) + MARGIN_BOTTOM
    top = max(sum(segments.values()) for segments in rows.values()) or 1
    plot = WIDTH - left - MARGIN_RIGHT - 40
    body = []
    for i, (name, segments) in enumerate(rows.items()):
        y = MARGIN_TOP + bar_h * i
        body.append(_text(left - 6, y + 15, name, anchor="end"))
        x = float(left)
        for key in colours:
            count = segments.get(key, 0)
            if not count:
                continue
            width = count / top * plot
            body.append(
                f'<rect class="bar" x="{x:.1f}" y="{y + 3}" width="{width:.1f}" '
                f'height="{bar_h - 6}" fill="{colours[key]}">'
                f"<title>{escape(f'{name}: {count} {key}')}</title></rect>"
            )
            x += width
        body.append(_text(x + 4, y + 15, str(sum(segments.values())), size=10))
    body += _legend(colours, height - 8 - 12)
    return _svg(WIDTH, height + 6, body, label)


def histogram(
    values: Sequence[float],
    label: str,
    unit: str = "s",
    bins: int = 12,
    empty: str = "no drift converged in this period",
) -> str:
    """A histogram of finite values (e.g. seconds to converge), with its label as a title."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return _empty(label, empty)
    low, high = 0.0, max(values)
    if high <= low:
        high = low + 1
    edges = nice_ticks(low, high, bins)
    step = edges[1] - edges[0] if len(edges) > 1 else high
    while edges[-1] <= high:
        edges.append(edges[-1] + step)
    counts = [0] * (len(edges) - 1)
    for v in values:
        counts[min(int((v - edges[0]) // step), len(counts) - 1)] += 1
    height = 240
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = height - MARGIN_TOP - MARGIN_BOTTOM
    top = max(counts) or 1
    width = plot_w / len(counts)
    body = []
    for tick in nice_ticks(0, top, 4):
        if tick != int(tick):
            continue
        py = MARGIN_TOP + plot_h - tick / top * plot_h
        body.append(_text(MARGIN_LEFT - 6, py + 4, str(int(tick)), anchor="end", size=10))
    for i, count in enumerate(counts):
        h = count / top * plot_h
        x = MARGIN_LEFT + i * width
        tip = f"{edges[i]:g}-{edges[i + 1]:g} {unit}: {count}"
        body.append(
            f'<rect class="bar" x="{x + 1:.1f}" y="{MARGIN_TOP + plot_h - h:.1f}" '
            f'width="{width - 2:.1f}" height="{h:.1f}" fill="{PALETTE[0]}">'
            f"<title>{escape(tip)}</title></rect>"
        )
        body.append(_text(x, MARGIN_TOP + plot_h + 14, f"{edges[i]:g}", anchor="middle", size=10))
    body.append(
        _text(MARGIN_LEFT + plot_w, MARGIN_TOP + plot_h + 14, f"{edges[-1]:g} {unit}", size=10)
    )
    body.append(
        f'<line x1="{MARGIN_LEFT}" y1="{MARGIN_TOP + plot_h}" x2="{WIDTH - MARGIN_RIGHT}" '
        f'y2="{MARGIN_TOP + plot_h}" stroke="#444"/>'
    )
    return _svg(WIDTH, height, body, label)
