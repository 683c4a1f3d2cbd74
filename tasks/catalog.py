"""Example heavy jobs on the demo schema, for the demo, the tests and the benchmarks.

Each touches one shard (`shard:{N}`), so the gate holds only that shard's work when
its databases are strained.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from rq import get_current_job

from easeoff.tasks.chunking import Chunk, chunk_size
from easeoff.tasks.pool import borrow
from easeoff.tasks.registry import heavy_task
from easeoff.tasks.shards import connect
from easeoff.tasks.transactional import commit_chunk, finish_chunks, resume_from

# One user's denormalised stats: a self-join, quadratic in the user's events.
REBUILD_SQL = (
    "REPLACE INTO user_stats (user_id, later_pairs, updated_at) "
    "SELECT e1.user_id, COUNT(e2.id), NOW(6) FROM events e1 "
    "LEFT JOIN events e2 ON e2.user_id = e1.user_id AND e2.id > e1.id "
    "WHERE e1.user_id = %s GROUP BY e1.user_id"
)


def on_shard(shard: int, **_: Any) -> list[str]:
    return [f"shard:{int(shard)}"]


def _job_id() -> str:
    job = get_current_job()
    return job.id if job is not None else "inline"


def _record(cur: Any, task: str, tag: str = "") -> None:
    cur.execute("INSERT INTO job_runs (job_id, task, tag, ran_at) VALUES (%s, %s, %s, NOW(6))", (_job_id(), task, tag))


def _move_to_archive(cur: Any, ids: list[int], ignore_archived: bool) -> None:
    marks = ", ".join(["%s"] * len(ids))
    cur.execute(
        f"INSERT {'IGNORE ' if ignore_archived else ''}INTO events_archive (id, user_id, created_at, payload) "
        f"SELECT id, user_id, created_at, payload FROM events WHERE id IN ({marks})",
        ids,
    )
    cur.execute(f"DELETE FROM events WHERE id IN ({marks})", ids)


@heavy_task(queue="archive", resources=on_shard, timeout=3600)
def archive_old_rows(shard: int, older_than_days: int = 30, batch_size: int = 500) -> int:
    """Move events older than the cutoff to events_archive, one short transaction per batch."""
    moved = 0
    conn = connect(shard)
    try:
        with conn.cursor() as cur:
            while True:
                cur.execute(
                    "SELECT id FROM events WHERE created_at < NOW() - INTERVAL %s DAY ORDER BY id LIMIT %s FOR UPDATE",
                    (older_than_days, batch_size),
                )
                ids = [row[0] for row in cur.fetchall()]
                if not ids:
                    break
                _move_to_archive(cur, ids, ignore_archived=True)
                conn.commit()
                moved += len(ids)
            _record(cur, "archive_old_rows", str(moved))
        conn.commit()
    finally:
        conn.close()
    return moved


@heavy_task(queue="recount", resources=on_shard, timeout=3600, idempotent=True)
def recount_users(shard: int, first_user: int, last_user: int) -> int:
    """Recompute each user's event count from live and archived events (denormalisation repair)."""
    conn = connect(shard)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "REPLACE INTO user_counts (user_id, events, updated_at) "
                "SELECT user_id, COUNT(*), NOW(6) FROM ("
                "  SELECT user_id FROM events WHERE user_id BETWEEN %s AND %s"
                "  UNION ALL SELECT user_id FROM events_archive WHERE user_id BETWEEN %s AND %s"
                ") AS both_tables GROUP BY user_id",
                (first_user, last_user, first_user, last_user),
            )
            counted = cur.rowcount
            _record(cur, "recount_users")
        conn.commit()
    finally:
        conn.close()
    return counted


