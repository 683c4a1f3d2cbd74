"""Transactional checkpoints: a resumable task's cursor committed with its chunk, in MySQL.

The cursor a resumable task yields reaches Redis (the job's meta) at most every
`CHECKPOINT_EVERY` seconds, after the chunk's commit, so a worker killed outright resumes
from a cursor up to that long behind and repeats those chunks. A task whose chunks write to
MySQL can do better: write the cursor into the chunk's own transaction, in a small table on
the same database, keyed by the rq job id. A chunk's writes and its cursor then commit
together or not at all, and a resumed run starts after the last chunk MySQL committed,
whatever Redis says: each chunk's writes are applied exactly once.

    conn = connect(shard)
    cursor = resume_from(conn, cursor)    # MySQL's committed cursor for this job wins
    for chunk in chunks_after(cursor):
        ...                               # the chunk's writes on `conn`, not committed
        commit_chunk(conn, chunk.last)    # the cursor, in the same transaction; COMMIT
        yield chunk.last
    finish_chunks(conn)                   # marked done: a re-run does nothing

The row is kept when the job ends (marked done), so a job rq runs again after a kill just
past its last chunk does not start from scratch; `finish_chunks` prunes rows not touched for
`PRUNE_DONE_AFTER_DAYS` (done) or `PRUNE_ANY_AFTER_DAYS` (never finished). Each row also holds
the job's creation time, so a new job enqueued under an old job's id starts afresh. Every
commit is a compare-and-set on the chunk count this run last saw, so two runs of one job
(a work horse orphaned by its killed worker, and the requeued job) never both apply a chunk:
the one behind rolls back and is deferred (`ChunkConflict`), to resume from the other's
progress. Called outside a worker (no current rq job), the functions only commit.

The table is created on the first `resume_from` that finds it missing (an app's database has
no demo schema); the demo schema creates it up front (`tasks/demo_schema.py`).
"""

from __future__ import annotations

import contextlib
import json
import re
import weakref
from dataclasses import dataclass
from typing import Any

import pymysql
from rq import get_current_job
from rq.job import Job

from easeoff.tasks.resumable import AlreadyFinished, Checkpointed

TABLE = "easeoff_checkpoints"
PRUNE_DONE_AFTER_DAYS = 7  # a finished job's row: long enough for any re-run of it
PRUNE_ANY_AFTER_DAYS = 30  # a row whose job never finished (failed, expired): surely gone by then
PRUNE_BATCH = 1000  # rows per prune, so one job's finish never turns into a long delete

_ER_NO_SUCH_TABLE = 1146
_ER_DUP_ENTRY = 1062
_TABLE_NAME = re.compile(r"[A-Za-z0-9_$]{1,64}(\.[A-Za-z0-9_$]{1,64})?")


def checkpoint_table_ddl(table: str = TABLE) -> str:
    """The checkpoint table: one row per rq job, updated in each chunk's transaction."""
    return f"""CREATE TABLE IF NOT EXISTS {_quoted(table)} (
        job_id VARCHAR(191) NOT NULL PRIMARY KEY,
        job_created VARCHAR(32) NOT NULL,
        cursor_json TEXT NOT NULL,
        chunks INT NOT NULL,
        done TINYINT(1) NOT NULL DEFAULT 0,
        updated_at DATETIME(6) NOT NULL,
        KEY by_updated (updated_at)
    ) ENGINE=InnoDB"""


class ChunkConflict(Checkpointed):
    """Another run of this job committed a chunk this run had not seen: this chunk was rolled
    back, and the job is deferred, to resume from what MySQL holds."""


@dataclass
class _Run:
    """What this run of the job knows of its checkpoint row: the compare-and-set's expectations."""

    job_id: str
    created: str  # this job's creation time: tells it from an earlier job with the same id
    table: str
    row_created: str | None  # the row as last seen; None: no row
    row_chunks: int
    chunks: int  # this job's chunks committed so far
    cursor: Any


_runs: weakref.WeakKeyDictionary[pymysql.connections.Connection, _Run] = weakref.WeakKeyDictionary()


def resume_from(conn: pymysql.connections.Connection, cursor: Any, *, table: str = TABLE) -> Any:
    """The cursor to resume from: the one MySQL committed for the current job, else `cursor`
    (the Redis meta's). Call it before the first chunk's writes; it may create the table.

    Raises `AlreadyFinished` when an earlier run of this job called `finish_chunks`: the
    resumable runner then ends the job with the final cursor, redoing nothing."""
    _quoted(table)
    job = get_current_job()
    if job is None:
        _runs.pop(conn, None)
        return cursor
    run = _Run(job.id, _created(job), table, row_created=None, row_chunks=0, chunks=0, cursor=cursor)
    row = _read_row(conn, run)
    if row is not None:
        run.row_created, stored, run.row_chunks, done = str(row[0]), str(row[1]), int(row[2]), bool(row[3])
        if run.row_created == run.created:  # else an earlier job's row under the same id: start afresh
            run.chunks, run.cursor = run.row_chunks, json.loads(stored)
            if done:
                raise AlreadyFinished(run.cursor, run.chunks)
    _runs[conn] = run
    return run.cursor


