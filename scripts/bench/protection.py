"""Does easing off protect live traffic? p99 of short live queries, side by side in one run:

(a) idle, (b) while a batch of heavy jobs runs on plain rq workers, (c) while the same batch
runs on easeoff's gated workers (per-shard concurrency limit with slot waits, threads_running
signal, checkpoints between chunks). The batch is the example `rebuild_user_stats` jobs:
resumable backfills of 200 users each, one CPU-heavy self-join per user (chunk), ~10 s a
job. Each phase runs for the same window with the same number of workers; throughput is
chunks committed in the window, counted in MariaDB. Phases are repeated in turn and the
medians reported.

Everything shares one 2-core host here, so rq's own cost per job (a fork, a connection)
lands next to the live queries: with 40-chunk jobs (2 s each) the ratio is ~1.4-1.6, which
is why heavy work is best written as long resumable jobs.

Last line: `protection_p99_ratio X`, p99 in (c) over p99 in (a). Target <= 1.5.

`--shape oneshot` runs the same SQL as one-shot jobs instead, the shape most apps write:
`rebuild_users_once` jobs of 10 users each (about half a second), 160 of them, through plain
rq, easeoff's forking worker and `easeoff worker --in-process` (which keeps one MySQL
connection across jobs, tasks/pool.py), same window and live traffic. Beside them,
`one-stream` runs the batch's jobs one after another on one connection in a plain loop, with
no queue at all: the most heavy work a concurrency limit of one allows, so a shortfall against
plain rq tells what the limit costs apart from what the queue does.
Last line: `protection_oneshot_p99_ratio X`, the in-process easeoff's p99 over idle
(`protection_p99_ratio`'s default-mode figure for the forking worker is printed beside it).

`--limit N` gives easeoff's shard a concurrency limit of N rather than 1, and lifts the
threads_running signal (which would hold every job past the first): the other end of the
trade-off, more heavy work at a higher live p99.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import pymysql
from redis import Redis

REPO = Path(__file__).resolve().parents[2]

import _common  # noqa: E402
from fleet import Fleet, unwind_on_signals, wait_for  # noqa: E402
from rq import Queue  # noqa: E402
from rq.serializers import JSONSerializer  # noqa: E402

from easeoff.tasks.catalog import rebuild_user_stats, rebuild_users_once  # noqa: E402
from easeoff.tasks.demo_schema import create_schema, seed_events  # noqa: E402
from easeoff.tasks.pool import close_all  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/10"
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "database": "easeoff_shard3"}
SHARD, USERS, PER_USER = 3, 200, 500
WORKERS, JOBS, WINDOW, ROUNDS = 4, 8, 20.0, 5
ONESHOT_USERS = 10  # users per one-shot job: about half a second of the chunks' SQL
LIVE_THREADS, LIVE_QPS_PER_THREAD = 2, 150

CONFIG = """
[tasks]
modules = ["easeoff.tasks.catalog"]
[redis]
url = "{redis}"
[probe]
interval = 1.0
[backoff]
base = 0.5
cap = 2.0
[mysql.hosts.db1]
url = "mysql://root@127.0.0.1:3306"
[resources."shard:3"]
hosts = ["db1"]
[resources."shard:3".concurrency]
min = 1
max = {limit}
[signals.threads_running]
high = {running_high}
low = {running_low}
[queues.recount]
"""

PLAIN_WORKER = _common.PLAIN_WORKER.format(preload="", burst=True, worker_class="Worker")


class LiveTraffic:
    """Short point queries at a steady rate, each one timed: the live site."""

    def __init__(self, max_id: int) -> None:
        self.max_id = max_id
        self.samples: list[tuple[float, float]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(LIVE_THREADS)]

    def run(self) -> None:
        conn = pymysql.connect(**MYSQL, autocommit=True)
        rng = random.Random()
        period = 1.0 / LIVE_QPS_PER_THREAD
        try:
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    started = time.perf_counter()
                    cur.execute("SELECT payload FROM events WHERE id = %s", (rng.randint(1, self.max_id),))
                    cur.fetchall()
                    took = time.perf_counter() - started
                    with self.lock:
                        self.samples.append((time.monotonic(), took))
                    self.stop.wait(max(0.0, period - took))
        finally:
            conn.close()

    def p99(self, since: float, until: float) -> float:
        with self.lock:
            window = sorted(took for at, took in self.samples if since <= at <= until)
        return window[int(0.99 * (len(window) - 1))] if window else float("nan")


def mysql_value(sql: str) -> int:
    conn = pymysql.connect(**MYSQL)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def chunks_done() -> int:
    return mysql_value("SELECT COUNT(*) FROM job_runs WHERE task = 'rebuild_user_stats'")


def heavy_queries_running() -> int:
    """Heavy statements still executing, such as those of workers just killed."""
    return mysql_value(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = 'easeoff_shard3' "
        "AND COMMAND = 'Query' AND INFO LIKE 'REPLACE%'"
    )


def oneshot_batch() -> list[tuple[int, int]]:
    """The same users' chunks as the resumable batch, ten users a job: (first, last) user of each."""
    return [
        (first, min(first + ONESHOT_USERS - 1, USERS))
        for _ in range(JOBS)
        for first in range(1, USERS + 1, ONESHOT_USERS)
    ]


