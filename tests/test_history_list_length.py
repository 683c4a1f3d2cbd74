"""InnoDB's history list length on real MariaDB: a transaction holding an old snapshot keeps
purge from discarding the undo of writes committed after it, so the backlog grows with each
write; the built-in signal reads it (only where asked), rises, and holds past its high mark."""

from __future__ import annotations

from collections.abc import Iterator

import pymysql
import pytest
from redis import Redis

from easeoff.feedback.config import load_config
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.signals.sources.mysql import HISTORY_METRIC, read_history_metric
from tests.conftest import MYSQL, scratch_row_table, wait_until

DB = "easeoff_history_test"
WRITES = 300


@pytest.fixture
def table() -> Iterator[None]:
    yield from scratch_row_table(DB)


def history_now() -> float:
    conn = pymysql.connect(**MYSQL)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'")
            return float(cur.fetchone()[1])
    finally:
        conn.close()


def test_history_list_length_rises_under_an_old_snapshot_and_holds(
    redis_conn: Redis, write_config, table: None
) -> None:
    before = history_now()
    high = before + WRITES // 3
    signal = f'[signals.history_list_length]\nhigh = {high}\nlow = {high - 1}\nresources = ["shard:1"]\n'
    config = load_config(write_config(extra=signal, shard2_hosts='["dead"]'))
    cache = ReadingsCache(redis_conn, config)
    first = cache.probe_now().get("db1")
    assert first is not None and first.error is None, first
    assert "history_list_length" in first.values and not first.strained["history_list_length"], first

    reader = pymysql.connect(**MYSQL, autocommit=False)
    writer = pymysql.connect(**MYSQL, autocommit=True)
    try:
        with reader.cursor() as cur:  # the old snapshot purge must keep history for
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            cur.execute(f"SELECT n FROM {DB}.t WHERE id = 1")
        with writer.cursor() as cur:
            for _ in range(WRITES):
                cur.execute(f"UPDATE {DB}.t SET n = n + 1 WHERE id = 1")

        def risen():  # type: ignore[no-untyped-def]
            reading = cache.probe_now().get("db1")
            assert reading is not None and reading.error is None, reading
            return reading if reading.values["history_list_length"] >= before + WRITES * 0.8 else None

        reading = wait_until(risen, 10, what="the history list to grow under the snapshot")
        assert reading.strained["history_list_length"], reading  # type: ignore[attr-defined]
        # The same backlog as INNODB_METRICS counts it (the fallback where the status lacks it).
        with writer.cursor() as cur:
            values: dict[str, float] = {}
            notes: dict[str, str] = {}
            read_history_metric(cur, values, notes)
        assert not notes, notes
        assert values["history_list_length"] >= before + WRITES * 0.8
    finally:
        reader.rollback()
        reader.close()
        writer.close()


def test_history_is_read_only_where_a_signal_or_budget_asks(redis_conn: Redis, write_config) -> None:
    plain = ReadingsCache(redis_conn, load_config(write_config(shard2_hosts='["dead"]')))
    reading = plain.probe_now().get("db1")
    assert reading is not None and reading.error is None
    assert "history_list_length" not in reading.values
    budget = '[resources."shard:1".budget]\nhistory_list_length = 100000\n'
    budgeted = ReadingsCache(redis_conn, load_config(write_config(extra=budget, shard2_hosts='["dead"]')))
    reading = budgeted.probe_now().get("db1")
    assert reading is not None and reading.error is None
    assert reading.values["history_list_length"] >= 0


def test_the_metric_counter_is_enabled_here() -> None:
    conn = pymysql.connect(**MYSQL)
    try:
        with conn.cursor() as cur:
            cur.execute(HISTORY_METRIC)
            assert cur.fetchone() is not None, "trx_rseg_history_len is not enabled on this server"
    finally:
        conn.close()
