"""Probing that scales with hosts: a hung host costs only its own reading, the asking loop never
waits on MySQL, and a prober that stops hands its hosts to the next one."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator

import pymysql
import pytest
from msgspec.structs import replace
from redis import Redis

from easeoff.feedback.config import load_config
from easeoff.feedback.signals.cache import PROBE_LOCK_KEY, ReadingsCache
from tests.conftest import MYSQL, ticks, wait_until


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A port that accepts TCP connections and never sends MySQL's greeting."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def test_a_hung_host_costs_only_its_own_reading(redis_conn: Redis, write_config, hung_port: int) -> None:
    loaded = load_config(write_config(interval=0.5))
    config = replace(loaded, hosts={**loaded.hosts, "dead": replace(loaded.hosts["dead"], port=hung_port)})
    cache = ReadingsCache(redis_conn, config)
    try:
        cache.current()  # a cold start waits for first readings, the hung one's timeout included
        seen: dict[str, list[float]] = {"db1": [], "dead": []}
        slowest_ask = 0.0
        for asked in ticks(3.0, 0.02):
            snapshot = cache.current()
            slowest_ask = max(slowest_ask, time.monotonic() - asked)
            for host, taken in seen.items():
                reading = snapshot.get(host)
                assert reading is not None
                if not taken or reading.taken_at != taken[-1]:
                    taken.append(reading.taken_at)
        dead = snapshot.get("dead")
        assert dead is not None and dead.error is not None and "timeout" in dead.error
        assert dead.counters["probe_s"] >= 0.4  # each probe of it spent its whole timeout (0.5 s)
        assert slowest_ask < 0.25  # the asking loop never waited on a probe
        gaps = [b - a for a, b in itertools.pairwise(seen["db1"])]
        assert len(gaps) >= 4 and max(gaps) < 0.5 * 1.3, gaps  # db1 on its own cadence, not the hung host's
    finally:
        cache.close()


def test_a_stopped_prober_hands_its_hosts_over(redis_conn: Redis, write_config) -> None:
    config = load_config(write_config(interval=0.5))
    first, second = ReadingsCache(redis_conn, config), ReadingsCache(redis_conn, config)
    try:
        first.current()
        assert "db1" in first.loop.owned()
        assert redis_conn.get(PROBE_LOCK_KEY.format(host="db1")) == first.token.encode()
        second.current()
        assert "db1" not in second.loop.owned()  # one prober per host while it lives
        first.close()
        assert redis_conn.get(PROBE_LOCK_KEY.format(host="db1")) is None  # given back, not left to lapse
        stopped_at = time.time()
        wait_until(lambda: "db1" in second.current().readings and "db1" in second.loop.owned(), 5, what="a takeover")
        wait_until(
            lambda: (r := second.current().get("db1")) is not None and r.taken_at > stopped_at,
            5,
            what="a reading by the new prober",
        )
    finally:
        first.close()
        second.close()


def probe_connection_ids(cache: ReadingsCache) -> set[int]:
    """The MariaDB connection ids of the probe connections `cache` keeps."""
    source = cache.prober.sources["mysql"]
    return {conn.thread_id() for conn, _ in list(source._kept.values())}  # type: ignore[attr-defined]


def live_connection_ids() -> set[int]:
    conn = pymysql.connect(**MYSQL)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT ID FROM information_schema.PROCESSLIST")
            return {int(row[0]) for row in cur.fetchall()}
    finally:
        conn.close()


def test_a_prober_that_loses_a_host_closes_its_connection_at_once(redis_conn: Redis, write_config) -> None:
    """A host sees one probe connection, not one per process that ever probed it: when another
    process holds the host's lease, the one that lost it closes its connection at its next probe."""
    config = load_config(write_config(interval=0.3))
    first, second = ReadingsCache(redis_conn, config), ReadingsCache(redis_conn, config)
    try:
        first.current()
        wait_until(lambda: probe_connection_ids(first), 5, what="first's probe connection")
        (kept,) = probe_connection_ids(first)
        assert kept in live_connection_ids()
        # first stalls past its lease (as a starved prober does) and second takes db1 over
        redis_conn.set(PROBE_LOCK_KEY.format(host="db1"), second.token, px=5000)
        second.loop.take_on(["db1"])
        wait_until(lambda: "db1" not in first.loop.owned(), 5, what="first to find db1 taken")
        wait_until(lambda: kept not in live_connection_ids(), 5, what="first's connection closed")
        assert not probe_connection_ids(first)
        wait_until(lambda: probe_connection_ids(second), 5, what="second's probe connection")
    finally:
        first.close()
        second.close()
    assert not probe_connection_ids(first) and not probe_connection_ids(second)  # closed when they stop
