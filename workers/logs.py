"""How every `easeoff` process logs: `--log-level` and `--log-format text|json`.

One handler on the root logger (rq's worker finds it and adds none of its own, so its records
come through it too); levels are set on the `easeoff` and `rq` loggers, not the root, so
`--log-level debug` shows easeoff's and rq's decisions without every library's chatter.
`json` writes one object a line — time, level, logger, message — for log shippers, and on every
record about a job its `job_id`, `queue` and `task` as fields of their own (with `reason` on a
deferral or failure, and easeoff's `event`): from the record's `extra` (`job_extra`; rq passes
`job_id` and `queue` on a failure), else from the job this process is handling (`handling_job`,
set by the worker from the claim to the job's end, in its work horse too), else from the job rq
is running here.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

LogFormat = Literal["text", "json"]
LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
OUR_LOGGERS = ("easeoff", "rq")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # rq colours queue names on a terminal: no place in JSON
_JOB_FIELDS = ("job_id", "queue", "task", "reason", "event", "worker")  # `extra` keys a record may carry
_IDENTITY = ("job_id", "queue", "task")
Event = Literal["claimed", "deferred", "failed", "retry", "stopped", "stop_asked", "shadow", "enqueued"]


@dataclass(frozen=True)
class JobContext:
    """The job a process is handling: what its records about that job carry."""

    job_id: str
    queue: str
    task: str | None


_HANDLING: ContextVar[JobContext | None] = ContextVar("easeoff_handling_job", default=None)


@contextmanager
def handling_job(job_id: str, queue: str, task: str | None) -> Iterator[None]:
    """Records logged meanwhile (rq's own too, in a work horse forked meanwhile as well) carry this job."""
    token = _HANDLING.set(JobContext(job_id, queue, task))
    try:
        yield
    finally:
        _HANDLING.reset(token)


def job_extra(
    job_id: str, queue: str, task: str | None, reason: str | None = None, event: Event | None = None
) -> dict[str, str]:
    """`extra=` for a record about one job: its fields, each apart from the message's text."""
    fields = {"job_id": job_id, "queue": queue, "task": task, "reason": reason, "event": event}
    return {name: value for name, value in fields.items() if value is not None}


class JSONFormatter(logging.Formatter):
    """One JSON object a line: `time` (UTC, ISO 8601), `level`, `logger`, `message`, the job's
    fields where known, and `exc` with the traceback of a logged exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _ANSI.sub("", record.getMessage()),
        }
        entry.update(job_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def job_fields(record: logging.LogRecord) -> dict[str, str]:
    """The job a record is about: what the caller passed in `extra`, completed (or, without a
    `job_id`, supplied) by the job this process is handling, else by the job rq runs here."""
    fields = {name: str(getattr(record, name)) for name in _JOB_FIELDS if getattr(record, name, None) is not None}
    if all(name in fields for name in _IDENTITY):
        return fields
    known = _handled() or _running()
    if known is None or fields.get("job_id", known.job_id) != known.job_id:
        return fields  # about another job than the one in hand: only what the record said
    found = {"job_id": known.job_id, "queue": known.queue, "task": known.task}
    return {**{k: v for k, v in found.items() if v}, **fields}


def _handled() -> JobContext | None:
    return _HANDLING.get()


def _running() -> JobContext | None:
    """The job rq is running in this process (a work horse, or an in-process worker)."""
    from rq.job import get_current_job

    job = get_current_job()
    if job is None:
        return None
    from easeoff.tasks.meta import task_name

    try:
        task: str | None = task_name(job)
    except Exception:  # a job whose data cannot be read still gets its id
        task = None
    return JobContext(job.id, job.origin, task)


def configure(level: str | None, log_format: LogFormat) -> None:
    """Apply `--log-level` (None: leave each command its default) and `--log-format` to the root
    handler that `main` installed."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.WARNING, format=TEXT_FORMAT)
    formatter = JSONFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    for handler in root.handlers:
        handler.setFormatter(formatter)
    if level is not None:
        for name in OUR_LOGGERS:
            logging.getLogger(name).setLevel(level.upper())
