"""The config's value types that msgspec cannot spell with a `Meta`: durations, rates and a
budget's latency. Each is decoded by `dec_hook`, so its error is located by msgspec like any other.

A duration is one syntax everywhere (feedback/durations.py): `90s`, `2m`, `1h30m`, `1d`, `250ms`
or a number of seconds. Its floor is its type: `Seconds` is above zero, `SecondsOrZero` may be
zero, and `AtLeast50ms` and its siblings carry the floor of the few settings that have one.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar

from msgspec import Meta

from easeoff.feedback.durations import HINT, parse_duration
from easeoff.feedback.rate import Rate, parse_rate

FINITE = 1.7976931348623157e308  # `le` this: msgspec takes inf as a float, a threshold must not
Name = Annotated[str, Meta(min_length=1)]
Count = Annotated[int, Meta(ge=0)]
Level = Annotated[float, Meta(ge=0, le=FINITE)]  # a threshold or a water mark: finite, not negative


class Seconds(float):
    """A duration above zero, in seconds."""

    minimum: ClassVar[float] = 0.0
    zero_ok: ClassVar[bool] = False

    @classmethod
    def decode(cls, value: object) -> Seconds:
        if isinstance(value, str):
            seconds = parse_duration(value, zero_ok=True)
        elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise TypeError(f"expected a duration ({HINT}), got {shown(value)}")
        else:
            seconds = float(value)
        if seconds < cls.minimum or (seconds <= 0 and not cls.zero_ok):
            floor = f">= {cls.minimum:g}s" if cls.minimum else ">= 0s" if cls.zero_ok else "above 0s"
            raise ValueError(f"expected a duration {floor} ({HINT}), got {shown(value)}")
        return cls(seconds)


class SecondsOrZero(Seconds):
    zero_ok = True


class AtLeast1ms(Seconds):
    minimum = 0.001


class AtLeast10ms(Seconds):
    minimum = 0.01


class AtLeast50ms(Seconds):
    minimum = 0.05


class Latency:
    """A budget's latency: a time (`"4ms"`, `0.004`) or a multiple of the idle baseline (`"1.5x"`)."""

    __slots__ = ("multiple", "seconds")

    def __init__(self, seconds: float | None = None, multiple: float | None = None) -> None:
        self.seconds, self.multiple = seconds, multiple

    @classmethod
    def decode(cls, value: object) -> Latency:
        if isinstance(value, str) and value.strip().lower().endswith("x"):
            try:
                multiple = float(value.strip()[:-1])
            except ValueError:
                multiple = math.nan
            if not math.isfinite(multiple) or multiple <= 1:
                raise ValueError(f"{value!r}: a multiple of the idle baseline must be a number above 1, like 1.5x")
            return cls(multiple=multiple)
        try:
            return cls(seconds=float(Seconds.decode(value)))
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is neither a multiple (1.5x) nor a time (4ms, 0.004)") from None


def dec_hook(kind: type, value: Any) -> object:
    """msgspec's hook for the types above; a ValueError or TypeError becomes a located error."""
    if issubclass(kind, Seconds):
        return kind.decode(value)
    if kind is Latency:
        return Latency.decode(value)
    if kind is Rate:
        return parse_rate(value)
    raise NotImplementedError(kind)


def shown(value: object) -> str:
    """A value as the file spells it, short and on one line, for an error message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= 40 else text[:36] + "...'"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    return str(value)[:40]
