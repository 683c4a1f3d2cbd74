"""Trend: hold work before a signal crosses `high`, not after (`signals.NAME.predict = SECONDS`).

The prober keeps each host's last few values of such a signal and fits a least-squares line
through them. A signal still below `high` counts as strained when the line reaches `high`
within `predict` seconds: rising lag holds jobs while it is still below the mark. The fit is
bounded: it needs MIN_POINTS probes, looks at the last POINTS only (so a trend is the last
few intervals', not an old one's), and a signal falling or flat predicts nothing.
A predicted hold has no hysteresis band of its own: it ends when the line no longer reaches
`high` in time (a crossing of `high` itself holds as always, until below `low`). A reading
keeps the signals held by prediction in `predictions`, with their seconds until `high`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

POINTS = 6
MIN_POINTS = 3


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Units per second of the least-squares line through (time, value) points; None if too few."""
    if len(points) < MIN_POINTS:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread <= 0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


def seconds_to(high: float, value: float, rate: float | None) -> float | None:
    """When a value rising at `rate` reaches `high`; None if it is not rising."""
    if rate is None or rate <= 0:
        return None
    return max(high - value, 0.0) / rate


class Trends:
    """The last POINTS values of each (host, signal) this process probes."""

    def __init__(self) -> None:
        self._points: dict[tuple[str, str], deque[tuple[float, float]]] = {}

    def add(self, target: str, signal: str, at: float, value: float) -> float | None:
        """Record a value; return the fitted slope (units per second), or None while too few."""
        points = self._points.setdefault((target, signal), deque(maxlen=POINTS))
        points.append((at, value))
        return slope(points)
