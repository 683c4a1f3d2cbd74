"""How long deferred work waits: exponential in the deferral count, full jitter, capped.

Full jitter spreads the retries of many jobs deferred at once, so they do not all
return in the same instant and strain the database again together.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any


def deferral_delay(attempt: int, base: float, cap: float, floor: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before deferred work is tried again.

    `attempt` counts earlier deferrals (0 for the first). `floor` keeps the delay at
    least one probe interval: sooner than that, the readings cannot have changed.
    """
    rng = rng or random
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 0), 62))
    floor = min(floor, cap)
    return max(floor, rng.uniform(0.0, ceiling))


def deferral_cap_exceeded(
    info: Mapping[str, Any], now: float, max_deferrals: int | None, max_age: float | None
) -> str | None:
    """Why a job may not be deferred again, or None. The task's own caps beat the defaults.

    `info` is the job's easeoff meta after counting this deferral: a cap of N allows N
    deferrals and fails the job at the next one; age counts from the first deferral.
    """
    limit = info.get("max_deferrals", max_deferrals)
    if limit is not None and int(info["deferrals"]) > int(limit):
        return f"deferred {int(info['deferrals']) - 1} times, the cap is {int(limit)}"
    age_cap = info.get("max_deferral_age", max_age)
    waited = now - float(info.get("first_deferred_at", now))
    if age_cap is not None and waited > float(age_cap):
        return f"deferred for {waited:.0f}s, the cap is {float(age_cap):g}s"
    return None
