"""row_lock_waits on real MariaDB: a session waiting for a row another holds is counted, the
signal holds work past its high mark, and lets it go once the lock is released."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pymysql
import pytest
from redis import Redis

from easeoff.feedback.config import load_config
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.signals.readings import Reading
from tests.conftest import MYSQL, scratch_row_table, wait_until

DB = "easeoff_row_lock_test"
SIGNAL = '[signals.row_lock_waits]\nhigh = 0.5\nlow = 0.25\nresources = ["shard:1"]\n'  # one wait strains it


@pytest.fixture
def table() -> Iterator[None]:
    yield from scratch_row_table(DB)


def test_a_session_waiting_on_a_row_lock_strains_the_signal_until_released(
    redis_conn: Redis, write_config, table: None
) -> None:
    config = load_config(write_config(extra=SIGNAL, shard2_hosts='["dead"]'))
    cache = ReadingsCache(redis_conn, config)
    first = cache.probe_now().get("db1")
    assert first is not None and first.error is None and first.values["row_lock_waits"] == 0, first

    holder = pymysql.connect(**MYSQL, autocommit=False)
    waiter = pymysql.connect(**MYSQL, autocommit=False)
    with holder.cursor() as cur:
        cur.execute(f"SELECT n FROM {DB}.t WHERE id = 1 FOR UPDATE")

    def wait_for_the_row() -> None:
        with waiter.cursor() as cur:
            cur.execute("SET SESSION innodb_lock_wait_timeout = 30")
            cur.execute(f"UPDATE {DB}.t SET n = n + 1 WHERE id = 1")
        waiter.commit()

    blocked = threading.Thread(target=wait_for_the_row)
    blocked.start()
    try:

        def strained() -> Reading | None:
            reading = cache.probe_now().get("db1")
            return reading if reading is not None and reading.strained.get("row_lock_waits") else None

        held = wait_until(strained, 15, interval=0.2, what="the row lock wait to strain the signal")
        assert isinstance(held, Reading) and held.values["row_lock_waits"] >= 1
    finally:
        holder.rollback()
        blocked.join(30)
        holder.close()
        waiter.close()

    def cleared() -> Reading | None:
        reading = cache.probe_now().get("db1")
        return reading if reading is not None and not reading.strained.get("row_lock_waits", True) else None

    wait_until(cleared, 15, interval=0.2, what="the signal to clear once the lock is released")
