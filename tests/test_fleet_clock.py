"""One clock for the fleet: a worker 5 s ahead and one 5 s behind (Debian's faketime) agree on
how old a reading is and when a deferred job is due, because both read Redis's clock."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from redis import Redis
from rq.job import Job
from rq.registry import FinishedJobRegistry, ScheduledJobRegistry
from rq.serializers import JSONSerializer

from easeoff.feedback.levers.switches import SWITCHES_KEY
from easeoff.feedback.signals.cache import PROBE_LOCK_KEY, READING_KEY
from easeoff.tasks.catalog import record_run
from tests.conftest import WorkerProcesses, run_cli, ticks, wait_until

INTERVAL, STALE_AFTER, SKEW = 0.5, 2.0, 5
# A machine whose wall clock is off still has a true monotonic clock, hence
# FAKETIME_DONT_FAKE_MONOTONIC. With it, Debian's libfaketime 0.9.10 fails Python's time.sleep
# (clock_nanosleep on the monotonic clock: EINVAL), so the worker's sleeps go through a timed
# wait, which it leaves alone. Only the tool's bug is worked around: the worker is easeoff's own.
LAUNCH = (
    "import runpy, sys, threading, time\n"
    "_never = threading.Event()\n"
    "time.sleep = lambda seconds: _never.wait(max(seconds, 0.0))\n"
    "sys.argv[0] = 'easeoff'\n"
    "runpy.run_module('easeoff.workers.cli', run_name='__main__')\n"
)


LIBFAKETIME = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))


def skewed(offset: str) -> list[str]:
    """The worker itself under libfaketime (the `faketime` command would stand between it and
    the test's signals, as a parent of its own)."""
    assert LIBFAKETIME, "Debian's faketime is missing (scripts/test.sh installs it)"
    env = [f"LD_PRELOAD={LIBFAKETIME[0]}", f"FAKETIME={offset}", "FAKETIME_DONT_FAKE_MONOTONIC=1"]
    return ["env", *env, sys.executable, "-c", LAUNCH]


def redis_now(redis: Redis) -> float:
    seconds, micros = redis.time()
    return seconds + micros / 1e6


def settled_reading(redis: Redis, key: str, quiet_for: float, timeout: float) -> dict:
    """The reading once nobody has rewritten it for `quiet_for` seconds (its old prober's last
    probe, in flight when the lease was taken, has landed)."""
    last, since = None, time.monotonic()
    for now in ticks(timeout, 0.05):
        raw = redis.get(key)
        if raw != last:
            last, since = raw, now
        elif now - since >= quiet_for:
            return json.loads(raw)
    raise AssertionError(f"{key} was still being rewritten after {timeout}s")


def test_workers_whose_clocks_disagree_share_the_fleets_clock(
    redis_conn: Redis, write_config, workers: WorkerProcesses, shards
) -> None:
    config = write_config(interval=INTERVAL, stale_after=STALE_AFTER)
    # The queue names its resource, so a worker that finds shard 1 strained holds the queue
    # (and says so once) rather than racing the other for jobs to defer.
    text = config.read_text(encoding="utf-8").replace("[queues.heavy]", '[queues.heavy]\nresources = ["shard:1"]')
    config.write_text(text, encoding="utf-8")
    ahead = workers.start(config, "heavy", launcher=skewed(f"+{SKEW}s"))
    behind = workers.start(config, "heavy", launcher=skewed(f"-{SKEW}s"))

    # Fresh readings are fresh to both: each runs jobs (5 s of skew is past stale_after).
    jobs = [record_run.enqueue(shard=1, tag="clock", seconds=0.2, connection=redis_conn) for _ in range(16)]
    finished = FinishedJobRegistry("heavy", connection=redis_conn)
    wait_until(lambda: finished.count == len(jobs), 60, what=f"the jobs to finish; logs: {workers.logs()}")
    ran_by = {Job.fetch(j.id, connection=redis_conn, serializer=JSONSerializer).worker_name for j in jobs}
    assert len(ran_by) == 2, f"{ran_by} ran the jobs (one worker held them?); logs: {workers.logs()}"

    # Deferred jobs are promoted within an interval of their due time, whoever deferred them.
    assert run_cli("--config", str(config), "throttle", "record_run", "1", "--reason", "clock test").returncode == 0
    more = {record_run.enqueue(shard=1, tag="clock", connection=redis_conn).id for _ in range(6)}
    scheduled = ScheduledJobRegistry("heavy", connection=redis_conn)
    due: dict[str, float] = {}
    lateness: list[float] = []
    for _ in ticks(8.0, 0.02):
        with redis_conn.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.zrange(scheduled.key, 0, -1, withscores=True)
            (seconds, micros), rows = pipe.execute()
        now = seconds + micros / 1e6
        waiting = {member.decode().split(":")[0]: score for member, score in rows}
        for job_id, score in list(due.items()):
            if waiting.get(job_id) != score:  # promoted (and maybe deferred again)
                lateness.append(now - score)
                del due[job_id]
        due.update({j: s for j, s in waiting.items() if j in more and j not in due})
    assert len(lateness) >= 6, lateness
    assert min(lateness) > -0.1 and max(lateness) < INTERVAL + 0.5, sorted(lateness)
    assert run_cli("--config", str(config), "unthrottle", "record_run").returncode == 0
    # The throttled jobs run once unthrottled: let them all end before counting what runs next.
    wait_until(lambda: more <= set(finished.get_job_ids()), 30, what="the throttled jobs to finish")

    # A stale reading is stale to both: take the probe lease from whoever holds it, leave db1 a
    # reading 3 s old by the fleet's clock, and both hold the queue for it, running nothing.
    redis_conn.set(PROBE_LOCK_KEY.format(host="db1"), "the-test", px=60_000)
    reading = settled_reading(redis_conn, READING_KEY.format(host="db1"), quiet_for=1.5 * INTERVAL, timeout=10)
    reading["taken_at"] = redis_now(redis_conn) - 3.0
    redis_conn.set(READING_KEY.format(host="db1"), json.dumps(reading))
    done_before = finished.count
    for _ in range(4):
        record_run.enqueue(shard=1, tag="clock", connection=redis_conn)
    for proc in (ahead, behind):
        log = workers.log_dir / f"worker-{workers.procs.index(proc)}.log"
        wait_until(
            lambda log=log: "holding queue heavy (not dequeuing): stale_reading:db1" in log.read_text(errors="replace"),
            10,
            what=f"{log.name} to hold heavy for the stale reading; logs: {workers.logs()}",
        )
    assert finished.count == done_before  # nobody ran a job on the stale reading


def test_an_operators_clock_an_hour_off_stamps_switches_on_the_fleets_clock(redis_conn: Redis, write_config) -> None:
    """A pause for 60 s lasts 60 s by the workers' (Redis's) clock, whatever the operator's machine says."""
    config = write_config()
    env = {"LD_PRELOAD": str(LIBFAKETIME[0]), "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    for skew in ("+1h", "-1h"):
        redis_conn.delete(SWITCHES_KEY)
        args = ("--config", str(config), "pause", "task:record_run", "--ttl", "60s", "--reason", f"clock {skew}")
        result = run_cli(*args, env={**env, "FAKETIME": skew})
        assert result.returncode == 0, result.stderr
        now = redis_now(redis_conn)
        stored = json.loads(redis_conn.get(SWITCHES_KEY) or "{}")["pause task:record_run"]
        assert abs(stored["at"] - now) < 5, f"{skew}: stamped at {stored['at'] - now:+.0f}s from Redis's clock"
        assert abs(stored["expires_at"] - (now + 60)) < 5, (
            f"{skew}: expires {stored['expires_at'] - now:+.0f}s from now"
        )
