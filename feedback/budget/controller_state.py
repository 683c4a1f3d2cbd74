"""What the budget's controller remembers between steps and what a step decides, typed: its
state (the level, the window measured at it, the levels that breached or bought nothing), its
tuning, and the decision with the numbers behind it (feedback/budget/controller.py steps it).
"""

from __future__ import annotations

import math
from enum import StrEnum

import msgspec


class Why(StrEnum):
    """Why the level is what it is after a step."""

    LEARNING = "learning"  # idle on purpose: no heavy job starts, so the baseline can be learned
    GROW = "grow"  # slack beyond the dead band, and the last step up bought throughput
    APPROACH_BREACHED = "approach_breached"  # growing, in small steps, toward a level that breached
    CUT_BREACH = "cut_breach"  # the budget is breached: cut at once
    CANNOT_MEET = "cannot_meet"  # breached at the lowest duty cycle: the budget cannot be kept with any heavy work
    RELEARN = "relearn"  # at the floor and breached for a while: idle, and learn the baseline afresh
    BACK_NO_GAIN = "back_no_gain"  # the last step up bought no throughput: back to where it was
    HOLD_STALE = "hold_stale"  # the reading is stale or missing: never grow on it
    HOLD_DEAD_BAND = "hold_dead_band"  # just inside the budget: too close to the line to grow
    HOLD_MEASURING = "hold_measuring"  # still measuring throughput and slack at this level
    HOLD_BREACHED = "hold_breached"  # one step more reaches a level that breached not long ago
    HOLD_NO_GAIN = "hold_no_gain"  # a higher level recently bought no throughput
    HOLD_PREDICTED = "hold_predicted"  # slack falls with the level: a step up would cross the dead band
    HOLD_IDLE = "hold_idle"  # the slots are not in use: more would change nothing
    HOLD_AT_MAX = "hold_at_max"  # at the highest level allowed


class ControllerTuning(msgspec.Struct, frozen=True):
    """The controller's constants (times in seconds of fleet time, so they do not depend on the
    probe interval). Defaults and why: docs in the report of the change that added them."""

    floor: float = 0.002  # lowest duty cycle: a job at least every 500 job-times, so work never stops
    max_level: float = 32.0  # highest concurrency
    start_level: float = 0.25  # first level after learning: below one job at a time, grow from there
    grow_ratio: float = 1.5  # duty-cycle growth per window (concurrency grows by one job) ...
    shallow_breach: float = 0.1  # a breach this deep or less may be noise (see Memory.depth)
    wide_slack: float = 0.5  # ... with this much slack or more, by grow_ratio squared, or level * slack jobs
    cut_ratio: float = 0.5  # the deepest cut a breach after a quiet spell makes ...
    cut_gain: float = 2.5  # ... which is 1 + cut_gain * slack: a 20% breach halves the level ...
    least_cut: float = 0.9  # ... and the slightest still takes a tenth off
    recut_per_s: float = 0.85  # a breach that goes on within cut_cooldown_s: this much less per second
    cut_cooldown_s: float = 3.0  # the latency reading lags the cut: the breach it still shows is the old level's
    dead_band: float = 0.05  # slack in [0, dead_band): hold
    settle_s: float = 1.0  # after a change, the reading catches up before a window counts
    window_s: float = 2.0  # a window spans this long at least ...
    window_work: float = 8.0  # ... and this much finished work (jobs), ...
    window_max_s: float = 30.0  # ... or this long if the work is slow to come
    gain_share: float = 0.5  # a step up must raise throughput by this share of its relative size
    memory_half_life_s: float = 300.0  # a breached (or gainless) level's memory halves this often
    memory_forget: float = 0.1  # below this weight a memory is dropped
    approach_after: float = 0.5  # a breached level is not reached again while its memory weighs more ...
    approach_fraction: float = 0.25  # ... then a step toward it is this share of a full one, times 1 - weight
    learn_s: float = 30.0  # idle this long at a cold start, unless a baseline comes sooner
    relearn_every_s: float = 600.0  # with no baseline yet, idle again this long after the last idle spell
    relearn_after_s: float = 60.0  # held at the floor this long since it could not meet the budget: relearn

    def __post_init__(self) -> None:
        if not 0 < self.floor <= 1 <= self.max_level:
            raise ValueError(f"controller: need 0 < floor ({self.floor}) <= 1 <= max_level ({self.max_level})")
        if not 0 < self.cut_ratio <= self.least_cut < 1 or not 0 < self.recut_per_s < 1:
            raise ValueError("controller: need 0 < cut_ratio <= least_cut < 1 and 0 < recut_per_s < 1")
        if self.grow_ratio <= 1:
            raise ValueError(f"controller: grow_ratio must exceed 1, not {self.grow_ratio}")


