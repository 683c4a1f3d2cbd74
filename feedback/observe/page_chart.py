"""The page's time-series charts: inline SVG drawn on the server, so they show without JavaScript.

A chart draws its series over the window in view, the water marks or thresholds that apply as
dashed horizontal lines (the same lines the alarms and the gate use), and the events in view as
numbered vertical markers, each kind with its own dash and glyph so they read apart without colour.
A gap longer than a few sampling periods breaks a series rather than joining across it: the
exporter was away, and a straight line would claim it saw something.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence

import msgspec

from easeoff.feedback.levers.events import Event
from easeoff.feedback.observe.console import MARK_COLOURS, SERIES_COLOURS
from easeoff.feedback.observe.markup import El, el
from easeoff.feedback.observe.page_parts import clock, num

MAX_TITLE = 200  # characters of an event in a marker's tooltip
WIDTH, HEIGHT = 760, 170
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 10, 22
KIND_NAMES = {
    "annotation": "annotation (a deploy, a note: easeoff annotate)",
    "switch": "switch (pause, throttle, threshold: on, off, expired)",
    "host": "host taken out / put back",
    "verdict": "verdict flip (held / admitted again)",
    "watermark": "water-mark alarm (firing / resolved)",
}


class Series(msgspec.Struct, frozen=True):
    label: str
    cls: str  # extra class beside `series`
    points: list[tuple[float, float]]


class Mark(msgspec.Struct, frozen=True):
    level: str  # high, low or critical: the line's colour and its class (`watermark-high`, `threshold-low`)
    kind: str  # "watermark" or "threshold"
    value: float


class Marker(msgspec.Struct, frozen=True):
    """An event drawn on the charts: its number in the legend, and what the tooltip says."""

    n: int
    event: Event

    @property
    def kind(self) -> str:
        return self.event.kind if self.event.kind in KIND_NAMES else "other"

    @property
    def title(self) -> str:
        e = self.event
        text = f"{self.n}. {clock(e.at)} {e.kind}: {e.text}"
        text += (f" (by {e.who})" if e.who else "") + (f" — {e.why}" if e.why else "")
        return text if len(text) <= MAX_TITLE else text[: MAX_TITLE - 1] + "…"


class Window(msgspec.Struct, frozen=True):
    """The time span drawn, the markers on it, and the gap beyond which a series is broken rather than joined."""

    start: float
    end: float
    markers: Sequence[Marker] = ()
    max_gap: float = float("inf")
    unmarked: bool = False  # older events in view than the newest MAX_MARKERS, which alone are drawn


class Plot(msgspec.Struct, frozen=True):
    """A chart's drawing area: where a time and a value land on it."""

    window: Window
    width: int
    top: float  # the value at the top edge

    @property
    def w(self) -> int:
        return self.width - LEFT - RIGHT

    @property
    def h(self) -> int:
        return HEIGHT - TOP - BOTTOM

    def x(self, t: float) -> float:
        """A time's x, clamped to the window."""
        start, end = self.window.start, self.window.end
        span = max(end - start, 1e-9)
        return LEFT + (min(max(t, start), end) - start) / span * self.w

    def y(self, v: float) -> float:
        return TOP + self.h - v / self.top * self.h


def chart(
    chart_id: str, label: str, series: Sequence[Series], marks: Sequence[Mark], window: Window, width: int = WIDTH
) -> list[El]:
    """One time-series chart and its legend: the series, the marks as dashed horizontal lines,
    events as numbered vertical markers styled by kind."""
    values = [v for s in series for _, v in s.points] + [m.value for m in marks]
    top = max(values, default=0.0)
    plot = Plot(window, width, top * 1.1 if top > 0 else 1.0)
    drawn = [
        *_axes(plot, label),
        *(_mark_line(plot, mark) for mark in marks),
        *_markers(plot),
        *(_series_path(plot, i, s) for i, s in enumerate(series)),
    ]
    svg = el(
        "svg",
        {
            "id": _id(chart_id),
            "class": "chart",
            "width": width,
            "height": HEIGHT,
            "viewBox": f"0 0 {width} {HEIGHT}",
            "role": "img",
            "aria-label": label,
            "xmlns": "http://www.w3.org/2000/svg",
        },
        drawn,
    )
    return [svg, _legend(series, marks)]


def kind_key(kind: str) -> El:
    """A marker in miniature, for the legend: the kind's line, dash and glyph."""
    return el(
        "svg",
        {"class": f"key event-{kind}", "width": 26, "height": 14, "viewBox": "0 0 26 14", "aria-hidden": "true"},
        el("line", {"x1": 7, "y1": 1, "x2": 7, "y2": 14, "class": f"event event-{kind}"}),
        el("path", {"class": "glyph", "d": _glyph(kind, 7.0, 5.0)}),
    )


def max_gap(times: Sequence[float]) -> float:
    """Three typical sampling periods: more than that between samples means nobody sampled."""
    gaps = [b - a for a, b in itertools.pairwise(times) if b > a]
    return 3 * statistics.median(gaps) if gaps else float("inf")


