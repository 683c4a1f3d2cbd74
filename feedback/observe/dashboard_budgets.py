"""The dashboard's budget panels: per budgeted resource, each ceiling against what the controller
observed, the limit and pace it chose, its slack, and why it last decided what it did.

A budget is what the live site may feel; the controller finds how much heavy work fits under
it. These panels let ops see both at once — the line the operator drew and where the site is —
and read a cut or a hold from its reason rather than guess it.
"""

from __future__ import annotations

import json

from easeoff.feedback.config import BudgetConfig, Config
from easeoff.feedback.observe import metric_names as names
from easeoff.feedback.observe.grafana import Layout, table, target, timeseries


def budget_panels(layout: Layout, config: Config) -> None:
    """Per budgeted resource: each ceiling against what the controller observed (and, for a
    latency, the learned baseline); the limit and pace it chose, the slack; its last reasons."""
    budgeted = {name: r.budget for name, r in config.resources.items() if r.budget is not None}
    if not budgeted:
        return
    layout.row("Budgets")
    for name, budget in budgeted.items():
        _ceiling_panels(layout, name, budget)
        _control_panels(layout, name)
    _decision_panels(layout)


def _ceiling_panels(layout: Layout, name: str, budget: BudgetConfig) -> None:
    """One panel per ceiling the budget sets: the ceiling, what was observed, and for latency the baseline."""
    resource = f"resource={json.dumps(name)}"
    ceilings = [
        ("latency", "s", budget.latency is not None or budget.latency_multiple is not None),
        ("lag", "s", budget.lag is not None),
        ("history_list_length", "short", budget.history_list_length is not None),
    ]
    for ceiling, unit, present in ceilings:
        if not present:
            continue
        selector = f"{{{resource}, ceiling={json.dumps(ceiling)}}}"
        targets = [
            target(f"{names.BUDGET_CEILING}{selector}", "budget"),
            target(f"{names.BUDGET_OBSERVED}{selector}", "observed"),
        ]
        if ceiling == "latency":
            targets.append(target(f"{names.BUDGET_BASELINE}{{{resource}}}", "idle baseline"))
        layout.add(
            timeseries(
                f"Budget {ceiling}: {name}",
                targets,
                unit=unit,
                description="The most the budget allows (absolute), what the controller saw at each step"
                + (", and the latency learned while no heavy work ran." if ceiling == "latency" else "."),
            ),
            width=8,
        )


def _control_panels(layout: Layout, name: str) -> None:
    """What the controller chose for the resource: its limit and level, its slack and pace."""
    resource = f"resource={json.dumps(name)}"
    layout.add(
        timeseries(
            f"Budget limit: {name}",
            [
                target(f"{names.CONCURRENCY_LIMIT}{{{resource}}}", "limit"),
                target(f"{names.CONCURRENCY_LEASES}{{{resource}}}", "in use"),
                target(f"{names.BUDGET_LEVEL}{{{resource}}}", "level"),
            ],
            description="The concurrency the controller chose (0 while it learns a baseline), and the jobs in it.",
        ),
        width=8,
    )
    layout.add(
        timeseries(
            f"Budget slack and pace: {name}",
            [
                target(f"{names.BUDGET_SLACK}{{{resource}}}", "slack"),
                target(f"{names.BUDGET_DUTY}{{{resource}}}", "pace (duty cycle)"),
            ],
            unit="percentunit",
            marks=[("high", 0.0)],
            minimum=None,
            description="Slack: 1 - observed/budget of the tightest ceiling (below 0: a breach, cut at once). "
            "Pace: the share of time one job may run below one job at a time (1: full pace).",
        ),
        width=8,
    )


def _decision_panels(layout: Layout) -> None:
    """Every budget's last decision and its age, and how many budgets are in each state."""
    layout.add(
        table(
            "Budget: last decisions",
            [
                target(f"{names.BUDGET_DECISION} == 1", "{{resource}} {{why}}"),
                target(names.BUDGET_STEP_AGE, "{{resource}}"),
            ],
            description="Why each controller holds, grows or cuts (`easeoff log` and the page have the numbers), "
            "and seconds since it last stepped.",
        ),
        width=12,
    )
    layout.add(
        timeseries(
            "Budget decisions by reason",
            [target(f"sum by (why) ({names.BUDGET_DECISION})", "{{why}}")],
            stack=True,
            description="How many budgets are in each state (learning, grow, cut_breach, hold_*).",
        ),
        width=12,
    )
