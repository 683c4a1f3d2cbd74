"""A fleet-wide rate, `rate = "120/min"`: at most COUNT job starts in any window of PER seconds.

Pure parsing, shared by the config (a resource's rate) and the task decorator (a task's own);
feedback/levers/rates.py enforces it in Redis. The window is a duration (feedback/durations.py:
`10s`, `2m`, `1.5h`), and may be a word (`/min`, `/hour`) that stands for one of its units.
"""

from __future__ import annotations

import re

from easeoff.feedback.durations import parse_duration

# The words a window may be spelled with, each a duration unit by another name (plural `s` allowed).
WORDS = {"sec": "s", "second": "s", "min": "m", "minute": "m", "hour": "h"}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\S.*?)\s*$")
_WORD = re.compile(r"^(\d+(?:\.\d+)?)?\s*([a-z]+)$")
_HINT = '(units: s, min, hour; "6/10s" for a window)'


class Rate:
    """Not a dataclass nor a msgspec Struct: tasks/ imports this (an app's import of its tasks
    needs no msgspec), and the config decodes it from its text through msgspec's dec_hook."""

    __slots__ = ("count", "per")

    def __init__(self, count: int, per: float) -> None:
        self.count = count  # job starts allowed...
        self.per = per  # ...in any window of this many seconds

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rate) and (self.count, self.per) == (other.count, other.per)

    def __hash__(self) -> int:
        return hash((self.count, self.per))

    def __repr__(self) -> str:
        return f"Rate(count={self.count}, per={self.per!r})"

    def __str__(self) -> str:
        for unit, seconds in (("hour", 3600.0), ("min", 60.0)):
            if self.per == seconds:
                return f"{self.count}/{unit}"
        return f"{self.count}/{self.per:g}s"


def parse_rate(text: object) -> Rate:
    """`"120/min"`, `"5/s"`, `"1000/hour"`, `"6/10s"`, `"6/1h30m"`; ValueError says what is wrong."""
    match = _RATE.match(text) if isinstance(text, str) else None
    window = _window(match.group(2)) if match is not None else None
    if match is None or window is None:
        raise ValueError(f'{text!r} is not a rate like "120/min" {_HINT}')
    count = int(match.group(1))
    if count < 1 or window <= 0:
        raise ValueError(f"{text!r}: a rate needs at least one job in a window longer than zero")
    return Rate(count, window)


def _window(text: str) -> float | None:
    """`min`, `2 minutes`, `10s`, `1h30m`: seconds, or None when it is no duration."""
    word = _WORD.match(text)
    if word is not None:
        unit = word.group(2)
        unit = unit[:-1] if unit not in WORDS and unit[:-1] in WORDS else unit  # minutes, hours
        text = f"{word.group(1) or 1}{WORDS.get(unit, unit)}"
    try:
        return parse_duration(text, zero_ok=True)
    except ValueError:
        return None