class Memory(msgspec.Struct, frozen=True):
    """A level remembered from `at` (fleet time); its weight halves every half-life."""

    level: float
    at: float
    depth: float = 1.0  # a breach's depth (-slack when it was cut): a shallow one may be noise

    def weight(self, now: float, cfg: ControllerTuning) -> float:
        return float(0.5 ** (max(now - self.at, 0.0) / cfg.memory_half_life_s))


class Window(msgspec.Struct, frozen=True):
    """What was measured at the current level since it settled."""

    since: float | None = None  # fleet time the level last changed (None: not yet known)
    time: float = 0.0
    work: float = 0.0
    slack_sum: float = 0.0
    running_sum: float = 0.0
    intervals: int = 0

    @property
    def rate(self) -> float:
        return self.work / self.time if self.time > 0 else 0.0

    @property
    def slack(self) -> float:
        return self.slack_sum / self.intervals if self.intervals else 0.0

    @property
    def running(self) -> float:
        """Heavy jobs running on the resource, on average over the window."""
        return self.running_sum / self.intervals if self.intervals else 0.0

    def complete(self, cfg: ControllerTuning, level: float) -> bool:
        """Below one job at a time no step is judged on throughput (only slack): the time and one
        finished job are enough (at a low duty cycle the next start may be seconds away, and a
        window that saw none has not seen the level yet, only the gap)."""
        if self.time < cfg.window_s or self.intervals == 0:
            return False
        return (level < 1 and self.work > 0) or self.work >= cfg.window_work or self.time >= cfg.window_max_s


class Base(msgspec.Struct, frozen=True):
    """The last window at the level before the current one: what a step up is judged against."""

    level: float
    rate: float
    slack: float
    running: float = 0.0  # jobs running on average: what the level bought (fewer where workers ran short)


class ControllerState(msgspec.Struct, frozen=True):
    level: float = 0.0  # 0: never ran (cold); else in [floor, max_level]
    idle_until: float = -1.0  # fleet time the last idle spell ends (or ended); -1: a cold start has not begun one
    last_at: float | None = None
    window: Window = Window()
    base: Base | None = None
    breached: Memory | None = None
    plateau: Memory | None = None  # a level whose step up bought no throughput
    last_cut_at: float | None = None
    last_why: Why | None = None  # the last decision's reason: what is news is logged as an event
    cannot_meet_since: float | None = None  # first breach at the floor since the level last grew
    recent_high: Memory | None = None  # the highest level left since `at`: a reading may still show it


class Decision(msgspec.Struct, frozen=True):
    """One step's outcome, with the numbers behind it."""

    why: Why
    level: float  # the level in force: 0 while learning
    slack: float | None
    rate: float | None = None  # throughput at this level, when a window was judged (work/s)
    base_rate: float | None = None  # ... and at the level it was compared against
    breached_level: float | None = None  # the remembered level that breached, while remembered
    detail: str = ""
    relearn: bool = False  # the measuring side forgets its baseline and learns it afresh

    @property
    def concurrency(self) -> int:
        """The fleet-wide limit: 0 while learning, else at least one job."""
        return 0 if self.level <= 0 else max(1, math.floor(self.level))

    @property
    def duty(self) -> float | None:
        """The share of time one job may run, below one job at a time; None at full pace."""
        return self.level if 0 < self.level < 1 else None

    @property
    def text(self) -> str:
        parts = [f"{self.why} level {self.level:.3g}"]
        parts.append(f"duty {self.duty:.3g}" if self.duty is not None else f"limit {self.concurrency}")
        parts.append("slack ?" if self.slack is None else f"slack {self.slack:.3f}")
        if self.rate is not None:
            parts.append(
                f"rate {self.rate:.3g}/s" + (f" vs {self.base_rate:.3g}/s" if self.base_rate is not None else "")
            )
        if self.breached_level is not None:
            parts.append(f"breached at {self.breached_level:.3g}")
        if self.detail:
            parts.append(self.detail)
        return ", ".join(parts)


def setting(level: float) -> float:
    """What the level changes in practice: the concurrency at 1 or more, else the duty cycle."""
    return float(math.floor(level)) if level >= 1 else level