def enqueue_batch(redis: Redis, shape: str) -> None:
    if shape == "oneshot":
        for first, last in oneshot_batch():
            rebuild_users_once.enqueue(shard=SHARD, first_user=first, last_user=last, connection=redis)
        return
    for _ in range(JOBS):
        rebuild_user_stats.enqueue(shard=SHARD, first_user=1, last_user=USERS, connection=redis)


class OneStream:
    """The one-shot batch run inline, one job after another on one kept connection: no queue,
    no gate, no process per job."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        for first, last in oneshot_batch():
            if self.stop.is_set():
                return
            rebuild_users_once(shard=SHARD, first_user=first, last_user=last)

    def end(self) -> None:
        self.stop.set()
        self.thread.join()  # the job under way (if the batch is not done) ends within half a second
        close_all()


def run_phase(mode: str, live: LiveTraffic, redis: Redis, config: Path, shape: str) -> tuple[float, int]:
    """p99 of live queries and heavy chunks committed, over one window."""
    redis.flushdb()
    fleet = Fleet()
    inline = OneStream() if mode == "one-stream" else None
    if mode != "idle":
        enqueue_batch(redis, shape)
    before = chunks_done()
    if mode == "plain":
        fleet.start([sys.executable, "-c", PLAIN_WORKER, REDIS_URL, "recount"], WORKERS)
    elif mode == "easeoff":
        fleet.start_gated(config, ["recount"], WORKERS)
    elif mode == "in-process":
        fleet.start(
            [sys.executable, "-m", "easeoff.workers.cli", "--config", str(config), "worker", "recount", "--in-process"],
            WORKERS,
        )
    elif inline is not None:
        inline.thread.start()
    started = time.monotonic()
    try:
        time.sleep(WINDOW)
        done = chunks_done() - before
    finally:
        fleet.stop()
        if inline is not None:
            inline.end()
        wait_for(lambda: heavy_queries_running() == 0, 60, "killed workers' heavy queries to end")
    return live.p99(started + 1.0, started + WINDOW), done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=("resumable", "oneshot"), default="resumable")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument(
        "--limit",
        type=int,
        default=1,
        help="the shard's concurrency limit for easeoff (default 1); above 1 the threads_running signal "
        "is lifted, or it would hold every second job: the other end of the trade-off",
    )
    opts = parser.parse_args()
    if opts.limit < 1:
        parser.error(f"--limit must be 1 or more, not {opts.limit}")
    unwind_on_signals()
    redis = Redis.from_url(REDIS_URL)
    create_schema(SHARD, reset=True)
    events = seed_events(SHARD, users=USERS, per_user=PER_USER)
    live = LiveTraffic(max_id=events)
    modes: tuple[str, ...] = ("idle", "plain", "easeoff")
    if opts.shape == "oneshot":
        modes += ("in-process", "one-stream")
    results: dict[str, list[tuple[float, int]]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "protection.toml"
        running = (2, 1) if opts.limit == 1 else (1000, 900)
        text = CONFIG.format(redis=REDIS_URL, limit=opts.limit, running_high=running[0], running_low=running[1])
        config.write_text(text, encoding="utf-8")
        for thread in live.threads:
            thread.start()
        try:
            for _ in range(opts.rounds):
                for mode in results:
                    p99, done = run_phase(mode, live, redis, config, opts.shape)
                    results[mode].append((p99, done))
                    print(f"  {mode:<10} p99 {p99 * 1000:7.2f} ms   heavy chunks done {done}")
        finally:
            live.stop.set()
            redis.flushdb()
            Queue("recount", connection=redis, serializer=JSONSerializer).empty()
    p99 = {mode: statistics.median(r[0] for r in runs) for mode, runs in results.items()}
    done = {mode: statistics.median(r[1] for r in runs) for mode, runs in results.items()}
    batch = JOBS * USERS
    shape = (
        f"{JOBS * USERS // ONESHOT_USERS} one-shot jobs of {ONESHOT_USERS} users"
        if opts.shape == "oneshot"
        else (f"{JOBS} jobs of {USERS} chunks")
    )
    print(
        f"idle p99 {p99['idle'] * 1000:.2f} ms (baseline); batch: {shape}, {WORKERS} workers; "
        f"easeoff's shard limit {opts.limit}"
    )
    for mode in modes[1:]:
        share = done[mode] / done["plain"] if done["plain"] else float("nan")
        print(
            f"{mode:<10} p99 over idle {p99[mode] / p99['idle']:.2f}x; heavy throughput "
            f"{done[mode] / WINDOW:.1f} chunks/s ({done[mode]:.0f} of {batch} in {WINDOW:.0f}s, "
            f"{share:.0%} of plain rq's)"
        )
    if opts.shape == "oneshot":
        print(f"forking easeoff worker: p99 over idle {p99['easeoff'] / p99['idle']:.2f}")
        print(f"protection_oneshot_p99_ratio {p99['in-process'] / p99['idle']:.2f}")
    else:
        print(f"protection_p99_ratio {p99['easeoff'] / p99['idle']:.2f}")


if __name__ == "__main__":
    main()
