"""Typed reasons: fields to act on, and the one line of text operators have always read."""

from __future__ import annotations

import pytest

from easeoff.feedback.levers.limits import Refusal, slot_park_scope
from easeoff.feedback.reasons import Kind, Reason

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("reason", "text"),
    [
        (Reason(Kind.SIGNAL, "db1", 0.93, 0.8, "high", name="connections"), "connections:db1 0.93 > high 0.8"),
        (Reason(Kind.SIGNAL, "db1", 0.7, 0.6, "low", name="connections"), "connections:db1 0.7 not yet below low 0.6"),
        (Reason(Kind.SIGNAL, "r1", 12.0, 10.0, "critical", name="lag"), "lag:r1 12 > critical 10"),
        (
            Reason(Kind.SIGNAL, "a", detail="query failed: 1146 no such table", name="backlog"),
            "backlog:a query failed: 1146 no such table",
        ),
        (Reason(Kind.NO_READING, "a"), "no_reading:a"),
        (Reason(Kind.STALE_READING, "a", value=12.04, threshold=5.0), "stale_reading:a (12.0s old)"),
        (Reason(Kind.PROBE_ERROR, "a", detail="2003 unreachable"), "probe_error:a (2003 unreachable)"),
        (Reason(Kind.HOST_OUT, "s1b", detail="disk swap"), "host_out:s1b (disk swap)"),
        (Reason(Kind.REPLICATION, "b", detail="sql thread stopped"), "replication:b (sql thread stopped)"),
        (Reason(Kind.UNKNOWN_RESOURCE, "shard:99"), "unknown_resource:shard:99"),
        (Reason(Kind.PAUSED, "all", detail="alice: deploy 412"), "paused:all (alice: deploy 412)"),
        (Reason(Kind.THROTTLED, "task:x", value=0.5, detail="bob: why"), "throttled:task:x ratio 0.5 (bob: why)"),
        (Refusal("shard:3", 4, 4).reason, "concurrency:shard:3 4/4 in use"),
        (Refusal("shard:3", 3, 4, True).reason, "yield:shard:3 3/4 in use, last slot kept for normal priority"),
        (Refusal("shard:3", 4, 4, True).reason, "yield:shard:3 4/4 in use, low priority waits behind normal"),
        (Reason(Kind.CHECKPOINT, "job-1", detail="worker shutting down"), "checkpoint: worker shutting down"),
    ],
)
def test_each_reason_reads_as_it_always_has(reason: Reason, text: str) -> None:
    assert str(reason) == text


def test_what_a_refused_job_waits_for_is_a_field_not_a_prefix() -> None:
    assert slot_park_scope(Refusal("shard:3", 4, 4).reason) == "slot:shard:3"
    assert slot_park_scope(Refusal("task:x", 1, 1, True).reason) == "slot-low:task:x"
    assert slot_park_scope(Reason(Kind.CONCURRENCY, "shard:3", 4, 4)) is None  # strain-like: waits for resources
    assert Reason(Kind.SIGNAL, "r1", 3.0, 2.0, "high", name="lag").waits_for == "resources"


def test_a_signals_strain_is_one_kind_labelled_by_the_signals_name() -> None:
    """Code asks `kind is SIGNAL`, never `kind == "lag"`; counters and metrics count it under `lag`."""
    lag = Reason(Kind.SIGNAL, "r1", 12.0, 10.0, "critical", name="lag")
    assert lag.kind is Kind.SIGNAL and lag.kind == "signal" and lag.label == "lag"
    assert str(lag) == "lag:r1 12 > critical 10"
    assert Reason(Kind.SIGNAL, "db1", 0.93, 0.8, "high", name="connections").label == "connections"
    assert str(Reason(Kind.SIGNAL, "a", detail="no value", name="backlog")) == "backlog:a no value"
    held = Reason(Kind.LEVER, "task:x", detail="maintenance", name="held")
    assert held.label == "held" and str(held) == "held:task:x maintenance"


@pytest.mark.parametrize("kind", [k for k in Kind if k not in (Kind.SIGNAL, Kind.LEVER)])
def test_a_fixed_kind_is_its_own_label(kind: Kind) -> None:
    reason = Reason(kind, "shard:1", 1.0, 2.0, detail="why", name="ignored")  # a name means nothing to it
    assert reason.label == kind.value == str(kind)
    assert str(reason).startswith(f"{kind.value}:" if kind is not Kind.CHECKPOINT else "checkpoint: ")


def test_a_named_kind_without_its_name_still_labels_by_the_kind() -> None:
    """Nothing counted under an empty label: a signal reason missing its name reads as `signal`."""
    assert Reason(Kind.SIGNAL, "db1").label == "signal"


def test_kinds_are_a_closed_set_of_distinct_values() -> None:
    assert len({k.value for k in Kind}) == len(Kind)
    assert Kind("switch_unreadable") is Kind.SWITCH_UNREADABLE
    assert Kind("hosts_out_unreadable") is Kind.HOSTS_OUT_UNREADABLE
    with pytest.raises(ValueError):
        Kind("connections")  # a signal's name is not a kind
