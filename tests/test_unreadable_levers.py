"""Switches and hosts-out entries this version cannot fully read, on real Redis: a newer
version's extra fields are kept and honoured, what cannot be read at all holds, loudly, and
nothing is dropped when another operator's change rewrites the value."""

from __future__ import annotations

import json
import random

from redis import Redis

from easeoff.feedback import clock
from easeoff.feedback.config import Config, load_config
from easeoff.feedback.levers import events
from easeoff.feedback.levers.hosts_out import HOSTS_OUT_KEY, mark_out
from easeoff.feedback.levers.switches import SWITCHES_KEY, Switch, clear_switch, set_switch
from easeoff.feedback.reasons import texts
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.signals.snapshot import Snapshot
from easeoff.feedback.verdict.gate import queue_reasons, strain_reasons, task_reasons

UNREADABLE = "not understood by this easeoff: held until fixed or cleared"


def stored(redis: Redis, config: Config) -> Snapshot:
    return ReadingsCache(redis, config).stored()


def test_switch_entries_from_a_newer_version_apply_and_survive_other_changes(redis_conn: Redis, write_config) -> None:
    config = load_config(write_config())
    now = clock.now()
    newer = {"kind": "pause", "scope": "queue:archive", "by": "eve", "why": "reindex", "at": now, "region": "eu"}
    drain = {"kind": "drain", "scope": "task:record_run", "by": "eve", "why": "new kind", "at": now}
    raw = {"pause queue:archive": newer, "pause task:record_run": drain, "_newer_bookkeeping": [1]}
    redis_conn.set(SWITCHES_KEY, json.dumps(raw))

    snapshot = stored(redis_conn, config)
    assert texts(queue_reasons("archive", snapshot, config, now)) == ["paused:queue:archive (eve: reindex)"]
    assert texts(task_reasons("record_run", snapshot, now, random.Random(1))) == [
        f"switch_unreadable:pause task:record_run {UNREADABLE}"
    ]
    assert queue_reasons("recount", snapshot, config, now) == []  # what no entry names runs

    # Another operator's change rewrites the value: both entries are kept exactly as stored.
    set_switch(redis_conn, Switch("pause", "queue:recount", "bob", "drill", now))
    after = json.loads(redis_conn.get(SWITCHES_KEY) or b"{}")
    assert after["pause queue:archive"] == newer and after["pause task:record_run"] == drain
    assert after["_newer_bookkeeping"] == [1]
    assert "pause queue:recount" in after

    # `easeoff resume task:record_run` clears the entry it could not read, and logs it.
    assert clear_switch(redis_conn, "pause task:record_run", "bob", "fixed") is None
    assert "pause task:record_run" not in json.loads(redis_conn.get(SWITCHES_KEY) or b"{}")
    assert events.recent(redis_conn, 1)[0].text == "off: unreadable switch pause task:record_run"
    assert task_reasons("record_run", stored(redis_conn, config), now, random.Random(1)) == []


def test_a_switches_value_that_is_not_json_holds_everything_until_replaced(redis_conn: Redis, write_config) -> None:
    config = load_config(write_config())
    redis_conn.set(SWITCHES_KEY, b"\x00 not json")
    now = clock.now()
    held = f"switch_unreadable:easeoff:switches {UNREADABLE}"
    snapshot = stored(redis_conn, config)
    assert held in texts(strain_reasons(["shard:1"], snapshot, config, now))
    assert texts(queue_reasons("recount", snapshot, config, now)) == [held]

    set_switch(redis_conn, Switch("pause", "queue:archive", "bob", "repair", now))
    assert "replaced an unreadable value: '\\x00 not json'" in events.recent(redis_conn, 1)[0].text
    assert queue_reasons("recount", stored(redis_conn, config), config, now) == []


def test_hosts_out_entries_this_version_cannot_read_still_mark_their_host_out(redis_conn: Redis, write_config) -> None:
    config = load_config(write_config())
    raw = {"db1": "disk swap", "dead": {"reason": "rebuild", "by": "eve", "at": 1.0, "until": "friday"}}
    redis_conn.set(HOSTS_OUT_KEY, json.dumps(raw))
    snapshot = stored(redis_conn, config)
    assert dict(snapshot.hosts_out) == {"db1": "entry not understood by this easeoff: held out", "dead": "rebuild"}
    assert "host_out:db1 (entry not understood by this easeoff: held out)" in texts(
        strain_reasons(["shard:1"], snapshot, config, clock.now())
    )

    mark_out(redis_conn, "db2", "maintenance", by="bob")  # another change keeps both as stored
    after = json.loads(redis_conn.get(HOSTS_OUT_KEY) or b"{}")
    assert after["db1"] == raw["db1"] and after["dead"] == raw["dead"] and after["db2"]["reason"] == "maintenance"


def test_a_hosts_out_value_that_is_not_json_holds_everything(redis_conn: Redis, write_config) -> None:
    config = load_config(write_config())
    redis_conn.set(HOSTS_OUT_KEY, b"[db1")
    held = "hosts_out_unreadable:easeoff:hosts-out not understood by this easeoff: held until fixed or replaced"
    snapshot = stored(redis_conn, config)
    assert held in texts(queue_reasons("recount", snapshot, config, clock.now()))

    mark_out(redis_conn, "db2", "maintenance", by="bob")
    assert "replaced an unreadable value: '[db1'" in events.recent(redis_conn, 1)[0].text
    assert queue_reasons("recount", stored(redis_conn, config), config, clock.now()) == []
