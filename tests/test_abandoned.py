"""A worker killed mid-job (work horse and all): the job is recovered within seconds, requeued
when its task is idempotent, failed with the reason when it is not, never left in `started`."""

from __future__ import annotations

import time

import pymysql
from redis import Redis
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from easeoff.feedback.tally.counters import read_counts
from easeoff.tasks.catalog import record_once, record_run
from easeoff.workers.ending_moves import ABANDONED_REASON
from tests.conftest import MYSQL, WorkerProcesses, children, wait_until
from tests.placement import misplaced

RECOVERY_BOUND = 30.0  # seconds: heartbeat grace (10 s) + a probe interval, with room for a busy machine


def ledger_runs(shard: int, job_id: str) -> int:
    conn = pymysql.connect(**MYSQL, database=f"easeoff_shard{shard}")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT runs FROM job_ledger WHERE job_id = %s", (job_id,))
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()


def kill_whole(workers: WorkerProcesses, redis: Redis, job: Job) -> None:
    """Wait until the job runs, then SIGKILL its work horse and its worker: a machine lost mid-job."""
    wait_until(lambda: job.id in StartedJobRegistry("heavy", connection=redis).get_job_ids(), 20, what="job starts")
    victim = workers.procs[0]
    wait_until(lambda: children(victim.pid), 10, what="the work horse")
    workers.kill_machine(victim)


def test_an_idempotent_job_is_requeued_within_seconds_and_runs_once_more(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    config = write_config(interval=0.5)
    job = record_once.enqueue(shard=1, tag="abandoned", seconds=3, connection=redis_conn)
    workers.start(config, "heavy")
    kill_whole(workers, redis_conn, job)  # mid-sleep: the killed run never wrote its row
    killed_at = time.monotonic()
    workers.start(config, "heavy")
    wait_until(
        lambda: job.id in FinishedJobRegistry("heavy", connection=redis_conn).get_job_ids(),
        RECOVERY_BOUND + 3,
        what="the abandoned idempotent job to be requeued and finished by the live worker",
    )
    assert time.monotonic() - killed_at < RECOVERY_BOUND + 3
    assert ledger_runs(1, job.id) == 1
    assert {(c.task, c.reason): c.value for c in read_counts(redis_conn)["abandoned"]} == {
        ("record_once", "requeued"): 1
    }
    assert misplaced(redis_conn, ["heavy"], [job.id]) == {}


def test_a_plain_job_abandoned_mid_run_fails_with_the_reason(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    config = write_config(interval=0.5)
    job = record_run.enqueue(shard=1, tag="abandoned-plain", seconds=60, connection=redis_conn)
    workers.start(config, "heavy")
    kill_whole(workers, redis_conn, job)
    killed_at = time.monotonic()
    workers.start(config, "heavy")
    wait_until(
        lambda: job.id in FailedJobRegistry("heavy", connection=redis_conn).get_job_ids(),
        RECOVERY_BOUND,
        what="the abandoned job in the failed registry",
    )
    assert time.monotonic() - killed_at < RECOVERY_BOUND
    # The reason in the job's hash, where recover.lua writes it (rq's `exc_info` property, deprecated, reads it too).
    assert redis_conn.hget(Job.key_for(job.id), "exc_info") == ABANDONED_REASON.encode()
    assert job.id not in FinishedJobRegistry("heavy", connection=redis_conn).get_job_ids()
    assert misplaced(redis_conn, ["heavy"], [job.id]) == {}
    assert {(c.task, c.reason): c.value for c in read_counts(redis_conn)["abandoned"]} == {("record_run", "failed"): 1}
