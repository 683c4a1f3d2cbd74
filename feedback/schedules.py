"""Periodic heavy jobs: what a schedule is, and when its ticks fall. Pure: no Redis, no clock.

A schedule names a task, its arguments, and either a cron expression (five fields, or an alias
like `@daily`, in a timezone, UTC by default) or an interval (`every = "2m"`: ticks at the
multiples of the interval since the Unix epoch, so every scheduler finds the same ticks without
talking to the others). A tick is named by its time in whole milliseconds: the fleet's
schedulers compare-and-set the last tick enqueued (workers/scheduler.py), so a tick is one
integer that only grows.

Schedules come from the config (`[schedules.NAME]`, decoded by feedback/config/schema.py) or
are declared on a task (`@periodic`, tasks/periodic.py); both build a `Schedule` with make_schedule.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from easeoff.feedback.durations import HINT, parse_duration

if TYPE_CHECKING:
    from croniter import croniter

# A schedule's name goes into its jobs' ids (`schedule-NAME-TICK`), which rq limits to these.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
CRON_HINT = 'five fields like "0 2 * * *", or @hourly, @daily, @weekly, @monthly, @yearly'
MIN_EVERY = 1.0  # seconds: a tick is noticed within a probe interval; finer than this means nothing
COUNT_CAP = 10_000  # missed cron ticks counted one by one up to this many


class ScheduleError(ValueError):
    """A schedule that cannot be: `key` is its dotted place (`schedules.nightly.cron`)."""

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}")


class Schedule(msgspec.Struct, frozen=True):
    name: str
    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)
    cron: str | None = None  # one of cron and every
    every: float | None = None  # seconds
    timezone: str = "UTC"  # the cron expression's; an interval has none
    origin: str = "config"  # "config", or "task" (declared with @periodic)

    @property
    def when(self) -> str:
        """`cron 0 2 * * * (Europe/Paris)` or `every 2s`: what `easeoff schedules` shows."""
        if self.cron is not None:
            zone = "" if self.timezone == "UTC" else f" ({self.timezone})"
            return f"cron {self.cron}{zone}"
        return f"every {_seconds_text(self.every or 0.0)}"

    @property
    def every_ms(self) -> int:
        return round((self.every or 0.0) * 1000)


def make_schedule(
    name: str,
    task: str,
    args: object = (),
    kwargs: object = None,
    cron: object = None,
    every: object = None,
    timezone: object = "UTC",
    origin: str = "config",
    key: str = "",
) -> Schedule:
    """A checked Schedule; ScheduleError names the key (under `key`, e.g. `schedules.nightly`) at fault."""
    where = key or f"schedule {name}"
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ScheduleError(where, f"name {name!r} must be 1-100 letters, digits, '_' or '-' (it goes in job ids)")
    if not isinstance(task, str) or not task:
        raise ScheduleError(f"{where}.task", "missing: the name of the heavy task to enqueue")
    if isinstance(args, list):
        args = tuple(args)
    if not isinstance(args, tuple):
        raise ScheduleError(f"{where}.args", f"must be a list of arguments, not {type(args).__name__}")
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ScheduleError(f"{where}.kwargs", f"must be a table of keyword arguments, not {type(kwargs).__name__}")
    if (cron is None) == (every is None):
        raise ScheduleError(where, 'needs either cron (like "0 2 * * *") or every (like "2m"), and only one')
    if every is not None:
        if timezone != "UTC":
            raise ScheduleError(
                f"{where}.timezone", "only a cron schedule has a timezone (every counts from the epoch)"
            )
        return Schedule(name, task, args, dict(kwargs), every=_every(every, f"{where}.every"), origin=origin)
    if not isinstance(timezone, str):
        raise ScheduleError(f"{where}.timezone", "must be a zone name like 'UTC' or 'Europe/Paris'")
    zone_of(timezone, f"{where}.timezone")
    return Schedule(name, task, args, dict(kwargs), cron=_cron(cron, f"{where}.cron"), timezone=timezone, origin=origin)


# -- ticks -----------------------------------------------------------------------


def due_tick(schedule: Schedule, now: float) -> int:
    """The latest tick at or before `now` (Unix seconds), in ms."""
    now_ms = math.floor(now * 1000)
    if schedule.every is not None:
        return now_ms // schedule.every_ms * schedule.every_ms
    # croniter's get_prev is strictly before its start: start a millisecond on, so a tick at `now` counts.
    start = datetime.fromtimestamp((now_ms + 1) / 1000, zone_of(schedule.timezone))
    return round(float(_cron_iter(schedule, start).get_prev(float)) * 1000)


def next_tick(schedule: Schedule, now: float) -> int:
    """The earliest tick after `now`, in ms."""
    if schedule.every is not None:
        return due_tick(schedule, now) + schedule.every_ms
    start = datetime.fromtimestamp(math.floor(now * 1000) / 1000, zone_of(schedule.timezone))
    return round(float(_cron_iter(schedule, start).get_next(float)) * 1000)


def ticks_between(schedule: Schedule, after: int, before: int) -> int:
    """How many ticks fall strictly between two ticks (ms): the ones a scheduler coalesced."""
    if before <= after:
        return 0
    if schedule.every is not None:
        return max(0, (before - after) // schedule.every_ms - 1)
    it = _cron_iter(schedule, datetime.fromtimestamp(after / 1000, zone_of(schedule.timezone)))
    count = 0
    while count < COUNT_CAP and round(float(it.get_next(float)) * 1000) < before:
        count += 1
    return count


def zone_of(name: str, key: str = "timezone") -> tzinfo:
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(key, f"unknown timezone {name!r} (use a zone name like 'UTC' or 'Europe/Paris')") from None


def _cron_iter(schedule: Schedule, start: datetime) -> croniter:
    from croniter import croniter  # 8 ms at import: only where a cron schedule is read or timed

    return croniter(schedule.cron, start)


def _cron(value: object, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ScheduleError(key, f"must be a cron expression: {CRON_HINT}")
    from croniter import croniter

    text = " ".join(value.split())
    # croniter also takes six or seven fields (seconds last, years): other tools put seconds first; refuse both.
    if not (text.startswith("@") or len(text.split()) == 5) or not croniter.is_valid(text):
        raise ScheduleError(key, f"bad cron expression {value!r}: {CRON_HINT}")
    if text == "@reboot":
        raise ScheduleError(key, f"@reboot is not a time: {CRON_HINT}")
    return text


def _every(value: object, key: str) -> float:
    if isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise ScheduleError(key, str(exc)) from None
    elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScheduleError(key, f"must be a duration ({HINT})")
    else:
        seconds = float(value)
    if seconds < MIN_EVERY:
        raise ScheduleError(key, f"must be at least {MIN_EVERY:g}s ({HINT})")
    if abs(round(seconds * 1000) - seconds * 1000) > 1e-6:
        raise ScheduleError(key, "must be a whole number of milliseconds")
    return seconds


def _seconds_text(seconds: float) -> str:
    """2s, 90s, 2m, 1h30m, 1d: the duration syntax back."""
    if seconds != int(seconds) or seconds < 60:
        return f"{seconds:g}s"
    parts, rest = [], int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)
