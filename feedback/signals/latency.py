"""The live-latency signal: what the live site feels, timed, not inferred from load.

Each probe times a canary statement the operator names (`signals.latency.canary`; default a
primary-key point read of the host's heartbeat row) over the probe's kept connection, and
the prober keeps the last `window` timings of each host. The signal's value is their p99, in
seconds, judged with `high`/`low`/`critical` like any other: a storm of heavy joins or
SLEEPs that leaves Threads_connected low still shows in the canary's tail.
"""

from __future__ import annotations

import math
from collections import deque

DEFAULT_CANARY = "SELECT ts FROM easeoff.heartbeat WHERE server_id = @@GLOBAL.server_id"
FALLBACK_CANARY = "SELECT 1"  # where the heartbeat table does not exist (a plain host)
DEFAULT_WINDOW = 20


class LatencyWindow:
    """The last `size` canary timings of one host (the window moves with the sticky prober:
    a prober that takes a host over starts it afresh)."""

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        self.samples: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> float:
        """Record one timing; return the window's p99 (nearest rank)."""
        self.samples.append(seconds)
        return p99(self.samples)


def p99(samples: deque[float] | list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(math.ceil(0.99 * len(ordered)) - 1, 0)]
