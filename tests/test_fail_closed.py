"""Fail closed where nothing is known: an unreachable host whatever its signals, and values that
are not numbers. Pure logic, no servers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from easeoff.feedback.config import Config, parse_config
from easeoff.feedback.signals.hysteresis import assess, next_states
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.verdict.gate import judge

pytestmark = pytest.mark.unit

NOW = 1_000_000.0
BASE = """
[probe]
interval = 1.0
stale_after = 5.0
[mysql.hosts.a]
url = "mysql://root@10.0.0.1"
[mysql.hosts.r]
url = "mysql://root@10.0.0.2"
[resources."shard:1"]
primary = "a"
[resources."shard:2"]
primary = "a"
replicas = ["r"]
"""
# A primary whose only signal holds nothing on its own failed read, or is only on trial.
LENIENT = {
    "fail_closed = false": """
[signals.connections]
high = 0.8
low = 0.6
fail_closed = false
""",
    "mode = shadow": """
[signals.connections]
high = 0.8
low = 0.6
mode = "shadow"
""",
    "no signal at all": "",
}


def config_with(signals: str) -> Config:
    return parse_config(BASE + signals, "fail_closed.toml", {})


def failed(host: str, error: str = "2003 unreachable") -> Reading:
    return Reading(host=host, taken_at=NOW - 0.1, error=error)


@pytest.mark.parametrize("signals", LENIENT.values(), ids=list(LENIENT))
def test_an_unreachable_primary_holds_whatever_its_signals(signals: str) -> None:
    config = config_with(signals)
    assert judge(["shard:1"], Snapshot({"a": failed("a")}), config, NOW).texts == ["probe_error:a (2003 unreachable)"]
    assert judge(["shard:1"], Snapshot({"a": None}), config, NOW).texts == ["no_reading:a"]
    stale = Reading(host="a", taken_at=NOW - 60.0, values={"connections": 0.1})
    assert judge(["shard:1"], Snapshot({"a": stale}), config, NOW).texts[0].startswith("stale_reading:a")


def test_fail_closed_false_still_lets_the_signals_own_failed_read_pass() -> None:
    """The host answered; only this signal could not be read: the operator said that holds nothing."""
    lenient = config_with(LENIENT["fail_closed = false"])
    answered = Reading(host="a", taken_at=NOW - 0.1, notes={"connections": "query failed: 1142 denied"})
    assert judge(["shard:1"], Snapshot({"a": answered}), lenient, NOW).admit
    strict = config_with(LENIENT["fail_closed = false"].replace("fail_closed = false", ""))
    assert judge(["shard:1"], Snapshot({"a": answered}), strict, NOW).texts == [
        "connections:a query failed: 1142 denied"
    ]


def test_an_unreachable_replica_still_counts_in_the_aggregate() -> None:
    config = config_with(LENIENT["fail_closed = false"])
    healthy = Reading(host="a", taken_at=NOW - 0.1, values={"connections": 0.1})
    verdict = judge(["shard:2"], Snapshot({"a": healthy, "r": failed("r")}), config, NOW)
    assert verdict.texts == ["probe_error:r (2003 unreachable)"]


STRICT = config_with(
    """
[signals.connections]
high = 0.8
low = 0.6
[signals.web]
source = "app"
high = 100
low = 50
"""
)
NOT_NUMBERS = [
    (math.nan, "nan (not a number)"),
    (math.inf, "inf (not a finite number)"),
    (-math.inf, "-inf (not a finite number)"),
]


@pytest.mark.parametrize(("value", "says"), NOT_NUMBERS)
@pytest.mark.parametrize("was_strained", [False, True])
def test_a_value_that_is_not_a_number_holds_and_says_so(value: float, says: str, was_strained: bool) -> None:
    """Whatever state a reading carries (one stored by an older version, say), the gate judges
    the value itself: NaN compares false with every threshold."""
    traffic = Reading(host="app:web", taken_at=NOW - 0.1, values={"web": 1.0})
    host = Reading(host="a", taken_at=NOW - 0.1, values={"connections": value}, strained={"connections": was_strained})
    verdict = judge(["shard:1"], Snapshot({"a": host, "app:web": traffic}), STRICT, NOW)
    assert verdict.texts == [f"connections:a {says}"]
    assert verdict.critical == ()  # nothing known: new work waits, running work is not stopped for it

    traffic = Reading(host="app:web", taken_at=NOW - 0.1, values={"web": value}, strained={"web": was_strained})
    healthy = Reading(host="a", taken_at=NOW - 0.1, values={"connections": 0.1})
    verdict = judge(["shard:1"], Snapshot({"a": healthy, "app:web": traffic}), STRICT, NOW)
    assert verdict.texts == [f"web:app {says}"]


NUMBERS = st.floats(allow_nan=True, allow_infinity=True)


@given(st.lists(NUMBERS, min_size=1, max_size=60), st.booleans())
def test_hysteresis_never_calls_a_value_that_is_not_a_number_healthy(values: list[float], start: bool) -> None:
    strained = start
    for value in values:
        strained = assess(value, high=0.8, low=0.6, was_strained=strained)
        if not math.isfinite(value):
            assert strained, f"{value} left the signal healthy"


@given(st.lists(NUMBERS, min_size=1, max_size=30))
def test_a_probes_states_never_call_a_value_that_is_not_a_number_healthy(values: list[float]) -> None:
    was: dict[str, bool] = {}
    for value in values:
        was = next_states("a", {"connections": value, "replication": value}, was, STRICT)
        if not math.isfinite(value):
            assert was == {"connections": True, "replication": True}, value
