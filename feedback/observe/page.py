"""The exporter's page at `/`: queue depth, deferrals and signals over the last hours, with events,
what holds work now and why, and the newest failed jobs.

Rendered on the server as plain HTML with inline SVG, complete without JavaScript — it works
on a jump host, behind a strict proxy, with curl and in a headless browser alike. A few
kilobytes of inline script (feedback/observe/console.py) then keep it live: every few seconds
it fetches `/api/state`, the same sections as JSON trees built by the same code
(feedback/observe/markup.py), and swaps in those that changed. Water marks and thresholds
come from the config the exporter runs with, with ops' live overrides, so the lines drawn are
the ones the alarms and the gate use. Every piece of text is escaped (`markup.to_html`; in the
browser, `textContent`); nothing secret (Redis password, MySQL URLs) is shown; nothing on the
page changes state (links only, no forms).
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
from redis import Redis

from easeoff.feedback.budget.state import BudgetState, CeilingView
from easeoff.feedback.config import Config, Thresholds
from easeoff.feedback.durations import age_text
from easeoff.feedback.levers.events import Event
from easeoff.feedback.observe.console import MARK_COLOURS, SCRIPT, SERIES_COLOURS, STYLE
from easeoff.feedback.observe.history import Sample
from easeoff.feedback.observe.markup import El, el, redact_passwords, to_html
from easeoff.feedback.observe.page_state import MAX_MARKERS, PageState, ShadowVerdict, read_state
from easeoff.feedback.tally.unknown_resources import UnknownResource

DEFAULT_HOURS = 3.0
MAX_HOURS = 24.0
DEFAULT_REFRESH = 5.0  # seconds between the page's polls of /api/state
MIN_REFRESH, MAX_REFRESH = 1.0, 300.0
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
        text = f"{self.n}. {_clock(e.at)} {e.kind}: {e.text}"
        text += (f" (by {e.who})" if e.who else "") + (f" — {e.why}" if e.why else "")
        return text if len(text) <= MAX_TITLE else text[: MAX_TITLE - 1] + "…"


class Window(msgspec.Struct, frozen=True):
    """The time span drawn, the markers on it, and the gap beyond which a series is broken rather than joined."""

    start: float
    end: float
    markers: Sequence[Marker] = ()
    max_gap: float = float("inf")
    unmarked: bool = False  # older events in view than the newest MAX_MARKERS, which alone are drawn


class View(msgspec.Struct, frozen=True):
    """How the page was asked for: the window's length and the poll interval (kept in the links)."""

    hours: float = DEFAULT_HOURS
    refresh: float = DEFAULT_REFRESH

    def query(self, hours: float) -> str:
        refresh = "" if self.refresh == DEFAULT_REFRESH else f"&refresh={self.refresh:g}"
        return f"?hours={hours:g}{refresh}"


def render_page(
    redis: Redis,
    config: Config,
    hours: float,
    now: float | None = None,
    refresh: float = DEFAULT_REFRESH,
) -> str:
    """Read the state of the last `hours` and render the page."""
    return render_state(read_state(redis, config, hours, now), refresh)


def state_document(
    redis: Redis,
    config: Config,
    hours: float,
    now: float | None = None,
    refresh: float = DEFAULT_REFRESH,
) -> dict[str, Any]:
    """What `/api/state` answers: the facts, and the page's sections as trees for the script."""
    state = read_state(redis, config, hours, now)
    return {
        "now": state.now,
        "clock": _clock(state.now),
        "hours": state.hours,
        "refresh": refresh,
        # The sections' text is redacted as it is built (markup.el); the facts, as one JSON text.
        "state": json.loads(redact_passwords(json.dumps(state.facts()))),
        "sections": [[s.id, s.as_json()] for s in sections(state, View(hours, refresh))],
    }


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
    state = PageState(config, now, hours, samples=samples, events=events, recent=recent, unknown=unknown)
    return render_state(state)


def render_state(state: PageState, refresh: float = DEFAULT_REFRESH) -> str:
    """The whole document: the sections, the live-status line and the script that keeps them current."""
    view = View(state.hours, refresh)
    noscript = f"{max(10.0, refresh):g}"
    live = el("p", {"id": "live", "class": "meta"}, f"rendered {_clock(state.now)}; reloads every {noscript} s")
    body = "\n".join(to_html(s) for s in sections(state, view))
    return PAGE.format(
        style=STYLE,
        script=SCRIPT,
        noscript_refresh=noscript,
        refresh=f"{refresh:g}",
        clock=_clock(state.now),
        live=to_html(live),
        body=body,
    )


