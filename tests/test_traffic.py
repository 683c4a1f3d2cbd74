"""Live traffic from the app-side counter: high traffic stops dequeuing, low traffic resumes it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from redis import Redis
from rq import Queue
from rq.registry import FinishedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from easeoff.feedback import clock
from easeoff.feedback.config import load_config
from easeoff.feedback.signals.cache import ReadingsCache
from easeoff.feedback.signals.traffic import COUNTER_KEY, app_rate, count_request
from easeoff.feedback.verdict.gate import judge
from easeoff.tasks.catalog import record_run
from tests.conftest import TEST_REDIS_URL, WorkerProcesses, stays_true, wait_until
from tests.test_fleet_clock import LIBFAKETIME, redis_now

WEB_SIGNAL = """
[signals.web]
source = "app"
high = 40
low = 15
"""


def test_app_rate_counts_a_sliding_second(redis_conn: Redis) -> None:
    base = 1_700_000_000.0
    count_request(redis_conn, "web", n=30, now=base + 0.5)
    count_request(redis_conn, "web", n=10, now=base + 1.2)
    # At base+1.5: all of this second's 10, plus half of the previous second's 30.
    assert app_rate(redis_conn, "web", now=base + 1.5) == 10 + 15
    assert app_rate(redis_conn, "other", now=base + 1.5) == 0


class TrafficGenerator:
    """Calls count_request at a set rate from a thread, as a web app would per request."""

    def __init__(self) -> None:
        self.rate = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        redis = Redis.from_url(TEST_REDIS_URL)
        while not self.stop.is_set():
            if self.rate:
                count_request(redis, "web")
            self.stop.wait(1.0 / self.rate if self.rate else 0.05)


def test_app_traffic_above_high_stops_dequeuing_and_below_low_resumes(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    config = write_config(extra=WEB_SIGNAL)
    traffic = TrafficGenerator()
    traffic.rate = 100
    traffic.thread.start()
    try:
        wait_until(lambda: app_rate(redis_conn, "web") > 60, 10, what="traffic above high")
        jobs = [record_run.enqueue(shard=1, tag="traffic", connection=redis_conn) for _ in range(4)]
        workers.start(config, "heavy")
        queue = Queue("heavy", connection=redis_conn)
        # Held before dequeuing: the jobs stay ready, none is claimed, deferred or run.
        stays_true(
            lambda: (
                len(queue) == 4
                and ScheduledJobRegistry("heavy", connection=redis_conn).count == 0
                and StartedJobRegistry("heavy", connection=redis_conn).count == 0
            ),
            3.0,
            what="all four jobs ready, none claimed",
        )
        assert b"web" in (redis_conn.get("easeoff:reading:app:web") or b"")

        traffic.rate = 25  # between low and high: hysteresis keeps the hold
        wait_until(lambda: 18 < app_rate(redis_conn, "web") < 35, 10, what="traffic in the band")
        stays_true(lambda: len(queue) == 4, 2.0, what="hold in the band")

        traffic.rate = 2  # below low: dequeuing resumes
        wait_until(lambda: FinishedJobRegistry("heavy", connection=redis_conn).count == 4, 20, what="jobs to run again")
        assert all(j.get_status(refresh=True) == "finished" for j in jobs)
    finally:
        traffic.stop.set()
        traffic.thread.join(timeout=5)


# An app process with its own client (no easeoff.connect): it counts 50 requests at once.
COUNT_50 = f"""
from redis import Redis
import easeoff
easeoff.count_request(Redis.from_url({TEST_REDIS_URL!r}), "web", n=50)
"""


def test_an_app_whose_clock_is_off_counts_into_the_fleets_seconds(redis_conn: Redis) -> None:
    """The prober reads the seconds of Redis's clock; an app 30 s ahead or behind must count there."""
    assert LIBFAKETIME, "Debian's faketime is missing (scripts/test.sh installs it)"
    clock.follow(redis_conn)  # the test reads as a prober does: on the fleet's clock
    for skew in ("+30s", "-30s"):
        redis_conn.flushdb()
        env = {"LD_PRELOAD": str(LIBFAKETIME[0]), "FAKETIME": skew, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        app = subprocess.run([sys.executable, "-c", COUNT_50], env=env, capture_output=True, text=True, timeout=30)
        assert app.returncode == 0, app.stderr
        counted = {
            int(k.decode().rsplit(":", 1)[1])
            for k in redis_conn.scan_iter(COUNTER_KEY.format(counter="web", second="*"))
        }
        assert len(counted) == 1, counted
        assert abs(counted.pop() - redis_now(redis_conn)) < 3, f"{skew}: counted into a second the prober never reads"
        assert app_rate(redis_conn, "web") > 0


def test_a_counter_that_is_not_a_count_fails_the_probe_closed(redis_conn: Redis, write_config) -> None:
    config = load_config(write_config(extra=WEB_SIGNAL))
    clock.follow(redis_conn)
    now = int(redis_now(redis_conn))
    for second in range(now - 2, now + 10):  # whichever seconds the probe lands on
        redis_conn.set(COUNTER_KEY.format(counter="web", second=second), "lots")
    cache = ReadingsCache(redis_conn, config)
    try:
        snapshot = cache.probe_now()
    finally:
        cache.close()
    says = "app: counter web holds something that is not a count (not a number)"
    reading = snapshot.get("app:web")
    assert reading is not None and reading.error == says
    assert judge(["shard:1"], snapshot, config, time.time()).texts == [f"probe_error:app:web ({says})"]
