"""The page's "what holds work now" sections: the gate's holds with its reasons, the switches in
force with their age, jobs held on resources the config lacks, and the policies on trial.

These answer the first question ops bring to the page — why is nothing running? — in the
gate's own words (`easeoff status` gives the same reasons), so they come first, above the charts.
"""

from __future__ import annotations

from collections.abc import Sequence

from easeoff.feedback.durations import age_text
from easeoff.feedback.observe.markup import El, el
from easeoff.feedback.observe.page_parts import empty, head, row, section
from easeoff.feedback.observe.page_state import PageState, ShadowVerdict, SwitchView
from easeoff.feedback.tally.unknown_resources import UnknownResource


def held_section(state: PageState) -> El:
    """Queues, resources and tasks the gate holds, with its reasons, and the switches in force with their age."""
    parts: list[El] = []
    if state.held_everything:
        parts.append(el("p", {"class": "held-all"}, "all heavy work held: " + "; ".join(state.held_everything)))
    but = " but by the above" if state.held_everything else ""
    parts.append(el("h3", None, "Queues"))
    if state.held_queues:
        rows = [row(q, "; ".join(r)) for q, r in state.held_queues.items()]
        parts.append(el("table", {"id": "held-queues"}, head("queue", "held because"), rows))
    else:
        parts.append(empty("no queue held" + but))
    parts.append(el("h3", None, "Resources"))
    parts.append(_held_resources(state) if state.held_resources or state.critical else empty("no resource held" + but))
    parts.append(el("h3", None, "Tasks"))
    if state.held_tasks:
        rows = [row(t, "; ".join(r)) for t, r in state.held_tasks.items()]
        parts.append(el("table", {"id": "held-tasks"}, head("task", "its jobs wait because"), rows))
    else:
        parts.append(empty("no task paused or throttled"))
    parts.append(el("h3", None, "Switches in force"))
    parts.append(_switches(state.switches) if state.switches else empty("no switches on"))
    return section("held", "Held now", parts)


def unknown_section(unknown: Sequence[UnknownResource], now: float, grace: float) -> El | None:
    """Jobs name resources this config lacks (configs out of step): they are held, then fail."""
    if not unknown:
        return None
    items = [el("li", None, u.reason(now, grace)) for u in unknown]
    return section("unknown-resources", "Held: unknown resources", el("ul", None, items))


def shadow_section(verdicts: Sequence[ShadowVerdict]) -> El:
    """Policies judged on live readings that hold nothing: what they would have done (shadow mode's hook)."""
    if not verdicts:
        return section("shadow-verdicts", "Shadow verdicts", empty("Shadow verdicts: none"))
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
    table = el("table", {"id": "shadow-table"}, head("policy", "scope", "would now", "because", "so far"), rows)
    return section("shadow-verdicts", "Shadow verdicts", table)


def _held_resources(state: PageState) -> El:
    """Each resource held or critical: its own reasons, and its critical findings flagged beneath."""
    rows = []
    for name in dict.fromkeys([*state.held_resources, *state.critical]):
        critical = [el("div", {"class": "critical"}, f"CRITICAL {c}") for c in state.critical.get(name, ())]
        reasons = el("td", {"class": "text"}, "; ".join(state.held_resources.get(name, ())), critical)
        rows.append(el("tr", None, el("td", None, name), reasons))
    return el("table", {"id": "held-resources"}, head("resource", "deferred because"), rows)


def _switches(switches: Sequence[SwitchView]) -> El:
    """Ops' switches in force: what, by whom, why, for how long, and when each lapses."""
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
        for s in switches
    ]
    return el("table", {"id": "switches"}, head("switch", "by", "why", "on for", "lapses in"), rows)
