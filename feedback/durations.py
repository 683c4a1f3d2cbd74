"""Durations as people type them (`90s`, `2m`, `1h30m`, `1d`, or a number of seconds): the one
syntax for every duration in the config, on the command line (`--ttl`) and in a rate's window.

Pure parsing, shared by the config (feedback/config/units.py), feedback/rate.py and the CLI.
"""

from __future__ import annotations

import itertools
import math
import re

# The one unit table: seconds per unit. A rate's window words (`/min`, `/hour`) are aliases of these.
UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
LARGEST_FIRST = tuple(UNITS)
_NUMBER = r"\d+(?:\.\d+)?"
_PART = re.compile(rf"({_NUMBER})\s*(ms|[smhdw])")
_COMPOUND = re.compile(rf"^(?:{_NUMBER}\s*(?:ms|[smhdw])\s*)+$")
_PLAIN = re.compile(rf"^{_NUMBER}$")
HINT = "use e.g. 90s, 2m, 1h30m, 1d, or a number of seconds"


def parse_duration(text: str, zero_ok: bool = False) -> float:
    """`90`, `1.5`, `90s`, `10m`, `1h30m`, `1h 30m`, `2d`, `4ms` → seconds; ValueError names what was
    wrong. Parts go largest unit first, each once: `30m1h` and `1h1h` are typos, refused."""
    stripped = text.strip() if isinstance(text, str) else ""
    if _PLAIN.match(stripped):
        seconds = float(stripped)
    elif _COMPOUND.match(stripped):
        parts = [(float(number), unit) for number, unit in _PART.findall(stripped)]
        ranks = [LARGEST_FIRST.index(unit) for _, unit in parts]
        if any(later <= earlier for earlier, later in itertools.pairwise(ranks)):
            raise ValueError(f"bad duration {text!r} (largest unit first, each once: {HINT})")
        seconds = sum(number * UNITS[unit] for number, unit in parts)
    else:
        raise ValueError(f"bad duration {text!r} ({HINT})")
    if not math.isfinite(seconds) or (seconds == 0 and not zero_ok):
        raise ValueError(f"bad duration {text!r}: must be above 0 ({HINT})")
    return seconds


def age_text(seconds: float) -> str:
    """`45s`, `12m`, `3h 12m`, `2d 4h`: how long a switch has been on, at a glance."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"
