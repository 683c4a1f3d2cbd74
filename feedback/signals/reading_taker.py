"""One probe of a target made into a `Reading`: its values read, each signal's hysteresis state
carried forward under the live (and shadow) thresholds, and signals whose trend reaches high in
time strained ahead with their ETA. The readings cache (signals/cache.py) stores what it takes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from easeoff.feedback.config import Config
from easeoff.feedback.levers.switches import Switches
from easeoff.feedback.signals.hysteresis import ShadowThresholds, next_states, shadow_states
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.sources import ProbeError, Prober, Values
from easeoff.feedback.signals.trend import Trends, seconds_to

PROBE_SECONDS = "probe_s"  # the reading's counter: what the probe of its host took, in seconds


class ReadingTaker:
    def __init__(self, prober: Prober, clock: Callable[[], float]) -> None:
        self.prober, self.clock = prober, clock
        self._trends = Trends()  # recent values of signals with `predict`, of the targets probed here

    def take(
        self, target: str, previous: Reading | None, context: Mapping[str, Reading | None], live: Judging
    ) -> Reading:
        config, shadow = live
        taken_at = self.clock()
        started = time.perf_counter()
        was = previous.strained if previous is not None else {}
        try:
            probed = self.prober.read(target, previous, context)
        except ProbeError as exc:  # known when the probe gave up (a timeout is a whole timeout late)
            took = {PROBE_SECONDS: time.perf_counter() - started}
            return Reading(
                host=target,
                taken_at=self.clock(),
                counters=took,
                error=str(exc),
                strained=dict(was),
                shadow_strained=dict(previous.shadow_strained) if previous is not None else {},
            )
        values = probed.values
        probed.counters[PROBE_SECONDS] = time.perf_counter() - started  # what one probe of this host costs
        held = frozenset(previous.predictions) if previous is not None else frozenset()
        strained = next_states(target, values, was, config, predicted=held)
        shadow_strained = shadow_states(target, values, was, previous.shadow_strained if previous else {}, shadow)
        predictions = self._predict(target, taken_at, values, strained, config)
        return Reading(
            host=target,
            taken_at=taken_at,
            values=values,
            counters=probed.counters,
            predictions=predictions,
            strained=strained,
            shadow_strained=shadow_strained,
            notes=probed.notes,
        )

    def _predict(
        self, target: str, at: float, values: Values, strained: dict[str, bool], config: Config
    ) -> dict[str, float]:
        """Signals with `predict` whose trend reaches high in time count as strained now: their
        seconds until high (each also marked in `strained`)."""
        predictions: dict[str, float] = {}
        for signal in config.signals.values():
            value = values.get(signal.name)
            if signal.predict is None or value is None:
                continue
            rate = self._trends.add(target, signal.name, at, value)
            if strained.get(signal.name):
                continue  # strained on its level already
            eta = seconds_to(config.thresholds(signal.name, target).high, value, rate)
            if eta is not None and eta <= signal.predict:
                strained[signal.name] = True
                predictions[signal.name] = eta
        return predictions


Judging = tuple[Config, ShadowThresholds | None]


def judging(switches: Switches, config: Config, now: float) -> Judging:
    """The thresholds probes judge by: the config with ops' live overrides, and their shadow ones apart."""
    shadows = switches.shadow_thresholds(now)
    shadow = None
    if shadows:
        names = frozenset(s.target.name for s in shadows)
        shadow = ShadowThresholds(switches.apply_shadow(config, now), names)
    return switches.apply(config, now), shadow


def changes_a_verdict(previous: Reading | None, reading: Reading) -> bool:
    """A first reading, a signal crossing its hysteresis band (its shadow band too: the shadow
    policies' tally follows it), or a probe failing or recovering."""
    return (
        previous is None
        or previous.strained != reading.strained
        or previous.shadow_strained != reading.shadow_strained
        or (previous.error is None) != (reading.error is None)
    )
