"""Shadow policies as pure logic: a shadow signal or shadow threshold is judged, holds nothing,
and keeps a hysteresis band of its own."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from easeoff.feedback.config import parse_config
from easeoff.feedback.levers.switches import Switch, Switches, parse_switches
from easeoff.feedback.reasons import texts
from easeoff.feedback.signals.cache import judging
from easeoff.feedback.signals.hysteresis import next_states, shadow_states
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.verdict.gate import judge
from easeoff.feedback.verdict.shadow import ShadowJudge

pytestmark = pytest.mark.unit

NOW = 1_000_000.0
CONFIG = parse_config(
    """
[mysql.hosts.a]
url = "mysql://u@127.0.0.1:3306"
[mysql.hosts.b]
url = "mysql://u@127.0.0.1:3307"
[resources."shard:1"]
hosts = ["a"]
[resources."shard:2"]
hosts = ["b"]
[signals.connections]
high = 0.8
low = 0.6
[signals.sessions]
query = "SELECT COUNT(*) FROM information_schema.processlist"
high = 50
low = 40
mode = "shadow"
[signals.app_errors]
source = "app"
high = 10
low = 5
mode = "shadow"
""",
    "test.toml",
    {},
)


def reading(host: str, strained: dict[str, bool], shadow: dict[str, bool] | None = None, **values: float) -> Reading:
    return Reading(host=host, taken_at=NOW, values=values, strained=strained, shadow_strained=shadow or {})


QUIET_APP = Reading(host="app:app_errors", taken_at=NOW, values={"app_errors": 1}, strained={})


def snapshot(*readings: Reading, switches: Switches | None = None) -> Snapshot:
    """Readings of the hosts given, and of the app's error signal, quiet unless given."""
    return Snapshot(readings={r.host: r for r in (QUIET_APP, *readings)}, switches=switches or Switches())


def shadow_threshold(scope: str, high: float, low: float, expires_at: float | None = NOW + 3600) -> Switch:
    return Switch("threshold", scope, "ops", "trying 0.5", NOW - 5, expires_at, high=high, low=low, shadow=True)


def test_a_strained_shadow_signal_holds_nothing_and_the_shadow_verdict_names_it() -> None:
    busy = snapshot(
        reading("a", {"connections": False, "sessions": True}, connections=0.3, sessions=70),
        reading("b", {}, connections=0.3, sessions=1),
    )
    assert judge(["shard:1"], busy, CONFIG, NOW).admit
    held = ShadowJudge().would_defer(["shard:1"], busy, CONFIG, NOW)
    assert texts(held) == ["sessions:a 70 > high 50"]
    assert ShadowJudge().would_defer(["shard:2"], busy, CONFIG, NOW) == ()


def test_a_shadow_signal_that_fails_closed_would_hold_on_a_missing_reading() -> None:
    no_app = Snapshot(readings={"a": reading("a", {}, connections=0.3, sessions=1)})
    assert judge(["shard:1"], no_app, CONFIG, NOW).admit
    assert texts(ShadowJudge().would_defer(["shard:1"], no_app, CONFIG, NOW)) == ["no_reading:app:app_errors"]


def test_a_shadow_global_traffic_signal_would_hold_every_resource_but_holds_none() -> None:
    errors = snapshot(
        reading("a", {}, connections=0.3, sessions=1),
        reading("b", {}, connections=0.3, sessions=1),
        reading("app:app_errors", {"app_errors": True}, app_errors=30),
    )
    for resource in ("shard:1", "shard:2"):
        assert judge([resource], errors, CONFIG, NOW).admit
        assert [r.label for r in ShadowJudge().would_defer([resource], errors, CONFIG, NOW)] == ["app_errors"]


def test_reasons_the_real_gate_already_holds_for_are_not_shadow_ones() -> None:
    strained = snapshot(reading("a", {"connections": True, "sessions": False}, connections=0.9, sessions=1))
    real = judge(["shard:1"], strained, CONFIG, NOW)
    assert not real.admit
    assert ShadowJudge().would_defer(["shard:1"], strained, CONFIG, NOW, real.reasons) == ()


def test_a_shadow_threshold_is_judged_with_its_own_band_and_leaves_the_real_one_alone() -> None:
    trial = Switches({s.key: s for s in [shadow_threshold("connections@shard:1", high=0.5, low=0.4)]})
    config, shadow = judging(trial, CONFIG, NOW)
    assert config is CONFIG  # the real thresholds stay as they are
    assert shadow is not None and shadow.names == frozenset({"connections"})
    values = {"connections": 0.55}
    real = next_states("a", values, {}, config)
    bands = shadow_states("a", values, {}, {}, shadow)
    assert real == {"connections": False}
    assert bands == {"connections": True}
    # 0.45 is inside the shadow band: held there, while b (outside the override's scope) is not
    assert shadow_states("a", {"connections": 0.45}, real, bands, shadow)["connections"]
    assert not shadow_states("b", {"connections": 0.55}, {}, {}, shadow)["connections"]

    now_held = snapshot(reading("a", real, bands, connections=0.55, sessions=1), switches=trial)
    assert judge(["shard:1"], now_held, CONFIG, NOW).admit
    held = ShadowJudge().would_defer(["shard:1"], now_held, CONFIG, NOW)
    assert texts(held) == ["connections:a 0.55 > high 0.5"]


def test_a_lapsed_shadow_threshold_no_longer_judges() -> None:
    lapsed = Switches({s.key: s for s in [shadow_threshold("connections", 0.5, 0.4, expires_at=NOW - 1)]})
    assert judging(lapsed, CONFIG, NOW)[1] is None
    banded = snapshot(reading("a", {"connections": False}, {"connections": True}, connections=0.55), switches=lapsed)
    assert ShadowJudge().would_defer(["shard:1"], banded, CONFIG, NOW) == ()


def test_a_shadow_threshold_sits_beside_a_real_one_on_the_same_scope() -> None:
    real = Switch("threshold", "connections", "ops", "incident", NOW - 5, NOW + 60, high=0.9, low=0.7)
    trial = shadow_threshold("connections", 0.5, 0.4)
    both = Switches({s.key: s for s in (real, trial)})
    assert len(both.entries) == 2 and trial.key == "shadow-threshold connections"
    assert both.apply(CONFIG, NOW).signals["connections"].high == 0.9
    assert both.apply_shadow(CONFIG, NOW).signals["connections"].high == 0.5
    stored = parse_switches(json.dumps({trial.key: trial.as_dict()}))
    assert stored.entries["shadow-threshold connections"].shadow


@given(value=st.floats(0.0, 2.0), was=st.booleans(), high=st.floats(0.1, 1.5), gap=st.floats(0.0, 0.1))
def test_the_shadow_band_is_plain_hysteresis(value: float, was: bool, high: float, gap: float) -> None:
    trial = Switches({s.key: s for s in [shadow_threshold("connections", high, high - gap)]})
    shadow = judging(trial, CONFIG, NOW)[1]
    state = shadow_states("a", {"connections": value}, {}, {"connections": was}, shadow)
    expected = value >= high - gap if was else value > high
    assert state == {"connections": expected}
