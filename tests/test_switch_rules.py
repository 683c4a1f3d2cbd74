"""Switch rules as pure logic: scopes, TTLs, throttle ratios and threshold overrides."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from easeoff.feedback.config import parse_config
from easeoff.feedback.durations import parse_duration
from easeoff.feedback.levers.switches import Switch, Switches, parse_switches
from easeoff.feedback.reasons import texts
from easeoff.feedback.scopes import Scope
from easeoff.feedback.signals.readings import Reading
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.verdict.gate import judge, queue_reasons, task_reasons

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
[queues.heavy]
resources = ["shard:1"]
[queues.light]
""",
    "test.toml",
    {},
)


def switches(*entries: Switch) -> Switches:
    return Switches({s.key: s for s in entries})


def pause(scope: str, expires_at: float | None = None) -> Switch:
    return Switch("pause", scope, "alice", "deploy 412", NOW - 10, expires_at)


def healthy(**extra: Switch) -> Snapshot:
    readings = {h: Reading(host=h, taken_at=NOW, values={"connections": 0.7}, strained={}) for h in ("a", "b")}
    return Snapshot(readings=readings, switches=switches(*extra.values()))


def test_a_paused_resource_holds_its_work_only_and_names_who_and_why() -> None:
    snapshot = healthy(p=pause("resource:shard:1"))
    held = judge(["shard:1"], snapshot, CONFIG, NOW)
    assert not held.admit
    assert held.texts == ["paused:resource:shard:1 (alice: deploy 412)"]
    assert judge(["shard:2"], snapshot, CONFIG, NOW).admit
    assert queue_reasons("heavy", snapshot, CONFIG, NOW)  # the queue's configured resource
    assert not queue_reasons("light", snapshot, CONFIG, NOW)


def test_pause_all_and_pause_queue_hold_dequeuing() -> None:
    assert texts(queue_reasons("light", healthy(p=pause("all")), CONFIG, NOW)) == ["paused:all (alice: deploy 412)"]
    assert not judge(["shard:2"], healthy(p=pause("all")), CONFIG, NOW).admit
    only_light = healthy(p=pause("queue:light"))
    assert queue_reasons("light", only_light, CONFIG, NOW)
    assert not queue_reasons("heavy", only_light, CONFIG, NOW)


def test_a_lapsed_switch_no_longer_applies_and_is_listed_as_expired() -> None:
    lapsed = switches(pause("task:noop", expires_at=NOW - 1), pause("queue:light", expires_at=NOW + 60))
    assert lapsed.paused(Scope.task("noop"), NOW) is None
    assert lapsed.paused(Scope.queue("light"), NOW) is not None
    assert [s.scope for s in lapsed.expired(NOW)] == ["task:noop"]
    assert task_reasons("noop", Snapshot({}, switches=lapsed), NOW, random.Random(1)) == []


@given(ratio=st.floats(0.0, 1.0), seed=st.integers(0, 2**32))
def test_throttle_refuses_about_its_ratio(ratio: float, seed: int) -> None:
    throttle = Switch("throttle", "task:noop", "bob", "replica rebuild", NOW, NOW + 60, ratio=ratio)
    rng = random.Random(seed)
    refused = sum(bool(switches(throttle).throttled("noop", NOW, rng)) for _ in range(400))
    assert abs(refused / 400 - ratio) < 0.15
    if ratio == 0.0:
        assert refused == 0
    assert switches(throttle).throttled("other", NOW, rng) is None


def test_threshold_override_applies_everywhere_or_on_one_resource_and_lapses() -> None:
    everywhere = Switch("threshold", "connections", "carol", "sale day", NOW, NOW + 60, high=0.5, low=0.4)
    shard2 = Switch("threshold", "connections@shard:2", "carol", "b is bigger", NOW, NOW + 60, high=0.9, low=0.85)
    live = switches(everywhere, shard2).apply(CONFIG, NOW)
    assert live.thresholds("connections", "a").high == 0.5
    assert live.thresholds("connections", "b").high == 0.9
    assert switches(everywhere).apply(CONFIG, NOW + 61) is CONFIG
    assert CONFIG.thresholds("connections", "a").high == 0.8  # the file's config is untouched


