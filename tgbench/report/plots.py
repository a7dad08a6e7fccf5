"""Inline SVG plots for the report: points with error bars, lines and fitted curves on log or linear axes.

No plotting library and no JavaScript: each plot is one self-contained `<svg>` string, so the report stays a
single file that renders offline. Every piece of text is escaped here, because the report inserts the SVG
as trusted markup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from markupsafe import Markup, escape

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#D55E00", "#0072B2", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999933")


def colours(labels: Sequence[str]) -> dict[str, str]:
    """A distinct colour per label, in the order given (the reference first, then the grid's order): the
    Okabe-Ito palette, then evenly spaced hues for a grid with more labels than it has colours."""
    import colorsys

    out: dict[str, str] = {}
    for label in labels:
        if label in out:
            continue
        i = len(out)
        if i < len(PALETTE):
            out[label] = PALETTE[i]
        else:  # golden-ratio hue steps never repeat a colour
            r, g, b = colorsys.hls_to_rgb(((i - len(PALETTE)) * 0.618034 + 0.05) % 1.0, 0.42, 0.75)
            out[label] = f"#{int(r * 255):02X}{int(g * 255):02X}{int(b * 255):02X}"
    return out


@dataclass
class Series:
    """One thing drawn in a plot.

    Attributes:
        name: Legend text.
        colour: CSS colour.
        points: Markers (x, y).
        errors: Vertical error bars (x, low, high).
        line: A polyline (x, y), e.g. a fitted curve or a training curve.
        dashed: Draw `line` dashed.
        legend: Show in the legend (repeated seeds of one label show once).
        rings: Points to mark with an open ring (e.g. the chosen learning rate of a sweep).
        dots: Small markers drawn just right of their x (e.g. each seed beside the mean of a sweep's LR).
    """

    name: str
    colour: str
    points: list[tuple[float, float]] = field(default_factory=list)
    errors: list[tuple[float, float, float]] = field(default_factory=list)
    line: list[tuple[float, float]] = field(default_factory=list)
    dashed: bool = False
    legend: bool = True
    rings: list[tuple[float, float]] = field(default_factory=list)
    dots: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Band:
    """A shaded horizontal band (e.g. the paper's range), or a reference line when low == high."""

    low: float
    high: float
    label: str
    colour: str = "#888888"


def _finite(v: float | None) -> bool:
    return v is not None and isinstance(v, int | float) and math.isfinite(v)


def fmt_si(value: float, digits: int = 3) -> str:
    """Compact tick text: 2M, 500k, 1.5G, 3T (FLOPs), 0.25."""
    for scale, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """`fmt_si` labels with as many digits as it takes to tell every tick apart (10.2k 10.4k, not 10k 10k)."""
    labels = [fmt_si(t) for t in ticks]
    for digits in range(4, 10):
        if len(set(labels)) == len(labels):
            break
        labels = [fmt_si(t, digits) for t in ticks]
    return labels


def _drawable(s: Series, xlog: bool, ylog: bool) -> bool:
    """Whether anything of `s` is drawn (a point, a line of two points, or an error bar)."""
    return (any(_usable(x, y, xlog, ylog) for x, y in [*s.points, *s.dots])
            or sum(_usable(x, y, xlog, ylog) for x, y in s.line) >= 2
            or any(_usable(x, lo, xlog, ylog) and _usable(x, hi, xlog, ylog) for x, lo, hi in s.errors))


def legend_entries(series: Sequence[Series], xlog: bool = True, ylog: bool = False) -> list[Series]:
    """What the legend shows: one entry per legend name, styled as the first of its series that is drawn;
    a name none of whose series is drawn has no entry (the legend describes only what is drawn)."""
    names = [s.name for s in series if s.legend]
    entries: dict[str, Series] = {}
    for s in series:
        if s.name in names and s.name not in entries and _drawable(s, xlog, ylog):
            entries[s.name] = s
    return sorted(entries.values(), key=lambda s: names.index(s.name))


def log_ticks(lo: float, hi: float, max_ticks: int = 8) -> list[float]:
    """Ticks at 1, 2, 5 (or denser) times powers of ten inside [lo, hi]; at least two whenever possible."""
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    best: list[float] = []
    for mantissas in ((1,), (1, 2, 5), (1, 2, 3, 5), (1, 2, 4, 6, 8), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0**e for e in range(first, last + 1) for m in mantissas if lo <= m * 10.0**e <= hi]
        if len(ticks) > max_ticks:
            step = math.ceil(len(ticks) / max_ticks)
            ticks = ticks[::step]
        best = ticks
        if len(ticks) >= 3:
            break
    return best if len(best) >= 2 else linear_ticks(lo, hi)


def linear_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round-number ticks (steps of 1, 2, 2.5 or 5 times a power of ten) inside [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / target
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    count = int(math.floor((hi - start) / step + 1e-9)) + 1
    return [round(start + i * step, 12) for i in range(count)]


class _Axis:
    """Maps data values to pixels, linearly or in log10."""

    def __init__(self, values: list[float], log: bool, pixel_lo: float, pixel_hi: float, pad: float = 0.05):
        self.log = log
        values = [v for v in values if _finite(v) and (v > 0 or not log)]
        lo, hi = min(values), max(values)
        if log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi - lo < 1e-12:
            half = 0.1 if log else max(abs(lo) * 0.05, 0.05)
            lo, hi = lo - half, hi + half
        span = hi - lo
        self.lo, self.hi = lo - pad * span, hi + pad * span
        self.pixel_lo, self.pixel_hi = pixel_lo, pixel_hi

    def __call__(self, value: float) -> float:
        t = math.log10(value) if self.log else value
        return self.pixel_lo + (t - self.lo) / (self.hi - self.lo) * (self.pixel_hi - self.pixel_lo)

    def ticks(self) -> list[float]:
        lo, hi = (10 ** self.lo, 10 ** self.hi) if self.log else (self.lo, self.hi)
        return log_ticks(lo, hi) if self.log else linear_ticks(lo, hi)


def _usable(x: float | None, y: float | None, xlog: bool, ylog: bool) -> bool:
    return _finite(x) and _finite(y) and (x > 0 or not xlog) and (y > 0 or not ylog)


def plot(series: Sequence[Series], *, title: str, xlabel: str, ylabel: str, xlog: bool = True,
         ylog: bool = False, bands: Sequence[Band] = (), width: int = 560, height: int = 320, note: str = "",
         legend_inside: bool = False) -> Markup:
    """One plot as an inline `<svg>` (with a "no data" message when nothing is plottable).

    Args:
        series: What to draw; non-finite or (on log axes) non-positive values are skipped.
        title: Plot title (also the SVG's accessible name).
        xlabel: X-axis label.
        ylabel: Y-axis label.
        xlog: Log10 x axis.
        ylog: Log10 y axis.
        bands: Horizontal shaded bands / reference lines.
        width: Width in pixels (the SVG scales down to its container).
        height: Height in pixels.
        note: Small text under the x-axis label.
        legend_inside: Draw the legend in the plot's bottom-left corner instead of beside it (small plots of
            falling curves, which leave that corner empty).
    """
    xs: list[float] = []
    ys: list[float] = []
    for s in series:
        for x, y in [*s.points, *s.line, *s.rings, *s.dots]:
            if _usable(x, y, xlog, ylog):
                xs.append(x)
                ys.append(y)
        for x, lo, hi in s.errors:
            for y in (lo, hi):
                if _usable(x, y, xlog, ylog):
                    xs.append(x)
                    ys.append(y)
    legend = legend_entries(series, xlog, ylog)
    legend_w = min(200, 34 + 7 * max((len(s.name) for s in legend), default=0)) if legend else 0
    left, right, top, bottom = 62, 14 + (0 if legend_inside else legend_w), 34, 52 + (14 if note else 0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
             f"<title>{escape(title)}</title>",
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
             f'<text x="{left}" y="20" class="ptitle">{escape(title)}</text>']
    if not xs:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="pempty">'
                     f"no data to plot yet</text></svg>")
        return Markup("".join(parts))
    band_ys = [v for b in bands for v in (b.low, b.high) if _finite(v) and (v > 0 or not ylog)]
    ax = _Axis(xs, xlog, left, width - right)
    ay = _Axis(ys + band_ys, ylog, height - bottom, top)
    x0, x1, y0, y1 = left, width - right, height - bottom, top
    for b in bands:
        if not (_finite(b.low) and _finite(b.high)):
            continue
        lo, hi = ay(b.low), ay(b.high)
        if abs(lo - hi) < 1:
            parts.append(f'<line x1="{x0}" x2="{x1}" y1="{lo:.1f}" y2="{lo:.1f}" stroke="{escape(b.colour)}" '
                         f'stroke-dasharray="2 3"/>')
        else:
            parts.append(f'<rect x="{x0}" y="{hi:.1f}" width="{x1 - x0}" height="{lo - hi:.1f}" '
                         f'fill="{escape(b.colour)}" fill-opacity="0.15"/>')
        # reference lines are labelled on the left, bands on the right, so the two never overlap
        anchor = f'x="{x0 + 4}"' if abs(lo - hi) < 1 else f'x="{x1 - 4}" text-anchor="end"'
        parts.append(f'<text {anchor} y="{hi - 3:.1f}" class="pband">{escape(b.label)}</text>')
    x_ticks = ax.ticks()
    for t, text in zip(x_ticks, tick_labels(x_ticks), strict=True):
        px = ax(t)
        parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{y1}" y2="{y0}" class="pgrid"/>'
                     f'<text x="{px:.1f}" y="{y0 + 15}" text-anchor="middle" class="ptick">'
                     f"{text}</text>")
    y_ticks = ay.ticks()
    for t, text in zip(y_ticks, tick_labels(y_ticks), strict=True):
        py = ay(t)
        parts.append(f'<line x1="{x0}" x2="{x1}" y1="{py:.1f}" y2="{py:.1f}" class="pgrid"/>'
                     f'<text x="{x0 - 6}" y="{py + 4:.1f}" text-anchor="end" class="ptick">'
                     f"{text}</text>")
    parts.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" class="pframe"/>')
    scale = " (log)"
    parts.append(f'<text x="{(x0 + x1) / 2}" y="{y0 + 34}" text-anchor="middle" class="plabel">'
                 f"{escape(xlabel)}{scale if xlog else ''}</text>")
    if note:
        parts.append(f'<text x="{x0}" y="{y0 + 49}" class="pnote">{escape(note)}</text>')
    parts.append(f'<text transform="translate(14 {(y0 + y1) / 2}) rotate(-90)" text-anchor="middle" '
                 f'class="plabel">'
                 f"{escape(ylabel)}{scale if ylog else ''}</text>")
    for s in series:
        colour = escape(s.colour)
        line = [(ax(x), ay(y)) for x, y in s.line if _usable(x, y, xlog, ylog)]
        if len(line) >= 2:
            dash = ' stroke-dasharray="6 4"' if s.dashed else ""
            d = " ".join(f"{'M' if i == 0 else 'L'}{px:.1f},{py:.1f}" for i, (px, py) in enumerate(line))
            parts.append(f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="1.6"{dash}/>')
        for x, lo, hi in s.errors:
            if _usable(x, lo, xlog, ylog) and _usable(x, hi, xlog, ylog):
                px = ax(x)
                parts.append(f'<path d="M{px:.1f},{ay(lo):.1f} V{ay(hi):.1f} M{px - 3:.1f},{ay(lo):.1f} h6 '
                             f'M{px - 3:.1f},{ay(hi):.1f} h6" stroke="{colour}" stroke-width="1.2" '
                             f'fill="none"/>')
        for x, y in s.rings:
            if _usable(x, y, xlog, ylog):
                parts.append(f'<circle cx="{ax(x):.1f}" cy="{ay(y):.1f}" r="7" fill="none" stroke="{colour}" '
                             f'stroke-width="1.8" class="pring"><title>{escape(s.name)}: chosen, {x:.3g}</title>'
                             "</circle>")
        for x, y in s.dots:
            if _usable(x, y, xlog, ylog):
                parts.append(f'<circle cx="{ax(x) + 9:.1f}" cy="{ay(y):.1f}" r="1.8" fill="{colour}" '
                             f'fill-opacity="0.75" class="pdot"><title>{escape(s.name)}: {fmt_si(x)}, {y:.4g}'
                             "</title></circle>")
        for x, y in s.points:
            if _usable(x, y, xlog, ylog):
                parts.append(f'<circle cx="{ax(x):.1f}" cy="{ay(y):.1f}" r="3.4" fill="{colour}" '
                             f'stroke="#ffffff" stroke-width="0.8"><title>{escape(s.name)}: {fmt_si(x)}, '
                             f"{y:.4g}</title></circle>")
    box_top = y0 - 17 * len(legend) - 5
    if legend and legend_inside:
        parts.append(f'<rect x="{x0 + 1}" y="{box_top}" width="{legend_w - 1}" '
                     f'height="{17 * len(legend) + 4}" fill="#ffffff" fill-opacity="0.85"/>')
    for i, s in enumerate(legend):
        ly = (box_top + 11 if legend_inside else top + 10) + 17 * i
        lx = (x0 + 6) if legend_inside else (width - legend_w + 4)
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        parts.append(f'<line x1="{lx}" x2="{lx + 20}" y1="{ly}" y2="{ly}" stroke="{escape(s.colour)}" '
                     f'stroke-width="2"{dash}/><text x="{lx + 26}" y="{ly + 4}" class="plegend">'
                     f"{escape(s.name)}</text>")
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass
class ForestRow:
    """One row of a forest plot: an estimate with its 95% interval (None: no interval)."""

    label: str
    estimate: float | None
    low: float | None = None
    high: float | None = None
    pooled: bool = False  # drawn as a diamond below a rule


FOREST_STYLE = ("<style>.ptitle{font:600 13px sans-serif}.ptick,.plabel{font:11px sans-serif;fill:#4b5563}"
                ".pnote{font:italic 11px sans-serif;fill:#6b7280}.pgrid{stroke:#eceef1}</style>")


def forest_plot(rows: Sequence[ForestRow], *, title: str, xlabel: str, subtitle: str = "", note: str = "",
                width: int = 640, colour: str = "#0072B2", standalone: bool = False) -> Markup:
    """A forest plot as an inline `<svg>`: one row per estimate (a dot and its interval), a zero line, and
    the pooled estimate as a diamond under a rule. `standalone` embeds the styles, for an .svg file on its own.
    """
    row_h, top, left, right = 24, 34 + (16 if subtitle else 0), 150, 24
    height = top + row_h * len(rows) + 48 + (14 if note else 0)
    values = [v for r in rows for v in (r.estimate, r.low, r.high) if _finite(v)] + [0.0]
    lo, hi = min(values), max(values)
    pad = 0.08 * (hi - lo or 1.0)
    ax = _Axis([lo - pad, hi + pad], False, left, width - right)
    x0, x1 = left, width - right
    y_axis = top + row_h * len(rows) + 6
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot forest" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
             FOREST_STYLE if standalone else "", f"<title>{escape(title)}</title>",
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
             f'<text x="8" y="20" class="ptitle">{escape(title)}</text>',
             f'<text x="8" y="36" class="pnote">{escape(subtitle)}</text>' if subtitle else ""]
    ticks = ax.ticks()
    for t, text in zip(ticks, tick_labels(ticks), strict=True):
        px = ax(t)
        parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{top}" y2="{y_axis}" class="pgrid"/>'
                     f'<text x="{px:.1f}" y="{y_axis + 15}" text-anchor="middle" class="ptick">{text}</text>')
    zero = ax(0.0)
    parts.append(f'<line x1="{zero:.1f}" x2="{zero:.1f}" y1="{top - 4}" y2="{y_axis}" stroke="#1d2330" '
                 'stroke-width="1"/>')
    for i, row in enumerate(rows):
        cy = top + row_h * i + row_h / 2
        if row.pooled:
            parts.append(f'<line x1="{x0}" x2="{x1}" y1="{cy - row_h / 2:.1f}" y2="{cy - row_h / 2:.1f}" '
                         'stroke="#9ca3af"/>')
        parts.append(f'<text x="{left - 8}" y="{cy + 4:.1f}" text-anchor="end" class="plabel">'
                     f"{escape(row.label)}</text>")
        if _finite(row.low) and _finite(row.high):
            parts.append(f'<line x1="{ax(row.low):.1f}" x2="{ax(row.high):.1f}" y1="{cy:.1f}" y2="{cy:.1f}" '
                         f'stroke="{escape(colour)}" stroke-width="2"/>')
        if _finite(row.estimate):
            px = ax(row.estimate)
            interval = f" [{row.low:+.3f}, {row.high:+.3f}]" if _finite(row.low) and _finite(row.high) else ""
            tip = f"<title>{escape(row.label)}: {row.estimate:+.3f}{interval}</title>"
            if row.pooled:
                parts.append(f'<path d="M{px - 7:.1f},{cy:.1f} L{px:.1f},{cy - 6:.1f} L{px + 7:.1f},{cy:.1f} '
                             f'L{px:.1f},{cy + 6:.1f} Z" fill="{escape(colour)}">{tip}</path>')
            else:
                parts.append(f'<circle cx="{px:.1f}" cy="{cy:.1f}" r="4" fill="{escape(colour)}">{tip}</circle>')
    parts.append(f'<text x="{(x0 + x1) / 2}" y="{y_axis + 32}" text-anchor="middle" class="plabel">'
                 f"{escape(xlabel)}</text>")
    if note:
        parts.append(f'<text x="8" y="{y_axis + 47}" class="pnote">{escape(note)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
