"""Live traffic from the app-side counter: high traffic stops dequeuing, low traffic resumes it."""

from __future__ import annotations

import threading

from redis import Redis
from rq import Queue
from rq.registry import FinishedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from easeoff.feedback.signals.traffic import app_rate, count_request
from easeoff.tasks.catalog import record_run
from tests.conftest import TEST_REDIS_URL, WorkerProcesses, stays_true, wait_until

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