def commit_chunk(conn: pymysql.connections.Connection, cursor: Any) -> None:
    """Record `cursor` as this job's checkpoint in the open transaction, then commit it with the
    chunk's writes. Raises `ChunkConflict` (after rolling back) if another run got there first."""
    run = _this_run(conn, "commit_chunk")
    if run is None:
        conn.commit()
        return
    stored = json.dumps(cursor, allow_nan=False, separators=(",", ":"))
    chunks = run.chunks + 1
    with conn.cursor() as cur:
        if run.row_created is None:
            try:
                cur.execute(
                    f"INSERT INTO {_quoted(run.table)} (job_id, job_created, cursor_json, chunks, done, updated_at) "
                    "VALUES (%s, %s, %s, %s, 0, NOW(6))",
                    (run.job_id, run.created, stored, chunks),
                )
                changed = 1
            except pymysql.err.IntegrityError as exc:
                if exc.args[0] != _ER_DUP_ENTRY:
                    raise
                changed = 0
        else:
            changed = cur.execute(
                f"UPDATE {_quoted(run.table)} SET job_created = %s, cursor_json = %s, chunks = %s, done = 0, "
                "updated_at = NOW(6) WHERE job_id = %s AND job_created = %s AND chunks = %s",
                (run.created, stored, chunks, run.job_id, run.row_created, run.row_chunks),
            )
    if not changed:
        conn.rollback()
        raise ChunkConflict(run.cursor, f"another run of job {run.job_id} committed past chunk {run.chunks}")
    conn.commit()
    run.row_created, run.row_chunks, run.chunks, run.cursor = run.created, chunks, chunks, cursor


def finish_chunks(conn: pymysql.connections.Connection) -> None:
    """Mark the job's checkpoint done (a re-run of the job then does nothing) and prune old rows.

    Call it after the last chunk; skipping it loses nothing but the short-cut and the pruning."""
    run = _this_run(conn, "finish_chunks")
    if run is None:
        conn.commit()
        return
    if run.chunks:
        with conn.cursor() as cur:
            changed = cur.execute(
                f"UPDATE {_quoted(run.table)} SET done = 1, updated_at = NOW(6) "
                "WHERE job_id = %s AND job_created = %s AND chunks = %s",
                (run.job_id, run.created, run.chunks),
            )
        if not changed:
            conn.rollback()
            raise ChunkConflict(run.cursor, f"another run of job {run.job_id} committed past chunk {run.chunks}")
    conn.commit()
    del _runs[conn]
    prune(conn, run.table)


def prune(conn: pymysql.connections.Connection, table: str = TABLE) -> int:
    """Delete old checkpoint rows, a bounded batch in a transaction of its own; best effort
    (a lock conflict leaves them for the next finish). Returns how many went."""
    try:
        with conn.cursor() as cur:
            deleted = cur.execute(
                f"DELETE FROM {_quoted(table)} WHERE updated_at < NOW(6) - INTERVAL %s DAY "
                "AND (done = 1 OR updated_at < NOW(6) - INTERVAL %s DAY) LIMIT %s",
                (PRUNE_DONE_AFTER_DAYS, PRUNE_ANY_AFTER_DAYS, PRUNE_BATCH),
            )
        conn.commit()
        return int(deleted)
    except pymysql.MySQLError:
        with contextlib.suppress(pymysql.MySQLError):
            conn.rollback()
        return 0


def _read_row(conn: pymysql.connections.Connection, run: _Run) -> tuple[Any, ...] | None:
    """The job's checkpoint row; a missing table is created (DDL commits: hence before any write)."""
    select = f"SELECT job_created, cursor_json, chunks, done FROM {_quoted(run.table)} WHERE job_id = %s"
    with conn.cursor() as cur:
        try:
            cur.execute(select, (run.job_id,))
        except pymysql.err.ProgrammingError as exc:
            if exc.args[0] != _ER_NO_SUCH_TABLE:
                raise
            cur.execute(checkpoint_table_ddl(run.table))
            cur.execute(select, (run.job_id,))
        row = cur.fetchone()
    return tuple(row) if row is not None else None


def _this_run(conn: pymysql.connections.Connection, caller: str) -> _Run | None:
    """The current job's run on this connection; None outside a worker. A job that skipped
    `resume_from` (or a connection kept from an earlier job) is a bug, said so at once."""
    job = get_current_job()
    if job is None:
        return None
    run = _runs.get(conn)
    if run is None or run.job_id != job.id or run.created != _created(job):
        raise RuntimeError(f"{caller}: call resume_from(conn, cursor) on this connection first, in this job")
    return run


def _created(job: Job) -> str:
    return job.created_at.strftime("%Y-%m-%dT%H:%M:%S.%f") if job.created_at else ""


def _quoted(table: str) -> str:
    if not _TABLE_NAME.fullmatch(table):
        raise ValueError(f"checkpoint table {table!r}: expected NAME or DATABASE.NAME (letters, digits, _ and $)")
    return ".".join(f"`{part}`" for part in table.split("."))
