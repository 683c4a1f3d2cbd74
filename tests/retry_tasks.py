"""Tasks for tests/test_transient_retries.py: each takes the row locks a test can deadlock it on.

Imported by the test's workers through the config's `[tasks] modules` (the repository is the
worker's current directory). Every run notes its attempt in Redis (`attempts_key`), outside the
database transaction the deadlock rolls back, so the test counts runs however they ended.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from rq import get_current_job

from easeoff import heavy_task
from easeoff.tasks.shards import connect

ROWS_DDL = "CREATE TABLE IF NOT EXISTS deadlock_rows (id INT NOT NULL PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB"
PADDING_DDL = "CREATE TABLE IF NOT EXISTS deadlock_padding (id INT AUTO_INCREMENT PRIMARY KEY, x INT) ENGINE=InnoDB"
LEDGER_DDL = """CREATE TABLE IF NOT EXISTS retry_ledger (
    id INT AUTO_INCREMENT PRIMARY KEY, job_id VARCHAR(64) NOT NULL, tag VARCHAR(64) NOT NULL
) ENGINE=InnoDB"""


def attempts_key(job_id: str) -> str:
    return f"easeoff-test:attempts:{job_id}"


def _note_attempt(tag: str) -> str:
    job = get_current_job()
    assert job is not None
    job.connection.rpush(attempts_key(job.id), f"{tag}@{time.time():.6f}")
    return job.id


def _rows_then_ledger(cur: Any, job_id: str, tag: str) -> None:
    """Row 1, then row 2 (where a test holding row 2 makes it wait), then the ledger row."""
    cur.execute("UPDATE deadlock_rows SET v = v + 1 WHERE id = 1")
    cur.execute("UPDATE deadlock_rows SET v = v + 1 WHERE id = 2")
    cur.execute("INSERT INTO retry_ledger (job_id, tag) VALUES (%s, %s)", (job_id, tag))


def _lock_two_rows(shard: int, tag: str) -> None:
    job_id = _note_attempt(tag)
    conn = connect(shard)
    try:
        with conn.cursor() as cur:
            _rows_then_ledger(cur, job_id, tag)
        conn.commit()
    finally:
        conn.close()


@heavy_task(queue="heavy", resources=lambda shard, **_: [f"shard:{shard}"], retries=2)
def lock_two_rows(shard: int, tag: str) -> None:
    """One transaction over rows 1 and 2: not idempotent, retried on a deadlock (the default set)."""
    _lock_two_rows(shard, tag)


@heavy_task(queue="heavy", resources=lambda shard, **_: [f"shard:{shard}"], retries=1)
def lock_two_rows_retry_once(shard: int, tag: str) -> None:
    _lock_two_rows(shard, tag)


@heavy_task(queue="heavy", resources=lambda shard, **_: [f"shard:{shard}"], retry_on=())
def lock_two_rows_never_retried(shard: int, tag: str) -> None:
    _lock_two_rows(shard, tag)


@heavy_task(queue="heavy", resources=lambda shard, **_: [f"shard:{shard}"])
def commit_then_lock_two_rows(shard: int, tag: str) -> None:
    """A ledger row committed first, then the locking transaction: a deadlock there must not run
    the job again (its first commit would be applied twice)."""
    job_id = _note_attempt(tag)
    conn = connect(shard)
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO retry_ledger (job_id, tag) VALUES (%s, %s)", (job_id, "first"))
            conn.commit()
            _rows_then_ledger(cur, job_id, tag)
        conn.commit()
    finally:
        conn.close()


@heavy_task(queue="heavy", resources=lambda shard, **_: [f"shard:{shard}"], resumable=True)
def lock_rows_in_chunks(shard: int, chunks: int, cursor: int | None = None) -> Iterator[int]:
    """`chunks` chunks, each its ledger row committed; chunk 2 also takes rows 1 and 2."""
    conn = connect(shard)
    try:
        with conn.cursor() as cur:
            for chunk in range((cursor or 0) + 1, chunks + 1):
                job_id = _note_attempt(f"chunk:{chunk}")
                if chunk == 2:
                    _rows_then_ledger(cur, job_id, f"chunk:{chunk}")
                else:
                    cur.execute("INSERT INTO retry_ledger (job_id, tag) VALUES (%s, %s)", (job_id, f"chunk:{chunk}"))
                conn.commit()
                yield chunk
    finally:
        conn.close()
