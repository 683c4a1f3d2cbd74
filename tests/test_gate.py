"""Verdicts, hysteresis and backoff: pure logic, no servers."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from easeoff.feedback.config import parse_config
from easeoff.feedback.signals.hysteresis import assess, next_states
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.verdict.backoff import deferral_delay
from easeoff.feedback.verdict.gate import judge

pytestmark = pytest.mark.unit

CONFIG = parse_config(
    """
[probe]
interval = 1.0
stale_after = 5.0
[backoff]
base = 1.0
cap = 30.0
[mysql.hosts.a]
url = "mysql://root@127.0.0.1:3306"
[mysql.hosts.b]
url = "mysql://root@127.0.0.1:3307"
[resources."shard:1"]
hosts = ["a"]
[resources."shard:2"]
hosts = ["b"]
[signals.connections]
high = 0.8
low = 0.6
""",
    "gate.toml",
    {},
)
NOW = 1_000_000.0


def reading(host: str, value: float, strained: bool, age: float = 0.1, error: str | None = None) -> Reading:
    return Reading(
        host=host,
        taken_at=NOW - age,
        values={} if error else {"connections": value},
        strained={"connections": strained},
        error=error,
    )


def test_healthy_readings_admit() -> None:
    verdict = judge(["shard:1"], Snapshot({"a": reading("a", 0.1, False)}), CONFIG, NOW)
    assert verdict.admit and verdict.reasons == () and verdict.delay == 0


def test_strain_defers_with_signal_and_host_in_reason() -> None:
    verdict = judge(["shard:1"], Snapshot({"a": reading("a", 0.93, True)}), CONFIG, NOW)
    assert not verdict.admit
    assert verdict.texts == ["connections:a 0.93 > high 0.8"]
    assert 1.0 <= verdict.delay <= 30.0


def test_held_between_low_and_high_says_so() -> None:
    verdict = judge(["shard:1"], Snapshot({"a": reading("a", 0.7, True)}), CONFIG, NOW)
    assert verdict.texts == ["connections:a 0.7 not yet below low 0.6"]


def test_strain_on_one_shard_does_not_hold_another() -> None:
    readings = Snapshot({"a": reading("a", 0.95, True), "b": reading("b", 0.1, False)})
    assert not judge(["shard:1"], readings, CONFIG, NOW).admit
    assert judge(["shard:2"], readings, CONFIG, NOW).admit
    both = judge(["shard:1", "shard:2"], readings, CONFIG, NOW)
    assert not both.admit and len(both.reasons) == 1


def test_probe_errors_missing_and_stale_readings_fail_closed() -> None:
    assert judge(["shard:1"], Snapshot({"a": reading("a", 0, False, error="2003 unreachable")}), CONFIG, NOW).texts == [
        "probe_error:a (2003 unreachable)"
    ]
    assert judge(["shard:1"], Snapshot({"a": None}), CONFIG, NOW).texts == ["no_reading:a"]
    stale = judge(["shard:1"], Snapshot({"a": reading("a", 0.1, False, age=9.0)}), CONFIG, NOW)
    assert stale.texts[0].startswith("stale_reading:a")


def test_unknown_resource_fails_closed() -> None:
    verdict = judge(["shard:99"], Snapshot({}), CONFIG, NOW)
    assert verdict.texts == ["unknown_resource:shard:99"]


def test_no_resources_always_admit() -> None:
    assert judge([], Snapshot({}), CONFIG, NOW).admit


@given(st.lists(st.floats(min_value=0, max_value=1, allow_nan=False), min_size=1, max_size=60))
def test_hysteresis_flips_only_across_the_band(values: list[float]) -> None:
    strained = False
    for value in values:
        new = assess(value, high=0.8, low=0.6, was_strained=strained)
        if new != strained:
            assert (new and value > 0.8) or (not new and value < 0.6)
        if 0.6 <= value <= 0.8:
            assert new == strained
        strained = new


@given(
    attempt=st.integers(min_value=0, max_value=10_000),
    base=st.floats(min_value=0.01, max_value=100),
    cap=st.floats(min_value=0.01, max_value=1000),
    floor=st.floats(min_value=0, max_value=10),
    seed=st.integers(),
)
def test_backoff_stays_between_floor_and_cap(attempt: int, base: float, cap: float, floor: float, seed: int) -> None:
    delay = deferral_delay(attempt, base, cap, floor, random.Random(seed))
    assert min(floor, cap) <= delay <= max(cap, min(floor, cap))
    assert delay <= cap


def test_backoff_grows_with_attempts_on_average() -> None:
    rng = random.Random(7)
    early = sum(deferral_delay(0, 1.0, 60.0, 0.0, rng) for _ in range(500)) / 500
    late = sum(deferral_delay(5, 1.0, 60.0, 0.0, rng) for _ in range(500)) / 500
    assert early < 1.0 < 10.0 < late


def test_a_probes_states_come_from_the_pure_core() -> None:
    """The prober only asks: hysteresis per signal, and a stopped replication thread is strain with no band."""
    was = {"connections": True}
    assert next_states("a", {"connections": 0.7, "replication": 1.0}, was, CONFIG) == {
        "connections": True,  # 0.7 is not yet below low
        "replication": True,
    }
    assert next_states("a", {"connections": 0.5, "replication": 0.0}, was, CONFIG) == {
        "connections": False,
        "replication": False,
    }
    assert next_states("a", {"not_a_signal": 9.0}, {}, CONFIG) == {}
