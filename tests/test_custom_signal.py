"""gh-ost's --throttle-query idea: the operator's own SQL returns one number, gated with hysteresis."""

from __future__ import annotations

import time

import pymysql
from redis import Redis
from rq.registry import FinishedJobRegistry, ScheduledJobRegistry

from easeoff.feedback.config import load_config
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.verdict.gate import judge
from easeoff.tasks.catalog import record_run
from tests.conftest import MYSQL, WorkerProcesses, wait_until

BACKLOG_SIGNAL = """
[signals.backlog]
query = "SELECT COUNT(*) FROM easeoff_shard2.user_counts WHERE events < 0"
high = 2
low = 1
resources = ["shard:2"]
"""


def set_backlog(rows: int) -> None:
    conn = pymysql.connect(**MYSQL, database="easeoff_shard2", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("DELETE FROM user_counts WHERE events < 0")
            for user in range(rows):
                cur.execute("INSERT INTO user_counts VALUES (%s, -1, NOW(6))", (1000 + user,))
    finally:
        conn.close()


def test_custom_query_signal_defers_its_resource_and_releases_it(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    config = write_config(extra=BACKLOG_SIGNAL)
    set_backlog(5)
    held = [record_run.enqueue(shard=2, tag="custom", connection=redis_conn) for _ in range(3)]
    free = [record_run.enqueue(shard=1, tag="custom", connection=redis_conn) for _ in range(2)]
    workers.start(config, "heavy")
    wait_until(
        lambda: (
            ScheduledJobRegistry("heavy", connection=redis_conn).count == 3
            and FinishedJobRegistry("heavy", connection=redis_conn).count == 2
        ),
        20,
        what="shard 2 deferred by the custom signal, shard 1 run",
    )
    reasons = held[0].get_meta(refresh=True)["easeoff"]["last_reasons"]
    assert reasons == ["backlog:db1 5 > high 2"], reasons
    assert all(j.get_status(refresh=True) == "finished" for j in free)

    set_backlog(0)
    wait_until(lambda: FinishedJobRegistry("heavy", connection=redis_conn).count == 5, 20, what="shard 2 released")


def test_a_custom_query_that_returns_no_number_holds_and_says_so(redis_conn: Redis, write_config) -> None:
    """NULL, no row, text or NaN from the operator's SQL is not a healthy 0: the signal's failed
    read, held (the signal fails closed by default) with a reason that says what came back."""
    cases = [
        ("SELECT NULL", "no row or NULL (not a number)"),
        ("SELECT 1 FROM DUAL WHERE 1 = 0", "no row or NULL (not a number)"),
        ("SELECT 'lots'", "str (not a number)"),
        ("SELECT 'nan'", "nan (not a number)"),
        ("SELECT '-inf'", "-inf (not a finite number)"),
    ]
    for query, says in cases:
        redis_conn.flushdb()
        signal = BACKLOG_SIGNAL.replace("SELECT COUNT(*) FROM easeoff_shard2.user_counts WHERE events < 0", query)
        config = load_config(write_config(extra=signal))
        cache = ReadingsCache(redis_conn, config)
        snapshot = cache.probe_now()
        cache.close()
        reading = snapshot.get("db1")
        assert reading is not None and reading.error is None, query
        assert "backlog" not in reading.values and reading.notes["backlog"] == f"query returned {says}", query
        assert judge(["shard:2"], snapshot, config, time.time()).texts == [f"backlog:db1 query returned {says}"]
