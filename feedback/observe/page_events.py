"""The page's events: the legend of the charts' markers, and the recent events as a list.

Events — deploys and notes (`easeoff annotate`), switches, hosts out and in, verdict flips,
water-mark alarms — are what explain a chart's bend. The charts mark them by number; this
legend says what each number was, who did it and why, and the list below keeps the newest
whatever the window.
"""

from __future__ import annotations

from collections.abc import Sequence

from easeoff.feedback.levers.events import Event
from easeoff.feedback.observe.markup import El, el
from easeoff.feedback.observe.page_chart import KIND_NAMES, Window, kind_key
from easeoff.feedback.observe.page_parts import clock, empty, iso, section
from easeoff.feedback.observe.page_state import MAX_MARKERS


def markers_section(window: Window) -> El:
    """The legend of the charts' markers: each kind's style, and each marker's number and event."""
    kinds = [el("span", None, kind_key(kind), KIND_NAMES[kind]) for kind in KIND_NAMES]
    parts: list[El] = [el("p", {"class": "legend", "id": "marker-key"}, kinds)]
    if not window.markers:
        parts.append(empty("no events in view"))
    else:
        items = [
            el(
                "li",
                {"value": m.n, "class": f"event-{m.kind}", "data-kind": m.event.kind},
                el("time", {"datetime": iso(m.event.at)}, clock(m.event.at)),
                el("span", {"class": "kind"}, m.event.kind),
                el("span", {"class": "text"}, m.event.text),
                el("span", {"class": "who"}, f"by {m.event.who}" if m.event.who else None),
                el("span", {"class": "why"}, f"why: {m.event.why}" if m.event.why else None),
            )
            for m in window.markers
        ]
        parts.append(el("ol", {"id": "marker-list"}, items))
        if window.unmarked:
            parts.append(empty(f"only the newest {MAX_MARKERS} events in view are marked: easeoff log lists all"))
    return section("markers", "Event markers", parts)


def events_section(recent: Sequence[Event]) -> El:
    """The newest events, newest first, with their date: the window does not limit them."""
    items = [
        el(
            "li",
            {"data-kind": e.kind},
            el("time", {"datetime": iso(e.at)}, clock(e.at, date=True)),
            el("span", {"class": "kind"}, e.kind),
            el("span", {"class": "text"}, e.text),
            el("span", {"class": "who"}, f"by {e.who}" if e.who else None),
            el("span", {"class": "why"}, f"why: {e.why}" if e.why else None),
        )
        for e in recent
    ]
    nothing = empty("no events recorded") if not recent else None
    return section("recent-events", "Recent events", nothing, el("ul", {"id": "events"}, items))
