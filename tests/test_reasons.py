"""Typed reasons: fields to act on, and the one line of text operators have always read."""

from __future__ import annotations

import pytest

from easeoff.feedback.levers.limits import Refusal, slot_park_scope
from easeoff.feedback.reasons import Kind, Reason

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("reason", "text"),
    [
        (Reason("connections", "db1", 0.93, 0.8, "high"), "connections:db1 0.93 > high 0.8"),
        (Reason("connections", "db1", 0.7, 0.6, "low"), "connections:db1 0.7 not yet below low 0.6"),
        (Reason("lag", "r1", 12.0, 10.0, "critical"), "lag:r1 12 > critical 10"),
        (
            Reason("backlog", "a", detail="query failed: 1146 no such table"),
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
    assert slot_park_scope(Reason("concurrency", "shard:3", 4, 4)) is None  # strain-like: waits for resources
    assert Reason("lag", "r1", 3.0, 2.0, "high").waits_for == "resources"