def sections(state: PageState, view: View) -> list[El]:
    """The body's sections in order; each has an id and `data-section`, by which the script swaps it."""
    times = [s.t for s in state.samples]
    now, hours, events = state.now, state.hours, state.events
    # A history younger than the window is drawn across the whole width, not squeezed to its right edge.
    earliest = min([*times[:1], *(e.at for e in events[:1])], default=now - hours * 3600)
    start = max(now - hours * 3600, earliest - max(1.0, 0.02 * (now - earliest)))
    start = min(start, now - 10)
    in_view = [e for e in events if start <= e.at <= now]
    markers = [Marker(i + 1, e) for i, e in enumerate(in_view[-MAX_MARKERS:])]
    window = Window(start, now, markers, _max_gap(times), len(in_view) > MAX_MARKERS)
    found = [
        _header(state, view),
        _held_section(state),
        _unknown_section(state.unknown, now, state.config.backoff.unknown_resource_grace),
        _shadow_section(state.shadow_verdicts),
        _budgets_section(state.budgets, now),
        _queues_section(state, window),
        _markers_section(window),
        _deferrals_section(state.samples, window),
        _signals_section(state.config, state.samples, window),
        _failed_section(state),
        _events_section(state.recent),
    ]
    return [s for s in found if s is not None]


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<noscript><meta http-equiv="refresh" content="{noscript_refresh}"></noscript>
<title>easeoff</title>
<link rel="icon" href="data:,">
<style>{style}</style>
</head>
<body data-refresh="{refresh}" data-polls="0" data-clock="{clock}">
{live}
{body}
<script>{script}</script>
</body>
</html>
"""


def _section(section_id: str, title: str, *children: Any) -> El:
    return el("section", {"id": section_id, "data-section": ""}, el("h2", None, title), *children)


def _empty(text: str) -> El:
    return el("p", {"class": "empty"}, text)


def _header(state: PageState, view: View) -> El:
    samples = state.samples
    links: list[El | str] = []
    for h in (1, 3, 6):
        links += [el("a", {"href": view.query(h)}, f"{h:g} h"), " "]
    latest = f"latest sample {_clock(samples[-1].t)}, {len(samples)} in view" if samples else "no samples yet"
    meta = f"last {state.hours:g} h to {_clock(state.now)} · {latest} · Redis {state.config.redis_url_redacted} · "
    return el(
        "header",
        {"id": "top", "data-section": ""},
        el("h1", None, "easeoff"),
        el("p", {"class": "meta"}, meta, "window: ", links),
    )


# -- what holds work now ----------------------------------------------------------------------------


def _held_section(state: PageState) -> El:
    """Queues and resources the gate holds, with its reasons, and the switches in force with their age."""
    parts: list[El] = []
    if state.held_everything:
        parts.append(el("p", {"class": "held-all"}, "all heavy work held: " + "; ".join(state.held_everything)))
    parts.append(el("h3", None, "Queues"))
    if state.held_queues:
        rows = [_row(q, "; ".join(r)) for q, r in state.held_queues.items()]
        parts.append(el("table", {"id": "held-queues"}, _head("queue", "held because"), rows))
    else:
        parts.append(_empty("no queue held" + (" but by the above" if state.held_everything else "")))
    parts.append(el("h3", None, "Resources"))
    if state.held_resources or state.critical:
        rows = []
        for name in dict.fromkeys([*state.held_resources, *state.critical]):
            critical = [el("div", {"class": "critical"}, f"CRITICAL {c}") for c in state.critical.get(name, ())]
            reasons = el("td", {"class": "text"}, "; ".join(state.held_resources.get(name, ())), critical)
            rows.append(el("tr", None, el("td", None, name), reasons))
        parts.append(el("table", {"id": "held-resources"}, _head("resource", "deferred because"), rows))
    else:
        parts.append(_empty("no resource held" + (" but by the above" if state.held_everything else "")))
    parts.append(el("h3", None, "Tasks"))
    if state.held_tasks:
        rows = [_row(t, "; ".join(r)) for t, r in state.held_tasks.items()]
        parts.append(el("table", {"id": "held-tasks"}, _head("task", "its jobs wait because"), rows))
    else:
        parts.append(_empty("no task paused or throttled"))
    parts.append(el("h3", None, "Switches in force"))
    if state.switches:
        rows = [
            el(
                "tr",
                None,
                el("td", None, s.describe),
                el("td", {"class": "text"}, s.by),
                el("td", {"class": "text"}, s.why),
                el("td", {"class": "age", "data-age-s": f"{s.age_s:.0f}"}, s.age),
                el("td", None, "" if s.expires_in_s is None else age_text(s.expires_in_s)),
            )
            for s in state.switches
        ]
        head = _head("switch", "by", "why", "on for", "lapses in")
        parts.append(el("table", {"id": "switches"}, head, rows))
    else:
        parts.append(_empty("no switches on"))
    return _section("held", "Held now", parts)


def _unknown_section(unknown: Sequence[UnknownResource], now: float, grace: float) -> El | None:
    """Jobs name resources this config lacks (configs out of step): they are held, then fail."""
    if not unknown:
        return None
    items = [el("li", None, u.reason(now, grace)) for u in unknown]
    return _section("unknown-resources", "Held: unknown resources", el("ul", None, items))


def _shadow_section(verdicts: Sequence[ShadowVerdict]) -> El:
    """Policies judged on live readings that hold nothing: what they would have done (shadow mode's hook)."""
    if not verdicts:
        return _section("shadow-verdicts", "Shadow verdicts", _empty("Shadow verdicts: none"))
    rows = [
        el(
            "tr",
            {"class": f"would-{v.verdict}"},
            el("td", None, v.policy),
            el("td", {"class": "text"}, v.scope),
            el("td", {"class": "text"}, v.verdict),
            el("td", {"class": "text"}, "; ".join(v.reasons)),
            el("td", {"class": "text"}, v.tally),
        )
        for v in verdicts
    ]
    head = _head("policy", "scope", "would now", "because", "so far")
    table = el("table", {"id": "shadow-table"}, head, rows)
    return _section("shadow-verdicts", "Shadow verdicts", table)


def _budgets_section(budgets: Sequence[BudgetState], now: float) -> El | None:
    """Each budget as its controller last saw and set it: the ceilings against what it observed,
    the baseline, the slack, the limit and pace it chose, and why (absent with no budget configured)."""
    if not budgets:
        return None
    rows = []
    for b in budgets:
        last = b.last
        slack = b.slack
        decision: list[El | str] = ["never stepped: no worker probes for the fleet yet"]
        if last is not None:
            ago = age_text(b.age(now) or 0.0) + " ago"
            said = last.text.removeprefix(str(last.why)).lstrip()  # the text opens with the reason, shown bold
            decision = [el("span", {"class": "kind"}, str(last.why)), said, el("span", {"class": "who"}, ago)]
        limit = f"{b.limit} ({b.in_use} in use)" + (" learning" if last is not None and last.level <= 0 else "")
        attrs = {
            "data-resource": b.resource,
            "data-limit": b.limit,
            "data-duty": f"{b.pace:g}",
            "data-why": "" if last is None else str(last.why),
            "data-slack": "" if slack is None else f"{slack:.4g}",
        }
        if slack is not None and slack < 0:
            attrs["class"] = "breach"
        rows.append(
            el(
                "tr",
                attrs,
                el("td", None, b.resource),
                el("td", {"class": "text"}, [el("div", None, f"{c.name} ≤ {_amount(c, c.limit)}") for c in b.ceilings]),
                el("td", {"class": "text"}, [el("div", None, f"{c.name} {_amount(c, c.value)}") for c in b.ceilings]),
                el("td", None, "?" if b.baseline is None else _seconds(b.baseline)),
                el("td", None, "?" if slack is None else f"{slack:.0%}"),
                el("td", None, limit),
                el("td", None, "full" if b.duty is None else f"{b.duty:.0%} duty"),
                el("td", {"class": "text decision"}, decision),
            )
        )
    head = _head("resource", "budget", "observed", "baseline", "slack", "limit", "pace", "last decision")
    meta = el(
        "p",
        {"class": "meta"},
        "The controller spends each budget: slack is 1 - observed/budget of the tightest ceiling (below 0: a breach); ",
        "its level is the limit and, below one job at a time, the pace (the share of time a job may run).",
    )
    return _section("budgets", "Budgets", meta, el("table", {"id": "budget-table"}, head, rows))


def _amount(ceiling: CeilingView, value: float | None) -> str:
    if value is None:
        return "?"
    return _seconds(value) if ceiling.unit == "s" else f"{value:.4g}"


def _seconds(value: float) -> str:
    return f"{value * 1000:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"


def _failed_section(state: PageState) -> El:
    failed = state.failed
    if not failed.jobs:
        return _section("failed-jobs", "Failed jobs", _empty("no failed jobs"))
    per_queue = ", ".join(f"{q} {n}" for q, n in failed.counts if n)
    meta = el(
        "p",
        {"class": "meta"},
        f"{failed.total} failed ({per_queue}); the newest {len(failed.jobs)} below. ",
        el("code", None, "easeoff failed"),
        " lists them, ",
        el("code", None, "easeoff requeue"),
        " puts them back.",
    )
    rows = [
        el(
            "tr",
            {"data-job": j.id},
            el("td", None, "" if j.failed_at is None else _clock(j.failed_at, date=True)),
            el("td", {"class": "text"}, j.queue),
            el("td", {"class": "text"}, j.task),
            el("td", {"class": "text"}, el("code", None, j.id)),
            el("td", {"class": "text reason"}, j.reason),
        )
        for j in failed.jobs
    ]
    table = el("table", {"id": "failed-table"}, _head("failed at", "queue", "task", "job", "reason"), rows)
    return _section("failed-jobs", "Failed jobs", meta, table)


def _head(*names: str) -> El:
    return el("tr", None, [el("th", None if i == 0 else {"class": "text"}, n) for i, n in enumerate(names)])


def _row(*cells: str) -> El:
    return el("tr", None, [el("td", None if i == 0 else {"class": "text"}, c) for i, c in enumerate(cells)])


# -- queues ------------------------------------------------------------------------------------------


def _queues_section(state: PageState, window: Window) -> El:
    config, samples = state.config, state.samples
    parts: list[El] = []
    if not samples:
        parts.append(_empty_note())
    live = {q.name: q for q in state.queues}
    seen = {q for s in samples for q in s.queues} | set(live)
    names = list(config.queues) + sorted(seen - set(config.queues))
    for name in names if samples or live else []:
        marks = config.queues[name].watermarks if name in config.queues else ()
        now_line = _queue_now(name, live.get(name), samples[-1].queues.get(name, {}) if samples else {})
        held = state.held_queues.get(name)
        block: list[El | None] = [
            el("h3", None, name),
            now_line,
            el("p", {"class": "held-line"}, "held: " + "; ".join(held)) if held else None,
        ]
        if samples:
            depth = [Series(s, s, _queue_points(samples, name, s)) for s in ("ready", "deferred", "running")]
            depth_marks = _marks(m for m in marks if m.measure == "depth")
            block += _chart(f"depth-{name}", f"{name}: jobs (depth = ready)", depth, depth_marks, window)
            age_marks = _marks(m for m in marks if m.measure == "age")
            if age_marks:
                age = [Series("oldest ready (s)", "age", _queue_points(samples, name, "age"))]
                block += _chart(f"age-{name}", f"{name}: age of the oldest ready job (s)", age, age_marks, window)
        parts.append(el("div", {"class": "queue", "data-queue": name}, block))
    return _section("queues", "Queues", parts)


def _queue_now(name: str, live: Any, latest: dict[str, float]) -> El:
    """The queue's counts now: read live when the state has them, else the latest sample's."""
    if live is not None:
        values = {"ready": live.ready, "deferred": live.deferred, "running": live.running, "failed": live.failed}
        age = live.oldest_ready_age_s
    else:
        values = {k: latest.get(k, 0) for k in ("ready", "deferred", "running", "failed")}
        age = latest.get("age", 0)
    counts = ", ".join(f"{k} {v:g}" for k, v in values.items())
    attrs = {"class": "meta now", **{f"data-{k}": f"{v:g}" for k, v in values.items()}}
    return el("p", attrs, f"now: {counts}, oldest ready {age:.0f} s")


def _empty_note() -> El:
    return el(
        "p",
        {"class": "empty"},
        "no samples yet: the exporter records one every ",
        el("code", None, "--sample-every"),
        " seconds",
    )


def _marks(watermarks: Iterable[object]) -> list[Mark]:
    found = []
    for mark in watermarks:
        for level in ("high", "low"):
            value = getattr(mark, level)
            if value is not None:
                found.append(Mark(level, "watermark", float(value)))
    return found


# -- event markers -----------------------------------------------------------------------------------


def _markers_section(window: Window) -> El:
    """The legend of the charts' markers: each kind's style, and each marker's number and event."""
    kinds = [el("span", None, _key(kind), KIND_NAMES[kind]) for kind in KIND_NAMES]
    parts: list[El] = [el("p", {"class": "legend", "id": "marker-key"}, kinds)]
    if not window.markers:
        parts.append(_empty("no events in view"))
    else:
        items = [
            el(
                "li",
                {"value": m.n, "class": f"event-{m.kind}", "data-kind": m.event.kind},
                el("time", {"datetime": _iso(m.event.at)}, _clock(m.event.at)),
                el("span", {"class": "kind"}, m.event.kind),
                el("span", {"class": "text"}, m.event.text),
                el("span", {"class": "who"}, f"by {m.event.who}" if m.event.who else None),
                el("span", {"class": "why"}, f"why: {m.event.why}" if m.event.why else None),
            )
            for m in window.markers
        ]
        parts.append(el("ol", {"id": "marker-list"}, items))
        if window.unmarked:
            parts.append(_empty(f"only the newest {MAX_MARKERS} events in view are marked: easeoff log lists all"))
    return _section("markers", "Event markers", parts)


def _key(kind: str) -> El:
    """A marker in miniature, for the legend: the kind's line, dash and glyph."""
    return el(
        "svg",
        {"class": f"key event-{kind}", "width": 26, "height": 14, "viewBox": "0 0 26 14", "aria-hidden": "true"},
        el("line", {"x1": 7, "y1": 1, "x2": 7, "y2": 14, "class": f"event event-{kind}"}),
        el("path", {"class": "glyph", "d": _glyph(kind, 7.0, 5.0)}),
    )


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


# -- deferrals ---------------------------------------------------------------------------------------


def _deferrals_section(samples: Sequence[Sample], window: Window) -> El:
    parts: list[El] = []
    reasons = sorted({r for s in samples for r in s.deferrals})
    if not samples:
        parts.append(_empty_note())
    elif not reasons:
        parts.append(_empty("no deferrals counted"))
    else:
        series = [Series(reason, "deferral", _rates(samples, reason)) for reason in reasons]
        parts += _chart("deferral-rates", "deferrals per second, by reason", series, [], window)
        first, last = samples[0].deferrals, samples[-1].deferrals
        rows = [
            el(
                "tr",
                None,
                el("td", None, r),
                el("td", None, str(last.get(r, 0))),
                el("td", None, str(max(0, last.get(r, 0) - first.get(r, 0)))),
            )
            for r in reasons
        ]
        head = el("tr", None, el("th", None, "reason"), el("th", None, "total"), el("th", None, "in view"))
        parts.append(el("table", None, head, rows))
    return _section("deferrals", "Deferrals by reason", parts)


def _rates(samples: Sequence[Sample], reason: str) -> list[tuple[float, float]]:
    """Per-second rate between consecutive samples; a counter that went down (reset) counts as 0."""
    points = []
    for a, b in itertools.pairwise(samples):
        if b.t > a.t:
            points.append((b.t, max(0, b.deferrals.get(reason, 0) - a.deferrals.get(reason, 0)) / (b.t - a.t)))
    return points


# -- signals -----------------------------------------------------------------------------------------


def _signals_section(config: Config, samples: Sequence[Sample], window: Window) -> El:
    parts: list[El] = []
    if not samples:
        parts.append(_empty_note())
    seen = {sig for s in samples for sig in s.signals}
    names = [n for n in config.signals if n in seen] + sorted(seen - set(config.signals))
    if samples and not names:
        parts.append(_empty("no readings in the history: no worker has probed yet"))
    for signal in names:
        hosts = sorted({h for s in samples for h in s.signals.get(signal, {})})
        figures = []
        for host in hosts:
            series = [Series(host, "signal", _signal_points(samples, signal, host))]
            marks = _threshold_marks(_thresholds(config, signal, host))
            chart = _chart(f"signal-{signal}-{host}", f"{signal} on {host}", series, marks, window, width=420)
            figures.append(el("figure", None, el("figcaption", None, host), chart))
        parts += [el("h3", None, signal), el("div", {"class": "grid"}, figures)]
    return _section("signals", "Signals by host", parts)


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


def _events_section(recent: Sequence[Event]) -> El:
    items = [
        el(
            "li",
            {"data-kind": e.kind},
            el("time", {"datetime": _iso(e.at)}, _clock(e.at, date=True)),
            el("span", {"class": "kind"}, e.kind),
            el("span", {"class": "text"}, e.text),
            el("span", {"class": "who"}, f"by {e.who}" if e.who else None),
            el("span", {"class": "why"}, f"why: {e.why}" if e.why else None),
        )
        for e in recent
    ]
    empty = _empty("no events recorded") if not recent else None
    return _section("recent-events", "Recent events", empty, el("ul", {"id": "events"}, items))


# -- drawing -----------------------------------------------------------------------------------------


def _chart(
    chart_id: str, label: str, series: Sequence[Series], marks: Sequence[Mark], window: Window, width: int = WIDTH
) -> list[El]:
    """One time-series chart and its legend: the series, the marks as dashed horizontal lines,
    events as numbered vertical markers styled by kind."""
    values = [v for s in series for _, v in s.points] + [m.value for m in marks]
    top = max(values, default=0.0)
    top = top * 1.1 if top > 0 else 1.0
    plot_w, plot_h = width - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = max(window.end - window.start, 1e-9)

    def x(t: float) -> float:
        return LEFT + (min(max(t, window.start), window.end) - window.start) / span * plot_w

    def y(v: float) -> float:
        return TOP + plot_h - v / top * plot_h

    out: list[El] = [
        el("title", None, label),
        el("line", {"x1": LEFT, "y1": TOP + plot_h, "x2": LEFT + plot_w, "y2": TOP + plot_h, "stroke": "#bbb"}),
        el("text", {"x": LEFT - 4, "y": TOP + 9, "text-anchor": "end"}, _num(top)),
        el("text", {"x": LEFT - 4, "y": TOP + plot_h, "text-anchor": "end"}, "0"),
        el("text", {"x": LEFT, "y": HEIGHT - 6}, _clock(window.start)),
        el("text", {"x": LEFT + plot_w, "y": HEIGHT - 6, "text-anchor": "end"}, _clock(window.end)),
    ]
    for mark in marks:
        at = f"{y(mark.value):.1f}"
        out.append(
            el(
                "line",
                {
                    "class": f"{mark.kind}-{mark.level}",
                    "x1": LEFT,
                    "y1": at,
                    "x2": LEFT + plot_w,
                    "y2": at,
                    "stroke": MARK_COLOURS[mark.level],
                    "stroke-dasharray": "6 4",
                },
                el("title", None, f"{mark.level} {_num(mark.value)}"),
            )
        )
    rows: list[float] = []  # the x of the last number in each row, so close markers' numbers do not overlap
    for marker in window.markers:
        mx = x(marker.event.at)
        row = next((i for i, last in enumerate(rows) if mx - last >= 14), len(rows))
        if row == len(rows):
            rows.append(mx)
        rows[row] = mx
        out.append(_marker(marker, mx, TOP + 5 + 10 * min(row, 3), TOP, TOP + plot_h))
    for i, s in enumerate(series):
        d = _path([(x(t), y(v)) for t, v in s.points], [t for t, _ in s.points], window.max_gap)
        last = _num(s.points[-1][1]) if s.points else None
        out.append(
            el(
                "path",
                {
                    "class": f"series {s.cls}",
                    "data-label": s.label,
                    "data-last": last,
                    "d": d,
                    "stroke": SERIES_COLOURS[i % len(SERIES_COLOURS)],
                },
                el("title", None, s.label),
            )
        )
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
        out,
    )
    return [svg, _legend(series, marks)]


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
            f"{m.kind.replace('watermark', 'water mark')} {m.level} {_num(m.value)}",
        )
        for m in marks
    ]
    return el("p", {"class": "legend"}, items)


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
    """An element id from a name: whitespace (not allowed in ids) becomes `_` (escaped when serialised)."""
    return "_".join(text.split())


def _num(value: float) -> str:
    return f"{value:.4g}"


def _clock(t: float, date: bool = False) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S", time.localtime(t))


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
