"""A fleet-wide rate, `rate = "120/min"`: at most COUNT job starts in any window of PER seconds.

Pure parsing, shared by the config (a resource's rate) and the task decorator (a task's own);
feedback/levers/rates.py enforces it in Redis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from easeoff.feedback.durations import UNITS as SECONDS

# The words a rate's window may use, each an alias of a duration unit: one table of seconds.
UNITS = {"s": "s", "sec": "s", "second": "s", "m": "m", "min": "m", "minute": "m", "h": "h", "hour": "h"}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+?)s?\s*$")


@dataclass(frozen=True)  # not a msgspec Struct: tasks/ imports this, and an app's import of its tasks needs no msgspec
class Rate:
    count: int  # job starts allowed...
    per: float  # ...in any window of this many seconds

    def __str__(self) -> str:
        for unit, seconds in (("hour", 3600.0), ("min", 60.0)):
            if self.per == seconds:
                return f"{self.count}/{unit}"
        return f"{self.count}/{self.per:g}s"


def parse_rate(text: object) -> Rate:
    """`"120/min"`, `"5/s"`, `"1000/hour"`, `"6/10s"`; ValueError says what is wrong."""
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None or match.group(3) not in UNITS:
        raise ValueError(f'{text!r} is not a rate like "120/min" (units: s, min, hour; "6/10s" for a window)')
    count, times, unit = int(match.group(1)), float(match.group(2) or 1), match.group(3)
    if count < 1 or times <= 0:
        raise ValueError(f"{text!r}: a rate needs at least one job in a window longer than zero")
    return Rate(count, times * SECONDS[UNITS[unit]])
