"""The live-latency signal on real MariaDB: a CPU storm of a few connections (BENCHMARK loops,
as a heavy join would burn) leaves Threads_connected low but slows the canary's tail; the
latency signal rises, holds the shard with its reason, and clears after the storm."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pymysql
import pytest
from redis import Redis

from easeoff.feedback import clock
from easeoff.feedback.config import load_config
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.signals.latency import LatencyWindow, p99
from easeoff.feedback.verdict.gate import judge
from tests.conftest import MYSQL, ticks, wait_until

LATENCY = "[signals.latency]\nhigh = 0.0025\nlow = 0.0015\nwindow = 8\n"
STORM = 8  # connections, each burning a core for as long as it is let


@pytest.fixture
def cpu_storm() -> Iterator[threading.Event]:
    """Start it by setting the event; it ends (KILL QUERY) when the test does, or before. A test
    that fails before starting it must not start it on the way out: a storm query left running
    burns the server's cores for hours and slows every test after it."""
    start, stopping, threads = threading.Event(), threading.Event(), []

    def burn() -> None:
        start.wait()
        if stopping.is_set():
            return
        conn = pymysql.connect(**MYSQL)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT BENCHMARK(20000000000, MD5(RAND()))  /* easeoff-storm */")
        except pymysql.MySQLError:
            pass  # killed: the storm is over
        finally:
            conn.close()

    for _ in range(STORM):
        threads.append(threading.Thread(target=burn, daemon=True))
        threads[-1].start()
    yield start
    stopping.set()
    start.set()
    for _ in ticks(30, 0.2):  # a query may start just after a kill: kill until every burner is gone
        end_storm()
        if not any(thread.is_alive() for thread in threads):
            break
    assert not any(thread.is_alive() for thread in threads), "storm queries outlived the test"


def end_storm() -> None:
    conn = pymysql.connect(**MYSQL)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT id FROM information_schema.processlist"
                " WHERE info LIKE '%easeoff-storm%' AND id != CONNECTION_ID()"
            )
            for (thread_id,) in cur.fetchall():
                cur.execute(f"KILL QUERY {int(thread_id)}")
    finally:
        conn.close()


def test_latency_holds_a_shard_through_a_storm_that_leaves_connections_low(
    redis_conn: Redis, write_config, shards, cpu_storm: threading.Event
) -> None:
    config = load_config(write_config(extra=LATENCY))
    cache = ReadingsCache(redis_conn, config)

    def db1():  # type: ignore[no-untyped-def]
        reading = cache.probe_now().get("db1")
        assert reading is not None and reading.error is None, reading
        return reading

    for _ in range(10):  # fill the window while the server is idle
        idle = db1()
    assert not idle.strained["latency"], f"idle canary p99 {idle.values['latency'] * 1000:.2f} ms is above high already"

    cpu_storm.set()
    held = wait_until(lambda: (r := db1()).strained["latency"] and r, 30, interval=0.02, what="latency to rise")
    assert not held.strained["connections"] and held.values["connections"] < 0.5, held.values
    verdict = judge(["shard:1"], cache.stored(), config, clock.now())
    assert not verdict.admit
    assert [r.label for r in verdict.reasons] == ["latency"], verdict.texts
    print(f"held: {verdict.texts[0]} (connections {held.values['connections']:.2f})")

    end_storm()
    wait_until(lambda: not db1().strained["latency"], 30, interval=0.02, what="latency to clear after the storm")


@pytest.mark.unit
def test_the_window_p99_is_its_tail_and_forgets_old_timings() -> None:
    window = LatencyWindow(size=4)
    assert [window.add(t) for t in (0.001, 0.009, 0.002, 0.003)] == [0.001, 0.009, 0.009, 0.009]
    assert window.add(0.001) == 0.009
    assert window.add(0.001) == 0.003  # the 9 ms timing has left the window
    assert p99([float(i) for i in range(1, 201)]) == 198.0  # nearest rank: the 198th of 200
