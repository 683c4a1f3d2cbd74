"""The nemesis's jobs (scripts/nemesis.py): each writes its execution's start and end to a ledger
on MariaDB, from which scripts/faults/checker.py finds a job run twice, at once, past a limit or
ungated. Demo code like tasks/catalog.py: in the repository, not in the wheel.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from rq import get_current_job

from easeoff.tasks.admission import fencing_token
from easeoff.tasks.catalog import _job_id, _record, on_shard
from easeoff.tasks.meta import JobMeta
from easeoff.tasks.registry import heavy_task
from easeoff.tasks.resumable import AlreadyFinished
from easeoff.tasks.shards import connect
from easeoff.tasks.transactional import commit_chunk, finish_chunks, resume_from

# One row per event, each committed on its own, stamped by MariaDB's clock (one clock for every
# worker, however skewed theirs): the history scripts/faults/checker.py reads. `execution` is rq's
# execution id where the horse knows it; `pid` tells two executions of one job apart.
SPANS_TABLE_DDL = """CREATE TABLE IF NOT EXISTS task_spans (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    job_id VARCHAR(64) NOT NULL,
    execution VARCHAR(128) NOT NULL DEFAULT '',
    pid INT NOT NULL,
    event VARCHAR(8) NOT NULL,
    task VARCHAR(64) NOT NULL,
    resources VARCHAR(255) NOT NULL DEFAULT '',
    at DECIMAL(17, 6) NOT NULL,
    KEY by_job (job_id)
) ENGINE=InnoDB"""


def _execution_id() -> str:
    """This execution's fencing token (`token:N`) when a gated worker admitted it; else rq's id
    for it: the horse's environment when rq put it there, else the newest live execution of the
    job in Redis ('' when Redis does not answer: the pid still tells runs apart)."""
    token = fencing_token()
    if token is not None:
        return f"token:{token}"
    found = os.environ.get("RQ_EXECUTION_ID", "")
    if found:
        return found
    job = get_current_job()
    if job is None:
        return ""
    try:
        executions = job.get_executions()
    except Exception:  # Redis away: the ledger must not wait on it
        return ""
    return max(executions, key=lambda e: e.created_at).id if executions else ""


def _span(shard: int, task: str, event: str, execution: str = "") -> None:
    """One ledger event (`start` or `end`) of this execution, in a transaction of its own."""
    job = get_current_job()
    resources = ",".join(JobMeta.of(job).resources) if job is not None else ""
    conn = connect(shard)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO task_spans (job_id, execution, pid, event, task, resources, at) "
                "VALUES (%s, %s, %s, %s, %s, %s, UNIX_TIMESTAMP(NOW(6)))",
                (_job_id(), execution, os.getpid(), event, task, resources),
            )
        conn.commit()
    finally:
        conn.close()


def _spanned(shard: int, task: str, seconds: float) -> str:
    _span(shard, task, "start")
    execution = _execution_id()
    if seconds > 0:
        time.sleep(seconds)
    _span(shard, task, "end", execution)
    return _job_id()


@heavy_task(queue="heavy", resources=on_shard, timeout=600)
def span_once(shard: int, seconds: float = 0.0) -> str:
    """Not idempotent: its start and end in the ledger; a second start is a job run twice."""
    return _spanned(shard, "span_once", seconds)


@heavy_task(queue="heavy", resources=on_shard, timeout=600, idempotent=True)
def span_idempotent(shard: int, seconds: float = 0.0) -> str:
    """Idempotent: may start again after its worker died, never twice at once."""
    return _spanned(shard, "span_idempotent", seconds)


@heavy_task(queue="heavy", resources=on_shard, timeout=600, concurrency=2, rate="5/4s")
def span_limited(shard: int, seconds: float = 0.0) -> str:
    """Not idempotent, at most two at once fleet-wide and five starts in any four seconds (on top of
    its shard's own limit): the ledger's intervals show whether the limits held."""
    return _spanned(shard, "span_limited", seconds)


@heavy_task(queue="heavy", resources=on_shard, timeout=600, resumable=True)
def span_chunks(shard: int, chunks: int, pause: float = 0.0, cursor: int | None = None) -> Iterator[int]:
    """Resumable: `chunks` chunks, each a `job_runs` row (tag `chunk:K`) committed with its
    transactional checkpoint; each execution's start and end in the ledger. It may start again
    (resumed), but never twice at once, and never applies a chunk twice."""
    _span(shard, "span_chunks", "start")
    execution = _execution_id()
    conn = connect(shard)
    try:
        try:
            done = resume_from(conn, cursor) or 0
        except AlreadyFinished:  # an earlier run did every chunk but could not record its end
            _span(shard, "span_chunks", "end", execution)
            raise
        with conn.cursor() as cur:
            for chunk in range(done + 1, chunks + 1):
                _record(cur, "span_chunks", f"chunk:{chunk}")
                commit_chunk(conn, chunk)
                if pause > 0:
                    time.sleep(pause)
                yield chunk
        finish_chunks(conn)
    finally:
        conn.close()
    _span(shard, "span_chunks", "end", execution)
