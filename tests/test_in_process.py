"""`easeoff worker --in-process`: jobs run in the worker's own process over one kept MySQL
connection per shard; job timeouts, heartbeats and abandoned-job recovery still hold, and the
kept connections end when the worker stops or dies."""

from __future__ import annotations

import re
from pathlib import Path

import pymysql
import pytest
from redis import Redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from easeoff.tasks.catalog import overrun, record_pooled
from tests.conftest import MYSQL, WorkerProcesses, stays_true, ticks, wait_until


def pooled_runs(tag: str) -> list[tuple[int, int]]:
    """(pid, MySQL connection id) of each run of `record_pooled` with this tag, in order."""
    conn = pymysql.connect(**MYSQL, database="easeoff_shard1")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT tag FROM job_runs WHERE task = 'record_pooled' AND tag LIKE %s ORDER BY id", (f"{tag}|%",)
            )
            found = [re.fullmatch(r".*\|pid=(\d+)\|conn=(\d+)", row[0]) for row in cur.fetchall()]
            return [(int(m.group(1)), int(m.group(2))) for m in found if m]
    finally:
        conn.close()


def connection_alive(connection_id: int) -> bool:
    conn = pymysql.connect(**MYSQL)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", (connection_id,))
            return bool(cur.fetchone()[0])
    finally:
        conn.close()


def status(redis: Redis, job_id: str) -> JobStatus:
    return Job.fetch(job_id, connection=redis, serializer=JSONSerializer).get_status()


def test_jobs_share_the_workers_process_and_connection_which_close_when_it_stops(
    tmp_path: Path, write_config, redis_conn: Redis, shards
) -> None:
    config = write_config()
    workers = WorkerProcesses(tmp_path)
    worker = workers.start(config, "heavy", in_process=True)
    ids = [record_pooled.enqueue(shard=1, tag="pooled", connection=redis_conn).id for _ in range(6)]
    try:
        wait_until(lambda: len(pooled_runs("pooled")) == len(ids), 60, what="the jobs to run")
        runs = pooled_runs("pooled")
        assert {pid for pid, _ in runs} == {worker.pid}, runs  # no work horse: the worker's own process
        assert len({conn for _, conn in runs}) == 1, runs  # one connection, kept across the jobs
        kept = runs[0][1]
        assert connection_alive(kept)
    finally:
        workers.stop_all()
    assert not connection_alive(kept), "the worker stopped and left its kept connection open"


def test_a_job_past_its_timeout_is_stopped_and_fails(tmp_path: Path, write_config, redis_conn: Redis, shards) -> None:
    workers = WorkerProcesses(tmp_path)
    workers.start(write_config(), "heavy", in_process=True)
    try:
        job_id = overrun.enqueue(shard=1, seconds=60, connection=redis_conn).id
        wait_until(lambda: status(redis_conn, job_id) == JobStatus.FAILED, 30, what="the overrun job to be stopped")
        job = Job.fetch(job_id, connection=redis_conn, serializer=JSONSerializer)
        assert "JobTimeoutException" in (job.latest_result().exc_string or "")
    finally:
        workers.stop_all()


def test_each_of_successive_jobs_heartbeats_while_it_runs(
    tmp_path: Path, write_config, redis_conn: Redis, shards
) -> None:
    """One heartbeat thread serves job after job (a job's lease and heartbeat are renewed every
    second here, job_monitoring_interval), and stops beating for a job once it has ended."""
    workers = WorkerProcesses(tmp_path)
    workers.start(write_config(), "heavy", in_process=True)
    ids = [record_pooled.enqueue(shard=1, tag="beats", seconds=3.5, connection=redis_conn).id for _ in range(2)]
    try:
        for job_id in ids:
            key = f"rq:job:{job_id}"
            wait_until(lambda key=key: redis_conn.hget(key, "status") == b"started", 30, what=f"{key} to start")
            beats = set()
            for _ in ticks(15, every=0.05):
                if redis_conn.hget(key, "status") != b"started":
                    break
                beats.add(redis_conn.hget(key, "last_heartbeat"))
            assert status(redis_conn, job_id) == JobStatus.FINISHED
            # rq stamps a heartbeat as the job starts; three more, a second apart, came while it ran
            assert len(beats - {None}) >= 3, beats
            ended = redis_conn.hget(key, "last_heartbeat")
            stays_true(
                lambda key=key, ended=ended: redis_conn.hget(key, "last_heartbeat") == ended,
                1.5,
                what="no heartbeat for a job that has ended",
            )
    finally:
        workers.stop_all()


@pytest.mark.slow
def test_a_killed_worker_s_job_is_recovered_and_its_connection_gone(
    tmp_path: Path, write_config, redis_conn: Redis, shards
) -> None:
    config = write_config()
    workers = WorkerProcesses(tmp_path)
    first = workers.start(config, "heavy", in_process=True)
    try:  # from here: a worker left running would take the next tests' jobs
        warm = record_pooled.enqueue(shard=1, tag="warm", connection=redis_conn).id  # opens the kept connection
        # Its ledger row is committed inside the job, a moment before the job's end is recorded.
        wait_until(lambda: status(redis_conn, warm) == JobStatus.FINISHED, 30, what="the first job")
        ((pid, kept),) = pooled_runs("warm")
        assert pid == first.pid
        slow = record_pooled.enqueue(shard=1, tag="killed", seconds=30, connection=redis_conn).id
        wait_until(lambda: status(redis_conn, slow) == JobStatus.STARTED, 30, what="the slow job to start")
        workers.kill9(first)
        # The kernel closes a dead process's sockets: MariaDB lets the connection go at once.
        wait_until(lambda: not connection_alive(kept), 10, what="the killed worker's connection to go")
        workers.start(config, "heavy", in_process=True)  # its heartbeat lapsed: the job is idempotent, so it runs again
        wait_until(lambda: status(redis_conn, slow) == JobStatus.FINISHED, 90, what="the abandoned job to run again")
    finally:
        workers.stop_all()


def test_a_kept_connection_that_went_away_is_replaced_and_a_failed_job_s_work_rolled_back(shards) -> None:
    from easeoff.tasks import pool
    from easeoff.tasks.shards import connect

    def connection_id(conn) -> int:  # type: ignore[no-untyped-def]
        with conn.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            return int(cur.fetchone()[0])

    try:
        with pool.borrow("shard:1", lambda: connect(1)) as conn:
            first = connection_id(conn)
        with pool.borrow("shard:1", lambda: connect(1)) as conn:
            assert connection_id(conn) == first  # kept
        try:
            with pool.borrow("shard:1", lambda: connect(1)) as conn, conn.cursor() as cur:
                cur.execute("INSERT INTO job_runs (job_id, task, tag, ran_at) VALUES ('x', 'pool', 'undone', NOW(6))")
                raise RuntimeError("the job failed mid-transaction")
        except RuntimeError:
            pass
        killer = pymysql.connect(**MYSQL)
        with killer.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM easeoff_shard1.job_runs WHERE tag = 'undone'")
            assert cur.fetchone()[0] == 0  # rolled back, not left open for the next job to commit
            cur.execute(f"KILL {first}")  # wait_timeout, a restart: the kept connection is gone
        killer.close()
        with pool.borrow("shard:1", lambda: connect(1)) as conn:
            assert connection_id(conn) != first  # replaced, not handed out dead
        assert pool.kept() == 1
    finally:
        assert pool.close_all() == 1