@heavy_task(queue="recount", resources=on_shard, timeout=3600, idempotent=True, resumable=True)
def rebuild_user_stats(shard: int, first_user: int, last_user: int, cursor: int | None = None) -> Iterator[int]:
    """Denormalise, for each user, how many of their events have a later event: a self-join,
    quadratic in events per user, so genuinely heavy on the database's CPU.

    One user per chunk, each committed with its ledger row (tag `user:N`) and its cursor, the
    last user done (a transactional checkpoint: tasks/transactional.py). One connection serves
    the whole job: connecting per chunk would cost the database host more than the chunk's own
    query does."""
    conn = connect(shard)
    try:
        cursor = resume_from(conn, cursor)
        with conn.cursor() as cur:
            for user in range((cursor or first_user - 1) + 1, last_user + 1):
                cur.execute(REBUILD_SQL, (user,))
                _record(cur, "rebuild_user_stats", f"user:{user}")
                commit_chunk(conn, user)
                yield user
        finish_chunks(conn)
    finally:
        conn.close()


@heavy_task(queue="heavy", resources=on_shard, timeout=600)
def record_run(shard: int, tag: str = "", seconds: float = 0.0) -> str:
    """Write one ledger row keyed by the job id (optionally after `seconds` of work): proof a job ran."""
    if seconds > 0:
        time.sleep(seconds)
    conn = connect(shard)
    try:
        with conn.cursor() as cur:
            _record(cur, "record_run", tag)
        conn.commit()
    finally:
        conn.close()
    return _job_id()


@heavy_task(queue="heavy", resources=lambda shard, then, **_: [f"shard:{shard}", f"shard:{then}"], timeout=600)
def record_then_visit(shard: int, then: int) -> str:
    """Write one ledger row on `shard`, then open a connection to shard `then`: a job that reached
    its database before a later connection was refused (a server restarting mid-job) may not run
    again (tests/test_db_outages.py)."""
    conn = connect(shard)
    try:
        with conn.cursor() as cur:
            _record(cur, "record_then_visit")
        conn.commit()
    finally:
        conn.close()
    connect(then).close()
    return _job_id()


@heavy_task(queue="heavy", resources=on_shard, timeout=600, idempotent=True)
def record_once(shard: int, tag: str = "", seconds: float = 0.0) -> str:
    """Like record_run, but idempotent: one `job_ledger` row per job id however often it runs
    (`runs` counts the executions), so a job rerun after its worker died leaves no duplicate."""
    if seconds > 0:
        time.sleep(seconds)
    conn = connect(shard)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO job_ledger (job_id, task, tag, runs, first_at, last_at) "
                "VALUES (%s, 'record_once', %s, 1, NOW(6), NOW(6)) "
                "ON DUPLICATE KEY UPDATE runs = runs + 1, last_at = NOW(6)",
                (_job_id(), tag),
            )
        conn.commit()
    finally:
        conn.close()
    return _job_id()


@heavy_task(queue="recount", resources=on_shard, timeout=600, idempotent=True)
def rebuild_users_once(shard: int, first_user: int, last_user: int) -> int:
    """rebuild_user_stats as a one-shot job: the same statement per user, committed per user with
    its ledger row, over the connection its worker keeps for the shard (tasks/pool.py)."""
    with borrow(f"shard:{int(shard)}", lambda: connect(shard)) as conn, conn.cursor() as cur:
        for user in range(first_user, last_user + 1):
            cur.execute(REBUILD_SQL, (user,))
            _record(cur, "rebuild_user_stats", f"user:{user}")
            conn.commit()
    return last_user - first_user + 1


@heavy_task(queue="heavy", resources=on_shard, timeout=600, idempotent=True)
def record_pooled(shard: int, tag: str = "", seconds: float = 0.0) -> str:
    """A ledger row saying which process and which MySQL connection ran the job (tests/test_in_process.py)."""
    if seconds > 0:
        time.sleep(seconds)
    with borrow(f"shard:{int(shard)}", lambda: connect(shard)) as conn, conn.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        (connection_id,) = cur.fetchone()
        _record(cur, "record_pooled", f"{tag}|pid={os.getpid()}|conn={connection_id}")
        conn.commit()
    return _job_id()


