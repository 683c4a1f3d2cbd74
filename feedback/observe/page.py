"""The exporter's page at `/`: queue depth, deferrals and signals over the last hours, with events.

Rendered on the server as plain HTML with inline SVG — no JavaScript, no external assets —
so it works on a jump host, behind a strict proxy and in a headless browser alike, and a
refresh is one Redis read of the history list. Water marks and thresholds come from the
config the exporter runs with, so the lines drawn are the ones the alarms and the gate use.
Every piece of text is escaped; nothing secret (Redis password, MySQL URLs) is shown.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

from redis import Redis

from easeoff.feedback import clock
from easeoff.feedback.config import Config, Thresholds
from easeoff.feedback.levers import events as event_log
from easeoff.feedback.levers.events import Event
from easeoff.feedback.levers.switches import read_switches
from easeoff.feedback.observe import unknown_resources
from easeoff.feedback.observe.history import Sample, read_history
from easeoff.feedback.observe.unknown_resources import UnknownResource

DEFAULT_HOURS = 3.0
MAX_HOURS = 24.0
RECENT_EVENTS = 30
WIDTH, HEIGHT = 760, 170
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 10, 22
SERIES_COLOURS = ("#1f77b4", "#7f7f7f", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
MARK_COLOURS = {"high": "#d62728", "low": "#e6a700", "critical": "#7b2cbf"}


@dataclass(frozen=True)
class Series:
    label: str
    cls: str  # extra class beside `series`
    points: list[tuple[float, float]]


@dataclass(frozen=True)
class Mark:
    level: str  # high, low or critical: the line's colour and its class (`watermark-high`, `threshold-low`)
    kind: str  # "watermark" or "threshold"
    value: float


@dataclass(frozen=True)
class Window:
    """The time span drawn, and the gap beyond which a series is broken rather than joined."""

    start: float
    end: float
    events: Sequence[Event] = ()
    max_gap: float = float("inf")


def render_page(redis: Redis, config: Config, hours: float, now: float | None = None) -> str:
    """Read the history and the events of the last `hours` and render the page."""
    now = clock.now() if now is None else now
    start = now - hours * 3600
    samples = read_history(redis, start)
    window_events = event_log.between(redis, start, now)
    recent = event_log.recent(redis, RECENT_EVENTS)
    config = read_switches(redis).apply(config, now)  # ops' live threshold overrides are what holds
    unknown = unknown_resources.read(redis, config.resources)
    return render(config, samples, window_events, recent, now, hours, unknown)


def render(
    config: Config,
    samples: Sequence[Sample],
    events: Sequence[Event],
    recent: Sequence[Event],
    now: float,
    hours: float,
    unknown: Sequence[UnknownResource] = (),
) -> str:
    """The page from plain data: pure, so it is tested without a server."""
    times = [s.t for s in samples]
    # A history younger than the window is drawn across the whole width, not squeezed to its right edge.
    earliest = min([*times[:1], *(e.at for e in events[:1])], default=now - hours * 3600)
    start = max(now - hours * 3600, earliest - max(1.0, 0.02 * (now - earliest)))
    window = Window(min(start, now - 10), now, events, _max_gap(times))
    body = [
        _header(config, samples, now, hours),
        _unknown_section(unknown, now, config.backoff.unknown_resource_grace),
        _queues_section(config, samples, window),
        _deferrals_section(samples, window),
        _signals_section(config, samples, window),
        _events_section(recent),
    ]
    return PAGE.format(style=STYLE, body="\n".join(body))


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="10">
<title>easeoff</title>
<style>{style}</style>
</head>
<body>
{body}
</body>
</html>
"""

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.2em 2em; color: #222; background: #fff; }
h1 { margin: 0 0 .2em; } h2 { margin-top: 1.4em; border-bottom: 1px solid #ddd; } h3 { margin: .8em 0 .2em; }
.meta, .empty, .legend { color: #666; } .legend span { margin-right: 1.2em; white-space: nowrap; }
.swatch { display: inline-block; width: 1.4em; height: 3px; vertical-align: middle; margin-right: .3em; }
.swatch.dashed { background: none !important; border-top: 2px dashed; height: 0; }
svg { background: #fafafa; border: 1px solid #e4e4e4; display: block; }
svg text { font-size: 11px; fill: #666; }
path.series { fill: none; stroke-width: 1.8; }
line.watermark-high, line.watermark-low, line.threshold-high, line.threshold-low, line.threshold-critical {
  stroke-width: 1.4; stroke-dasharray: 6 4; }
line.event { stroke: #ff7f0e; stroke-width: 1.2; stroke-opacity: .8; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; } .grid figure { margin: 0; }
.grid figcaption { font-weight: 600; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; text-align: right; } th { color: #555; }
td:first-child, th:first-child { text-align: left; }
#events { list-style: none; padding: 0; } #events li { padding: 2px 0; border-bottom: 1px solid #f0f0f0; }
#events time { color: #666; margin-right: .6em; } .kind { font-weight: 600; margin-right: .6em; }
.who, .why { color: #666; margin-left: .6em; }
"""


def _header(config: Config, samples: Sequence[Sample], now: float, hours: float) -> str:
    links = " ".join(f'<a href="?hours={h:g}">{h:g} h</a>' for h in (1, 3, 6))
    latest = f"latest sample {_clock(samples[-1].t)}, {len(samples)} in view" if samples else "no samples yet"
    return (
        "<header><h1>easeoff</h1>"
        f'<p class="meta">last {hours:g} h to {escape(_clock(now))} · {escape(latest)} · '
        f"Redis {escape(config.redis_url_redacted)} · window: {links}</p></header>"
    )


def _unknown_section(unknown: Sequence[UnknownResource], now: float, grace: float) -> str:
    """Jobs name resources this config lacks (configs out of step): they are held, then fail."""
    if not unknown:
        return ""
    items = "".join(f"<li>{escape(u.reason(now, grace))}</li>" for u in unknown)
    return f'<section id="unknown-resources"><h2>Held: unknown resources</h2><ul>{items}</ul></section>'


def _empty_note() -> str:
    return '<p class="empty">no samples yet: the exporter records one every <code>--sample-every</code> seconds</p>'


# -- queues ------------------------------------------------------------------------------------------


def _queues_section(config: Config, samples: Sequence[Sample], window: Window) -> str:
    parts = ['<section id="queues"><h2>Queues</h2>']
    if not samples:
        parts.append(_empty_note())
    names = list(config.queues) + sorted({q for s in samples for q in s.queues} - set(config.queues))
    for name in names if samples else []:
        marks = config.queues[name].watermarks if name in config.queues else ()
        latest = samples[-1].queues.get(name, {})
        counts = ", ".join(f"{k} {latest.get(k, 0):g}" for k in ("ready", "deferred", "running", "failed"))
        parts.append(f'<div class="queue"><h3>{escape(name)}</h3>')
        parts.append(f'<p class="meta">now: {escape(counts)}, oldest ready {latest.get("age", 0):.0f} s</p>')
        depth = [
            Series(state, state, _queue_points(samples, name, state)) for state in ("ready", "deferred", "running")
        ]
        depth_marks = _marks(m for m in marks if m.measure == "depth")
        parts.append(_chart(f"depth-{name}", f"{name}: jobs (depth = ready)", depth, depth_marks, window))
        age_marks = _marks(m for m in marks if m.measure == "age")
        if age_marks:
            age = [Series("oldest ready (s)", "age", _queue_points(samples, name, "age"))]
            parts.append(_chart(f"age-{name}", f"{name}: age of the oldest ready job (s)", age, age_marks, window))
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _marks(watermarks: Iterable[object]) -> list[Mark]:
    found = []
    for mark in watermarks:
        for level in ("high", "low"):
            value = getattr(mark, level)
            if value is not None:
                found.append(Mark(level, "watermark", float(value)))
    return found


# -- deferrals ---------------------------------------------------------------------------------------


def _deferrals_section(samples: Sequence[Sample], window: Window) -> str:
    parts = ['<section id="deferrals"><h2>Deferrals by reason</h2>']
    reasons = sorted({r for s in samples for r in s.deferrals})
    if not samples:
        parts.append(_empty_note())
    elif not reasons:
        parts.append('<p class="empty">no deferrals counted</p>')
    else:
        series = [Series(reason, "deferral", _rates(samples, reason)) for reason in reasons]
        parts.append(_chart("deferral-rates", "deferrals per second, by reason", series, [], window))
        first, last = samples[0].deferrals, samples[-1].deferrals
        rows = "".join(
            f"<tr><td>{escape(r)}</td><td>{last.get(r, 0)}</td><td>{max(0, last.get(r, 0) - first.get(r, 0))}</td></tr>"
            for r in reasons
        )
        parts.append(f"<table><tr><th>reason</th><th>total</th><th>in view</th></tr>{rows}</table>")
    parts.append("</section>")
    return "\n".join(parts)


def _rates(samples: Sequence[Sample], reason: str) -> list[tuple[float, float]]:
    """Per-second rate between consecutive samples; a counter that went down (reset) counts as 0."""
    points = []
    for a, b in itertools.pairwise(samples):
        if b.t > a.t:
            points.append((b.t, max(0, b.deferrals.get(reason, 0) - a.deferrals.get(reason, 0)) / (b.t - a.t)))
    return points


# -- signals -----------------------------------------------------------------------------------------


def _signals_section(config: Config, samples: Sequence[Sample], window: Window) -> str:
    parts = ['<section id="signals"><h2>Signals by host</h2>']
    if not samples:
        parts.append(_empty_note())
    seen = {sig for s in samples for sig in s.signals}
    names = [n for n in config.signals if n in seen] + sorted(seen - set(config.signals))
    if samples and not names:
        parts.append('<p class="empty">no readings in the history: no worker has probed yet</p>')
    for signal in names:
        hosts = sorted({h for s in samples for h in s.signals.get(signal, {})})
        parts.append(f'<h3>{escape(signal)}</h3><div class="grid">')
        for host in hosts:
            series = [Series(host, "signal", _signal_points(samples, signal, host))]
            marks = _threshold_marks(_thresholds(config, signal, host))
            chart = _chart(f"signal-{signal}-{host}", f"{signal} on {host}", series, marks, window, width=420)
            parts.append(f"<figure><figcaption>{escape(host)}</figcaption>{chart}</figure>")
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _thresholds(config: Config, signal: str, host: str) -> Thresholds | None:
    """The limits the gate uses for `signal` on `host`; None for structural ones (replication)."""
    if signal not in config.signals:
        return None
    return config.thresholds(signal, host)


def _threshold_marks(limits: Thresholds | None) -> list[Mark]:
    if limits is None:
        return []
    levels = (("high", limits.high), ("low", limits.low), ("critical", limits.critical))
    return [Mark(level, "threshold", float(value)) for level, value in levels if value is not None]


# -- events ------------------------------------------------------------------------------------------


def _events_section(recent: Sequence[Event]) -> str:
    parts = ['<section id="recent-events"><h2>Recent events</h2>']
    if not recent:
        parts.append('<p class="empty">no events recorded</p>')
    parts.append('<ul id="events">')
    for e in recent:
        parts.append(
            f'<li><time datetime="{_iso(e.at)}">{escape(_clock(e.at, date=True))}</time>'
            f'<span class="kind">{escape(e.kind)}</span><span class="text">{escape(e.text)}</span>'
            f'<span class="who">{escape(f"by {e.who}" if e.who else "")}</span>'
            f'<span class="why">{escape(f"why: {e.why}" if e.why else "")}</span></li>'
        )
    parts.append("</ul></section>")
    return "\n".join(parts)


# -- drawing -----------------------------------------------------------------------------------------


def _chart(
    chart_id: str, label: str, series: Sequence[Series], marks: Sequence[Mark], window: Window, width: int = WIDTH
) -> str:
    """One time-series chart: the series, the marks as dashed horizontal lines, events as vertical ones."""
    values = [v for s in series for _, v in s.points] + [m.value for m in marks]
    top = max(values, default=0.0)
    top = top * 1.1 if top > 0 else 1.0
    plot_w, plot_h = width - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = max(window.end - window.start, 1e-9)

    def x(t: float) -> float:
        return LEFT + (min(max(t, window.start), window.end) - window.start) / span * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - v / top * plot_h

    out = [
        f'<svg id="{_id(chart_id)}" class="chart" width="{width}" height="{HEIGHT}" viewBox="0 0 {width} {HEIGHT}" '
        f'role="img" aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" stroke="#bbb"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 9}" text-anchor="end">{_num(top)}</text>',
        f'<text x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end">0</text>',
        f'<text x="{LEFT}" y="{HEIGHT - 6}">{escape(_clock(window.start))}</text>',
        f'<text x="{LEFT + plot_w}" y="{HEIGHT - 6}" text-anchor="end">{escape(_clock(window.end))}</text>',
    ]
    for mark in marks:
        colour = MARK_COLOURS[mark.level]
        out.append(
            f'<line class="{mark.kind}-{mark.level}" x1="{LEFT}" y1="{y(mark.value):.1f}" x2="{LEFT + plot_w}" '
            f'y2="{y(mark.value):.1f}" stroke="{colour}" stroke-dasharray="6 4">'
            f"<title>{escape(f'{mark.level} {_num(mark.value)}')}</title></line>"
        )
    for event in window.events:
        if window.start <= event.at <= window.end:
            text = f"{_clock(event.at)} {event.kind}: {event.text}"
            text += (f" (by {event.who})" if event.who else "") + (f" — {event.why}" if event.why else "")
            out.append(
                f'<line class="event" x1="{x(event.at):.1f}" y1="{TOP}" x2="{x(event.at):.1f}" y2="{TOP + plot_h}">'
                f"<title>{escape(text)}</title></line>"
            )
    for i, s in enumerate(series):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        d = _path([(x(t), y(v)) for t, v in s.points], [t for t, _ in s.points], window.max_gap)
        out.append(
            f'<path class="series {escape(s.cls)}" data-label="{escape(s.label)}" d="{d}" stroke="{colour}">'
            f"<title>{escape(s.label)}</title></path>"
        )
    out.append("</svg>")
    return "\n".join(out) + _legend(series, marks)


def _legend(series: Sequence[Series], marks: Sequence[Mark]) -> str:
    items = [
        f'<span><i class="swatch" style="background:{SERIES_COLOURS[i % len(SERIES_COLOURS)]}"></i>'
        f"{escape(s.label)}</span>"
        for i, s in enumerate(series)
    ]
    items += [
        f'<span><i class="swatch dashed" style="border-color:{MARK_COLOURS[m.level]}"></i>'
        f"{escape(m.kind.replace('watermark', 'water mark'))} {m.level} {_num(m.value)}</span>"
        for m in marks
    ]
    return f'<p class="legend">{"".join(items)}</p>'


def _path(xy: Sequence[tuple[float, float]], times: Sequence[float], max_gap: float) -> str:
    """An SVG path through the points; a gap longer than `max_gap` (the exporter was away) starts a new run."""
    parts = []
    for i, (px, py) in enumerate(xy):
        jump = i == 0 or times[i] - times[i - 1] > max_gap
        parts.append(f"{'M' if jump else 'L'}{px:.1f},{py:.1f}")
    return " ".join(parts)


def _queue_points(samples: Sequence[Sample], queue: str, key: str) -> list[tuple[float, float]]:
    """(t, value) of one queue measure; samples from before the queue existed are skipped."""
    return [(s.t, s.queues[queue][key]) for s in samples if key in s.queues.get(queue, {})]


def _signal_points(samples: Sequence[Sample], signal: str, host: str) -> list[tuple[float, float]]:
    return [(s.t, s.signals[signal][host]) for s in samples if host in s.signals.get(signal, {})]


def _max_gap(times: Sequence[float]) -> float:
    """Three typical sampling periods: more than that between samples means nobody sampled."""
    gaps = [b - a for a, b in itertools.pairwise(times) if b > a]
    return 3 * statistics.median(gaps) if gaps else float("inf")


def _id(text: str) -> str:
    """An element id from a name: whitespace (not allowed in ids) becomes `_`, the rest is escaped."""
    return escape("_".join(text.split()), quote=True)


def _num(value: float) -> str:
    return f"{value:.4g}"


def _clock(t: float, date: bool = False) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S", time.localtime(t))


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
