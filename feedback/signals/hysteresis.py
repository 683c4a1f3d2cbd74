"""A reading's strained state: the decision half of a probe, pure, so it is tested without servers.

Strained above `high`, healthy again only below `low`: a flip needs a real change, not noise.
The state travels with the reading (the next probe starts from it), so the prober asks here
at probe time; a stopped replication thread is strain with no band at all.

A value that is not a finite number (NaN, +Inf, -Inf: a source that divided by zero, a query
that returned nonsense) says nothing about the database, and every comparison with NaN is
false, so it would read as healthy: it is strain instead, whatever the previous state (fail
closed), and `not_a_number` names it for the reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import msgspec

from easeoff.feedback.config import Config


def not_a_number(value: float) -> str | None:
    """Why `value` cannot be judged (`nan (not a number)`, `inf (not a finite number)`), or None."""
    if math.isnan(value):
        return "nan (not a number)"
    if math.isinf(value):
        return f"{value} (not a finite number)"
    return None


def assess(value: float, high: float, low: float, was_strained: bool) -> bool:
    """Return the new strained state for `value`, given the previous one (a value that is not a
    finite number is strain: nothing is known)."""
    if not math.isfinite(value):
        return True
    if was_strained:
        return value >= low
    return value > high


def next_states(
    target: str,
    values: Mapping[str, float],
    was: Mapping[str, bool],
    config: Config,
    predicted: frozenset[str] = frozenset(),
) -> dict[str, bool]:
    """Each signal's state after a probe of `target`, from its previous state and the (live)
    thresholds; `predicted`: the signals whose previous strain was a trend's prediction."""
    strained = {}
    for name, value in values.items():
        if name == "replication":
            strained[name] = not math.isfinite(value) or value >= 0.5  # structural: a stopped thread is strain, no band
        elif name in config.signals:
            limits = config.thresholds(name, target)
            # A hold that was only predicted has no band: it stands again only if predicted again.
            held_before = was.get(name, False) and name not in predicted
            strained[name] = assess(value, limits.high, limits.low, held_before)
    return strained


class ShadowThresholds(msgspec.Struct, frozen=True):
    """Ops' shadow threshold overrides in force: the config as they would have it, and their signals."""

    config: Config
    names: frozenset[str]


def shadow_states(
    target: str,
    values: Mapping[str, float],
    was: Mapping[str, bool],
    was_shadow: Mapping[str, bool],
    shadow: ShadowThresholds | None,
) -> dict[str, bool]:
    """The state of each shadow-overridden signal under its shadow thresholds (a reading's
    `shadow_strained`), so a shadow threshold has its own band and never moves the real one;
    a band new to a signal starts from the signal's real state (`was`)."""
    states: dict[str, bool] = {}
    if shadow is None:
        return states
    for name in sorted(shadow.names):
        if name in values and name in shadow.config.signals:
            limits = shadow.config.thresholds(name, target)
            held = was_shadow.get(name, was.get(name, False))
            states[name] = assess(values[name], limits.high, limits.low, held)
    return states
