"""The metric families of the budgets: what each allows, what its controller saw, and what the
controller chose and why.

A value not known — an unreadable ceiling, no baseline yet, a controller that never stepped —
is left absent rather than exported as 0, which would read as a fast site. Pure, as every
*_families module: the exporter reads the budgets' state once per scrape and hands it here.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.core import GaugeMetricFamily, Metric

from easeoff.feedback.budget.controller_state import Why
from easeoff.feedback.budget.state import BudgetState
from easeoff.feedback.observe import metric_names as names


def budget_families(budgets: Mapping[str, BudgetState], now: float) -> list[Metric]:
    """Each budget as its controller last saw and set it. The limit it chose is
    easeoff_concurrency_limit; a value not known (an unreadable ceiling, no baseline yet, never
    stepped) is absent rather than 0, which would read as a fast site."""
    return [*_seen_families(budgets), *_chosen_families(budgets, now)]


def _seen_families(budgets: Mapping[str, BudgetState]) -> list[Metric]:
    """What each budget allows and what the controller saw: ceilings, observed values, baseline, slack."""
    ceiling = GaugeMetricFamily(
        names.BUDGET_CEILING,
        "The most the budget allows, absolute (latency and lag in seconds, a 1.5x latency resolved against the "
        "baseline; history_list_length in transactions).",
        labels=["resource", "ceiling"],
    )
    observed = GaugeMetricFamily(
        names.BUDGET_OBSERVED,
        "The value of each budgeted quantity the controller saw at its last step (same units as the ceiling).",
        labels=["resource", "ceiling"],
    )
    baseline = GaugeMetricFamily(
        names.BUDGET_BASELINE,
        "The live latency at the budget's quantile learned while no heavy work ran (the idle baseline).",
        labels=["resource"],
    )
    slack = GaugeMetricFamily(
        names.BUDGET_SLACK,
        "1 - observed/ceiling of the tightest ceiling at the last step: 0.3 is 30% unspent, below 0 a breach.",
        labels=["resource"],
    )
    for name, b in budgets.items():
        for c in b.ceilings:
            if c.limit is not None:
                ceiling.add_metric([name, c.name], c.limit)
            if c.value is not None:
                observed.add_metric([name, c.name], c.value)
        if b.baseline is not None:
            baseline.add_metric([name], b.baseline)
        if b.slack is not None:
            slack.add_metric([name], b.slack)
    return [ceiling, observed, baseline, slack]


def _chosen_families(budgets: Mapping[str, BudgetState], now: float) -> list[Metric]:
    """What each controller chose and why: its level, the pace in force, its last decision and its age."""
    level = GaugeMetricFamily(
        names.BUDGET_LEVEL,
        "The controller's level: at 1 or more the concurrency, below 1 the duty cycle at one job; 0 while learning.",
        labels=["resource"],
    )
    duty = GaugeMetricFamily(
        names.BUDGET_DUTY,
        "The pace in force: the share of time one heavy job may run (1: full pace, no pause between jobs).",
        labels=["resource"],
    )
    decision = GaugeMetricFamily(
        names.BUDGET_DECISION,
        "1 for the reason of the controller's last decision (grow, cut_breach, hold_stale, ...), 0 for the others.",
        labels=["resource", "why"],
    )
    age = GaugeMetricFamily(
        names.BUDGET_STEP_AGE,
        "Seconds since the controller last stepped (once per probe interval while a worker probes).",
        labels=["resource"],
    )
    for name, b in budgets.items():
        level.add_metric([name], b.last.level if b.last is not None else 0.0)
        duty.add_metric([name], b.pace)
        for why in Why:
            decision.add_metric([name, str(why)], 1 if b.last is not None and b.last.why == why else 0)
        stepped = b.age(now)
        if stepped is not None:
            age.add_metric([name], stepped)
    return [level, duty, decision, age]
