"""Durations as people type them (`90s`, `10m`, `2h`, `1d`): TTLs on the command line, limits in the config."""

from __future__ import annotations

import re

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|[smhd]?)\s*$")
UNITS = {"": 1, "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`90`, `90s`, `10m`, `2h`, `1d`, `4ms` → seconds; ValueError names what was wrong."""
    match = DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"bad duration {text!r} (use e.g. 90s, 10m, 2h, 1d)")
    return float(match.group(1)) * UNITS[match.group(2)]


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
