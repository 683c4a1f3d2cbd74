"""The exporter's running evaluation of every queue's water marks.

Prometheus alerts on the rendered rules; the exporter evaluates the same alarms itself so
that a deployment without Prometheus alerting still has a state gauge to graph and a log
line for every transition (`inactive → pending → firing → inactive`), and so that ops can
compare the two. It holds the state in memory: a restarted exporter starts from inactive,
as Prometheus does after a restart without its state file.

The exporter's ticker feeds it; scrapes read it from the HTTP server's threads: one lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from easeoff.feedback.observe.watermarks import INACTIVE, PHASES, Alarm, AlarmState, Phase, step

log = logging.getLogger("easeoff.watermarks")


class Transition(msgspec.Struct, frozen=True):
    alarm: Alarm
    before: Phase
    after: Phase
    value: float
    at: float

    def message(self) -> str:
        alarm = self.alarm
        timing = f"for {alarm.for_s:g}s"
        if alarm.keep_firing_for_s:
            timing += f", keep firing {alarm.keep_firing_for_s:g}s"
        return (
            f"{alarm.alertname} queue={alarm.queue}: {self.before} -> {self.after} "
            f"({alarm.describe(self.value, self.before == 'firing')}; {timing})"
        )


class WatermarkMonitor:
    def __init__(self, alarms: Sequence[Alarm]) -> None:
        self.alarms = tuple(alarms)
        self._states: dict[Alarm, AlarmState] = dict.fromkeys(self.alarms, INACTIVE)
        # Entries into each phase, by alarm: the events metric that dashboards annotate.
        self._entered: dict[tuple[Alarm, Phase], int] = {(a, p): 0 for a in self.alarms for p in PHASES}
        self._lock = threading.Lock()

    def observe(self, measures: Mapping[str, Mapping[str, float]], now: float) -> list[Transition]:
        """Evaluate every alarm against `measures` (queue → measure → value); log and return the
        transitions. Alarms of a queue missing from `measures` keep their state: no data is not 0."""
        transitions = []
        with self._lock:
            for alarm in self.alarms:
                value = measures.get(alarm.queue, {}).get(alarm.measure)
                if value is None:
                    continue
                before = self._states[alarm]
                after = step(alarm, before, value, now)
                self._states[alarm] = after
                if after.phase != before.phase:
                    self._entered[(alarm, after.phase)] += 1
                    transitions.append(Transition(alarm, before.phase, after.phase, value, now))
        for transition in transitions:
            level = logging.WARNING if transition.after == "firing" else logging.INFO
            log.log(level, "water mark %s", transition.message())
        return transitions

    def states(self) -> list[tuple[Alarm, AlarmState]]:
        with self._lock:
            return list(self._states.items())

    def entered(self) -> list[tuple[Alarm, Phase, int]]:
        with self._lock:
            return [(alarm, phase, count) for (alarm, phase), count in self._entered.items()]

    def firing(self) -> Iterable[Alarm]:
        return [alarm for alarm, state in self.states() if state.firing]
