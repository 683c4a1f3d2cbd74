"""The page's charted sections, drawn from the exporter's sampled history: each queue's depth and
age, deferrals by reason, and each signal by host.

Each chart carries the lines that matter for what it draws — a queue's water marks, a signal's
thresholds as the gate applies them on that host, ops' overrides included — so a rise is read
against the mark that alarms or holds on it, not against a number remembered from the config.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

from easeoff.feedback.config import Config, Thresholds
from easeoff.feedback.observe.history import Sample
from easeoff.feedback.observe.markup import El, el
from easeoff.feedback.observe.page_chart import Mark, Series, Window, chart
from easeoff.feedback.observe.page_parts import empty, empty_note, section
from easeoff.feedback.observe.page_state import PageState


def queues_section(state: PageState, window: Window) -> El:
    """Every queue, configured ones first: its counts now, what holds it, and its depth and age charts."""
    config, samples = state.config, state.samples
    parts: list[El] = []
    if not samples:
        parts.append(empty_note())
    live = {q.name: q for q in state.queues}
    seen = {q for s in samples for q in s.queues} | set(live)
    names = list(config.queues) + sorted(seen - set(config.queues))
    for name in names if samples or live else []:
        now_line = _queue_now(name, live.get(name), samples[-1].queues.get(name, {}) if samples else {})
        held = state.held_queues.get(name)
        block: list[El | None] = [
            el("h3", None, name),
            now_line,
            el("p", {"class": "held-line"}, "held: " + "; ".join(held)) if held else None,
        ]
        if samples:
            block += _queue_charts(config, samples, name, window)
        parts.append(el("div", {"class": "queue", "data-queue": name}, block))
    return section("queues", "Queues", parts)


def deferrals_section(samples: Sequence[Sample], window: Window) -> El:
    """Deferrals per second by reason, charted, and counted in all and in view."""
    parts: list[El] = []
    reasons = sorted({r for s in samples for r in s.deferrals})
    if not samples:
        parts.append(empty_note())
    elif not reasons:
        parts.append(empty("no deferrals counted"))
    else:
        series = [Series(reason, "deferral", _rates(samples, reason)) for reason in reasons]
        parts += chart("deferral-rates", "deferrals per second, by reason", series, [], window)
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
    return section("deferrals", "Deferrals by reason", parts)


def signals_section(config: Config, samples: Sequence[Sample], window: Window) -> El:
    """Each signal, configured ones first, charted per host against the thresholds in force there."""
    parts: list[El] = []
    if not samples:
        parts.append(empty_note())
    seen = {sig for s in samples for sig in s.signals}
    names = [n for n in config.signals if n in seen] + sorted(seen - set(config.signals))
    if samples and not names:
        parts.append(empty("no readings in the history: no worker has probed yet"))
    for signal in names:
        hosts = sorted({h for s in samples for h in s.signals.get(signal, {})})
        figures = []
        for host in hosts:
            series = [Series(host, "signal", _signal_points(samples, signal, host))]
            marks = _threshold_marks(_thresholds(config, signal, host))
            drawn = chart(f"signal-{signal}-{host}", f"{signal} on {host}", series, marks, window, width=420)
            figures.append(el("figure", None, el("figcaption", None, host), drawn))
        parts += [el("h3", None, signal), el("div", {"class": "grid"}, figures)]
    return section("signals", "Signals by host", parts)


def _queue_charts(config: Config, samples: Sequence[Sample], name: str, window: Window) -> list[El]:
    """A queue's depth chart, and its age chart when the queue has age water marks."""
    marks = config.queues[name].watermarks if name in config.queues else ()
    depth = [Series(s, s, _queue_points(samples, name, s)) for s in ("ready", "deferred", "running")]
    depth_marks = _marks(m for m in marks if m.measure == "depth")
    drawn = chart(f"depth-{name}", f"{name}: jobs (depth = ready)", depth, depth_marks, window)
    age_marks = _marks(m for m in marks if m.measure == "age")
    if age_marks:
        age = [Series("oldest ready (s)", "age", _queue_points(samples, name, "age"))]
        drawn += chart(f"age-{name}", f"{name}: age of the oldest ready job (s)", age, age_marks, window)
    return drawn


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


def _marks(watermarks: Iterable[object]) -> list[Mark]:
    found = []
    for mark in watermarks:
        for level in ("high", "low"):
            value = getattr(mark, level)
            if value is not None:
                found.append(Mark(level, "watermark", float(value)))
    return found


def _rates(samples: Sequence[Sample], reason: str) -> list[tuple[float, float]]:
    """Per-second rate between consecutive samples; a counter that went down (reset) counts as 0."""
    points = []
    for a, b in itertools.pairwise(samples):
        if b.t > a.t:
            points.append((b.t, max(0, b.deferrals.get(reason, 0) - a.deferrals.get(reason, 0)) / (b.t - a.t)))
    return points


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


def _queue_points(samples: Sequence[Sample], queue: str, key: str) -> list[tuple[float, float]]:
    """(t, value) of one queue measure; samples from before the queue existed are skipped."""
    return [(s.t, s.queues[queue][key]) for s in samples if key in s.queues.get(queue, {})]


def _signal_points(samples: Sequence[Sample], signal: str, host: str) -> list[tuple[float, float]]:
    return [(s.t, s.signals[signal][host]) for s in samples if host in s.signals.get(signal, {})]
