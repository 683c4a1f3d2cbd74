"""The event log on real Redis: operators' entries, verdict flips logged once, time windows."""

from __future__ import annotations

import time

from redis import Redis

from easeoff.feedback.levers import events
from easeoff.feedback.tally.flips import GLOBAL, record_flips

SCOPES = [GLOBAL, "shard:1", "shard:2"]


def test_verdict_flips_are_logged_once_each_and_a_healthy_start_is_not_a_flip(redis_conn: Redis) -> None:
    assert record_flips(redis_conn, {}, SCOPES) == 0  # first sight, all healthy: nothing to say
    held = {"shard:1": ["lag:s1r1 7.2 > high 5"]}
    assert record_flips(redis_conn, held, SCOPES) == 1
    assert record_flips(redis_conn, held, SCOPES) == 0  # the same state from another prober: no duplicate
    assert record_flips(redis_conn, {}, SCOPES) == 1
    logged = [(e.kind, e.text) for e in events.recent(redis_conn, 10)]
    assert logged == [
        ("verdict", "shard:1 admitted again"),
        ("verdict", "shard:1 held: lag:s1r1 7.2 > high 5"),
    ]
    assert events.counts(redis_conn) == {"verdict": 2}


def test_recent_filters_by_kind_and_between_reads_a_window(redis_conn: Redis) -> None:
    start = time.time()
    events.record(redis_conn, "annotation", "deploy 412", who="alice")
    for i in range(150):  # more than one page of the reverse scan
        record_flips(redis_conn, {"shard:2": [f"connections:db1 {i}"]} if i % 2 else {}, SCOPES)
    events.record(redis_conn, "switch", "on: pause all", who="bob", why="incident")
    audit = events.recent(redis_conn, 5, events.OPERATOR_KINDS)
    assert [(e.kind, e.who, e.why) for e in audit] == [("switch", "bob", "incident"), ("annotation", "alice", "")]
    window = events.between(redis_conn, start - 1, time.time() + 1)
    assert window[0].text == "deploy 412" and window[-1].text == "on: pause all"
    assert len(window) == 2 + 149  # every flip after the healthy first sight
    assert events.between(redis_conn, start - 100, start - 50) == []
