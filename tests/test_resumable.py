"""Resumable chunked jobs: interrupted by strain or shutdown, they resume from their cursor and
every row is archived exactly once (checked in MariaDB)."""

from __future__ import annotations

import itertools
import signal

import pymysql
from redis import Redis
from rq.job import Job
from rq.registry import FinishedJobRegistry, ScheduledJobRegistry
from rq.serializers import JSONSerializer

from easeoff.tasks.catalog import archive_in_chunks
from easeoff.tasks.demo_schema import seed_events
from tests.conftest import MYSQL, ConnectionHolder, WorkerProcesses, wait_until
from tests.test_worker_gate import strain_thresholds


def query(sql: str) -> list[tuple]:
    conn = pymysql.connect(**MYSQL, database="easeoff_shard1")
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def chunk_ranges() -> list[tuple[int, int]]:
    tags = [row[0] for row in query("SELECT tag FROM job_runs WHERE task = 'archive_in_chunks' ORDER BY id")]
    return [tuple(int(x) for x in tag.removeprefix("chunk:").split("-")) for tag in tags]


def assert_each_old_row_archived_once(old_rows: int) -> None:
    assert query("SELECT COUNT(*) FROM events_archive")[0][0] == old_rows
    assert query("SELECT COUNT(*) FROM events WHERE created_at < NOW() - INTERVAL 30 DAY")[0][0] == 0
    ranges = chunk_ranges()
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges)), ranges  # disjoint, in order
    archived_ids = [row[0] for row in query("SELECT id FROM events_archive ORDER BY id")]
    assert len(archived_ids) == len(set(archived_ids))


def meta(redis: Redis, job_id: str) -> dict:
    return Job.fetch(job_id, connection=redis, serializer=JSONSerializer).meta["easeoff"]


def test_strain_interrupts_at_a_checkpoint_and_the_job_resumes_from_its_cursor(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses, connections: ConnectionHolder
) -> None:
    old_rows = seed_events(1, users=20, per_user=50) // 2
    high, low, _ = strain_thresholds()
    config = write_config(high=high, low=low, interval=0.3, backoff_base=0.3, backoff_cap=0.6)
    job = archive_in_chunks.enqueue(shard=1, batch_size=25, pause=0.15, connection=redis_conn)
    workers.start(config, "archive")
    wait_until(lambda: len(chunk_ranges()) >= 3, 20, what="a few chunks done")

    connections.hold(40)
    wait_until(
        lambda: job.id in ScheduledJobRegistry("archive", connection=redis_conn).get_job_ids(),
        15,
        what="the job to checkpoint and defer",
    )
    info = meta(redis_conn, job.id)
    assert info["cursor"] == chunk_ranges()[-1][1]
    assert info["last_reasons"][0].startswith("checkpoint: connections:db1 ")
    done_at_interrupt = len(chunk_ranges())
    assert 0 < done_at_interrupt < old_rows // 25

    connections.hold(0)
    wait_until(lambda: FinishedJobRegistry("archive", connection=redis_conn).count == 1, 60, what="the job to finish")
    assert len(chunk_ranges()) == old_rows // 25
    assert meta(redis_conn, job.id)["deferrals"] >= 1
    assert_each_old_row_archived_once(old_rows)
    assert "terminated unexpectedly" not in workers.logs()  # the horse ended cleanly after deferring


def test_worker_shutdown_checkpoints_and_another_worker_resumes(
    redis_conn: Redis, shards, write_config, workers: WorkerProcesses
) -> None:
    old_rows = seed_events(1, users=20, per_user=40) // 2
    config = write_config(interval=0.3)
    job = archive_in_chunks.enqueue(shard=1, batch_size=20, pause=0.15, connection=redis_conn)
    first = workers.start(config, "archive")
    wait_until(lambda: len(chunk_ranges()) >= 2, 20, what="a couple of chunks done")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=15) == 0, workers.logs()
    info = meta(redis_conn, job.id)
    assert info["last_reasons"] == ["checkpoint: worker shutting down"]
    assert 0 < len(chunk_ranges()) < old_rows // 20

    workers.start(config, "archive")
    wait_until(lambda: FinishedJobRegistry("archive", connection=redis_conn).count == 1, 60, what="resumed to the end")
    assert_each_old_row_archived_once(old_rows)
