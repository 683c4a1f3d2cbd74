"""Queue water marks as alarms, evaluated the way Prometheus evaluates the rules we render.

A `WaterMark` in the config (see feedback/config/model.py) gives a queue measure a high and/or
a low mark. Each present mark becomes one `Alarm`:

- the **high** alarm's condition is `x > high or (firing and x > low)`: it fires above
  `high` and, once firing, holds until `x` falls to `low` (the hysteresis band);
- the **low** alarm's condition is `x < low or (firing and x < high)`: a drained queue,
  holding until `x` climbs back to `high`.

With only one mark given there is no band: the alarm resolves where it fired.
The condition must hold for `for_s` (pending) before the alarm fires, and once firing it
keeps firing for `keep_firing_for_s` after the condition clears.

`step` is a pure function and mirrors Prometheus' rule evaluation (rules/alerting.go) step
for step — pending and firing, `for`, `keep_firing_for`, and the ALERTS deadband, which only
a *firing* alert opens — so the exporter's alert-state gauge and the ALERTS series of a
Prometheus running `easeoff alerts rules` agree, and both are unit-tested against each other.
"""

from __future__ import annotations

from typing import Literal

import msgspec
import msgspec.structs

from easeoff.feedback.config import Config, QueueConfig

Phase = Literal["inactive", "pending", "firing"]
PHASES: tuple[Phase, ...] = ("inactive", "pending", "firing")
MARKS = ("high", "low")


class Alarm(msgspec.Struct, frozen=True):
    """One alerting condition: a queue's measure beyond one of its marks.

    `trigger` is where it fires; `release` is where a firing alarm resolves (the other mark
    of the band, or `trigger` itself when the water mark has no other mark).
    """

    queue: str
    measure: str  # "depth" (ready jobs) or "age" (seconds, oldest ready job)
    mark: str  # "high" or "low"
    trigger: float
    release: float
    for_s: float = 0.0
    keep_firing_for_s: float = 0.0

    @property
    def alertname(self) -> str:
        """`EaseoffQueueDepthHigh`: one name per measure and mark, the queue is a label."""
        return f"EaseoffQueue{self.measure.title()}{self.mark.title()}"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.queue, self.measure, self.mark)

    def beyond(self, value: float, threshold: float) -> bool:
        """Strictly past `threshold` in this alarm's direction: above for high, below for low."""
        return value > threshold if self.mark == "high" else value < threshold

    def condition(self, value: float, firing: bool) -> bool:
        """The rule's expression: past the trigger, or — while firing — not yet back past the release."""
        return self.beyond(value, self.trigger) or (firing and self.beyond(value, self.release))

    def describe(self, value: float, firing: bool) -> str:
        """Why the condition holds or not (given whether the alarm was firing), for the transition log."""
        high = self.mark == "high"
        if self.beyond(value, self.trigger):
            return f"{self.measure} {value:g} {'above' if high else 'below'} {self.mark} {self.trigger:g}"
        other = "low" if high else "high"
        if firing and self.release != self.trigger:
            if self.beyond(value, self.release):
                return f"{self.measure} {value:g} not yet {'below' if high else 'above'} {other} {self.release:g}"
            return f"{self.measure} {value:g} {'at or below' if high else 'at or above'} {other} {self.release:g}"
        return f"{self.measure} {value:g} {'at or below' if high else 'at or above'} {self.mark} {self.trigger:g}"


def queue_alarms(queue: QueueConfig) -> list[Alarm]:
    """The alarms of one queue's water marks, high before low, in config order."""
    alarms = []
    for mark in queue.watermarks:
        timing = {"for_s": mark.for_s, "keep_firing_for_s": mark.keep_firing_for_s}
        if mark.high is not None:
            release = mark.low if mark.low is not None else mark.high
            alarms.append(Alarm(queue.name, mark.measure, "high", mark.high, release, **timing))
        if mark.low is not None:
            release = mark.high if mark.high is not None else mark.low
            alarms.append(Alarm(queue.name, mark.measure, "low", mark.low, release, **timing))
    return alarms


def config_alarms(config: Config) -> list[Alarm]:
    """Every alarm the config defines: the exporter evaluates them, the rules file renders them."""
    return [alarm for queue in config.queues.values() for alarm in queue_alarms(queue)]


class AlarmState(msgspec.Struct, frozen=True):
    """Where one alarm stands: its phase, since when its condition has held (`active_since`),
    and since when a firing alarm's condition has been false (`cleared_since`, for keep_firing_for)."""

    phase: Phase = "inactive"
    active_since: float | None = None
    cleared_since: float | None = None

    @property
    def firing(self) -> bool:
        return self.phase == "firing"


INACTIVE = AlarmState()


def step(alarm: Alarm, state: AlarmState, value: float, now: float) -> AlarmState:
    """The alarm's state after one evaluation of `value` at time `now`."""
    if alarm.condition(value, state.firing):
        if state.phase == "inactive":
            state = AlarmState("pending", active_since=now)
        elif state.cleared_since is not None:
            state = msgspec.structs.replace(state, cleared_since=None)
        assert state.active_since is not None
        if state.phase == "pending" and now - state.active_since >= alarm.for_s:
            state = msgspec.structs.replace(state, phase="firing")
        return state
    if state.firing and alarm.keep_firing_for_s > 0:
        cleared_since = state.cleared_since if state.cleared_since is not None else now
        if now - cleared_since < alarm.keep_firing_for_s:
            return msgspec.structs.replace(state, cleared_since=cleared_since)
    return INACTIVE


def phase_value(phase: Phase) -> int:
    """The alert-state gauge: 0 inactive, 1 pending, 2 firing."""
    return PHASES.index(phase)


def measures_of(ready: int, oldest_age_s: float) -> dict[str, float]:
    """A queue's measures by name, as water marks refer to them."""
    return {"depth": float(ready), "age": float(oldest_age_s)}