@heavy_task(queue="heavy", resources=on_shard, timeout=2)
def overrun(shard: int, seconds: float) -> None:
    """Sleeps past its two-second timeout: the worker must stop it (tests/test_in_process.py)."""
    time.sleep(seconds)


@heavy_task(queue="heavy", resources=on_shard, timeout=60)
def noop(shard: int = 1) -> None:
    """Nothing at all: measures the queue's own overhead."""
    return None


@heavy_task(queue="archive", resources=on_shard, timeout=3600, resumable=True, idempotent=True)
def archive_in_chunks(
    shard: int, older_than_days: int = 30, batch_size: int = 100, pause: float = 0.0, cursor: int | None = None
) -> Iterator[int]:
    """Archive old events in primary-key order, one committed chunk per checkpoint.

    The cursor is the last archived id. Each chunk is logged in job_runs (tag
    `chunk:FIRST-LAST`) and its cursor checkpointed in the same transaction, so tests can
    prove no row moved twice, even after a kill.
    """
    conn = connect(shard)
    try:
        last_id = resume_from(conn, cursor) or 0
        with conn.cursor() as cur:
            while True:
                cur.execute(
                    "SELECT id FROM events WHERE id > %s AND created_at < NOW() - INTERVAL %s DAY "
                    "ORDER BY id LIMIT %s FOR UPDATE",
                    (last_id, older_than_days, batch_size),
                )
                ids = [row[0] for row in cur.fetchall()]
                if not ids:
                    break
                _move_to_archive(cur, ids, ignore_archived=False)  # a row archived twice would fail here
                _record(cur, "archive_in_chunks", f"chunk:{ids[0]}-{ids[-1]}")
                last_id = ids[-1]
                commit_chunk(conn, last_id)
                if pause > 0:
                    time.sleep(pause)
                yield last_id
        finish_chunks(conn)
    finally:
        conn.close()


STALL_SECONDS = 3000.0  # how long a chunk asked to stall sleeps: far past any test's kill


@heavy_task(queue="heavy", resources=on_shard, timeout=3600, resumable=True)
def ledger_in_chunks(
    shard: int, chunks: int, pause: float = 0.0, stall_after_chunk: int = 0, cursor: int | None = None
) -> Iterator[int]:
    """`chunks` chunks, each one ledger row (tag `chunk:K`) committed with its cursor K (the
    chunks done): proof, row by row, that no chunk is applied twice or skipped (scripts/chaos.py).

    `stall_after_chunk=K` makes chunk K sleep after its commit, before yielding: its cursor is
    in MySQL and not yet in Redis, the window a kill must not turn into a repeated chunk
    (tests/test_exactly_once_chunks.py)."""
    conn = connect(shard)
    try:
        done = resume_from(conn, cursor) or 0
        with conn.cursor() as cur:
            for chunk in range(done + 1, chunks + 1):
                _record(cur, "ledger_in_chunks", f"chunk:{chunk}")
                commit_chunk(conn, chunk)
                if chunk == stall_after_chunk:
                    time.sleep(STALL_SECONDS)
                if pause > 0:
                    time.sleep(pause)
                yield chunk
        finish_chunks(conn)
    finally:
        conn.close()


# -- chunks sized to a time target (tasks/chunking.py) -----------------------------------------

WEIGHTED_ROWS_DDL = """CREATE TABLE IF NOT EXISTS weighted_rows (
    id INT NOT NULL PRIMARY KEY,
    cost DOUBLE NOT NULL,
    touched INT NOT NULL DEFAULT 0
) ENGINE=InnoDB"""


