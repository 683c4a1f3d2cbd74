"""The whole loop, on real Redis and MariaDB: heavy jobs run, MySQL gets strained, the
workers ease off, the strain clears part-way (hysteresis holds), then fully, the deferred
work comes back and runs, and a summary proves nothing was lost.

Run through `bash scripts/demo.sh` (services and virtualenv first). Exits 1 if a job is
lost or run twice, a check fails or a deadline passes; 130 on Ctrl-C. Workers and held
connections are cleaned up whatever happens.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
from redis import Redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from fleet import MYSQL, Fleet, connection_thresholds, mysql_value  # noqa: E402
from rq import Queue  # noqa: E402
from rq.job import Job  # noqa: E402
from rq.registry import (  # noqa: E402
    BaseRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.serializers import JSONSerializer  # noqa: E402

from feedback.cache import ReadingsCache  # noqa: E402
from feedback.config import load_config  # noqa: E402
from feedback.counters import read_counts  # noqa: E402
from feedback.gate import judge  # noqa: E402
from feedback.queue_stats import queue_stats  # noqa: E402
from tasks.catalog import archive_old_rows, record_run, recount_users  # noqa: E402
from tasks.demo_schema import create_schema, seed_events  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/13"  # the demo's own Redis DB, flushed at start and end
QUEUES = ["heavy", "archive", "recount"]  # the workers' priority order
RESOURCES = ["shard:1", "shard:2"]
SHARDS = (1, 2)
WORKERS = 3
USERS, PER_USER = 40, 50  # per shard; seed_events makes half of each user's events 90 days old
OLD_ROWS = USERS * PER_USER // 2
FEED_PER_SECOND = 4.0  # the steady stream of record_run jobs (0.2 s of work each)
STRAIN, PARTLY = 40, 22  # extra connections held: above `high`, then between `low` and `high`
ABOVE_HIGH, ABOVE_LOW = 30, 15  # thresholds: this many connections above today's baseline
DEADLINE = 150.0  # the whole demo, seconds
LOCK_KEY = "easeoff:demo:running"  # one demo at a time on db 13: a second one would flush the first
T0 = time.monotonic()


def say(message: str = "") -> None:
    print(f"[{time.monotonic() - T0:5.1f}s] {message}" if message else "", flush=True)


def elapsed() -> float:
    return time.monotonic() - T0


@dataclass(frozen=True)
class Enqueued:
    task: str
    shard: int


class Strain:
    """Real idle connections to MariaDB, held so the server carries `extra` connections over
    the baseline the thresholds were set from, whatever else comes and goes on the server
    meanwhile (tests and benchmarks share it): re-aimed about once a second."""

    def __init__(self, baseline: int, maximum: int) -> None:
        self.others_at_start = baseline - 1  # the baseline counted the connection that read it
        self.maximum = maximum
        self.held: list[pymysql.connections.Connection] = []
        self.extra: int | None = None
        self.short = False

    def others(self) -> int:
        """Connections on the server that are not ours (the one asking aside)."""
        if self.held:
            with self.held[0].cursor() as cur:
                cur.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
                return int(cur.fetchone()[1]) - len(self.held)
        return int(mysql_value("SHOW GLOBAL STATUS LIKE 'Threads_connected'")) - 1

    def hold(self, extra: int) -> int:
        """Aim for `extra` connections over the baseline; returns how many are held."""
        self.extra = extra or None
        if not extra:
            self.resize(0)
            return 0
        self.aim(tolerance=0)
        return self.aim(tolerance=0)

    def aim(self, tolerance: int = 2) -> int:
        if self.extra is None:
            return 0
        others = self.others()
        wanted = self.others_at_start + self.extra - others
        room = self.maximum - others - 10  # never crowd out everyone else
        self.short = wanted > room
        wanted = max(0, min(wanted, room))
        if abs(wanted - len(self.held)) > tolerance:
            self.resize(wanted)
        return len(self.held)

    def resize(self, n: int) -> None:
        while len(self.held) < n:
            self.held.append(pymysql.connect(**MYSQL, connect_timeout=5))
        while len(self.held) > n:
            self.held.pop().close()


class Interrupted(Exception):
    """SIGTERM or Ctrl-C: clean up, summarise what there is, exit 130."""


class CannotGoOn(Exception):
    """A worker died, or another demo took Redis db 13 over: waiting longer would prove nothing."""


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.config_path = workdir / "easeoff-demo.toml"
        self.high, self.low, self.baseline, self.max_connections = self.write_config()
        self.config = load_config(self.config_path)
        self.redis = Redis.from_url(REDIS_URL)
        self.cache = ReadingsCache(self.redis, self.config)
        self.fleet = Fleet(workdir)
        self.strain = Strain(self.baseline, self.max_connections)
        self.jobs: dict[str, Enqueued] = {}
        self.jobs_lock = threading.Lock()
        self.turn = itertools.count()  # record_run jobs alternate between the shards
        self.problems: list[str] = []
        self.shown_at = 0.0
        self.seeded = False
        self.intact_at = 0.0
        self.lock_token = f"{socket.gethostname()} pid {os.getpid()}"
        self.feeding = threading.Event()
        self.feeder: threading.Thread | None = None

    # -- setting up -----------------------------------------------------------------

    def write_config(self) -> tuple[float, float, int, int]:
        """Thresholds relative to the server's baseline, pt-osc style: ~40 held connections cross `high`."""
        high, low, baseline = connection_thresholds(ABOVE_HIGH, ABOVE_LOW)
        maximum = int(mysql_value("SELECT @@GLOBAL.max_connections"))
        self.config_path.write_text(
            f"""# written by scripts/demo.py
[redis]
url = "{REDIS_URL}"

[probe]
interval = 1.0

[backoff]
base = 1.0
cap = 4.0

[mysql.hosts.db1]
url = "mysql://root@127.0.0.1:3306"

[resources."shard:1"]
hosts = ["db1"]

[resources."shard:2"]
hosts = ["db1"]

[signals.connections]   # Threads_connected / max_connections
high = {high}           # ({baseline} + {ABOVE_HIGH}) / {maximum}
low = {low}            # ({baseline} + {ABOVE_LOW}) / {maximum}

[queues.heavy]
[queues.archive]
[queues.recount]
""",
            encoding="utf-8",
        )
        return high, low, baseline, maximum

    def track(self, job: Job, task: str, shard: int) -> None:
        with self.jobs_lock:
            self.jobs[job.id] = Enqueued(task, shard)

    def enqueue_runs(self, n: int, tag: str, redis: Redis | None = None) -> None:
        for _ in range(n):
            with self.jobs_lock:
                shard = SHARDS[next(self.turn) % len(SHARDS)]
            job = record_run.enqueue(shard=shard, tag=tag, seconds=0.2, connection=redis or self.redis)
            self.track(job, "record_run", shard)

    def enqueue_recounts(self) -> int:
        n = 0
        for shard in SHARDS:
            for first in range(1, USERS + 1, 10):
                self.track(
                    recount_users.enqueue(shard, first, first + 9, connection=self.redis), "recount_users", shard
                )
                n += 1
        return n

    def start_feeder(self) -> None:
        """A steady stream of small ledger jobs, as an app would enqueue them."""

        def feed() -> None:
            redis = Redis.from_url(REDIS_URL)
            try:
                while self.feeding.is_set():
                    self.enqueue_runs(1, "stream", redis)
                    time.sleep(1.0 / FEED_PER_SECOND)
            finally:
                redis.close()

        self.feeding.set()
        self.feeder = threading.Thread(target=feed, name="feeder", daemon=True)
        self.feeder.start()

    def stop_feeder(self) -> None:
        self.feeding.clear()
        if self.feeder is not None:
            self.feeder.join(timeout=5)

    # -- what an operator sees ------------------------------------------------------

    def ids_in(self, registry: type[BaseRegistry]) -> set[str]:
        """Job ids in one kind of rq registry across the queues (read only: no cleanup)."""
        return set().union(*(registry(q, connection=self.redis).get_job_ids(cleanup=False) for q in QUEUES))

    def finished_ids(self) -> set[str]:
        return self.ids_in(FinishedJobRegistry)

    def failed_ids(self) -> set[str]:
        return self.ids_in(FailedJobRegistry)

    def ready_ids(self) -> set[str]:
        return set().union(*(Queue(q, connection=self.redis).get_job_ids() for q in QUEUES))

    def totals(self) -> dict[str, int]:
        stats = queue_stats(self.redis, QUEUES)
        return {
            "ready": sum(s.ready for s in stats),
            "deferred": sum(s.deferred for s in stats),
            "running": sum(s.running for s in stats),
            "failed": sum(s.failed for s in stats),
            "finished": sum(FinishedJobRegistry(q, connection=self.redis).count for q in QUEUES),
            "started": sum(c.value for c in read_counts(self.redis)["started"]),
        }

    def verdicts(self) -> tuple[float | None, list[tuple[str, Any]]]:
        snapshot = self.cache.stored()
        reading = snapshot.get("db1")
        value = reading.values.get("connections") if reading is not None and reading.error is None else None
        now = time.time()
        return value, [(r, judge([r], snapshot, self.config, now)) for r in RESOURCES]

    def show(self) -> None:
        stats = queue_stats(self.redis, QUEUES)
        cells = []
        for s in stats:
            done = FinishedJobRegistry(s.name, connection=self.redis).count
            cells.append(f"{s.name} {s.ready:3d}/{s.deferred:3d}/{s.running}/{done:3d}")
        value, verdicts = self.verdicts()
        conn = "conn    ?" if value is None else f"conn {value:.3f}"
        if self.strain.held:
            conn += f" ({len(self.strain.held)} held)"
        labels = {v.label for _, v in verdicts}
        reasons = sorted({r for _, v in verdicts for r in v.reasons})
        same = len(labels) == 1
        verdict = f"shards 1+2 {labels.pop()}" if same else ", ".join(f"{r} {v.label}" for r, v in verdicts)
        say(f"{'  '.join(cells)} | {conn} | {verdict}" + (f": {'; '.join(reasons)}" if reasons else ""))
        self.shown_at = time.monotonic()

    def watch(
        self, seconds: float, until: Callable[[], bool] | None = None, must: Callable[[], bool] | None = None
    ) -> bool:
        """Show progress about once a second for `seconds`, or until `until` holds (then True).
        `until` and `must` are polled ten times a second, so the moment `until` turns true is
        timed closely; False, at once, if `must` stops holding."""
        deadline = time.monotonic() + min(seconds, max(DEADLINE - elapsed(), 1.0))
        while True:
            self.keep_going()
            self.strain.aim()
            if time.monotonic() - self.shown_at > 0.5:
                self.show()
            next_show = time.monotonic() + 1.0
            while time.monotonic() < min(next_show, deadline):
                if must is not None and not must():
                    self.show()
                    return False
                if until is not None and until():
                    self.show()
                    return True
                time.sleep(0.1)
            if time.monotonic() >= deadline:
                if until is None:
                    self.show()
                    return True
                return until()

    def keep_going(self) -> None:
        """Hold the demo's lock a little longer, and stop at once if a worker died."""
        holder = self.redis.set(LOCK_KEY, self.lock_token, px=30_000, get=True)
        if holder is not None and holder.decode() != self.lock_token:
            raise CannotGoOn(f"another demo ({holder.decode()}) took over Redis db 13")
        for i, proc in enumerate(self.fleet.procs):
            if proc.poll() is not None:
                raise CannotGoOn(f"worker {i} exited with code {proc.returncode} (see worker-{i}.log below)")
        if self.seeded and time.monotonic() - self.intact_at > 5:
            for shard in SHARDS:
                if events_total(shard) != USERS * PER_USER:
                    raise CannotGoOn(
                        f"easeoff_shard{shard} was reset or changed by something else (the tests or a benchmark "
                        "share it): run the demo again when they are done"
                    )
            self.intact_at = time.monotonic()

    def check(self, ok: bool, problem: str, loud: bool = True) -> bool:
        if not ok:
            self.problems.append(problem)
            if loud:
                say(f"!! {problem}")
        return ok

    def all_strained(self, low_band: bool = False) -> bool:
        value, verdicts = self.verdicts()
        if low_band and (value is None or not self.low <= value <= self.high):
            return False
        return all(not v.admit for _, v in verdicts)

    def a_deferred_job(self) -> str:
        for queue in QUEUES:
            for job_id in ScheduledJobRegistry(queue, connection=self.redis).get_job_ids(0, 0, cleanup=False):
                job = Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
                info = job.meta.get("easeoff", {})
                return (
                    f"{job.description}: deferred {info.get('deferrals')}x, "
                    f"last because {'; '.join(info.get('last_reasons', []))}"
                )
        return "(none deferred)"

    def log_lines(self, word: str, most: int = 1) -> list[str]:
        """The first lines of the workers' logs that mention `word`, without the timestamp."""
        found = []
        for log in sorted(self.workdir.glob("worker-*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if word in line and len(found) < most:
                    found.append(line.split(" INFO ", 1)[-1].strip())
        return found or [f"(no worker log line with {word!r} yet)"]

    # -- the story --------------------------------------------------------------------

    def run(self) -> None:
        say(
            f"MariaDB has {self.baseline} connections of max_connections {self.max_connections}; "
            f"`connections` strained above high {self.high} (+{ABOVE_HIGH}), healthy again below low {self.low} "
            f"(+{ABOVE_LOW})"
        )
        say(f"config: {self.config_path} (Redis db 13, host db1 = 127.0.0.1:3306, shard:1 and shard:2 on db1)")
        others = sessions_on_shards()
        if others:
            say(f"note: {others} other sessions use easeoff_shard1/2 (tests? benchmarks?) and may disturb the demo")
        for shard in SHARDS:
            create_schema(shard, reset=True)
            seed_events(shard, users=USERS, per_user=PER_USER)
        self.seeded = True
        say(f"seeded easeoff_shard1 and easeoff_shard2: {USERS * PER_USER} events each, {OLD_ROWS} of them old")

        for shard in SHARDS:
            job = archive_old_rows.enqueue(shard=shard, batch_size=100, connection=self.redis)
            self.track(job, "archive_old_rows", shard)
        self.enqueue_runs(10, "initial")
        say("enqueued archive_old_rows on both shards and 10 record_run jobs (0.2 s of work each)")
        self.fleet.start_gated(self.config_path, QUEUES, WORKERS)
        workers_at = time.monotonic()
        self.start_feeder()
        say(f"started {WORKERS} gated workers (workers.cli worker {' '.join(QUEUES)}), logs in {self.workdir}")
        say(f"and an app enqueueing {FEED_PER_SECOND:g} record_run jobs a second")
        say("per queue: ready/deferred/running/finished | db1 Threads_connected/max_connections | verdict")

        say()
        say("== NORMAL: the database is healthy, work flows ==")
        archives = [j for j, e in self.jobs.items() if e.task == "archive_old_rows"]
        archived = self.watch(30, until=lambda: set(archives) <= self.finished_ids())
        self.check(archived, "the archive jobs did not finish within 30 s of a healthy start")
        # Recounts read events and events_archive: started after archiving so the two never
        # contend for the same rows (they can deadlock each other; see the report).
        say(f"archiving done; enqueued {self.enqueue_recounts()} recount_users batches (10 users each)")
        self.watch(max(0.0, 20 - (time.monotonic() - workers_at)))
        before = self.totals()
        self.check(before["finished"] >= 20, f"only {before['finished']} jobs finished while healthy")

        say()
        say(f"== STRAIN: holding idle connections to MariaDB open, {STRAIN} over the baseline ==")
        opening = time.monotonic()
        held = self.strain.hold(STRAIN)
        strained_at = time.monotonic()
        self.check(not self.strain.short, f"could hold only {held} connections; MariaDB is too busy for the demo")
        say(f"holding {held} connections (opened in {strained_at - opening:.1f}s): baseline {self.baseline} + {STRAIN}")
        eased = self.watch(
            12, until=lambda: self.all_strained() and self.totals()["running"] == 0 and self.totals()["deferred"] > 0
        )
        if self.check(eased, "the workers did not ease off within 12 s of the strain"):
            say(f"eased off {time.monotonic() - strained_at:.1f}s after: nothing running, new jobs are deferred")
        say("a deferred job: " + self.a_deferred_job())
        say("a worker's log: " + self.log_lines("deferred")[0])
        started = self.totals()["started"]
        self.enqueue_runs(10, "while-strained")
        n = self.enqueue_recounts()
        say(f"more work arrives while strained: {n} recount_users batches and 10 more record_run jobs")
        held_back = self.watch(12, must=self.all_strained)
        self.check(held_back, "the verdict flipped to admit while the strain was held")
        now = self.totals()
        if self.check(now["started"] == started, f"{now['started'] - started} jobs started while strained"):
            say(f"while strained: no job started, {now['deferred']} deferred and parked until the shards clear")

        say()
        say(f"== PARTLY EASED: down to {PARTLY} over the baseline, between low and high: hysteresis holds ==")
        say(f"holding {self.strain.hold(PARTLY)} connections: baseline {self.baseline} + {PARTLY}")
        in_band = self.watch(6, until=lambda: self.all_strained(low_band=True), must=self.all_strained)
        self.check(in_band, "the reading never settled between low and high")
        held_back = self.watch(7, must=self.all_strained)
        self.check(held_back, "the verdict flipped to admit above `low`: no hysteresis")
        now = self.totals()
        if self.check(now["started"] == started, f"{now['started'] - started} jobs started above `low`"):
            say(f"below high but not below low: still no job started, {now['deferred']} deferred")

        say()
        say("== CLEARED: every extra connection closed ==")
        cleared_at = time.monotonic()
        self.strain.hold(0)
        resumed = self.watch(8, until=lambda: self.totals()["started"] > started)
        if self.check(resumed, "no work resumed within 8 s of the strain clearing"):
            say(f"work resumed {time.monotonic() - cleared_at:.1f}s after the strain cleared")
            for line in self.log_lines("released", most=2):
                say("a worker's log: " + line)
        self.watch(5)
        self.stop_feeder()
        say(f"the app stops enqueueing; {len(self.jobs)} jobs enqueued in all")
        drained = self.watch(60, until=lambda: sum(self.totals()[k] for k in ("ready", "deferred", "running")) == 0)
        self.check(drained, "the queues did not drain before the deadline")
        if drained:
            say(f"all work done {time.monotonic() - cleared_at:.1f}s after the strain cleared")

    # -- the proof ------------------------------------------------------------------------

    def summary(self) -> None:
        finished, failed = self.finished_ids(), self.failed_ids()
        jobs = dict(self.jobs)
        ours_finished = finished & jobs.keys()
        ours_failed = failed & jobs.keys()
        waiting = jobs.keys() - finished - failed
        fetched = Job.fetch_many(list(jobs), connection=self.redis, serializer=JSONSerializer)
        deferred_jobs = sum(1 for j in fetched if j is not None and j.meta.get("easeoff", {}).get("deferrals", 0))
        deferrals: Counter[tuple[str, str]] = Counter()
        for c in read_counts(self.redis)["deferred"]:  # hash easeoff:counters:deferred, `queue|task|kind`
            deferrals[(c.queue, c.reason)] += c.value
        by_task = Counter(e.task for e in jobs.values())

        print()
        print("== SUMMARY ==")
        ready = self.ready_ids() & waiting
        deferred = self.ids_in(ScheduledJobRegistry) & waiting
        started = self.ids_in(StartedJobRegistry) & waiting
        lost = waiting - ready - deferred - started
        print(
            f"jobs enqueued {len(jobs)} ({', '.join(f'{t} {n}' for t, n in sorted(by_task.items()))}): "
            f"finished {len(ours_finished)}, failed {len(ours_failed)}, still waiting {len(waiting)} "
            f"(ready {len(ready)}, deferred {len(deferred)}, started {len(started)}), nowhere at all {len(lost)}"
        )
        self.check(not lost, f"{len(lost)} jobs are in no queue or registry: lost", loud=False)
        print(
            f"deferred at least once: {deferred_jobs} jobs; deferrals by reason (queue|kind): "
            + (", ".join(f"{q}|{k} {n}" for (q, k), n in sorted(deferrals.items())) or "none")
        )
        if deferred_jobs:
            per_job = sum(deferrals.values()) / deferred_jobs
            print(f"deferrals per deferred job: {per_job:.2f} (parked until their shard cleared: no spinning)")
        self.check(not ours_failed, f"{len(ours_failed)} jobs failed", loud=False)
        self.check(not waiting, f"{len(waiting)} jobs had not finished when the demo stopped", loud=False)
        foreign = (finished | failed) - jobs.keys()
        if foreign:
            print(f"note: {len(foreign)} jobs in Redis db 13 are not from this demo: another demo at the same time?")

        intact = all(events_total(shard) == USERS * PER_USER for shard in SHARDS)
        if not intact:
            print("the shard databases were reset or changed by something else: their rows prove nothing this time")
            self.check(False, "easeoff_shard1/2 were changed by something else during the demo", loud=False)
        else:
            self.check_databases(jobs, ours_finished)
        if self.problems:
            print(f"PROBLEMS ({len(self.problems)}):")
            for problem in self.problems:
                print(f"  - {problem}")
        else:
            print(f"nothing lost: all {len(jobs)} jobs are in the finished registry and in the ledger exactly once")
        print(f"demo took {elapsed():.0f}s")

    def check_databases(self, jobs: dict[str, Enqueued], finished: set[str]) -> None:
        """What the jobs did, read back from MariaDB: archived rows, recounts, and the job_runs ledger."""
        for shard in SHARDS:
            moved, old_left, counted, total = shard_state(shard)
            print(
                f"shard {shard}: {moved} of {OLD_ROWS} old events archived ({old_left} old left), "
                f"{counted} of {USERS} users recounted ({total} events counted, {USERS * PER_USER} expected)"
            )
            archived = moved == OLD_ROWS and old_left == 0
            recounted = counted == USERS and total == USERS * PER_USER
            self.check(archived, f"shard {shard}: {moved} rows archived, {old_left} old rows left", loud=False)
            self.check(recounted, f"shard {shard}: {counted} users recounted, {total} events counted", loud=False)
        ledger = ledger_rows()
        for shard in SHARDS:
            mine = {j for j, e in jobs.items() if e.shard == shard}
            print(
                f"ledger (job_runs) on shard {shard}: {sum(ledger[shard].values())} rows, "
                f"{len(mine & finished)} finished jobs on the shard"
            )
        # Each job's row must be on its own shard, exactly once.
        per_job = Counter({j: ledger[e.shard].get(j, 0) for j, e in jobs.items()})
        missing = [j for j in finished if per_job[j] == 0]
        twice = [j for j, n in per_job.items() if n > 1]
        strangers = sum(n for shard in SHARDS for j, n in ledger[shard].items() if j not in jobs)
        misplaced = sum(1 for shard in SHARDS for j in ledger[shard] if j in jobs and jobs[j].shard != shard)
        print(
            f"ledger check: {len(missing)} finished jobs without a row, {len(twice)} with more than one, "
            f"{misplaced} on the wrong shard, {strangers} rows from unknown jobs"
        )
        self.check(not missing, f"{len(missing)} finished jobs left no ledger row", loud=False)
        self.check(not twice and not misplaced, f"{len(twice)} jobs ran twice, {misplaced} rows misplaced", loud=False)
        if strangers:
            print(
                f"note: {strangers} ledger rows are not from this demo: something else (tests, benchmarks) "
                "used easeoff_shard1/2 at the same time, and may have disturbed the demo"
            )

    def cleanup(self) -> None:
        self.stop_feeder()
        self.strain.hold(0)
        try:
            self.fleet.stop(graceful=True, timeout=20)
        except (KeyboardInterrupt, Interrupted):
            self.fleet.stop(graceful=False)


def ledger_rows() -> dict[int, Counter[str]]:
    """Per shard, job_runs rows per job id."""
    rows: dict[int, Counter[str]] = {}
    for shard in SHARDS:
        conn = pymysql.connect(**MYSQL, database=f"easeoff_shard{shard}")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT job_id, COUNT(*) FROM job_runs GROUP BY job_id")
                rows[shard] = Counter({job_id: int(n) for job_id, n in cur.fetchall()})
        finally:
            conn.close()
    return rows


def events_total(shard: int) -> int:
    """Live plus archived events, in one consistent read: constant while the demo owns the shard."""
    try:
        conn = pymysql.connect(**MYSQL, database=f"easeoff_shard{shard}", connect_timeout=5)
    except pymysql.MySQLError:
        return -1
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT (SELECT COUNT(*) FROM events) + (SELECT COUNT(*) FROM events_archive)")
            return int(cur.fetchone()[0])
    except pymysql.MySQLError:
        return -1
    finally:
        conn.close()


def sessions_on_shards() -> int:
    """Other sessions with easeoff_shard1 or 2 as their database right now."""
    names = tuple(f"easeoff_shard{s}" for s in SHARDS)
    sql = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB IN (%s, %s) AND ID <> CONNECTION_ID()"
    conn = pymysql.connect(**MYSQL)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, names)
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def shard_state(shard: int) -> tuple[int, int, int, int]:
    """Archived rows, old rows left, users recounted, and the events they counted."""
    conn = pymysql.connect(**MYSQL, database=f"easeoff_shard{shard}")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM events_archive")
            moved = int(cur.fetchone()[0])
            cur.execute("SELECT COUNT(*) FROM events WHERE created_at < NOW() - INTERVAL 30 DAY")
            old_left = int(cur.fetchone()[0])
            cur.execute("SELECT COUNT(*), COALESCE(SUM(events), 0) FROM user_counts")
            counted, total = (int(v) for v in cur.fetchone())
        return moved, old_left, counted, total
    finally:
        conn.close()


def on_sigterm(signum: int, frame: object) -> None:
    raise Interrupted()


def main() -> int:
    signal.signal(signal.SIGTERM, on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="easeoff-demo-"))
    demo: Demo | None = None
    interrupted = locked_out = False
    try:
        demo = Demo(workdir)
        if not demo.redis.set(LOCK_KEY, demo.lock_token, nx=True, px=30_000):
            holder = (demo.redis.get(LOCK_KEY) or b"?").decode()
            print(f"demo: another demo is using Redis db 13 ({holder}); run this one when it is done", file=sys.stderr)
            locked_out = True
            shutil.rmtree(workdir, ignore_errors=True)
            return 1
        demo.redis.flushdb()
        demo.keep_going()  # the flush took the lock with it
        try:
            demo.run()
        except (KeyboardInterrupt, Interrupted):
            interrupted = True
            print("\ninterrupted: stopping workers and closing connections", flush=True)
        except Exception as exc:  # a worker died, a server went away...: clean up, say what was seen
            what = str(exc) if isinstance(exc, CannotGoOn) else f"{exc.__class__.__name__}: {exc}"
            demo.problems.append(f"the demo stopped: {what}")
            say(f"!! {demo.problems[-1]}")
        finally:
            demo.cleanup()
        if not interrupted:
            demo.summary()
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
    except Exception as exc:  # setting up failed (a server down?): one line, then clean up
        print(f"demo: could not set up: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        if demo is not None:
            demo.problems.append(str(exc))
    finally:
        if demo is not None:
            demo.cleanup()
            if not locked_out and (demo.redis.get(LOCK_KEY) or b"").decode() == demo.lock_token:
                demo.redis.delete(LOCK_KEY)
    failed = interrupted or locked_out or demo is None or bool(demo.problems)
    if failed and demo is not None and not interrupted and not locked_out:
        print(f"worker logs kept in {workdir}:")
        for log in sorted(workdir.glob("worker-*.log")):
            print(f"--- {log.name} (last lines)")
            print("\n".join(log.read_text(errors="replace").splitlines()[-15:]))
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if demo is not None and not failed:
        demo.redis.flushdb()
    return 130 if interrupted else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
