"""A job that hits a real MySQL deadlock is retried later, as rq retries, and then finishes; one
that keeps deadlocking spends its retries and fails with the deadlock as its reason
(workers/transient_errors.py). The deadlocks are real: the test's own session holds row 2, the
job takes row 1 and waits for row 2, and the test then asks for row 1. The test's transaction
is made the heavier one, so InnoDB picks the job's as the victim.

A sandbox server of its own (scripts/sandbox.py), not the shared local MariaDB: the test holds
row locks and counts ledger rows.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.serializers import JSONSerializer

from easeoff.tasks.demo_schema import create_schema
from easeoff.tasks.meta import JobMeta
from easeoff.tasks.shards import connect
from tests import retry_tasks
from tests.conftest import TEST_REDIS_URL, WorkerProcesses, ticks, wait_until
from tests.sandbox_support import sandbox_mod, shard_one_config

pytestmark = pytest.mark.slow

SHARD = 1


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    start = int(os.environ.get(sandbox_mod.PORT_ENV) or 3700)
    box = sandbox_mod.Sandbox(tmp_path_factory.mktemp("retries") / "sb", base_port=sandbox_mod.free_base_port(start))
    try:
        box.up(shards=[SHARD], replicas=0, shape="primary")
        yield box
    finally:
        box.down()


@pytest.fixture
def shard(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> int:
    """Shard 1 on the sandbox, with rows 1 and 2 to deadlock on and an empty ledger."""
    urls = sandbox.topology().shard_urls()
    monkeypatch.setenv("EASEOFF_SHARD_URLS", json.dumps(urls))
    create_schema(SHARD, url=urls[str(SHARD)], reset=True)
    conn = connect(SHARD)
    try:
        with conn.cursor() as cur:
            for ddl in (retry_tasks.ROWS_DDL, retry_tasks.PADDING_DDL, retry_tasks.LEDGER_DDL):
                cur.execute(ddl)
            cur.execute("INSERT INTO deadlock_rows (id, v) VALUES (1, 0), (2, 0)")
        conn.commit()
    finally:
        conn.close()
    return SHARD


def config_for(sandbox: Any, path: Path) -> Path:
    return shard_one_config(sandbox, path, TEST_REDIS_URL, ("tests.retry_tasks",))


class RowHolder:
    """The test's own session: holds row 2, then asks for row 1 once the job waits for row 2."""

    def __init__(self) -> None:
        self.conn = connect(SHARD)
        self.watch = connect(SHARD)
        self.watch.autocommit(True)
        self.deadlocks_at: list[float] = []
        self.victims: set[int] = set()  # the sessions deadlocked so far

    def hold_row_2(self) -> None:
        with self.conn.cursor() as cur:
            # The heavier transaction (more undo entries), so InnoDB rolls the job's back.
            cur.executemany("INSERT INTO deadlock_padding (x) VALUES (%s)", [(i,) for i in range(50)])
            cur.execute("UPDATE deadlock_rows SET v = v + 100 WHERE id = 2")

    def job_waits(self) -> bool:
        """A session not deadlocked before waits for a lock (each run of the job connects anew)."""
        with self.watch.cursor() as cur:
            cur.execute("SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'")
            waiting = {int(row[0]) for row in cur.fetchall()} - self.victims
        if waiting:
            self.victims |= waiting
        return bool(waiting)

    def sessions(self) -> list[tuple[object, ...]]:
        with self.watch.cursor() as cur:
            cur.execute("SELECT id, command, time, state, info FROM information_schema.PROCESSLIST")
            return list(cur.fetchall())

    def deadlock_the_job(self, then_hold_again: bool, timeout: float = 30) -> None:
        """Wait for the job to wait on row 2, close the cycle (the job is the victim: this update
        goes through), then let go, and hold row 2 again for the job's next run if asked. The
        job's retry waits out at least a probe interval, so it cannot start in between."""
        # InnoDB refreshes INNODB_TRX only once it has gone unread for 0.1 s: poll slower than that.
        if not any(self.job_waits() for _ in ticks(timeout, 0.2)):
            pytest.fail(f"the job never waited for row 2; sessions: {self.sessions()}")
        with self.conn.cursor() as cur:
            cur.execute("UPDATE deadlock_rows SET v = v + 100 WHERE id = 1")  # raises if we were the victim
        self.deadlocks_at.append(time.time())
        self.conn.rollback()
        if then_hold_again:
            self.hold_row_2()

    def close(self) -> None:
        self.conn.rollback()
        self.conn.close()
        self.watch.close()


@pytest.fixture
def holder(shard: int) -> Iterator[RowHolder]:
    held = RowHolder()
    yield held
    held.close()


def attempts(redis_conn: Redis, job_id: str) -> list[tuple[str, float]]:
    rows = [raw.decode().split("@") for raw in redis_conn.lrange(retry_tasks.attempts_key(job_id), 0, -1)]
    return [(tag, float(at)) for tag, at in rows]


def ledger(job_id: str) -> list[str]:
    conn = connect(SHARD)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tag FROM retry_ledger WHERE job_id = %s ORDER BY id", (job_id,))
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


def fetch(redis_conn: Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=redis_conn, serializer=JSONSerializer)


def retried_count(redis_conn: Redis, task: str, label: str = "deadlock") -> int:
    return int(redis_conn.hget("easeoff:counters:retried", f"heavy|{task}|{label}") or 0)


