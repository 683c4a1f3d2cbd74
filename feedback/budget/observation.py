"""What the budget controller sees of one resource in one interval.

The measuring side (the live site's latency at the budget's quantile, its learned baseline,
lag and InnoDB's undo backlog) and the controlling side (the fleet-wide level of heavy work)
meet here and nowhere else: the controller is a pure function of a `BudgetObservation`, so it
is tested without servers and the measuring side can change its sources freely.
"""

from __future__ import annotations

import math

import msgspec


class Ceiling(msgspec.Struct, frozen=True):
    """One budgeted quantity now, against the most the budget allows of it."""

    name: str  # "latency", "lag", "history_list_length"
    value: float | None  # None: no usable sample this interval (missing, NaN, stale)
    limit: float

    @property
    def slack(self) -> float | None:
        """1 - value/limit: 0.3 is 30% of the budget unspent, a negative value a breach."""
        if self.value is None or not math.isfinite(self.value) or self.limit <= 0:
            return None
        return 1.0 - self.value / self.limit


class BudgetObservation(msgspec.Struct, frozen=True):
    """One resource's budget over the last interval, as the controller takes it.

    `stale` is true when any ceiling could not be read: the controller then holds (never grows).
    `work_done` is heavy work finished on the resource in the interval (jobs and chunks, in the
    controller's own units), so it can tell whether more concurrency still buys more throughput.
    """

    resource: str
    at: float  # fleet time (Redis's clock) the interval ended
    ceilings: tuple[Ceiling, ...]
    baseline: float | None  # the learned idle latency at the budget's quantile, seconds
    running: int  # heavy jobs holding a slot on the resource now
    work_done: float
    stale: bool = False
    unreadable: tuple[str, ...] = ()  # when stale, what could not be read and why, for the event's reason
    needs_baseline: bool = True  # a budget relative to the idle baseline; an absolute one needs no idle spell

    @property
    def slack(self) -> float | None:
        """The tightest ceiling's slack; None when any is unreadable (fail closed: hold)."""
        slacks = [c.slack for c in self.ceilings]
        if self.stale or not slacks or any(s is None for s in slacks):
            return None
        return min(s for s in slacks if s is not None)
