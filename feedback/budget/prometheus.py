"""A budget's live latency from the app's own Prometheus histogram.

`histogram_quantile(q, sum(rate(METRIC_bucket[RANGE])) by (le))`, with RANGE the budget's
window but at least two of its `scrape_interval`s (a rate needs two scrapes; 15 s unless
told). Fail closed: no samples, NaN (no requests in the range), an error, or fewer requests in
the range than the quantile needs (quantiles.samples_needed) read as None with the reason,
never as a fast site.
"""

from __future__ import annotations

import math

from easeoff.feedback.config import BudgetConfig
from easeoff.feedback.signals.quantiles import samples_needed
from easeoff.feedback.signals.sources import ProbeError
from easeoff.feedback.signals.sources.prometheus import instant_query


def promql(budget: BudgetConfig) -> tuple[str, str]:
    """The quantile's query and the query for the requests it rests on."""
    span = f"{math.ceil(budget.prometheus_range)}s"
    quantile = f"histogram_quantile({budget.quantile:g}, sum(rate({budget.metric}_bucket[{span}])) by (le))"
    return quantile, f"sum(increase({budget.metric}_count[{span}]))"


def prometheus_latency(budget: BudgetConfig, timeout: float) -> tuple[float | None, str | None]:
    """(seconds, None), or (None, why it cannot be read)."""
    assert budget.prometheus_url and budget.metric
    quantile, count = promql(budget)
    try:
        requests = instant_query(budget.prometheus_url, count, timeout)
        if not math.isfinite(requests) or requests < samples_needed(budget.quantile):
            return None, f"prometheus: {requests:g} requests in range, the p{budget.quantile * 100:g} needs" + (
                f" {samples_needed(budget.quantile)}"
            )
        value = instant_query(budget.prometheus_url, quantile, timeout)
    except ProbeError as exc:
        return None, str(exc)
    if not math.isfinite(value) or value < 0:
        return None, f"prometheus: {value} (not a latency)"
    return value, None
