"""Counting a job's end (and timing it) in the transaction rq ends it in, and giving its slots back.

rq ends a job in one of three handlers (success, failure, a returned `Retry`), each of which
writes the outcome in one transaction and calls `increment_*_job_count(pipeline)` inside it.
This mixin knows which job is ending only while a handler runs, so its counters go under that
job's own labels and its slots are released in that same transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import msgspec
from rq import Queue, Retry, Worker
from rq.executions import Execution
from rq.job import Job

from easeoff.feedback.tally import job_times
from easeoff.feedback.tally.counters import counter_field, counter_key
from easeoff.tasks.meta import task_name

Outcome = Literal["finished", "failed"]


class _EndingJob(msgspec.Struct, frozen=True):
    job: Job
    outcome: Literal["finished", "failed"]  # the counter it goes under
    reason: str  # the failure's label: the exception's class, or `Retry`


class CountsJobEndings(Worker):
    _ending_job: _EndingJob | None = None  # set only while rq's handler ends a job
    _failing_type: str | None = None  # the raised exception's class, from rq's handle_exception

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """rq hands every job's exception here just before `handle_job_failure` (a failing
        failure callback's in its place): its class is the failure's label, read, not parsed."""
        raised = exc_info[0] if exc_info else None
        self._failing_type = raised.__name__ if isinstance(raised, type) else None
        super().handle_exception(job, *exc_info)

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any, execution: Execution) -> None:
        with self._ending(job, "finished"):
            super().handle_job_success(job, queue, started_job_registry, execution)

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Execution | None = None,
    ) -> None:
        reason, self._failing_type = self._failing_type or _one_line(exc_string), None
        with self._ending(job, "failed", reason):
            super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)

    def handle_job_retry(
        self, job: Job, queue: Queue, retry: Retry, started_job_registry: Any, execution: Execution
    ) -> None:
        """A task that returned rq's `Retry`: requeued or, past `retry.max`, failed; counted as failed."""
        with self._ending(job, "failed", "Retry"):
            super().handle_job_retry(job, queue, retry, started_job_registry, execution)

    @contextmanager
    def _ending(self, job: Job, outcome: Outcome, reason: str = "") -> Iterator[None]:
        self._ending_job = _EndingJob(job, outcome, reason)
        try:
            yield
        finally:
            self._ending_job = None

    def increment_successful_job_count(self, pipeline: Any = None) -> None:
        super().increment_successful_job_count(pipeline)
        self._record_end(pipeline)

    def increment_failed_job_count(self, pipeline: Any = None) -> None:
        super().increment_failed_job_count(pipeline)
        self._record_end(pipeline)

    def _record_end(self, pipeline: Any) -> None:
        """Count the ending job under its own labels and give its slots back, in rq's transaction."""
        ending = self._ending_job
        if pipeline is None or ending is None:
            return
        job, task = ending.job, task_name(ending.job)
        pipeline.hincrby(counter_key(ending.outcome), counter_field(job.origin, task, ending.reason), 1)
        job_times.record_job(
            pipeline, job.origin, task, job.enqueued_at or job.created_at, job.started_at, job.ended_at
        )
        self._release_lease(pipeline)

    def _release_lease(self, pipeline: Any) -> None:
        """Give the ending job's slots back inside `pipeline` (the worker knows its leases)."""
        raise NotImplementedError


def _one_line(reason: str) -> str:
    """A failure with no exception behind it (a work horse that died, a stop): rq's own reason."""
    lines = [line.strip() for line in reason.strip().splitlines() if line.strip()]
    return lines[-1][:40] if lines else "unknown"
