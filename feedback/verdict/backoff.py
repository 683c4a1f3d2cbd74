"""How long deferred work waits: exponential in the deferral count, full jitter, capped.

Full jitter spreads the retries of many jobs deferred at once, so they do not all
return in the same instant and strain the database again together.
"""

from __future__ import annotations

import random


def deferral_delay(attempt: int, base: float, cap: float, floor: float, rng: random.Random) -> float:
    """Seconds to wait before deferred work is tried again.

    `attempt` counts earlier deferrals (0 for the first). `floor` keeps the delay at
    least one probe interval: sooner than that, the readings cannot have changed.
    """
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 0), 62))
    floor = min(floor, cap)
    return max(floor, rng.uniform(0.0, ceiling))
