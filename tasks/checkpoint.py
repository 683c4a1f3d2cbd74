"""Cooperative stopping for long jobs: between chunks, ask whether to stop here.

A worker sets the flag when a resource the running job touches crosses a signal's
`critical` threshold (pt-online-schema-change's --critical-load), or when a resumable
job's resources are strained. A resumable task checks it at its checkpoints, saves its
cursor and ends early; it never stops mid-chunk.
"""

from __future__ import annotations

from redis import Redis
from rq.job import Job

from easeoff.feedback import keys

STOP_KEY = keys.STOP_AT_CHECKPOINT
CANCEL_KEY = keys.CANCEL_AT_CHECKPOINT
STOP_TTL = 3600
SHUTTING_DOWN = "worker shutting down"  # the stop a warm shutdown asks for: the job just comes back
CANCELED = "canceled"  # the stop `easeoff cancel` asks for: the job ends there (rq's STOPPED), never comes back


def request_stop(job: Job, reason: str) -> None:
    job.connection.set(STOP_KEY.format(job_id=job.id), reason, ex=STOP_TTL)


def request_cancel(job_id: str, connection: Redis) -> None:
    """Ask a running job to end at its next checkpoint for good. Its own key, not the stop reason:
    a strain or a shutdown asking meanwhile must not turn the cancel into a deferral."""
    connection.set(CANCEL_KEY.format(job_id=job_id), CANCELED, ex=STOP_TTL)


def checkpoint(job: Job) -> str | None:
    """Store the job's meta (its cursor) and ask whether to stop, in one round trip: CANCELED
    when a cancel was asked, whatever else was."""
    with job.connection.pipeline(transaction=False) as pipe:
        pipe.hset(job.key, "meta", job.serializer.dumps(job.meta))
        pipe.get(STOP_KEY.format(job_id=job.id))
        pipe.get(CANCEL_KEY.format(job_id=job.id))
        _, reason, canceled = pipe.execute()
    if canceled is not None:
        return CANCELED
    return reason.decode() if isinstance(reason, bytes) else reason


def clear_stop(job: Job) -> None:
    """A stop asked of an earlier run does not apply to this one (a cancel does: it stays)."""
    job.connection.delete(STOP_KEY.format(job_id=job.id))


def clear_cancel(job_id: str, connection: Redis) -> None:
    """The cancel was carried out (the job ended stopped): a requeued run is not canceled again."""
    connection.delete(CANCEL_KEY.format(job_id=job_id))