def seed_weighted_rows(shard: int, costs: Sequence[float]) -> int:
    """Rows 1..N whose update costs `costs[i]` seconds each: a row cost the sizer must follow."""
    conn = connect(shard)
    try:
        with conn.cursor() as cur:
            cur.execute(WEIGHTED_ROWS_DDL)
            cur.execute("DELETE FROM weighted_rows")
            cur.executemany("INSERT INTO weighted_rows (id, cost) VALUES (%s, %s)", list(enumerate(costs, 1)))
        conn.commit()
    finally:
        conn.close()
    return len(costs)


@heavy_task(queue="heavy", resources=on_shard, timeout=3600, resumable=True, chunk_time="0.5s")
def touch_in_sized_chunks(shard: int, initial: int = 50, cursor: int | None = None) -> Iterator[Chunk]:
    """Update `weighted_rows` in id order, each chunk as many rows as `chunk_size()` says; each row's
    update waits its `cost` in MariaDB (SLEEP), so the rows' cost, not the machine's load, sets a
    chunk's time. Each chunk is logged in job_runs, tag `chunk:FIRST-LAST:ASKED:SECONDS` (the
    UPDATE's own time), committed with its cursor, the last id done."""
    conn = connect(shard)
    try:
        last = resume_from(conn, cursor) or 0
        with conn.cursor() as cur:
            cur.execute("SELECT COALESCE(MAX(id), 0) FROM weighted_rows")
            row = cur.fetchone()
            end = int(row[0]) if row else 0
            while last < end:
                size = chunk_size(initial)
                started = time.monotonic()
                rows = cur.execute(
                    "UPDATE weighted_rows SET touched = touched + 1 + SLEEP(cost) WHERE id > %s AND id <= %s",
                    (last, last + size),
                )
                seconds = time.monotonic() - started
                first, last = last + 1, min(last + size, end)
                _record(cur, "touch_in_sized_chunks", f"chunk:{first}-{last}:{size}:{seconds:.4f}")
                commit_chunk(conn, last)
                yield Chunk(last, rows)
        finish_chunks(conn)
    finally:
        conn.close()


# -- the nemesis run's tasks (scripts/nemesis.py): each execution's start and end in a ledger ------


@heavy_task(queue="heavy", resources=on_shard, timeout=600, idempotent=True, weight=3)
def share_heavy(shard: int, seconds: float = 0.0) -> str:
    """Weight 3: beside share_light (weight 1) on a tight resource, three of these start for each
    of those (tests/test_shares.py). Touches no database: the share is all it measures."""
    if seconds > 0:
        time.sleep(seconds)
    return _job_id()


@heavy_task(queue="heavy", resources=on_shard, timeout=600, idempotent=True)
def share_light(shard: int, seconds: float = 0.0) -> str:
    """Weight 1 (the default): share_heavy's neighbour on a tight resource."""
    if seconds > 0:
        time.sleep(seconds)
    return _job_id()


@heavy_task(queue="heavy", resources=on_shard, timeout=60)
def record_then_fail(shard: int, tag: str = "") -> None:
    """Writes its ledger row (each attempt's time), then fails: rq's `Retry` intervals are read
    off the ledger (tests/test_job_options.py)."""
    record_run.func(shard, tag)
    raise RuntimeError(f"record_then_fail {tag}: fails on purpose")


CALLBACKS_KEY = "catalog:callbacks:{job_id}"  # what the callbacks below note, one entry per call


def noted_success(job: Any, connection: Any, result: Any) -> None:
    """An `on_success` callback: notes the call on the job's list in Redis."""
    connection.rpush(CALLBACKS_KEY.format(job_id=job.id), "success")


def noted_failure(job: Any, connection: Any, *exc_info: Any) -> None:
    """An `on_failure` callback: notes the call on the job's list in Redis."""
    connection.rpush(CALLBACKS_KEY.format(job_id=job.id), "failure")


def noted_stopped(job: Any, connection: Any) -> None:
    """An `on_stopped` callback: notes the call on the job's list in Redis."""
    connection.rpush(CALLBACKS_KEY.format(job_id=job.id), "stopped")
