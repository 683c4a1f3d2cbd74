"""Resumable chunked tasks (Shopify job-iteration style): walk a cursor, checkpoint between chunks.

A resumable task is a generator: given the cursor it was stopped at (None the first
time), it does one chunk at a time — committing it — and yields the cursor after
each. Between chunks the runner asks whether to stop (strain, a critical signal, or
the worker shutting down); if so it stores the cursor in the job's meta and raises
`Checkpointed`, and the worker defers the job, which later resumes from the stored
cursor. A chunk is never cut in half, so after a clean interrupt no chunk runs twice.

The runner asks, and stores the cursor, at most every `CHECKPOINT_EVERY` seconds
rather than after every chunk: with short chunks, a Redis round trip per chunk costs
the database host CPU that live traffic needs. So a job's cursor is kept in one of two ways:

- *in Redis only* (the job's meta): a worker killed outright (no clean interrupt) loses
  at most `CHECKPOINT_EVERY` of progress, and those chunks run again on resume, so each
  chunk must be safe to repeat;
- *transactional* (tasks/transactional.py): the task also writes its cursor into each
  chunk's own MySQL transaction (`resume_from`, `commit_chunk`, `finish_chunks`). After a
  kill it resumes after the last chunk MySQL committed, however far behind Redis is, and
  no chunk's writes are applied twice. A run that finds its job already finished raises
  `AlreadyFinished`, and the runner ends the job with the final cursor, redoing nothing.

A task may also let easeoff size its chunks to a time target (tasks/chunking.py): it asks
`chunk_size()` before each chunk, and the runner times each chunk up to its yield and keeps
what it learned with the cursor, so a resumed job starts at the size it had reached.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from rq import get_current_job

from easeoff.feedback.connect import REDIS_UNREACHABLE
from easeoff.tasks.checkpoint import SHUTTING_DOWN, checkpoint, clear_stop
from easeoff.tasks.chunking import DEFAULT_CHUNK_TIME, Chunk, ChunkRun, sizing
from easeoff.tasks.meta import JobMeta

CHECKPOINT_EVERY = 0.5  # seconds between checkpoints; a stop waits at most this long plus one chunk


class AlreadyFinished(Exception):
    """An earlier run of this job finished all its chunks (a re-run after a kill at the very end)."""

    def __init__(self, cursor: Any, chunks: int) -> None:
        super().__init__(f"already finished at cursor {cursor!r} after {chunks} chunks")
        self.cursor = cursor
        self.chunks = chunks


class Checkpointed(Exception):
    """The job stopped at a checkpoint and should be deferred, then resumed from `cursor`.

    `waits_for_resources`: stopped for strain, it waits until its resources clear; stopped for
    a shutdown or a Redis outage, it just comes back after a delay."""

    def __init__(self, cursor: Any, reason: str, waits_for_resources: bool = True) -> None:
        super().__init__(f"stopped at checkpoint {cursor!r}: {reason}")
        self.cursor = cursor
        self.reason = reason
        self.waits_for_resources = waits_for_resources


def run_resumable(
    func: Callable[..., Iterator[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    chunk_time: float | Callable[[], float] = DEFAULT_CHUNK_TIME,
) -> Any:
    """Drive a generator task from its stored cursor; returns the last cursor when done.

    `chunk_time`: the target each chunk is sized to, or a callable read for every chunk.

    Redis away at a checkpoint (down, stalled past the socket timeout, a primary turned replica
    by a failover) stops the job there as a strain would: its chunks are committed and safe to
    run again, so it is deferred and resumes later, rather than failed on a retry it never needed."""
    try:
        return _drive(func, args, kwargs, chunk_time)
    except REDIS_UNREACHABLE as exc:
        reason = f"Redis unreachable at a checkpoint: {type(exc).__name__}: {exc}"
        raise Checkpointed(None, reason, waits_for_resources=False) from exc


def _drive(
    func: Callable[..., Iterator[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    chunk_time: float | Callable[[], float],
) -> Any:
    job = get_current_job()
    meta = JobMeta()
    if job is not None:
        job.get_meta(refresh=True)
        meta = JobMeta.of(job)
        clear_stop(job)  # a stop asked of an earlier run does not apply to this one
    cursor = meta.cursor
    last_checkpoint = time.monotonic()
    chunks = ChunkRun(chunk_time, meta.chunking)
    try:
        with sizing(chunks):
            for step in func(*args, cursor=cursor, **kwargs):
                cursor, rows = (step.cursor, step.rows) if isinstance(step, Chunk) else (step, None)
                chunks.chunk_done(rows)
                if job is None:
                    continue
                meta.cursor, meta.chunks, meta.chunking = cursor, meta.chunks + 1, chunks.state
                if time.monotonic() - last_checkpoint < CHECKPOINT_EVERY:
                    continue
                last_checkpoint = time.monotonic()
                meta.store(job)
                reason = checkpoint(job)
                if reason:
                    raise Checkpointed(cursor, reason, waits_for_resources=reason != SHUTTING_DOWN)
    except AlreadyFinished as finished:
        cursor = meta.cursor = finished.cursor
        meta.chunks = finished.chunks
    except Exception:
        if job is not None:
            meta.store(job)  # the last chunk yielded was committed: a retry resumes after it
        raise
    if job is not None:
        meta.chunking = chunks.state
        meta.store(job)
        job.save_meta()  # the final cursor and chunk count, for the record
    return cursor