@pytest.mark.parametrize("in_process", [False, True], ids=["forking", "in-process"])
def test_a_deadlocked_job_is_retried_later_and_finishes(
    redis_conn: Redis, sandbox: Any, holder: RowHolder, workers: WorkerProcesses, tmp_path: Path, in_process: bool
) -> None:
    holder.hold_row_2()
    job = retry_tasks.lock_two_rows.enqueue(shard=SHARD, tag="once", connection=redis_conn)
    workers.start(config_for(sandbox, tmp_path / "easeoff.toml"), "heavy", in_process=in_process)
    holder.deadlock_the_job(then_hold_again=False)

    finished = FinishedJobRegistry("heavy", connection=redis_conn)
    wait_until(lambda: job.id in finished.get_job_ids(), 30, what=f"the retry to finish; {workers.logs()}")
    runs = attempts(redis_conn, job.id)
    assert len(runs) == 2, runs
    # Retried later, through the scheduled registry (at least the probe interval's floor), not at once.
    assert runs[1][1] - holder.deadlocks_at[0] >= 0.25, (runs, holder.deadlocks_at)
    assert ledger(job.id) == ["once"]  # the deadlocked run's writes were rolled back: applied once
    meta = JobMeta.of(fetch(redis_conn, job.id))
    assert (meta.retries, meta.deferrals) == (1, 0)
    assert meta.last_error is not None and "Deadlock found" in meta.last_error
    assert retried_count(redis_conn, "lock_two_rows") == 1
    assert not redis_conn.hgetall("easeoff:counters:failed")  # a retry is not a failure


def test_a_job_that_keeps_deadlocking_fails_with_the_deadlock_once_its_retries_are_spent(
    redis_conn: Redis, sandbox: Any, holder: RowHolder, workers: WorkerProcesses, tmp_path: Path
) -> None:
    holder.hold_row_2()
    job = retry_tasks.lock_two_rows_retry_once.enqueue(shard=SHARD, tag="never", connection=redis_conn)
    workers.start(config_for(sandbox, tmp_path / "easeoff.toml"), "heavy")
    holder.deadlock_the_job(then_hold_again=True)
    holder.deadlock_the_job(then_hold_again=False)

    failed = FailedJobRegistry("heavy", connection=redis_conn)
    wait_until(lambda: job.id in failed.get_job_ids(), 30, what=f"the job to fail; {workers.logs()}")
    fetched = fetch(redis_conn, job.id)
    reason = fetched.latest_result().exc_string or ""
    assert "Deadlock found" in reason, reason
    assert len(attempts(redis_conn, job.id)) == 2  # the run and its one retry
    assert JobMeta.of(fetched).retries == 1
    assert ledger(job.id) == []
    assert retried_count(redis_conn, "lock_two_rows_retry_once") == 1


def test_a_task_that_names_no_errors_fails_on_its_first_deadlock(
    redis_conn: Redis, sandbox: Any, holder: RowHolder, workers: WorkerProcesses, tmp_path: Path
) -> None:
    holder.hold_row_2()
    job = retry_tasks.lock_two_rows_never_retried.enqueue(shard=SHARD, tag="never", connection=redis_conn)
    workers.start(config_for(sandbox, tmp_path / "easeoff.toml"), "heavy")
    holder.deadlock_the_job(then_hold_again=False)
    failed = FailedJobRegistry("heavy", connection=redis_conn)
    wait_until(lambda: job.id in failed.get_job_ids(), 30, what=f"the job to fail; {workers.logs()}")
    assert len(attempts(redis_conn, job.id)) == 1
    assert JobMeta.of(fetch(redis_conn, job.id)).retries == 0


def test_a_job_that_committed_before_its_deadlock_is_not_run_again(
    redis_conn: Redis, sandbox: Any, holder: RowHolder, workers: WorkerProcesses, tmp_path: Path
) -> None:
    """Its first transaction is in the ledger; running it again would write that row twice."""
    holder.hold_row_2()
    job = retry_tasks.commit_then_lock_two_rows.enqueue(shard=SHARD, tag="second", connection=redis_conn)
    workers.start(config_for(sandbox, tmp_path / "easeoff.toml"), "heavy")
    holder.deadlock_the_job(then_hold_again=False)
    failed = FailedJobRegistry("heavy", connection=redis_conn)
    wait_until(lambda: job.id in failed.get_job_ids(), 30, what=f"the job to fail; {workers.logs()}")
    assert "Deadlock found" in (fetch(redis_conn, job.id).latest_result().exc_string or "")
    assert ledger(job.id) == ["first"]
    assert len(attempts(redis_conn, job.id)) == 1


def test_a_resumable_job_retried_after_a_deadlock_resumes_at_the_chunk_that_deadlocked(
    redis_conn: Redis, sandbox: Any, holder: RowHolder, workers: WorkerProcesses, tmp_path: Path
) -> None:
    holder.hold_row_2()
    job = retry_tasks.lock_rows_in_chunks.enqueue(shard=SHARD, chunks=3, connection=redis_conn)
    workers.start(config_for(sandbox, tmp_path / "easeoff.toml"), "heavy")
    holder.deadlock_the_job(then_hold_again=False)
    finished = FinishedJobRegistry("heavy", connection=redis_conn)
    wait_until(lambda: job.id in finished.get_job_ids(), 30, what=f"the job to finish; {workers.logs()}")
    assert [tag for tag, _ in attempts(redis_conn, job.id)] == ["chunk:1", "chunk:2", "chunk:2", "chunk:3"]
    assert ledger(job.id) == ["chunk:1", "chunk:2", "chunk:3"]  # each chunk applied once
    assert JobMeta.of(fetch(redis_conn, job.id)).retries == 1
