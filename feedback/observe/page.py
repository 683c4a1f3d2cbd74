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

This module is the document and the order of its sections; each part of the page is a module
beside it: page_held (what holds work now), page_budgets, page_trends (the charted history),
page_events, page_failed; page_chart draws the charts, page_parts holds the shared pieces.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec
from redis import Redis

from easeoff.feedback.config import Config
from easeoff.feedback.levers.events import Event
from easeoff.feedback.observe.console import SCRIPT, STYLE
from easeoff.feedback.observe.history import Sample
from easeoff.feedback.observe.markup import El, el, redact_passwords, to_html
from easeoff.feedback.observe.page_budgets import budgets_section
from easeoff.feedback.observe.page_chart import Marker, Window, max_gap
from easeoff.feedback.observe.page_events import events_section, markers_section
from easeoff.feedback.observe.page_failed import failed_section
from easeoff.feedback.observe.page_held import held_section, shadow_section, unknown_section
from easeoff.feedback.observe.page_parts import clock
from easeoff.feedback.observe.page_state import MAX_MARKERS, PageState, read_state
from easeoff.feedback.observe.page_trends import deferrals_section, queues_section, signals_section
from easeoff.feedback.tally.unknown_resources import UnknownResource

DEFAULT_HOURS = 3.0
MAX_HOURS = 24.0
DEFAULT_REFRESH = 5.0  # seconds between the page's polls of /api/state
MIN_REFRESH, MAX_REFRESH = 1.0, 300.0


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
        "clock": clock(state.now),
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
    live = el("p", {"id": "live", "class": "meta"}, f"rendered {clock(state.now)}; reloads every {noscript} s")
    body = "\n".join(to_html(s) for s in sections(state, view))
    return PAGE.format(
        style=STYLE,
        script=SCRIPT,
        noscript_refresh=noscript,
        refresh=f"{refresh:g}",
        clock=clock(state.now),
        live=to_html(live),
        body=body,
    )


def sections(state: PageState, view: View) -> list[El]:
    """The body's sections in order; each has an id and `data-section`, by which the script swaps it."""
    window = window_of(state)
    found = [
        _header(state, view),
        held_section(state),
        unknown_section(state.unknown, state.now, state.config.backoff.unknown_resource_grace),
        shadow_section(state.shadow_verdicts),
        budgets_section(state.budgets, state.now),
        queues_section(state, window),
        markers_section(window),
        deferrals_section(state.samples, window),
        signals_section(state.config, state.samples, window),
        failed_section(state),
        events_section(state.recent),
    ]
    return [s for s in found if s is not None]


def window_of(state: PageState) -> Window:
    """The span the charts draw and the events marked on it: the last `hours`, or from the oldest
    sample or event when the history is younger than that."""
    times = [s.t for s in state.samples]
    now, hours, events = state.now, state.hours, state.events
    # A history younger than the window is drawn across the whole width, not squeezed to its right edge.
    earliest = min([*times[:1], *(e.at for e in events[:1])], default=now - hours * 3600)
    start = max(now - hours * 3600, earliest - max(1.0, 0.02 * (now - earliest)))
    start = min(start, now - 10)
    in_view = [e for e in events if start <= e.at <= now]
    markers = [Marker(i + 1, e) for i, e in enumerate(in_view[-MAX_MARKERS:])]
    return Window(start, now, markers, max_gap(times), len(in_view) > MAX_MARKERS)


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


def _header(state: PageState, view: View) -> El:
    samples = state.samples
    links: list[El | str] = []
    for h in (1, 3, 6):
        links += [el("a", {"href": view.query(h)}, f"{h:g} h"), " "]
    latest = f"latest sample {clock(samples[-1].t)}, {len(samples)} in view" if samples else "no samples yet"
    meta = f"last {state.hours:g} h to {clock(state.now)} · {latest} · Redis {state.config.redis_url_redacted} · "
    return el(
        "header",
        {"id": "top", "data-section": ""},
        el("h1", None, "easeoff"),
        el("p", {"class": "meta"}, meta, "window: ", links),
    )
