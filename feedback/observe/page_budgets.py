"""The page's budgets: each budget as its controller last saw and set it.

A budget is the operator's statement of what the live site may feel; the controller finds how
much heavy work fits under it. The table puts the two side by side — the ceilings against what
was observed, the learned baseline, the slack — with what the controller chose (limit, pace)
and why, so a breach or a slow climb is explained where it is seen.
"""

from __future__ import annotations

from collections.abc import Sequence

from easeoff.feedback.budget.state import BudgetState, CeilingView
from easeoff.feedback.durations import age_text
from easeoff.feedback.observe.markup import El, el
from easeoff.feedback.observe.page_parts import head, seconds, section


def budgets_section(budgets: Sequence[BudgetState], now: float) -> El | None:
    """Each budget as its controller last saw and set it: the ceilings against what it observed,
    the baseline, the slack, the limit and pace it chose, and why (absent with no budget configured)."""
    if not budgets:
        return None
    rows = [_budget_row(b, now) for b in budgets]
    columns = head("resource", "budget", "observed", "baseline", "slack", "limit", "pace", "last decision")
    meta = el(
        "p",
        {"class": "meta"},
        "The controller spends each budget: slack is 1 - observed/budget of the tightest ceiling (below 0: a breach); ",
        "its level is the limit and, below one job at a time, the pace (the share of time a job may run).",
    )
    return section("budgets", "Budgets", meta, el("table", {"id": "budget-table"}, columns, rows))


def _budget_row(b: BudgetState, now: float) -> El:
    """One budget's row; its data attributes carry the numbers for tests and scripts."""
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
    return el(
        "tr",
        attrs,
        el("td", None, b.resource),
        el("td", {"class": "text"}, [el("div", None, f"{c.name} ≤ {_amount(c, c.limit)}") for c in b.ceilings]),
        el("td", {"class": "text"}, [el("div", None, f"{c.name} {_amount(c, c.value)}") for c in b.ceilings]),
        el("td", None, "?" if b.baseline is None else seconds(b.baseline)),
        el("td", None, "?" if slack is None else f"{slack:.0%}"),
        el("td", None, limit),
        el("td", None, "full" if b.duty is None else f"{b.duty:.0%} duty"),
        el("td", {"class": "text decision"}, decision),
    )


def _amount(ceiling: CeilingView, value: float | None) -> str:
    if value is None:
        return "?"
    return seconds(value) if ceiling.unit == "s" else f"{value:.4g}"
