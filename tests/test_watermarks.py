"""Water-mark alarms, pure: hysteresis, `for`, `keep_firing_for`, and the monitor's transitions."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from easeoff.feedback.config import QueueConfig, WaterMark
from easeoff.feedback.observe.watermark_monitor import WatermarkMonitor
from easeoff.feedback.observe.watermarks import INACTIVE, Alarm, AlarmState, queue_alarms, step

pytestmark = pytest.mark.unit


def run(alarm: Alarm, values: list[float], every: float = 1.0) -> list[str]:
    """The phase after each evaluation of `values`, one per `every` seconds."""
    state, phases = INACTIVE, []
    for i, value in enumerate(values):
        state = step(alarm, state, value, i * every)
        phases.append(state.phase)
    return phases


HIGH = Alarm("heavy", "depth", "high", trigger=10, release=2)
LOW = Alarm("heavy", "depth", "low", trigger=2, release=10)


def test_queue_alarms_pair_each_mark_with_the_other_as_its_release() -> None:
    queue = QueueConfig(
        "heavy",
        watermarks=(
            WaterMark("depth", high=10, low=2, for_s=5, keep_firing_for_s=7),
            WaterMark("age", high=600, low=None),
        ),
    )
    assert queue_alarms(queue) == [
        Alarm("heavy", "depth", "high", 10, 2, 5, 7),
        Alarm("heavy", "depth", "low", 2, 10, 5, 7),
        Alarm("heavy", "age", "high", 600, 600, 60.0, 0.0),
    ]
    assert [a.alertname for a in queue_alarms(queue)] == [
        "EaseoffQueueDepthHigh",
        "EaseoffQueueDepthLow",
        "EaseoffQueueAgeHigh",
    ]


def test_high_fires_above_high_and_resolves_only_below_low() -> None:
    assert run(HIGH, [5, 11, 9, 3, 2.5, 2, 9]) == [
        "inactive",
        "firing",  # for 0: fires at once
        "firing",  # between the marks: the band holds
        "firing",
        "firing",
        "inactive",  # not above low (x > LOW fails at LOW itself)
        "inactive",  # back between the marks, but not above high: stays resolved
    ]


def test_low_fires_below_low_and_resolves_only_above_high() -> None:
    assert run(LOW, [5, 1, 3, 9.5, 10, 11, 3]) == [
        "inactive",
        "firing",
        "firing",
        "firing",
        "inactive",  # not below high any more
        "inactive",
        "inactive",
    ]


def test_a_mark_without_its_pair_resolves_where_it_fired() -> None:
    alone = Alarm("heavy", "age", "high", trigger=60, release=60)
    assert run(alone, [61, 59, 61]) == ["firing", "inactive", "firing"]


def test_for_keeps_it_pending_and_a_dip_starts_over() -> None:
    slow = Alarm("heavy", "depth", "high", trigger=10, release=2, for_s=2)
    assert run(slow, [11, 11, 11, 12]) == ["pending", "pending", "firing", "firing"]
    # Pending does not open the band (Prometheus' deadband needs a *firing* alert): 5 resets it.
    assert run(slow, [11, 5, 11, 11, 11]) == ["pending", "inactive", "pending", "pending", "firing"]


def test_keep_firing_for_holds_after_the_condition_clears_and_rearms() -> None:
    sticky = Alarm("heavy", "depth", "high", trigger=10, release=2, keep_firing_for_s=2)
    assert run(sticky, [11, 1, 1, 1, 11, 1, 3, 1, 1, 1]) == [
        "firing",
        "firing",  # cleared 0 s ago
        "firing",  # 1 s
        "inactive",  # 2 s: kept long enough
        "firing",
        "firing",  # cleared again
        "firing",  # 3 is above low while firing: the condition holds again, the clock resets
        "firing",
        "firing",
        "inactive",
    ]


@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), max_size=40))
def test_high_and_low_alarms_never_both_fire_without_keep_firing(values: list[float]) -> None:
    high, low = run(HIGH, values), run(LOW, values)
    assert not any(h == "firing" and lo == "firing" for h, lo in zip(high, low, strict=True))


@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), max_size=40))
def test_a_firing_high_alarm_never_sees_a_value_at_or_below_low(values: list[float]) -> None:
    for value, phase in zip(values, run(HIGH, values), strict=True):
        if phase == "firing":
            assert value > HIGH.release


def test_monitor_logs_each_transition_and_counts_entries(caplog: pytest.LogCaptureFixture) -> None:
    slow = Alarm("heavy", "depth", "high", trigger=10, release=2, for_s=1)
    monitor = WatermarkMonitor([slow])
    caplog.set_level(logging.INFO, logger="easeoff.watermarks")
    for now, depth in enumerate([0, 11, 11, 5, 1]):
        monitor.observe({"heavy": {"depth": depth, "age": 0}}, float(now))
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "water mark EaseoffQueueDepthHigh queue=heavy: inactive -> pending (depth 11 above high 10; for 1s)",
        "water mark EaseoffQueueDepthHigh queue=heavy: pending -> firing (depth 11 above high 10; for 1s)",
        "water mark EaseoffQueueDepthHigh queue=heavy: firing -> inactive (depth 1 at or below low 2; for 1s)",
    ]
    assert [r.levelname for r in caplog.records] == ["INFO", "WARNING", "INFO"]
    entered = {phase: count for _, phase, count in monitor.entered()}
    assert entered == {"inactive": 1, "pending": 1, "firing": 1}


def test_monitor_keeps_state_when_a_queue_has_no_data() -> None:
    monitor = WatermarkMonitor([HIGH])
    monitor.observe({"heavy": {"depth": 11}}, 10.0)
    assert monitor.observe({}, 11.0) == []
    assert [state for _, state in monitor.states()] == [AlarmState("firing", active_since=10.0)]