def _axes(plot: Plot, label: str) -> list[El]:
    """The chart's title, its baseline, the value at the top and at 0, and the window's ends."""
    window = plot.window
    return [
        el("title", None, label),
        el("line", {"x1": LEFT, "y1": TOP + plot.h, "x2": LEFT + plot.w, "y2": TOP + plot.h, "stroke": "#bbb"}),
        el("text", {"x": LEFT - 4, "y": TOP + 9, "text-anchor": "end"}, num(plot.top)),
        el("text", {"x": LEFT - 4, "y": TOP + plot.h, "text-anchor": "end"}, "0"),
        el("text", {"x": LEFT, "y": HEIGHT - 6}, clock(window.start)),
        el("text", {"x": LEFT + plot.w, "y": HEIGHT - 6, "text-anchor": "end"}, clock(window.end)),
    ]


def _mark_line(plot: Plot, mark: Mark) -> El:
    """A water mark or threshold: a dashed line across the chart in its level's colour."""
    at = f"{plot.y(mark.value):.1f}"
    attrs = {
        "class": f"{mark.kind}-{mark.level}",
        "x1": LEFT,
        "y1": at,
        "x2": LEFT + plot.w,
        "y2": at,
        "stroke": MARK_COLOURS[mark.level],
        "stroke-dasharray": "6 4",
    }
    return el("line", attrs, el("title", None, f"{mark.level} {num(mark.value)}"))


def _markers(plot: Plot) -> list[El]:
    """The window's events, each number in the first row where it does not overlap the last one."""
    out: list[El] = []
    rows: list[float] = []  # the x of the last number in each row, so close markers' numbers do not overlap
    for marker in plot.window.markers:
        mx = plot.x(marker.event.at)
        row = next((i for i, last in enumerate(rows) if mx - last >= 14), len(rows))
        if row == len(rows):
            rows.append(mx)
        rows[row] = mx
        out.append(_marker(marker, mx, TOP + 5 + 10 * min(row, 3), TOP, TOP + plot.h))
    return out


def _series_path(plot: Plot, i: int, s: Series) -> El:
    """One series as a path in the i-th colour; its last value rides along for the live script."""
    d = _path([(plot.x(t), plot.y(v)) for t, v in s.points], [t for t, _ in s.points], plot.window.max_gap)
    last = num(s.points[-1][1]) if s.points else None
    attrs = {
        "class": f"series {s.cls}",
        "data-label": s.label,
        "data-last": last,
        "d": d,
        "stroke": SERIES_COLOURS[i % len(SERIES_COLOURS)],
    }
    return el("path", attrs, el("title", None, s.label))


def _marker(marker: Marker, x: float, glyph_y: float, y1: float, y2: float) -> El:
    """One event on a chart: a vertical line in its kind's style, a glyph and its number; hovering
    either shows what happened, who did it and why."""
    at = f"{x:.1f}"
    kind = marker.kind
    return el(
        "g",
        {"class": f"marker event-{kind}", "data-kind": marker.event.kind, "data-n": marker.n},
        el(
            "line",
            {"class": f"event event-{kind}", "x1": at, "y1": y1, "x2": at, "y2": y2},
            el("title", None, marker.title),
        ),
        el(
            "g",
            {"class": "label"},
            el("title", None, marker.title),
            el("line", {"class": "hit", "x1": at, "y1": y1, "x2": at, "y2": y2}),
            el("path", {"class": "glyph", "d": _glyph(kind, x, glyph_y)}),
            el("text", {"class": "event-n", "x": f"{x + 5.5:.1f}", "y": f"{glyph_y + 3.5:.1f}"}, str(marker.n)),
        ),
    )


def _legend(series: Sequence[Series], marks: Sequence[Mark]) -> El:
    items = [
        el("span", None, el("i", {"class": f"swatch c{i % len(SERIES_COLOURS)}"}), s.label)
        for i, s in enumerate(series)
    ]
    items += [
        el(
            "span",
            None,
            el("i", {"class": f"swatch dashed m-{m.level}"}),
            f"{m.kind.replace('watermark', 'water mark')} {m.level} {num(m.value)}",
        )
        for m in marks
    ]
    return el("p", {"class": "legend"}, items)


def _glyph(kind: str, x: float, y: float) -> str:
    """A shape per kind, so markers read apart without colour: ● ■ ◆ ▼ ▲ ✕."""
    shapes = {
        "annotation": f"M{x - 4:.1f},{y:.1f}a4,4 0 1,0 8,0a4,4 0 1,0 -8,0z",
        "switch": f"M{x - 3.5:.1f},{y - 3.5:.1f}h7v7h-7z",
        "host": f"M{x:.1f},{y - 4.5:.1f}l4.5,4.5l-4.5,4.5l-4.5,-4.5z",
        "verdict": f"M{x - 4.5:.1f},{y - 3.5:.1f}h9l-4.5,8z",
        "watermark": f"M{x:.1f},{y - 4.5:.1f}l4.5,8h-9z",
    }
    return shapes.get(kind, f"M{x - 3:.1f},{y - 3:.1f}l6,6m0,-6l-6,6")


def _path(xy: Sequence[tuple[float, float]], times: Sequence[float], max_gap: float) -> str:
    """An SVG path through the points; a gap longer than `max_gap` (the exporter was away) starts a new run."""
    parts = []
    for i, (px, py) in enumerate(xy):
        jump = i == 0 or times[i] - times[i - 1] > max_gap
        parts.append(f"{'M' if jump else 'L'}{px:.1f},{py:.1f}")
    return " ".join(parts)


def _id(text: str) -> str:
    """An element id from a name: whitespace (not allowed in ids) becomes `_` (escaped when serialised)."""
    return "_".join(text.split())
