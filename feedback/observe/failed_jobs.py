"""The newest failed jobs across queues, each with the one line that says why: for the page.

`easeoff failed` (workers/cli/jobs.py) lists the same thing for a terminal; feedback may not
import workers, so the reading lives here, read-only (no registry clean-up, which writes) and
bounded: a few pipelined round trips for the newest `limit` jobs however many have failed.

Nothing here unpickles: jobs are fetched with JSONSerializer, and of a job's latest rq result
only `exc_string` is read (rq's `Result.restore` would load `return_value` with rq's default
serializer, pickle, so a planted `rq:results:<id>` would run code in the exporter). A reason
is shown with every password in it masked (secrets.redact_text).
"""

from __future__ import annotations

import zlib
from base64 import b64decode
from collections.abc import Sequence
from typing import Any

import msgspec
import msgspec.structs
from redis import Redis
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer

from easeoff.feedback import rq_internals
from easeoff.feedback.secrets import redact_text

MAX_REASON = 300  # characters of a reason shown: one line, not a traceback
EASEOFF_META = "easeoff"  # tasks/meta.py's META_KEY: the job's easeoff meta, where its task is named


class FailedJob(msgspec.Struct, frozen=True):
    id: str
    queue: str
    task: str
    failed_at: float | None  # unix seconds; None if rq did not record the end
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return msgspec.structs.asdict(self)


class FailedJobs(msgspec.Struct, frozen=True):
    """The newest failed jobs (newest first) and how many each queue holds in all."""

    jobs: tuple[FailedJob, ...] = ()
    counts: tuple[tuple[str, int], ...] = ()

    @property
    def total(self) -> int:
        return sum(n for _, n in self.counts)


def read_failed(redis: Redis, queues: Sequence[str], limit: int = 20) -> FailedJobs:
    """The newest `limit` failed jobs over `queues`: one pipeline for ids and counts, one for the
    jobs, one for their latest results."""
    if not queues or limit <= 0:
        return FailedJobs()
    keys = [FailedJobRegistry(q, connection=redis, serializer=JSONSerializer).key for q in queues]
    with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.zcard(key)
            pipe.zrange(key, 0, limit - 1, desc=True, withscores=True)
        replies = pipe.execute()
    counts = tuple((q, int(replies[2 * i])) for i, q in enumerate(queues))
    # The score is rq's expiry (failure time + its TTL), so the highest scores are about the newest.
    newest = sorted(
        ((float(score), _text(job_id), q) for i, q in enumerate(queues) for job_id, score in replies[2 * i + 1]),
        reverse=True,
    )[:limit]
    ids = [job_id for _, job_id, _ in newest]
    jobs = Job.fetch_many(ids, connection=redis, serializer=JSONSerializer)
    results = latest_results(redis, ids)
    found = [
        _failed_job(job_id, queue, job, result)
        for (_, job_id, queue), job, result in zip(newest, jobs, results, strict=True)
    ]
    found.sort(key=lambda j: j.failed_at or 0.0, reverse=True)
    return FailedJobs(tuple(found), counts)


def latest_results(redis: Redis, ids: Sequence[str]) -> list[Any]:
    """Each job's latest rq result entry, raw (`XREVRANGE ... COUNT 1`), in one pipeline."""
    with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.xrevrange(Result.get_key(job_id), "+", "-", count=1)
        return list(pipe.execute())


def _failed_job(job_id: str, queue: str, job: Job | None, result: Any) -> FailedJob:
    if job is None:
        return FailedJob(job_id, queue, "?", None, "job data expired")
    ended = job.ended_at.timestamp() if job.ended_at else None
    return FailedJob(job_id, queue, _task(job), ended, failure_reason(job, result))


def failure_reason(job: Job, latest: Any = None) -> str:
    """The last line of the failure, as `easeoff failed` shows it, passwords masked: the exception
    and its message, or easeoff's own reason (`deferred for 600s, the cap is 600s`, `refused to
    run ungated`). `latest` is the job's raw latest result entry (`latest_results`)."""
    text = (latest_exc_string(latest[0][1]) if latest else None) or rq_internals.exc_info_text(job) or ""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    reason = redact_text(lines[-1]) if lines else "no reason recorded"
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"


def latest_exc_string(payload: Any) -> str | None:
    """A result entry's `exc_string` (base64 of zlib, as rq's `Result.serialize` writes it), and
    nothing else of it: its `return_value` is never deserialized. None if absent or unreadable."""
    raw = payload.get(b"exc_string", payload.get("exc_string")) if isinstance(payload, dict) else None
    if not raw:
        return None
    try:
        return zlib.decompress(b64decode(raw)).decode("utf-8", errors="replace")
    except (ValueError, zlib.error):  # binascii.Error is a ValueError
        return None


def _task(job: Job) -> str:
    """The task a job ran: as tasks.meta.task_name says it (feedback may not import tasks): the
    easeoff meta's `task`, else the function's name."""
    meta = job.meta.get(EASEOFF_META) if isinstance(job.meta, dict) else None
    task = meta.get("task") if isinstance(meta, dict) else None
    if isinstance(task, str) and task:
        return task
    try:
        name = job.func_name
    except Exception:  # a payload this serializer cannot read
        return "?"
    return name.rsplit(".", 1)[-1] if name else "?"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