def test_an_override_without_critical_keeps_the_critical_tier() -> None:
    config = parse_config("[signals.connections]\nhigh = 0.8\nlow = 0.6\ncritical = 0.95\n", "t.toml", {})
    move = Switch("threshold", "connections", "carol", "sale day", NOW, NOW + 60, high=0.5, low=0.4)
    assert switches(move).apply(config, NOW).signals["connections"].critical == 0.95
    sharper = Switch("threshold", "connections", "carol", "drill", NOW, NOW + 60, high=0.5, low=0.4, critical=0.6)
    assert switches(sharper).apply(config, NOW).signals["connections"].critical == 0.6


def test_stored_switches_round_trip_and_what_cannot_be_read_is_held() -> None:
    original = switches(pause("all"), Switch("throttle", "task:noop", "bob", "why", NOW, None, ratio=0.5))
    stored = {k: s.as_dict() for k, s in original.entries.items()}
    assert parse_switches(json.dumps(stored)) == original
    assert parse_switches(b"not json") == Switches(unreadable={"all": "easeoff:switches"})
    assert parse_switches(b"[1, 2]") == Switches(unreadable={"all": "easeoff:switches"})
    assert parse_switches(json.dumps({"x": {"nonsense": 1}})) == Switches(unreadable={"all": "x"})


def test_a_switch_with_fields_this_version_does_not_know_still_applies() -> None:
    """A newer version in a rolling deploy adds a field: the pause it wrote still pauses."""
    newer = {**pause("task:noop").as_dict(), "region": "eu", "ticket": {"id": 7}}
    found = parse_switches(json.dumps({"pause task:noop": newer}))
    assert texts(task_reasons("noop", Snapshot({}, switches=found), NOW, random.Random(1))) == [
        "paused:task:noop (alice: deploy 412)"
    ]


UNREADABLE_HOLDS = [
    ("pause task:noop", {"kind": "drain", "scope": "task:noop"}, "task"),  # a kind it does not know
    ("throttle task:noop", {"kind": "throttle", "scope": "task:noop", "by": "x", "why": "y"}, "task"),  # no `at`
    ("pause queue:light", "paused", "queue"),  # not an object
    ("pause resource:shard:2", {"kind": "pause", "scope": "resource:shard:2", "at": "noon"}, "shard:2"),
    ("threshold connections@shard:2", {"kind": "threshold", "high": "lots"}, "shard:2"),
    ("something new", {"kind": "pause"}, "all"),  # a key naming no scope: everything waits
]


@pytest.mark.parametrize(("key", "entry", "holds"), UNREADABLE_HOLDS)
def test_an_entry_this_version_cannot_read_holds_the_scope_its_key_names(key: str, entry: object, holds: str) -> None:
    found = parse_switches(json.dumps({key: entry}))
    snapshot = Snapshot(healthy().readings, switches=found)
    reason = f"switch_unreadable:{key} not understood by this easeoff: held until fixed or cleared"
    held = {
        "task": texts(task_reasons("noop", snapshot, NOW, random.Random(1))),
        "queue": texts(queue_reasons("light", snapshot, CONFIG, NOW)),
        "shard:1": texts(judge(["shard:1"], snapshot, CONFIG, NOW).reasons),
        "shard:2": texts(judge(["shard:2"], snapshot, CONFIG, NOW).reasons),
    }
    expected = {scope: [reason] if holds in (scope, "all") else [] for scope in held}
    if holds == "all":
        expected["task"] = []  # `all` holds every queue and resource, so no task's job starts anyway
    assert held == expected
    assert all(r.waits_for == "delay" for r in judge(["shard:2"], snapshot, CONFIG, NOW).reasons)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1h30m", 5400)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "10x", "m", "30m1h"])
def test_bad_durations_say_so(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)
